//! Row commitments: leaf hashing (rows in parallel, as the CPU backend hashes its product),
//! Merkle tree builds, and multiproof generation and verification for 32 opened rows.

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use veribench_protocol::{Commitment, DeviceSeed, Leaf, leaf_hash, verify_multiproof};

/// Bytes hashed per iteration: a 4096 × 4096 i32 product (rows of 16384 entries: 1024 rows).
const HASHED_BYTES: usize = 64 << 20;
/// Rows opened per challenge by default.
const OPENED: u32 = 32;

fn leaves(count: u32) -> Vec<Leaf> {
    let seed = DeviceSeed([3; 32]);
    (0..count).map(|row| leaf_hash(&seed, row, &row.to_le_bytes())).collect()
}

fn hashing(c: &mut Criterion) {
    let seed = DeviceSeed([3; 32]);
    let product: Vec<u8> =
        (0..HASHED_BYTES).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect();
    let mut group = c.benchmark_group("leaf_hash_rows_rayon");
    common::budget(&mut group, true);
    group.throughput(Throughput::Bytes(HASHED_BYTES as u64));
    for entries in [4096usize, 16384] {
        let row_bytes = entries * 4;
        group.bench_function(BenchmarkId::new("i32_entries_per_row", entries), |bench| {
            bench.iter(|| {
                product
                    .par_chunks(row_bytes)
                    .enumerate()
                    .map(|(row, bytes)| leaf_hash(&seed, row as u32, bytes))
                    .collect::<Vec<_>>()
            });
        });
    }
    group.finish();
}

fn merkle(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle");
    common::budget(&mut group, false);
    for count in [4096u32, 32768] {
        let leaves = leaves(count);
        group.bench_function(BenchmarkId::new("from_leaves", count), |bench| {
            bench.iter(|| Commitment::from_leaves(black_box(&leaves)).expect("non-empty"));
        });

        let tree = Commitment::from_leaves(&leaves).expect("non-empty");
        let root = tree.root();
        // Evenly spread rows: the proof size of random rows, deterministic.
        let rows: Vec<u32> = (0..OPENED).map(|i| i * (count / OPENED) + i % 7).collect();
        let opened: Vec<Leaf> = rows.iter().map(|&r| leaves[r as usize]).collect();
        let proof = tree.prove(&rows).expect("rows are sorted and in range");
        assert!(verify_multiproof(&root, count, &rows, &opened, &proof), "honest proof");

        group.bench_function(BenchmarkId::new("prove_32_rows", count), |bench| {
            bench.iter(|| tree.prove(black_box(&rows)).expect("rows are sorted and in range"));
        });
        group.bench_function(BenchmarkId::new("verify_multiproof_32_rows", count), |bench| {
            bench.iter(|| verify_multiproof(&root, count, black_box(&rows), &opened, &proof));
        });
    }
    group.finish();
}

criterion_group!(benches, hashing, merkle);
criterion_main!(benches);
