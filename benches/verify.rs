//! What verification costs a coordinator: `verify_openings` on honest openings of 32 sampled
//! rows (and 16 at n = 4096), produced once per size by the CPU backend outside the timed loop.

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use veribench_kernels::run_challenge;
use veribench_protocol::{DEFAULT_SAMPLED_ROWS, Mode, sample_rows, verify_openings};

fn verify(c: &mut Criterion) {
    let backend = common::cpu_backend();
    let device = common::device();
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("verify_openings");
    for n in [1024u32, 2048, 4096] {
        common::budget(&mut group, n >= 2048);
        for mode in [Mode::Int8, Mode::Fp32] {
            let challenge = common::challenge(mode, n);
            let run = run_challenge(&backend, &device, &challenge).expect("cpu backend runs");
            let root = run.root();
            let counts: &[u32] = if n == 4096 { &[DEFAULT_SAMPLED_ROWS, 16] } else { &[32] };
            for &count in counts {
                let sampled = sample_rows(&mut rng, n, count);
                let openings = run.open(&sampled).expect("sampled rows are in range");
                let check = || {
                    verify_openings(mode, challenge.shape, &run.seed, &root, &sampled, &openings)
                };
                assert!(check().is_accepted(), "honest openings verify");
                let id = BenchmarkId::new(format!("{mode}/{count}_rows"), n);
                group.bench_function(id, |bench| bench.iter(|| black_box(check())));
            }
        }
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
