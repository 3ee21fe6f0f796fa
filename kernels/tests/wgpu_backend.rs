//! The wgpu backend against the CPU generator, the CPU backend, naive references and the
//! protocol verifier.
//!
//! These run on any wgpu adapter, including Mesa's lavapipe software Vulkan driver, so CI needs
//! no GPU. With no adapter at all they fail (they never pass silently): install
//! `mesa-vulkan-drivers` and `libvulkan1`.

mod common;

use std::sync::OnceLock;

use common::{has_negative_zero_entries, reference_leaves};

use rand::{Rng, SeedableRng, rngs::StdRng};
use veribench_kernels::LeafPath;
use veribench_kernels::wgpu::{GemmKernel, HostMatrices};
use veribench_kernels::{
    Backend, BackendError, CpuBackend, Fault, TileConfig, WgpuBackend, WgpuOptions, run_challenge,
};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, DeviceSeed, Generator, Leaf, Matrix, Mode, Seed, Shape,
    UnixMillis, Verdict, fp32_tolerance, leaf_hash, row_entries, sample_rows, verify_openings,
};

fn open(fault: Fault) -> WgpuBackend {
    match WgpuBackend::new(WgpuOptions { allow_cpu_adapter: true, adapter: None, fault }) {
        Ok(backend) => backend,
        Err(e) => panic!(
            "no wgpu adapter for the wgpu backend tests ({e}). Install a Vulkan driver: \
             `apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1` gives \
             the lavapipe software adapter, which is enough"
        ),
    }
}

/// One honest backend shared by the tests: opening a device and compiling the shaders is the
/// slow part on lavapipe.
fn backend() -> &'static WgpuBackend {
    static BACKEND: OnceLock<WgpuBackend> = OnceLock::new();
    BACKEND.get_or_init(|| open(Fault::None))
}

fn device(backend: &WgpuBackend) -> DeviceKey {
    backend.devices()[0].key.clone()
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

/// Awkward shapes: 1, primes, one past powers of two, non-square, K = 1, K not a multiple of 4.
const SHAPES: [Shape; 8] = [
    Shape { m: 1, k: 1, n: 1 },
    Shape { m: 7, k: 7, n: 7 },
    Shape { m: 33, k: 33, n: 33 },
    Shape { m: 257, k: 257, n: 257 },
    Shape { m: 5, k: 300, n: 17 },
    Shape { m: 70, k: 1, n: 129 },
    Shape { m: 3, k: 13, n: 258 },
    Shape { m: 66, k: 130, n: 65 },
];

/// A and B from the CPU generator, row-major f32 (every mode's values are exact in f32).
fn cpu_matrices(seed: &DeviceSeed, mode: Mode, shape: Shape) -> (Vec<f32>, Vec<f32>) {
    let g = Generator::new(seed, mode);
    let (m, k, n) = (shape.m as usize, shape.k as usize, shape.n as usize);
    let mut a = vec![0f32; m * k];
    let mut b = vec![0f32; k * n];
    for (r, row) in a.chunks_exact_mut(k).enumerate() {
        g.fill_f32(Matrix::A, r as u32, 0, row);
    }
    for (r, row) in b.chunks_exact_mut(n).enumerate() {
        g.fill_f32(Matrix::B, r as u32, 0, row);
    }
    (a, b)
}

#[test]
fn generated_matrices_are_bit_identical_to_the_cpu_generator() {
    let backend = backend();
    let key = device(backend);
    let mut rng = StdRng::seed_from_u64(1);
    for mode in Mode::ALL {
        for shape in SHAPES {
            let seed = DeviceSeed(rng.random());
            let got = backend.generate_matrices(&key, &seed, mode, shape).expect("generates");
            let g = Generator::new(&seed, mode);
            match got {
                HostMatrices::Int8 { a, b } => {
                    assert!(mode.is_exact(), "{mode}: int8 layout for a float mode");
                    let (mut wa, mut wb) = (vec![0i8; a.len()], vec![0i8; b.len()]);
                    for (r, row) in wa.chunks_exact_mut(shape.k as usize).enumerate() {
                        g.fill_i8(Matrix::A, r as u32, 0, row).expect("exact mode");
                    }
                    for (r, row) in wb.chunks_exact_mut(shape.n as usize).enumerate() {
                        g.fill_i8(Matrix::B, r as u32, 0, row).expect("exact mode");
                    }
                    assert!(a == wa, "{mode} {shape}: A differs");
                    assert!(b == wb, "{mode} {shape}: B differs");
                }
                HostMatrices::F32 { a, b } => {
                    let (wa, wb) = cpu_matrices(&seed, mode, shape);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&a) == bits(&wa), "{mode} {shape}: A differs");
                    assert!(bits(&b) == bits(&wb), "{mode} {shape}: B differs");
                }
            }
        }
    }
}

