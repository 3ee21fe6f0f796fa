//! The CUDA backend on machines with and without NVIDIA hardware.
//!
//! Runs everywhere:
//! - every `.cu` file compiles with NVRTC to PTX for sm_80 and sm_90 and defines its kernels
//!   (needs libnvrtc: `eval "$(scripts/nvrtc-env)"`; `VERIBENCH_SKIP_NVRTC=1` skips it), and
//!   `vb_positive_zeros` canonicalises zeros with integer operations on the bit pattern;
//! - without a driver, `CudaBackend::new()` reports `Unavailable` instead of panicking;
//! - the constants of `common.cuh` are SPEC §3.1's.
//!
//! Ignored unless asked for with `--include-ignored` on a GPU box (where they fail loudly if no GPU
//! is found): the start-up self-test, CUDA leaves equal to the CPU backend's for the exact modes,
//! +0 (never -0) zero entries, several GPUs at once, and the bare-GEMM timing.

use std::collections::BTreeSet;
use std::path::Path;

use veribench_kernels::cuda::{self, CudaBackend, nvrtc};
use veribench_kernels::{Backend, BackendError, BackendKind, CpuBackend};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceSeed, Generator, Matrix, Mode, Seed, Shape, UnixMillis,
};

/// Architectures the PTX check targets: A100 and H100.
const ARCHS: [(u32, u32); 2] = [(8, 0), (9, 0)];

/// Whether NVRTC can be used; without it a test fails unless `VERIBENCH_SKIP_NVRTC=1`.
fn nvrtc_or_skip() -> bool {
    if nvrtc::nvrtc_available() {
        return true;
    }
    if std::env::var("VERIBENCH_SKIP_NVRTC").as_deref() == Ok("1") {
        eprintln!("skipped: NVRTC not loadable and VERIBENCH_SKIP_NVRTC=1");
        return false;
    }
    panic!("{} (or set VERIBENCH_SKIP_NVRTC=1 to skip this check)", nvrtc::NVRTC_HINT);
}

#[test]
fn every_cu_file_compiles_to_ptx_with_its_entry_points() {
    if !nvrtc_or_skip() {
        return;
    }
    for source in nvrtc::SOURCES {
        for arch in ARCHS {
            let ptx = nvrtc::compile_ptx(source, arch).unwrap_or_else(|e| panic!("{e}"));
            let target = format!(".target sm_{}{}", arch.0, arch.1);
            assert!(ptx.contains(&target), "{}: no `{target}` in the PTX", source.file);
            let found: BTreeSet<String> = nvrtc::ptx_entries(&ptx).into_iter().collect();
            let expected: BTreeSet<String> =
                source.entries.iter().map(|e| (*e).to_owned()).collect();
            assert_eq!(found, expected, "{} for {arch:?}: .entry names", source.file);
            // Threefry's state lives in registers: local memory would mean spills or a
            // dynamically indexed array, i.e. a much slower generator.
            assert!(
                !ptx.contains("ld.local") && !ptx.contains("st.local"),
                "{} for {arch:?} uses local memory",
                source.file
            );
        }
    }
}

/// The PTX text of entry `name`: from its `.entry` line to the end of its body.
fn entry_ptx<'a>(ptx: &'a str, name: &str) -> &'a str {
    let start = ptx.find(&format!(".entry {name}(")).unwrap_or_else(|| panic!("no {name}"));
    let body = &ptx[start..];
    let end = body.find("\n}").unwrap_or_else(|| panic!("{name} has no end"));
    &body[..end]
}

/// `vb_positive_zeros` (product.cu) is what makes CUDA's float rows canonical: it must compare
/// the words' bit patterns with -0's as integers (a float compare is free to ignore the sign of
/// zero), store the +0 pattern, walk C as whole uint4s (the launch passes words / 4), and take
/// exactly the (pointer, u64 count) the launch passes.
#[test]
fn positive_zeros_kernel_rewrites_the_negative_zero_bit_pattern() {
    let cuh = nvrtc::COMMON_CUH;
    assert!(cuh.contains("#define VB_NEGATIVE_ZERO 0x80000000u"));
    assert!(cuh.contains("return bits == VB_NEGATIVE_ZERO ? 0u : bits;"));
    assert_eq!(nvrtc::PRODUCT.entries, [nvrtc::entry::POSITIVE_ZEROS]);
    assert!(nvrtc::PRODUCT.text.contains("#define VB_PRODUCT_THREADS 256"));
    assert_eq!(nvrtc::PRODUCT_THREADS, 256);
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ARCHS {
        let ptx = nvrtc::compile_ptx(&nvrtc::PRODUCT, arch).unwrap_or_else(|e| panic!("{e}"));
        let body = entry_ptx(&ptx, nvrtc::entry::POSITIVE_ZEROS);
        let params: Vec<&str> =
            body.lines().filter(|l| l.trim_start().starts_with(".param")).collect();
        assert_eq!(params.len(), 2, "{arch:?}: {params:?}");
        assert!(params.iter().all(|p| p.contains(".param .u64")), "{arch:?}: {params:?}");
        assert!(body.contains("ld.global.v4.u32") && body.contains("st.global.v4.u32"), "{body}");
        // 0x80000000 as PTX prints a signed 32-bit immediate, compared as an integer.
        assert!(body.contains("setp.eq.s32") && body.contains("-2147483648"), "{body}");
        assert!(body.contains("selp.b32") && !body.contains(".f32"), "{body}");
    }
}

