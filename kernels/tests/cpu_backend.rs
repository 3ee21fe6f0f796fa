//! The CPU backend against a naive i64/f64 reference, and against the protocol verifier.

mod common;

use common::{has_negative_zero_entries, reference_leaves};
use rand::{Rng, SeedableRng, rngs::StdRng};
use veribench_kernels::{Backend, BackendError, CpuBackend, run_challenge};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, Generator, Matrix, Mode, Seed, Shape, UnixMillis, Verdict,
    fp32_tolerance, row_entries, sample_rows, verify_openings,
};

fn device() -> DeviceKey {
    DeviceKey::new("cpu:test").expect("valid key")
}

fn backend() -> CpuBackend {
    CpuBackend::with_device_key(device())
}

fn challenge(rng: &mut StdRng, mode: Mode, shape: Shape) -> Challenge {
    Challenge {
        id: ChallengeId(rng.random()),
        seed: Seed(rng.random()),
        mode,
        shape,
        issued_at: UnixMillis(0),
        deadline: UnixMillis(u64::MAX),
    }
}

/// C = A·B in f64 from single generated elements; exact for the integer modes (|C| < 2^53).
fn naive_product(c: &Challenge) -> Vec<f64> {
    let g = Generator::new(&c.device_seed(&device()), c.mode);
    let Shape { m, k, n } = c.shape;
    let a: Vec<Vec<f64>> =
        (0..m).map(|i| (0..k).map(|t| g.element(Matrix::A, i, t)).collect()).collect();
    let b: Vec<Vec<f64>> =
        (0..k).map(|t| (0..n).map(|j| g.element(Matrix::B, t, j)).collect()).collect();
    let mut out = Vec::with_capacity((m * n) as usize);
    for row in &a {
        for j in 0..n as usize {
            if c.mode == Mode::Fp32 {
                out.push(row.iter().zip(&b).map(|(x, brow)| x * brow[j]).sum());
            } else {
                // i64 accumulation: the exact reference.
                let s: i64 =
                    row.iter().zip(&b).map(|(x, brow)| (*x as i64) * (brow[j] as i64)).sum();
                out.push(s as f64);
            }
        }
    }
    out
}