#[test]
fn int8_products_are_bit_identical_to_the_cpu_backend() {
    let backend = backend();
    let key = device(backend);
    // Same device key, so the same device seed, matrices and leaves.
    let cpu = CpuBackend::with_device_key(key.clone());
    let mut rng = StdRng::seed_from_u64(2);
    for shape in SHAPES {
        let c = challenge(&mut rng, Mode::Int8, shape);
        let gpu_run = backend.execute(&key, &c).expect("wgpu runs");
        let cpu_run = cpu.execute(&key, &c).expect("cpu runs");
        for row in 0..shape.m {
            assert_eq!(
                gpu_run.product.row_bytes(row).expect("row"),
                cpu_run.product.row_bytes(row).expect("row"),
                "{shape} row {row}"
            );
        }
        assert_eq!(gpu_run.leaves, cpu_run.leaves, "{shape}");
    }
}

#[test]
fn float_products_match_the_reference() {
    let backend = backend();
    let key = device(backend);
    let mut rng = StdRng::seed_from_u64(3);
    for mode in [Mode::Fp32, Mode::Fp16, Mode::Bf16] {
        for shape in SHAPES {
            let c = challenge(&mut rng, mode, shape);
            let (m, k, n) = (shape.m as usize, shape.k as usize, shape.n as usize);
            let (a, b) = cpu_matrices(&c.device_seed(&key), mode, shape);
            let run = backend.execute(&key, &c).expect("runs");
            let bound = fp32_tolerance(shape.k);
            for i in 0..m {
                let bytes = run.product.row_bytes(i as u32).expect("row");
                let got: Vec<f64> = row_entries(&bytes, mode).collect();
                for (j, g) in got.iter().enumerate() {
                    // f64 sums of exact f32 products: exact for fp16/bf16 (|C| ≤ 2^24).
                    let want: f64 =
                        (0..k).map(|t| f64::from(a[i * k + t]) * f64::from(b[t * n + j])).sum();
                    if mode == Mode::Fp32 {
                        assert!(
                            (g - want).abs() <= bound,
                            "{mode} {shape} ({i},{j}): {g} vs {want}"
                        );
                    } else {
                        assert_eq!(*g, want, "{mode} {shape} ({i},{j})");
                    }
                }
            }
        }
    }
}

fn verdict(backend: &WgpuBackend, c: &Challenge, rng: &mut StdRng) -> Verdict {
    let key = device(backend);
    let run = run_challenge(backend, &key, c).expect("runs");
    let sampled = sample_rows(rng, c.shape.m, 16);
    let openings = run.open(&sampled).expect("opens");
    verify_openings(c.mode, c.shape, &run.seed, &run.root(), &sampled, &openings)
}

#[test]
fn honest_challenges_are_accepted_by_the_verifier() {
    let backend = backend();
    let mut rng = StdRng::seed_from_u64(4);
    for mode in Mode::ALL {
        let c = challenge(&mut rng, mode, Shape { m: 96, k: 200, n: 72 });
        assert_eq!(verdict(backend, &c, &mut rng), Verdict::Accepted, "{mode}");
    }
}

#[test]
fn a_corrupted_gemm_is_rejected_by_the_verifier() {
    let faulty = open(Fault::SkipLastKTile);
    let mut rng = StdRng::seed_from_u64(5);
    for mode in Mode::ALL {
        // K spans several K tiles of every default tiling, so only the last is skipped.
        let c = challenge(&mut rng, mode, Shape { m: 96, k: 200, n: 72 });
        let v = verdict(&faulty, &c, &mut rng);
        assert!(!v.is_accepted(), "{mode}: a product missing its last K tile was accepted");
    }
}

#[test]
fn other_tilings_compute_the_same_product() {
    let key = device(backend());
    let mut rng = StdRng::seed_from_u64(6);
    let odd = TileConfig { wg_x: 8, wg_y: 4, tm: 3, tn: 5, tile_k: 12 };
    let tuned = open(Fault::None)
        .with_tiles(GemmKernel::F32, odd)
        .and_then(|b| b.with_tiles(GemmKernel::Int8, odd))
        .expect("compiles");
    assert_eq!(tuned.tiles(GemmKernel::Int8), odd);
    for mode in [Mode::Int8, Mode::Bf16] {
        let c = challenge(&mut rng, mode, Shape { m: 41, k: 77, n: 53 });
        let want = backend().execute(&key, &c).expect("runs").leaves;
        assert_eq!(tuned.execute(&key, &c).expect("runs").leaves, want, "{mode}");
    }
    let bad = TileConfig { tile_k: 6, ..odd };
    assert!(open(Fault::None).with_tiles(GemmKernel::Int8, bad).is_err());
}