#[test]
fn every_cu_file_on_disk_is_compiled() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("kernels/cuda exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".cu"))
        .collect();
    let listed: BTreeSet<String> = nvrtc::SOURCES.iter().map(|s| s.file.to_owned()).collect();
    assert_eq!(on_disk, listed, "kernels/cuda/*.cu and nvrtc::SOURCES differ");
    for source in nvrtc::SOURCES {
        let expanded = nvrtc::expand(source);
        assert!(!expanded.contains("#include \"common.cuh\""), "{}", source.file);
        assert!(expanded.contains("vb_threefry4x32_13"), "{}: common.cuh not spliced", source.file);
    }
}

#[test]
fn without_a_driver_new_is_unavailable_not_a_panic() {
    if cuda::driver_available() {
        eprintln!("skipped: a CUDA driver is present on this machine");
        return;
    }
    match CudaBackend::new() {
        Err(BackendError::Unavailable(msg)) => {
            assert!(msg.contains("libcuda"), "message should name the driver library: {msg}");
        }
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(backend) => panic!("a backend without a driver: {backend:?}"),
    }
}

/// `common.cuh` carries SPEC §3.1's rotation table and key-schedule constant verbatim.
#[test]
fn common_cuh_constants_are_the_spec_constants() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/SPEC.md"))
            .expect("protocol/SPEC.md");
    let numbers = |s: &str| -> Vec<u32> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().expect("number"))
            .collect()
    };
    let spec_line = spec.lines().find(|l| l.trim_start().starts_with("R = [[")).expect("R in SPEC");
    let spec_r = numbers(spec_line.split_once('=').expect("R =").1);
    let cuh = nvrtc::COMMON_CUH;
    let start = cuh.find("R[8][2] = {").expect("R table in common.cuh");
    let end = start + cuh[start..].find("};").expect("end of R table");
    let cuh_r = numbers(&cuh[start + "R[8][2] = {".len()..end]);
    assert_eq!(spec_r.len(), 16);
    assert_eq!(cuh_r, spec_r);
    assert!(spec.contains("0x1BD11BDA") && cuh.contains("0x1BD11BDAu"));
    assert!(cuh.contains("#define VB_THREEFRY_ROUNDS 13"));
}

#[test]
fn host_helpers() {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    let words = cuda::key_words(&DeviceSeed(bytes));
    assert_eq!(words[0], 0x0302_0100);
    assert_eq!(words[7], 0x1f1e_1d1c);
    let uuid = cuda::format_gpu_uuid(&[
        0x6b, 0x29, 0xa9, 0x2e, 0x4d, 0x5c, 0x1c, 0x2a, 0x9e, 0x4b, 0x01, 0x23, 0x45, 0x67, 0x89,
        0xab,
    ]);
    assert_eq!(uuid, "GPU-6b29a92e-4d5c-1c2a-9e4b-0123456789ab");
    assert_eq!(nvrtc::ptx_arch((8, 6)), (8, 6));
    assert_eq!(nvrtc::ptx_arch((12, 0)), nvrtc::MAX_PTX_ARCH);
}

fn challenge(mode: Mode, shape: Shape) -> Challenge {
    Challenge {
        id: ChallengeId(1),
        seed: Seed([0x3c; 32]),
        mode,
        shape,
        issued_at: UnixMillis(0),
        deadline: UnixMillis(u64::MAX),
    }
}

/// The backend on a GPU box, or `None` (with the reason printed) elsewhere.
fn gpu_backend() -> Option<CudaBackend> {
    if !cuda::driver_available() {
        eprintln!("skipped: no CUDA driver on this machine");
        return None;
    }
    // With a driver present, failing to start is a real failure (it includes the self-test).
    Some(CudaBackend::new().unwrap_or_else(|e| panic!("CudaBackend::new: {e}")))
}

