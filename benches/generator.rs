//! The matrix generator over one 4096 × 4096 operand per mode: rows in parallel with rayon (as
//! the CPU backend fills A and B) and all rows on one thread (per-core rate). Throughput in
//! elements.
//!
//! `fill_i8` exists for the exact modes only (the backend uses it for int8); `fill_f32` serves
//! every mode (the backend uses it for fp16, bf16 and fp32). Each runs beside its `_reference`
//! twin (the previous 16-block path, same output), so one run gives the fast path's speed-up.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use veribench_protocol::{DeviceSeed, Generator, Matrix, Mode};

const N: usize = 4096;

fn fill<T: Send>(out: &mut [T], parallel: bool, row_fill: impl Fn(u32, &mut [T]) + Sync) {
    if parallel {
        out.par_chunks_mut(N).enumerate().for_each(|(row, dst)| row_fill(row as u32, dst));
    } else {
        out.chunks_mut(N).enumerate().for_each(|(row, dst)| row_fill(row as u32, dst));
    }
}

fn generator(c: &mut Criterion) {
    let seed = DeviceSeed([7; 32]);
    let mut ints = vec![0i8; N * N];
    let mut floats = vec![0f32; N * N];
    let mut group = c.benchmark_group("generator_4096x4096");
    common::budget(&mut group, true);
    group.throughput(Throughput::Elements((N * N) as u64));
    for mode in Mode::ALL {
        let generator = Generator::new(&seed, mode);
        for (threads, parallel) in [("rayon", true), ("1thread", false)] {
            // The fast path and the reference path side by side: the speed-up is their ratio.
            for (path, reference) in [("", false), ("_reference", true)] {
                if mode.is_exact() {
                    let id = BenchmarkId::new(format!("fill_i8{path}/{threads}"), mode);
                    group.bench_function(id, |bench| {
                        bench.iter(|| {
                            fill(&mut ints, parallel, |row, dst| {
                                let filled = if reference {
                                    generator.fill_i8_reference(Matrix::B, row, 0, dst)
                                } else {
                                    generator.fill_i8(Matrix::B, row, 0, dst)
                                };
                                filled.expect("exact mode");
                            });
                        });
                    });
                }
                let id = BenchmarkId::new(format!("fill_f32{path}/{threads}"), mode);
                group.bench_function(id, |bench| {
                    bench.iter(|| {
                        fill(&mut floats, parallel, |row, dst| {
                            if reference {
                                generator.fill_f32_reference(Matrix::B, row, 0, dst);
                            } else {
                                generator.fill_f32(Matrix::B, row, 0, dst);
                            }
                        });
                    });
                });
            }
        }
    }
    group.finish();
}

/// One row of 4096 elements, refilled in place: the generator's compute rate with the output in
/// L1, free of the memory-bandwidth limit that bounds whole f32 matrices on small machines.
fn generator_row(c: &mut Criterion) {
    let seed = DeviceSeed([7; 32]);
    let mut ints = vec![0i8; N];
    let mut floats = vec![0f32; N];
    let mut group = c.benchmark_group("generator_row_4096");
    common::budget(&mut group, false);
    group.throughput(Throughput::Elements(N as u64));
    for mode in [Mode::Int8, Mode::Fp32] {
        let generator = Generator::new(&seed, mode);
        if mode.is_exact() {
            group.bench_function(BenchmarkId::new("fill_i8", mode), |bench| {
                bench.iter(|| generator.fill_i8(Matrix::B, 5, 0, &mut ints).expect("exact mode"));
            });
            group.bench_function(BenchmarkId::new("fill_i8_reference", mode), |bench| {
                bench.iter(|| {
                    generator.fill_i8_reference(Matrix::B, 5, 0, &mut ints).expect("exact mode");
                });
            });
        }
        group.bench_function(BenchmarkId::new("fill_f32", mode), |bench| {
            bench.iter(|| generator.fill_f32(Matrix::B, 5, 0, &mut floats));
        });
        group.bench_function(BenchmarkId::new("fill_f32_reference", mode), |bench| {
            bench.iter(|| generator.fill_f32_reference(Matrix::B, 5, 0, &mut floats));
        });
    }
    group.finish();
}

criterion_group!(benches, generator_row, generator);
criterion_main!(benches);