#[test]
fn the_tuner_ranks_working_tilings() {
    let backend = backend();
    let candidates = &TileConfig::candidates(GemmKernel::Int8)[..3];
    let ranked = backend.tune(Mode::Int8, 64, candidates).expect("tunes");
    assert_eq!(ranked.len(), candidates.len());
    assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1), "{ranked:?}");
    assert!(ranked.iter().all(|(_, gops)| gops.is_finite() && *gops > 0.0));
}

#[test]
fn oversize_and_foreign_challenges_are_clear_errors() {
    let backend = backend();
    let key = device(backend);
    let mut rng = StdRng::seed_from_u64(7);
    // 65536² f32 is 16 GiB per matrix: above any device's largest storage binding (u32 range).
    let huge = challenge(&mut rng, Mode::Fp32, Shape::square(65_536));
    let err = backend.execute(&key, &huge).expect_err("must not fit");
    assert!(matches!(err, BackendError::OutOfMemory { bytes } if bytes >= 1 << 34), "{err}");
    let zero = challenge(&mut rng, Mode::Int8, Shape { m: 4, k: 0, n: 4 });
    assert!(matches!(backend.execute(&key, &zero), Err(BackendError::Shape(_))));
    let other = DeviceKey::new("GPU-not-mine").expect("key");
    let ok = challenge(&mut rng, Mode::Int8, Shape::square(4));
    assert!(matches!(backend.execute(&other, &ok), Err(BackendError::UnknownDevice(_))));
}

#[test]
fn devices_are_described() {
    let backend = backend();
    let info = &backend.devices()[0];
    assert!(info.key.as_str().starts_with("wgpu:"), "{}", info.key);
    assert!(!info.name.is_empty());
    let execution = backend
        .execute(&info.key, &challenge(&mut StdRng::seed_from_u64(8), Mode::Int8, Shape::square(9)))
        .expect("runs");
    assert_eq!(execution.leaves.len(), 9);
    assert!(matches!(
        execution.product.row_bytes(9),
        Err(BackendError::RowOutOfRange { row: 9, rows: 9 })
    ));
}

#[test]
fn software_adapters_are_refused_unless_allowed() {
    if !backend().is_software() {
        return; // A real GPU is present: it is chosen whatever the option says.
    }
    let err = WgpuBackend::new(WgpuOptions::default()).expect_err("only a software adapter");
    assert!(
        matches!(&err, BackendError::Unavailable(m) if m.contains("allow_cpu_adapter")),
        "{err}"
    );
}

/// SPEC's canonical bytes are unique: a zero entry is +0 (0x00000000), never -0, in the leaves
/// and the openings, whatever the shader compiler does with the sign of zero.
#[test]
fn zero_entries_are_positive_zero_in_leaves_and_openings() {
    let backend = backend();
    let key = device(backend);
    let shape = Shape { m: 129, k: 1, n: 3 };
    for mode in [Mode::Fp16, Mode::Bf16, Mode::Fp32] {
        let mut rng = StdRng::seed_from_u64(11);
        // fp16/bf16 elements are 0 with probability 1/32, so a few seeds give a -0 product;
        // fp32 elements are never 0, so fp32 only checks the encoding of its entries.
        let c = (0..64)
            .map(|_| challenge(&mut rng, mode, shape))
            .find(|c| mode == Mode::Fp32 || has_negative_zero_entries(c, &key))
            .unwrap_or_else(|| panic!("{mode}: no seed gives a -0 product"));
        let execution = backend.execute(&key, &c).expect("runs");
        for row in 0..shape.m {
            let bytes = execution.product.row_bytes(row).expect("row");
            assert!(
                bytes.chunks_exact(4).all(|w| w != 0x8000_0000u32.to_le_bytes()),
                "{mode} row {row} opens a -0 entry: {bytes:02x?}"
            );
        }
        assert_eq!(execution.leaves, reference_leaves(&c, &key), "{mode}: leaves differ");
    }
}

/// Row lengths at BLAKE3's edges: a message (n + 9 words) of one block and one word more, one
/// chunk and one word more, around four chunks, and the largest rows (257 chunks).
const EDGE_LENGTHS: [u32; 9] = [1, 7, 8, 247, 248, 1023, 1024, 1025, 65536];