/// For the exact modes, CUDA leaves equal the CPU backend's under the same device key.
#[test]
#[ignore = "needs an NVIDIA GPU: run with --include-ignored on a GPU box"]
fn gpu_leaves_equal_cpu_leaves() {
    let cuda = gpu_backend().expect("this test needs an NVIDIA GPU with its driver and cuBLAS");
    assert_eq!(cuda.kind(), BackendKind::Cuda);
    for device in cuda.devices() {
        let cpu = CpuBackend::with_device_key(device.key.clone());
        for mode in [Mode::Int8, Mode::Fp16, Mode::Bf16] {
            for shape in [Shape { m: 129, k: 300, n: 203 }, Shape::square(512)] {
                let ch = challenge(mode, shape);
                let g = cuda.execute(&device.key, &ch).expect("cuda execute");
                let c = cpu.execute(&device.key, &ch).expect("cpu execute");
                assert_eq!(g.leaves, c.leaves, "{mode} {shape} on {}", device.name);
                assert_eq!(g.product.row_bytes(7).ok(), c.product.row_bytes(7).ok());
            }
        }
    }
}

/// Zero entries are +0 in CUDA's leaves and openings (cuBLAS may write -0 for an entry whose
/// products are all -0): k = 1 makes every entry one product, and the challenge is chosen so
/// that some are zero times a negative element. The CPU backend's leaves are the reference.
#[test]
#[ignore = "needs an NVIDIA GPU: run with --include-ignored on a GPU box"]
fn gpu_zero_entries_are_positive_zero() {
    let cuda = gpu_backend().expect("this test needs an NVIDIA GPU with its driver and cuBLAS");
    let shape = Shape { m: 129, k: 1, n: 3 };
    for device in cuda.devices() {
        let cpu = CpuBackend::with_device_key(device.key.clone());
        for mode in [Mode::Fp16, Mode::Bf16, Mode::Fp32] {
            let negative_zero = |ch: &Challenge| {
                let g = Generator::new(&ch.device_seed(&device.key), mode);
                (0..shape.m).any(|i| {
                    (0..shape.n).any(|j| {
                        let p = g.element(Matrix::A, i, 0) * g.element(Matrix::B, 0, j);
                        p == 0.0 && p.is_sign_negative()
                    })
                })
            };
            // fp32 elements are never 0: it only checks the encoding of its entries.
            let ch = (0..64u8)
                .map(|s| Challenge { seed: Seed([s; 32]), ..challenge(mode, shape) })
                .find(|ch| mode == Mode::Fp32 || negative_zero(ch))
                .unwrap_or_else(|| panic!("{mode}: no seed gives a -0 product"));
            let g = cuda.execute(&device.key, &ch).expect("cuda execute");
            for row in 0..shape.m {
                let bytes = g.product.row_bytes(row).expect("row");
                assert!(
                    bytes.chunks_exact(4).all(|w| w != 0x8000_0000u32.to_le_bytes()),
                    "{mode} row {row} on {}: {bytes:02x?}",
                    device.name
                );
            }
            let c = cpu.execute(&device.key, &ch).expect("cpu execute");
            assert_eq!(g.leaves, c.leaves, "{mode} on {}", device.name);
        }
    }
}

/// The bare cuBLAS time is measurable and positive for every mode.
#[test]
#[ignore = "needs an NVIDIA GPU: run with --include-ignored on a GPU box"]
fn gpu_bare_gemm_timing() {
    let cuda = gpu_backend().expect("this test needs an NVIDIA GPU with its driver and cuBLAS");
    let device = &cuda.devices()[0].key;
    for mode in Mode::ALL {
        let t = cuda.bare_gemm(device, mode, Shape::square(2048), 3).expect("bare gemm");
        assert!(t.best > std::time::Duration::ZERO && t.best <= t.median);
        eprintln!("{mode} n=2048: best {:?}, {:.1} TOPS", t.best, t.ops_per_second() / 1e12);
    }
}

/// Every GPU of a multi-GPU box computes at the same time, each from its own thread, and each
/// answer verifies.
#[test]
#[ignore = "needs an NVIDIA GPU: run with --include-ignored on a GPU box"]
fn gpu_devices_run_concurrently() {
    let cuda = gpu_backend().expect("this test needs an NVIDIA GPU with its driver and cuBLAS");
    if cuda.devices().len() < 2 {
        eprintln!("skipped: fewer than two GPUs");
        return;
    }
    let ch = challenge(Mode::Int8, Shape::square(2048));
    std::thread::scope(|s| {
        for device in cuda.devices() {
            let (cuda, ch) = (&cuda, &ch);
            s.spawn(move || {
                let run = veribench_kernels::run_challenge(cuda, &device.key, ch).expect("run");
                let rows: Vec<u32> = (0..2048).step_by(97).collect();
                let openings = run.open(&rows).expect("open");
                let verdict = veribench_protocol::verify_openings(
                    ch.mode,
                    ch.shape,
                    &run.seed,
                    &run.root(),
                    &rows,
                    &openings,
                );
                assert!(verdict.is_accepted(), "{}: {verdict:?}", device.name);
            });
        }
    });
}
