//! What verification costs a coordinator: `verify_openings` on honest openings of 32 sampled
//! rows (and of the exact modes' default sample, 460, at n = 4096), produced once per size by
//! the CPU backend outside the timed loop, next to `verify_openings_by_recompute` (every sampled
//! row recomputed in full, the verifier before Freivalds' check and the blocked fp32 kernel) on
//! the 32 rows as the same-process baseline. The GEMM
//! time of the challenge that produced the openings is printed beside them for scale.

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use veribench_kernels::run_challenge;
use veribench_protocol::verify::verify_openings_by_recompute;
use veribench_protocol::{
    DEFAULT_SAMPLED_ROWS, Generator, Matrix, Mode, sample_rows, verify_openings,
};

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
            let gemm = run.execution().timings.gemm;
            eprintln!("{mode} n = {n}: gemm {:.2} ms", gemm.as_secs_f64() * 1e3);
            let counts: &[u32] =
                if n == 4096 && mode != Mode::Fp32 { &[32, DEFAULT_SAMPLED_ROWS] } else { &[32] };
            for &count in counts {
                let sampled = sample_rows(&mut rng, n, count);
                let openings = run.open(&sampled).expect("sampled rows are in range");
                let (shape, seed) = (challenge.shape, &run.seed);
                let fast = || verify_openings(mode, shape, seed, &root, &sampled, &openings);
                let full =
                    || verify_openings_by_recompute(mode, shape, seed, &root, &sampled, &openings);
                assert!(fast().is_accepted(), "honest openings verify");
                let id = BenchmarkId::new(format!("{mode}/{count}_rows"), n);
                group.bench_function(id, |bench| bench.iter(|| black_box(fast())));
                if count == 32 {
                    // Recomputing 460 rows takes seconds an iteration: the 32-row ratio says it.
                    assert!(full().is_accepted(), "honest openings verify");
                    let id = BenchmarkId::new(format!("{mode}/{count}_rows/recompute"), n);
                    group.bench_function(id, |bench| bench.iter(|| black_box(full())));
                }
            }
            // The part of either verifier that does not depend on the rows: regenerating B
            // once, row by row on all cores, as Freivalds' `B·x` does.
            let generator = Generator::new(&run.seed, mode);
            let id = BenchmarkId::new(format!("{mode}/regenerate_b"), n);
            group.bench_function(id, |bench| bench.iter(|| regenerate_b(&generator, n)));
        }
    }
    group.finish();
}

/// Every row of the `n × n` B, discarded after a checksum.
fn regenerate_b(generator: &Generator, n: u32) -> i64 {
    (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0i8; n as usize], vec![0f32; n as usize]),
            |(ints, floats), row| {
                if generator.fill_i8(Matrix::B, row, 0, ints).is_ok() {
                    i64::from(black_box(&ints)[0])
                } else {
                    generator.fill_f32(Matrix::B, row, 0, floats);
                    black_box(&floats)[0] as i64
                }
            },
        )
        .sum()
}

criterion_group!(benches, verify);
criterion_main!(benches);