/// `leaf_hash` of each row of `words` (rows of `n`), row `r` at index `first_row + r`.
fn host_leaves(seed: &DeviceSeed, first_row: u32, n: u32, words: &[u32]) -> Vec<Leaf> {
    words
        .chunks_exact(n as usize)
        .enumerate()
        .map(|(r, row)| {
            let bytes: Vec<u8> = row.iter().flat_map(|w| w.to_le_bytes()).collect();
            leaf_hash(seed, first_row.wrapping_add(r as u32), &bytes)
        })
        .collect()
}

#[test]
fn the_leaf_shader_passes_its_self_test() {
    let backend = backend();
    assert_eq!(backend.leaf_path(&device(backend)), Some(LeafPath::Device));
    let other = DeviceKey::new("GPU-not-mine").expect("key");
    assert_eq!(backend.leaf_path(&other), None);
}

#[test]
fn device_leaves_equal_leaf_hash_at_every_chunk_edge() {
    let backend = backend();
    let key = device(backend);
    let mut rng = StdRng::seed_from_u64(12);
    // Edge lengths, random lengths, and many rows (several workgroups in both passes).
    let mut cases: Vec<(u32, u32)> = EDGE_LENGTHS.iter().map(|&n| (n, 3)).collect();
    cases.extend((0..4).map(|_| (rng.random_range(1..5000), 5)));
    cases.extend([(1, 300), (300, 200), (2000, 70)]);
    for (n, rows) in cases {
        let seed = DeviceSeed(rng.random());
        let words: Vec<u32> = (0..n * rows).map(|_| rng.random()).collect();
        // Row indices from 0, and up to u32::MAX exactly.
        for first_row in [0, u32::MAX - rows + 1 - rng.random_range(0..2), rng.random()] {
            let got = backend.device_leaves(&key, &seed, first_row, n, &words).expect("hashes");
            assert_eq!(got, host_leaves(&seed, first_row, n, &words), "{rows} rows of {n}");
        }
    }
    assert!(backend.device_leaves(&key, &DeviceSeed([0; 32]), 0, 3, &[1, 2]).is_err());
}

/// Rows of one to five chunks, hashed on the device and opened from the device buffer, against
/// the CPU backend (int8) and the independent reference (fp16).
#[test]
fn long_rows_are_hashed_and_opened_from_the_device() {
    let backend = backend();
    let key = device(backend);
    let cpu = CpuBackend::with_device_key(key.clone());
    let mut rng = StdRng::seed_from_u64(13);
    let shape = Shape { m: 5, k: 3, n: 1100 };
    let c = challenge(&mut rng, Mode::Int8, shape);
    let gpu_run = backend.execute(&key, &c).expect("wgpu runs");
    let cpu_run = cpu.execute(&key, &c).expect("cpu runs");
    assert_eq!(gpu_run.leaves, cpu_run.leaves);
    for row in [0, 2, 4, 3, 0] {
        assert_eq!(
            gpu_run.product.row_bytes(row).expect("row"),
            cpu_run.product.row_bytes(row).expect("row"),
            "row {row}"
        );
    }
    let c = challenge(&mut rng, Mode::Fp16, shape);
    let run = backend.execute(&key, &c).expect("runs");
    assert_eq!(run.leaves, reference_leaves(&c, &key));
    let seed = c.device_seed(&key);
    for row in 0..shape.m {
        let bytes = run.product.row_bytes(row).expect("row");
        assert_eq!(bytes.len(), 4 * shape.n as usize);
        assert_eq!(run.leaves[row as usize], leaf_hash(&seed, row, &bytes), "row {row}");
    }
}

/// A leaf shader that disagrees with `leaf_hash` is caught by the start-up self-test, and the
/// backend still commits to the right leaves by hashing on the host.
#[test]
fn a_broken_leaf_shader_falls_back_to_host_hashing() {
    let broken = open(Fault::BrokenLeafShader);
    let key = device(&broken);
    assert_eq!(broken.leaf_path(&key), Some(LeafPath::Host));
    let seed = DeviceSeed([3; 32]);
    let words = [1, 2, 3, 4, 5, 6];
    let shader = broken.device_leaves(&key, &seed, 0, 3, &words).expect("hashes");
    assert_ne!(shader, host_leaves(&seed, 0, 3, &words), "the fault must break the shader");

    let mut rng = StdRng::seed_from_u64(14);
    for mode in [Mode::Int8, Mode::Bf16] {
        let c = challenge(&mut rng, mode, Shape { m: 20, k: 30, n: 300 });
        let want = backend().execute(&key, &c).expect("runs").leaves;
        assert_eq!(broken.execute(&key, &c).expect("runs").leaves, want, "{mode}");
        assert_eq!(verdict(&broken, &c, &mut rng), Verdict::Accepted, "{mode}");
    }
}
