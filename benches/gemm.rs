//! GEMM phase of the CPU backend per mode and size.
//!
//! Throughput is `Elements(2·n³)`: one multiply-add counts as two operations, so criterion's
//! "elem/s" reads as FLOP/s (int8: integer ops/s).
//!
//! - int8: `cpu::int8::gemm_i8` on generated operands, nothing else in the loop.
//! - fp16/bf16/fp32: the backend's fp32 GEMM is private, so `CpuBackend::execute` runs end to
//!   end and `gemm_phase` reports only the backend's own timing of the multiply
//!   (`PhaseTimings::gemm`); the `cpu_execute` group times the whole call (generate + GEMM +
//!   leaf hashing) for every mode.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veribench_kernels::Backend;
use veribench_kernels::cpu::int8::{gemm_i8, gemm_i8_kernel_name};
use veribench_protocol::{Generator, Matrix, Mode};

const SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// A generated `n × n` int8 operand, as the backend builds it.
fn operand(generator: &Generator, matrix: Matrix, n: usize) -> Vec<i8> {
    let mut out = vec![0i8; n * n];
    for (row, dst) in out.chunks_exact_mut(n).enumerate() {
        generator.fill_i8(matrix, row as u32, 0, dst).expect("int8 has integer elements");
    }
    out
}

fn ops(n: u32) -> Throughput {
    Throughput::Elements(2 * u64::from(n).pow(3))
}

fn gemm(c: &mut Criterion) {
    let backend = common::cpu_backend();
    let device = common::device();
    let mut group = c.benchmark_group("gemm");
    for n in SIZES {
        common::budget(&mut group, n >= 2048);
        group.throughput(ops(n));

        let size = n as usize;
        let seed = common::challenge(Mode::Int8, n).device_seed(&device);
        let generator = Generator::new(&seed, Mode::Int8);
        let (a, b) = (operand(&generator, Matrix::A, size), operand(&generator, Matrix::B, size));
        let mut out = vec![0i32; size * size];
        let id = format!("int8/gemm_i8({})", gemm_i8_kernel_name());
        group.bench_function(BenchmarkId::new(id, n), |bench| {
            bench.iter(|| gemm_i8(size, size, size, black_box(&a), black_box(&b), &mut out, false));
        });
        drop((a, b, out));

        for mode in [Mode::Fp16, Mode::Bf16, Mode::Fp32] {
            let challenge = common::challenge(mode, n);
            let id = BenchmarkId::new(format!("{mode}/execute_gemm_phase"), n);
            group.bench_function(id, |bench| {
                bench.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let run = backend.execute(&device, &challenge).expect("execute");
                            run.timings.gemm
                        })
                        .sum::<Duration>()
                });
            });
        }
    }
    group.finish();
}

fn cpu_execute(c: &mut Criterion) {
    let backend = common::cpu_backend();
    let device = common::device();
    let mut group = c.benchmark_group("cpu_execute");
    for n in SIZES {
        common::budget(&mut group, n >= 2048);
        group.throughput(ops(n));
        for mode in Mode::ALL {
            let challenge = common::challenge(mode, n);
            group.bench_function(BenchmarkId::new(mode.as_str(), n), |bench| {
                bench.iter(|| backend.execute(&device, black_box(&challenge)).expect("execute"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemm, cpu_execute);
criterion_main!(benches);
