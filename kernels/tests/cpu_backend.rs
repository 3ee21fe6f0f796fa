//! The CPU backend against a naive i64/f64 reference, and against the protocol verifier.

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