#[test]
fn backend_rows_equal_the_naive_reference_on_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(42);
    let shapes = [
        Shape::square(1),
        Shape::square(7),
        Shape::square(33),
        Shape::square(257),
        Shape { m: 5, k: 300, n: 17 },
        Shape { m: 70, k: 1, n: 129 },
        Shape { m: 1, k: 1000, n: 65 },
    ];
    let backend = backend();
    for mode in Mode::ALL {
        for shape in shapes {
            let c = challenge(&mut rng, mode, shape);
            let run = run_challenge(&backend, &device(), &c).expect("runs");
            let all: Vec<u32> = (0..shape.m).collect();
            let openings = run.open(&all).expect("opens");
            let want = naive_product(&c);
            let bound = fp32_tolerance(shape.k);
            for (opening, want) in openings.rows.iter().zip(want.chunks_exact(shape.n as usize)) {
                let got: Vec<f64> = row_entries(&opening.bytes, mode).collect();
                for (j, (g, w)) in got.iter().zip(want).enumerate() {
                    if mode.is_exact() {
                        assert_eq!(g, w, "{mode} {shape} row {} col {j}", opening.row);
                    } else {
                        assert!(
                            (g - w).abs() <= bound,
                            "{mode} {shape} row {} col {j}: {g} vs {w}",
                            opening.row
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn honest_cpu_backend_is_never_rejected_across_1000_small_challenges_per_mode() {
    let backend = backend();
    for mode in Mode::ALL {
        let mut rng = StdRng::seed_from_u64(7 + mode as u64);
        for i in 0..1000 {
            let shape = Shape {
                m: rng.random_range(1..48),
                k: rng.random_range(1..96),
                n: rng.random_range(1..48),
            };
            let c = challenge(&mut rng, mode, shape);
            let run = run_challenge(&backend, &device(), &c).expect("runs");
            let sampled = sample_rows(&mut rand::rng(), shape.m, 32);
            let openings = run.open(&sampled).expect("opens");
            let verdict = verify_openings(mode, shape, &run.seed, &run.root(), &sampled, &openings);
            assert_eq!(verdict, Verdict::Accepted, "{mode} challenge {i} {shape}");
        }
    }
}

#[test]
fn leaves_match_the_opened_bytes() {
    let mut rng = StdRng::seed_from_u64(3);
    let c = challenge(&mut rng, Mode::Int8, Shape { m: 9, k: 40, n: 11 });
    let backend = backend();
    let execution = backend.execute(&device(), &c).expect("runs");
    let seed = c.device_seed(&device());
    for (r, leaf) in execution.leaves.iter().enumerate() {
        let bytes = execution.product.row_bytes(r as u32).expect("row");
        assert_eq!(*leaf, veribench_protocol::leaf_hash(&seed, r as u32, &bytes));
    }
    assert!(matches!(
        execution.product.row_bytes(9),
        Err(BackendError::RowOutOfRange { row: 9, rows: 9 })
    ));
}

#[test]
fn bad_challenges_are_clear_errors() {
    let mut rng = StdRng::seed_from_u64(4);
    let backend = backend();
    let zero = challenge(&mut rng, Mode::Int8, Shape { m: 4, k: 0, n: 4 });
    assert!(matches!(backend.execute(&device(), &zero), Err(BackendError::Shape(_))));
    let huge = challenge(&mut rng, Mode::Int8, Shape::square(70_000));
    assert!(matches!(backend.execute(&device(), &huge), Err(BackendError::Shape(_))));
    let ok = challenge(&mut rng, Mode::Int8, Shape::square(4));
    let other = DeviceKey::new("GPU-not-mine").expect("key");
    assert!(matches!(backend.execute(&other, &ok), Err(BackendError::UnknownDevice(_))));
}

#[test]
fn a_challenge_larger_than_memory_is_an_error_not_an_abort() {
    // 65536³ fp32 needs 48 GiB for A, B and C: beyond this machine and CI, so the backend must
    // refuse it before allocating (Linux would overcommit, then OOM-kill the process).
    let mut rng = StdRng::seed_from_u64(5);
    let c = challenge(&mut rng, Mode::Fp32, Shape::square(65_536));
    let needed = 3u64 * 65_536 * 65_536 * 4;
    let total = veribench_kernels::cpu::total_memory_bytes();
    assert!(total < needed, "this test assumes less than {needed} bytes of memory");
    let err = backend().execute(&device(), &c).expect_err("must not fit");
    assert!(matches!(err, BackendError::OutOfMemory { bytes } if bytes == needed), "{err}");
}

/// SPEC's canonical bytes are unique: a zero entry is +0, never -0. With k = 1 every entry is a
/// single product, and a zero element of A times a negative element of B is -0 in IEEE
/// arithmetic; the backend must still commit to and open +0.
#[test]
fn zero_entries_are_positive_zero_in_leaves_and_openings() {
    let backend = backend();
    let shape = Shape { m: 129, k: 1, n: 3 };
    for mode in [Mode::Fp16, Mode::Bf16, Mode::Fp32] {
        let mut rng = StdRng::seed_from_u64(11);
        // fp16/bf16 elements are 0 with probability 1/32, so a few seeds find a -0 product;
        // fp32 elements are never 0 (a 24-bit integer is 0 with probability 2^-24), so fp32
        // only checks the encoding of its (non-zero) entries.
        let c = (0..64)
            .map(|_| challenge(&mut rng, mode, shape))
            .find(|c| mode == Mode::Fp32 || has_negative_zero_entries(c, &device()))
            .unwrap_or_else(|| panic!("{mode}: no seed gives a -0 product"));
        let execution = backend.execute(&device(), &c).expect("runs");
        for row in 0..shape.m {
            let bytes = execution.product.row_bytes(row).expect("row");
            assert!(
                bytes.chunks_exact(4).all(|w| w != 0x8000_0000u32.to_le_bytes()),
                "{mode} row {row} opens a -0 entry: {bytes:02x?}"
            );
        }
        assert_eq!(execution.leaves, reference_leaves(&c, &device()), "{mode}: leaves differ");
    }
}

/// Opening a row past the product is `RowOutOfRange` naming the first such row, not an error
/// from the Merkle proof.
#[test]
fn opening_a_row_outside_the_product_is_row_out_of_range() {
    let mut rng = StdRng::seed_from_u64(12);
    let c = challenge(&mut rng, Mode::Int8, Shape { m: 10, k: 4, n: 3 });
    let run = run_challenge(&backend(), &device(), &c).expect("runs");
    for rows in [&[10][..], &[2, 9, 10, 11], &[0, 4_000_000_000]] {
        let first = *rows.iter().find(|&&r| r >= 10).expect("an out-of-range row");
        match run.open(rows) {
            Err(BackendError::RowOutOfRange { row, rows: 10 }) => assert_eq!(row, first),
            other => panic!("{rows:?}: expected RowOutOfRange, got {other:?}"),
        }
    }
    assert!(run.open(&[0, 9]).is_ok());
}

/// fp16/bf16 run on the int8 GEMM (exact i32 sums converted to f32): on ragged shapes (m, k, n
/// off every block size of every int8 kernel, k crossing its k block, m its row block), the
/// opened rows are the exact product as canonical f32 bytes, the leaves hash exactly those
/// bytes, the verifier accepts the openings, and the former fp32-GEMM path commits to the same
/// leaves.
#[test]
fn fp16_and_bf16_on_the_int8_gemm_are_exact_on_ragged_shapes() {
    use veribench_kernels::cpu::HalfGemm;
    let shapes = [
        Shape { m: 33, k: 70, n: 45 },
        Shape { m: 129, k: 1, n: 3 },
        Shape { m: 13, k: 1030, n: 130 },
        Shape { m: 200, k: 9, n: 33 },
    ];
    let fast = backend();
    let former = backend().with_half_gemm(HalfGemm::F32);
    let mut rng = StdRng::seed_from_u64(17);
    for mode in [Mode::Fp16, Mode::Bf16] {
        for shape in shapes {
            let c = challenge(&mut rng, mode, shape);
            let run = run_challenge(&fast, &device(), &c).expect("runs");
            let all: Vec<u32> = (0..shape.m).collect();
            let openings = run.open(&all).expect("opens");
            let want = naive_product(&c);
            for (opening, want) in openings.rows.iter().zip(want.chunks_exact(shape.n as usize)) {
                let bytes: Vec<u8> = want
                    .iter()
                    .flat_map(|&v| {
                        let v = v as f32;
                        // Canonical: zero is +0 (the reference's f64 sums can be -0).
                        if v == 0.0 { [0; 4] } else { v.to_le_bytes() }
                    })
                    .collect();
                assert!(opening.bytes == bytes, "{mode} {shape} row {}", opening.row);
                assert_eq!(
                    run.execution().leaves[opening.row as usize],
                    veribench_protocol::leaf_hash(&run.seed, opening.row, &bytes),
                    "{mode} {shape} leaf {}",
                    opening.row
                );
            }
            let verdict = verify_openings(mode, shape, &run.seed, &run.root(), &all, &openings);
            assert_eq!(verdict, Verdict::Accepted, "{mode} {shape}");
            let sampled = sample_rows(&mut rand::rng(), shape.m, 32);
            let openings = run.open(&sampled).expect("opens");
            let verdict = verify_openings(mode, shape, &run.seed, &run.root(), &sampled, &openings);
            assert_eq!(verdict, Verdict::Accepted, "{mode} {shape} sampled");
            let old = former.execute(&device(), &c).expect("runs");
            assert_eq!(old.leaves, run.execution().leaves, "{mode} {shape}: the paths differ");
        }
    }
}
