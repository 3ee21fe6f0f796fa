//! The CUDA backend: NVIDIA GPUs through the driver API, NVRTC and cuBLAS (all via `cudarc`,
//! loaded at run time, so the crate builds and its other backends run on machines without CUDA).
//!
//! Per challenge, on one GPU:
//!
//! 1. **Generate** A and B on the device with the NVRTC-compiled kernels of
//!    `kernels/cuda/generator.cu` (a transcription of SPEC §3; see [`nvrtc`]). A is row-major,
//!    B is written transposed for cuBLAS's "TN" layout ([`gemm`]).
//! 2. **Multiply** with `cublasGemmEx` in the mode's types — int8→i32, fp16/bf16→f32 with f32
//!    accumulation, fp32 with TF32 forbidden ([`gemm`] explains each choice) — in row chunks.
//!    In the float modes each chunk is then canonicalised on the GPU by `vb_positive_zeros`
//!    (`kernels/cuda/product.cu`): -0 entries become +0, since SPEC's row bytes are unique and
//!    cuBLAS may write -0 for an entry whose products are all -0 (zero times a negative
//!    element). It runs on the compute stream before the chunk is hashed, so the leaves and the
//!    openings (read from device memory) see the same canonical words.
//! 3. **Hash** each finished chunk of C to its rows' leaves on the GPU with the BLAKE3 of
//!    `kernels/cuda/leaves.cu` ([`LeafPath::Device`]), on the second stream while the next chunk
//!    multiplies; only the m × 32 bytes of leaves are copied to the host. GPUs whose start-up
//!    check of those kernels fails stream C to the host instead ([`LeafPath::Host`], below).
//! 4. **Keep** C in device memory for the openings ([`RowSource::row_bytes`] copies one row).
//!
//! # Why hash on the device (the numbers, for N = 32768)
//!
//! - C is N² × 4 B = 4 GiB (i32 or f32 entries).
//! - The GEMM is 2N³ = 7.0·10¹³ operations: ~0.1 s for int8 on an H100 at the ~700 TOPS cuBLAS
//!   reaches, ~0.1 s for fp16/bf16 at a similar rate, ~1.1 s for fp32 (no TF32: ~60 TFLOPS).
//! - Streaming C to the host: ~25 GB/s on PCIe 4.0 x16 → ~170 ms; ~50 GB/s on PCIe 5.0 → ~85 ms;
//!   then BLAKE3 on the host at ~5–7 GB/s per AVX-512 core needs 16+ cores to keep up.
//! - BLAKE3 on the GPU: 4 GiB read from HBM at ~3 TB/s is ~1.5 ms, the compression function
//!   ~5 ms of integer work; 32768 × 32 B = 1 MiB of leaves crosses PCIe.
//!
//! So streaming costs max(GEMM, transfer) + the last chunk — ~1.7× the bare GEMM for int8 on
//! PCIe 4, ~1.1× on PCIe 5 — and a big host; device leaves cost ~1.05× and a few host cycles
//! ([`CudaBackend::bare_gemm`] measures the baseline).
//!
//! The committed leaves now come from GPU code, so the BLAKE3 is held to the generator's
//! standard: `blake3.cuh` is compiled for the host too (the `veribench-cuda-host` crate runs the
//! real kernels under the backend's launch grids, [`launch`]) and compared with
//! [`leaf_hash`] bit for bit in CI, and every GPU hashes crafted rows of every block and chunk
//! edge at start-up ([`CudaBackend::self_test`]). A GPU where those differ from [`leaf_hash`]
//! (a device compiler or driver bug the host build cannot see) logs a warning and uses the
//! fallback, [`LeafPath::Host`]: each chunk of C is copied to pinned host memory on the second
//! stream while the GPU computes the next one, and the host hashes it with [`leaf_hash`]
//! across all cores (three 64 MiB pinned staging buffers per GPU bound the host memory; they are
//! allocated without cudarc's default `CU_MEMHOSTALLOC_WRITECOMBINED`, since the host reads
//! them). [`CudaDeviceInfo::leaf_path`] says which path a GPU uses. On either path
//! [`PhaseTimings::hash`] is the wall time the pipeline takes beyond the GEMM's GPU time.
//!
//! # Concurrency
//!
//! Every GPU has its own context, streams, cuBLAS handle and staging buffers behind a mutex:
//! [`Backend::execute`] may be called from one thread per GPU and the GPUs run concurrently; two
//! challenges on the same GPU run one after the other.
//!
//! # Memory
//!
//! A and B (padded to multiples of 16 in k and n) and C are allocated per challenge; A and B are
//! freed after the GEMM and C lives as long as the returned product, so a GPU holds one product
//! per unopened challenge. Device leaves add a scratch of one chaining value per 1 KiB of a
//! GEMM chunk's rows (1/32 of the chunk) and the m × 32 bytes of leaves, freed after the
//! challenge. Requests larger than the free device memory are refused with
//! [`BackendError::OutOfMemory`] before anything is allocated.

pub mod gemm;
pub mod launch;
pub mod nvrtc;
mod selftest;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cudarc::cublas::CudaBlas;
use cudarc::driver::result::DriverError;
use cudarc::driver::sys::{CUdeviceptr, CUevent_flags, CUresult};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use rayon::prelude::*;
use veribench_protocol::{DeviceKey, DeviceSeed, Leaf, MAX_DIM, Matrix, Mode, Shape, leaf_hash};

use crate::backend::{
    Backend, BackendError, BackendKind, DeviceInfo, Execution, Job, LeafPath, PhaseTimings,
    RowSource,
};
use gemm::{GemmOperands, OUTPUT_BYTES, PAD, input_bytes};

/// Bytes of one pinned staging buffer.
const STAGE_BYTES: usize = 64 << 20;
/// Staging buffers per GPU: one being filled, one being hashed, one spare to absorb jitter.
const STAGES: usize = 3;
/// The GEMM is split into about this many row chunks (fewer when C is small).
const GEMM_CHUNKS: usize = 8;
/// Device memory kept free beyond the buffers (cuBLAS workspace, module, fragmentation).
const DEVICE_SLACK_BYTES: u64 = 256 << 20;

/// One NVIDIA GPU as the CUDA backend sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// CUDA device ordinal (after `CUDA_VISIBLE_DEVICES`).
    pub ordinal: usize,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi -L` prints it: the device key.
    pub uuid: String,
    /// Model name from the driver.
    pub name: String,
    /// Total device memory in bytes.
    pub memory_bytes: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// The virtual architecture the kernels were compiled for (`compute_XY`).
    pub ptx_arch: (u32, u32),
    /// Where this GPU's leaves are hashed, as decided by its start-up check.
    pub leaf_path: LeafPath,
}

/// Wall times of the bare cuBLAS GEMM of one mode and size, without generation or hashing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmTiming {
    /// The arithmetic timed.
    pub mode: Mode,
    /// The product's shape.
    pub shape: Shape,
    /// Timed runs (after one untimed warm-up).
    pub runs: u32,
    /// Fastest run (GPU time between CUDA events around the single `cublasGemmEx`).
    pub best: Duration,
    /// Median run.
    pub median: Duration,
}

impl GemmTiming {
    /// Operations per second of the fastest run (a multiply-add counts as two).
    pub fn ops_per_second(&self) -> f64 {
        self.shape.ops() / self.best.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// The kernels of `generator.cu`, `product.cu` and `leaves.cu`, loaded into one context.
struct Kernels {
    int8: CudaFunction,
    fp16: CudaFunction,
    bf16: CudaFunction,
    fp32: CudaFunction,
    stream_words: CudaFunction,
    positive_zeros: CudaFunction,
    leaf_chunks: CudaFunction,
    leaf_roots: CudaFunction,
}

impl Kernels {
    fn generator(&self, mode: Mode) -> &CudaFunction {
        match mode {
            Mode::Int8 => &self.int8,
            Mode::Fp16 => &self.fp16,
            Mode::Bf16 => &self.bf16,
            Mode::Fp32 => &self.fp32,
        }
    }
}

/// Per-GPU state used by one challenge at a time.
struct GpuState {
    compute: Arc<CudaStream>,
    /// The second stream: hashes finished chunks ([`LeafPath::Device`]) or copies them to the
    /// host ([`LeafPath::Host`]) while `compute` multiplies the next.
    copy: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    /// Pinned staging buffers, allocated on first use.
    stages: Vec<PinnedHostSlice<u8>>,
}

/// One GPU: its identity, context and state.
struct Gpu {
    info: CudaDeviceInfo,
    ctx: Arc<CudaContext>,
    state: Mutex<GpuState>,
}

/// Every visible NVIDIA GPU.
pub struct CudaBackend {
    devices: Vec<DeviceInfo>,
    gpus: Vec<Gpu>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("devices", &self.gpus.iter().map(|g| &g.info).collect::<Vec<_>>())
            .finish()
    }
}

/// Maps a driver error, turning out-of-memory into [`BackendError::OutOfMemory`].
fn driver_error(what: &'static str, bytes: u64) -> impl Fn(DriverError) -> BackendError {
    move |e| {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            BackendError::OutOfMemory { bytes }
        } else {
            BackendError::Device(format!("{what}: {e}"))
        }
    }
}

fn dev(what: &'static str) -> impl Fn(DriverError) -> BackendError {
    driver_error(what, 0)
}

/// `GPU-` and the 16 UUID bytes in nvidia-smi's 8-4-4-4-12 grouping.
pub fn format_gpu_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Whether the CUDA driver library can be loaded. `cudarc` panics on first use of a missing
/// library, so nothing touches the driver before this says yes.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen libcuda's candidate names; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded.
pub fn cublas_available() -> bool {
    // SAFETY: only tries to dlopen libcublas's candidate names; no symbol is called.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// The message of [`BackendError::Unavailable`] when there is no driver.
pub const NO_DRIVER: &str = "no CUDA driver (libcuda.so) found: this machine has no NVIDIA GPU \
     driver installed, or libcuda.so.1 is not on the loader path";

/// The message when cuBLAS is missing.
pub const NO_CUBLAS: &str = "cuBLAS (libcublas.so.12) could not be loaded: install the CUDA 12 \
     libraries (toolkit lib64 on LD_LIBRARY_PATH) or run `eval \"$(scripts/nvrtc-env \
     --with-cublas)\"`, which installs the PyPI wheel nvidia-cublas-cu12";

impl CudaBackend {
    /// Every GPU the driver shows (after `CUDA_VISIBLE_DEVICES`). Fails with
    /// [`BackendError::Unavailable`] — never a panic — when there is no driver, no GPU, no NVRTC
    /// or no cuBLAS; compiles the kernels for each GPU's architecture and runs
    /// [`CudaBackend::self_test`] on every GPU, so a backend that constructs is one whose
    /// commitments verify.
    pub fn new() -> Result<Self, BackendError> {
        Self::with_ordinals(None)
    }

    /// Like [`CudaBackend::new`], restricted to the given CUDA ordinals (all when `None`).
    pub fn with_ordinals(ordinals: Option<&[usize]>) -> Result<Self, BackendError> {
        let backend = Self::open(ordinals)?;
        for gpu in &backend.gpus {
            backend.self_test(&gpu.key()?)?;
        }
        Ok(backend)
    }

    /// Discovery and set-up without the self-test.
    fn open(ordinals: Option<&[usize]>) -> Result<Self, BackendError> {
        if !driver_available() {
            return Err(BackendError::Unavailable(NO_DRIVER.to_owned()));
        }
        let count = CudaContext::device_count().map_err(|e| {
            BackendError::Unavailable(format!("CUDA driver found but cuInit failed: {e}"))
        })?;
        let count = usize::try_from(count).unwrap_or(0);
        if count == 0 {
            return Err(BackendError::Unavailable(
                "CUDA driver found but no GPU is visible (check CUDA_VISIBLE_DEVICES)".to_owned(),
            ));
        }
        if !cublas_available() {
            return Err(BackendError::Unavailable(NO_CUBLAS.to_owned()));
        }
        if !nvrtc::nvrtc_available() {
            return Err(BackendError::Unavailable(nvrtc::NVRTC_HINT.to_owned()));
        }
        let wanted: Vec<usize> = match ordinals {
            Some(list) => list.to_vec(),
            None => (0..count).collect(),
        };
        let mut gpus = Vec::with_capacity(wanted.len());
        for ordinal in wanted {
            if ordinal >= count {
                return Err(BackendError::Unavailable(format!(
                    "CUDA device {ordinal} does not exist ({count} visible)"
                )));
            }
            gpus.push(Gpu::open(ordinal)?);
        }
        let devices = gpus
            .iter()
            .map(|g| {
                Ok(DeviceInfo {
                    key: g.key()?,
                    name: format!(
                        "{} (sm_{}{}, {:.1} GiB)",
                        g.info.name,
                        g.info.compute_capability.0,
                        g.info.compute_capability.1,
                        g.info.memory_bytes as f64 / f64::from(1u32 << 30)
                    ),
                    memory_bytes: g.info.memory_bytes,
                    kind: BackendKind::Cuda,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Self { devices, gpus })
    }

    /// The GPUs with their CUDA details, in the order of [`Backend::devices`].
    pub fn cuda_devices(&self) -> Vec<CudaDeviceInfo> {
        self.gpus.iter().map(|g| g.info.clone()).collect()
    }

    fn gpu(&self, device: &DeviceKey) -> Result<&Gpu, BackendError> {
        self.gpus
            .iter()
            .find(|g| g.info.uuid == device.as_str())
            .ok_or_else(|| BackendError::UnknownDevice(device.clone()))
    }

    /// Times the bare cuBLAS GEMM of a `shape` product in `mode` on `device`: the same
    /// `cublasGemmEx` call, types and layout a challenge uses, as one call over all rows, with no
    /// generation and no hashing in the timed region. The operands are filled by the generator
    /// beforehand (realistic values: tensor-core power and clocks depend on the data), then one
    /// untimed warm-up and `runs` timed runs (at least one). This is the baseline `bench --json`
    /// reports a challenge's overhead against.
    pub fn bare_gemm(
        &self,
        device: &DeviceKey,
        mode: Mode,
        shape: Shape,
        runs: u32,
    ) -> Result<GemmTiming, BackendError> {
        let gpu = self.gpu(device)?;
        shape.validate(MAX_DIM)?;
        let m = shape.m as usize;
        let state = gpu.lock()?;
        let seed = DeviceSeed([0x5a; 32]);
        let operands = gpu.allocate(&state, mode, shape)?;
        gpu.generate(&state, mode, shape, &seed, &operands)?;
        let ops = operands.gemm_operands();
        let start =
            gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev("event"))?;
        let end = gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev("event"))?;
        gemm::gemm_rows(&state.blas, mode, &ops, 0, m)?;
        let mut times = Vec::with_capacity(runs.max(1) as usize);
        for _ in 0..runs.max(1) {
            start.record(&state.compute).map_err(dev("cuEventRecord"))?;
            gemm::gemm_rows(&state.blas, mode, &ops, 0, m)?;
            end.record(&state.compute).map_err(dev("cuEventRecord"))?;
            let ms = start.elapsed_ms(&end).map_err(dev("cuEventElapsedTime"))?;
            times.push(Duration::from_secs_f64(f64::from(ms) / 1e3));
        }
        state.compute.synchronize().map_err(dev("cuStreamSynchronize"))?;
        times.sort();
        Ok(GemmTiming {
            mode,
            shape,
            runs: times.len() as u32,
            best: times[0],
            median: times[times.len() / 2],
        })
    }
}

impl Gpu {
    fn open(ordinal: usize) -> Result<Self, BackendError> {
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot create a CUDA context on device {ordinal}: {e}"
            ))
        })?;
        // SAFETY: called before this context allocates anything. The backend orders its two
        // streams with explicit events (GEMM chunk → copy) and synchronises before buffers are
        // read on the host or freed, which is the discipline cudarc's automatic tracking would
        // otherwise impose per allocation (and would serialise the chunked pipeline).
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(dev("cuDeviceGetName"))?;
        let uuid = ctx.uuid().map_err(dev("cuDeviceGetUuid"))?;
        let uuid = format_gpu_uuid(&uuid.bytes.map(|b| b as u8));
        let memory_bytes = ctx.total_mem().map_err(dev("cuDeviceTotalMem"))? as u64;
        let (major, minor) = ctx.compute_capability().map_err(dev("cuDeviceGetAttribute"))?;
        let compute_capability = (major.max(0) as u32, minor.max(0) as u32);
        let ptx_arch = nvrtc::ptx_arch(compute_capability);
        // Provisional until the start-up check of the device leaves below.
        let leaf_path = LeafPath::Host;
        let info = CudaDeviceInfo {
            ordinal,
            uuid,
            name,
            memory_bytes,
            compute_capability,
            ptx_arch,
            leaf_path,
        };

        let compiled = nvrtc::compiled_for(ptx_arch)?;
        let load_module = |source: &nvrtc::CudaSource| -> Result<Arc<CudaModule>, BackendError> {
            let (_, ptx) = compiled
                .iter()
                .find(|(s, _)| s.file == source.file)
                .ok_or_else(|| BackendError::Device(format!("{} was not compiled", source.file)))?;
            ctx.load_module(nvrtc::as_ptx(ptx)).map_err(|e| {
                if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                    BackendError::Unavailable(format!(
                        "the NVIDIA driver is older than the NVRTC that compiled the kernels \
                         (PTX from NVRTC 12.6 needs driver >= 560): update the driver, or put \
                         an NVRTC no newer than the driver's CUDA version on LD_LIBRARY_PATH \
                         ({e})"
                    ))
                } else {
                    BackendError::Device(format!(
                        "loading the PTX of {} on {}: {e}",
                        source.file, info.name
                    ))
                }
            })
        };
        let generator = load_module(&nvrtc::GENERATOR)?;
        let product = load_module(&nvrtc::PRODUCT)?;
        let leaves = load_module(&nvrtc::LEAVES)?;
        let load = |module: &Arc<CudaModule>, name: &str| {
            module
                .load_function(name)
                .map_err(|e| BackendError::Device(format!("kernel {name} missing: {e}")))
        };
        let kernels = Kernels {
            int8: load(&generator, nvrtc::entry::GENERATE_INT8)?,
            fp16: load(&generator, nvrtc::entry::GENERATE_FP16)?,
            bf16: load(&generator, nvrtc::entry::GENERATE_BF16)?,
            fp32: load(&generator, nvrtc::entry::GENERATE_FP32)?,
            stream_words: load(&generator, nvrtc::entry::STREAM_WORDS)?,
            positive_zeros: load(&product, nvrtc::entry::POSITIVE_ZEROS)?,
            leaf_chunks: load(&leaves, nvrtc::entry::LEAF_CHUNKS)?,
            leaf_roots: load(&leaves, nvrtc::entry::LEAF_ROOTS)?,
        };
        let compute = ctx.new_stream().map_err(dev("cuStreamCreate"))?;
        let copy = ctx.new_stream().map_err(dev("cuStreamCreate"))?;
        let blas = CudaBlas::new(compute.clone())
            .map_err(|e| BackendError::Unavailable(format!("cuBLAS initialisation failed: {e}")))?;
        let state = GpuState { compute, copy, blas, kernels, stages: Vec::new() };
        let mut gpu = Self { info, ctx, state: Mutex::new(state) };
        gpu.info.leaf_path = gpu.choose_leaf_path();
        Ok(gpu)
    }

    fn key(&self) -> Result<DeviceKey, BackendError> {
        DeviceKey::new(self.info.uuid.clone())
            .ok_or_else(|| BackendError::Device(format!("invalid device key {}", self.info.uuid)))
    }

    /// Locks this GPU for one operation and makes its context current on this thread.
    fn lock(&self) -> Result<MutexGuard<'_, GpuState>, BackendError> {
        let guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.ctx.bind_to_thread().map_err(dev("cuCtxSetCurrent"))?;
        Ok(guard)
    }

    /// Allocates A, Bᵀ and C for `shape`, refusing up front what does not fit.
    fn allocate(
        &self,
        state: &GpuState,
        mode: Mode,
        shape: Shape,
    ) -> Result<Operands, BackendError> {
        let (m, k, n) = (shape.m as usize, shape.k as usize, shape.n as usize);
        let (ld_k, ld_n) = (k.next_multiple_of(PAD), n.next_multiple_of(PAD));
        let esz = input_bytes(mode);
        let (a_bytes, b_bytes, c_bytes) =
            (m * ld_k * esz, ld_n * ld_k * esz, m * ld_n * OUTPUT_BYTES);
        // multiply_and_hash_on_device's scratch and leaves, allocated after these.
        let leaf_bytes = match self.info.leaf_path {
            LeafPath::Device => leaf_buffer_words(m, n).iter().sum::<usize>() * 4,
            LeafPath::Host => 0,
        };
        let total = (a_bytes + b_bytes + c_bytes + leaf_bytes) as u64;
        let (free, _) = self.ctx.mem_get_info().map_err(dev("cuMemGetInfo"))?;
        if total + DEVICE_SLACK_BYTES > free as u64 {
            return Err(BackendError::OutOfMemory { bytes: total });
        }
        let oom = |bytes: usize| driver_error("cuMemAlloc", bytes as u64);
        // A and Bᵀ must be zero in their padding (it enters the dot products); without padding
        // the generator writes every element. C is written whole by the GEMM (beta = 0).
        let padded = ld_k != k || ld_n != n;
        let alloc = |bytes: usize| -> Result<CudaSlice<u8>, BackendError> {
            if padded {
                state.compute.alloc_zeros::<u8>(bytes).map_err(oom(bytes))
            } else {
                // SAFETY: every byte is written (generator or GEMM) before anything reads it.
                unsafe { state.compute.alloc::<u8>(bytes) }.map_err(oom(bytes))
            }
        };
        let a = alloc(a_bytes)?;
        let b_t = alloc(b_bytes)?;
        // SAFETY: the GEMM writes all m × ld_n entries of C before any is read.
        let c = unsafe { state.compute.alloc::<u8>(c_bytes) }.map_err(oom(c_bytes))?;
        Ok(Operands { a, b_t, c, m, n, ld_k, ld_n, compute: state.compute.clone() })
    }

    /// Fills A (row-major) and Bᵀ from `seed` in `mode` and waits for it.
    fn generate(
        &self,
        state: &GpuState,
        mode: Mode,
        shape: Shape,
        seed: &DeviceSeed,
        ops: &Operands,
    ) -> Result<(), BackendError> {
        let f = state.kernels.generator(mode);
        let words = key_words(seed);
        let a_key = [words[0], words[1], words[2], words[3]];
        let b_key = [words[4], words[5], words[6], words[7]];
        let a_ptr = ops.ptr(&ops.a);
        let b_ptr = ops.ptr(&ops.b_t);
        // A: rows = m, cols = k, row-major with ld = ld_k.
        launch_generator(
            &state.compute,
            f,
            mode,
            a_key,
            Matrix::A.tag(),
            (shape.m, shape.k),
            ops.ld_k as u64,
            false,
            a_ptr,
        )?;
        // B: rows = k, cols = n, stored transposed (element (i, j) at j·ld_k + i).
        launch_generator(
            &state.compute,
            f,
            mode,
            b_key,
            Matrix::B.tag(),
            (shape.k, shape.n),
            ops.ld_k as u64,
            true,
            b_ptr,
        )?;
        state.compute.synchronize().map_err(dev("generator kernels"))
    }

    /// The first `count` stream words of `row` of the matrix keyed `key` with `tag`, from the
    /// GPU (self-test of the Threefry transcription).
    fn stream_words(
        &self,
        key: [u32; 4],
        tag: u32,
        row: u32,
        count: u32,
    ) -> Result<Vec<u32>, BackendError> {
        let state = self.lock()?;
        let out = state.compute.alloc_zeros::<u32>(count as usize).map_err(dev("cuMemAlloc"))?;
        {
            let (ptr, _sync) = out.device_ptr(&state.compute);
            let cfg = LaunchConfig::from(launch::stream_words(count));
            let mut launch = state.compute.launch_builder(&state.kernels.stream_words);
            launch.arg(&key[0]).arg(&key[1]).arg(&key[2]).arg(&key[3]);
            launch.arg(&tag).arg(&row).arg(&count).arg(&ptr);
            // SAFETY: the arguments match vb_stream_words's parameters in order and type
            // (seven u32, one u32 pointer to `count` words).
            unsafe { launch.launch(cfg) }.map_err(dev("vb_stream_words"))?;
        }
        let words = state.compute.clone_dtoh(&out).map_err(dev("cuMemcpyDtoH"))?;
        state.compute.synchronize().map_err(dev("cuStreamSynchronize"))?;
        Ok(words)
    }

    /// One challenge: generate, chunked GEMM overlapped with copy-out and hashing.
    fn execute(&self, job: &Job) -> Result<Execution, BackendError> {
        let (mode, shape, seed) = (job.mode(), job.shape(), *job.seed());
        let mut state = self.lock()?;
        let mut timings = PhaseTimings::default();

        let started = Instant::now();
        let ops = self.allocate(&state, mode, shape)?;
        self.generate(&state, mode, shape, &seed, &ops)?;
        timings.generate = started.elapsed();

        let leaves = match self.multiply_and_hash(&mut state, mode, &seed, &ops, &mut timings) {
            Ok(leaves) => leaves,
            Err(e) => {
                // Work may still be queued on either stream: let it finish before the buffers
                // (and the staging memory the next challenge reuses) are released.
                let _ = state.copy.synchronize();
                let _ = state.compute.synchronize();
                return Err(e);
            }
        };

        let Operands { a, b_t, c, .. } = ops;
        drop((a, b_t));
        let open = self.ctx.new_stream().map_err(dev("cuStreamCreate"))?;
        let product = CudaProduct {
            c,
            ctx: self.ctx.clone(),
            open,
            rows: shape.m,
            row_bytes: shape.n as usize * OUTPUT_BYTES,
            row_stride: ops_row_stride(shape),
        };
        Ok(Execution { leaves, timings, product: Box::new(product) })
    }

    /// The chunked GEMM and the leaves of every row, on this GPU's [`LeafPath`]. Returns the
    /// leaves; fills `timings.gemm` (GPU time of the GEMM chunks and their canonicalisation) and
    /// `timings.hash` (the wall time the pipeline took beyond that: hashing and copying not
    /// hidden behind the GEMM).
    fn multiply_and_hash(
        &self,
        state: &mut GpuState,
        mode: Mode,
        seed: &DeviceSeed,
        ops: &Operands,
        timings: &mut PhaseTimings,
    ) -> Result<Vec<Leaf>, BackendError> {
        match self.info.leaf_path {
            LeafPath::Device => self.multiply_and_hash_on_device(state, mode, seed, ops, timings),
            LeafPath::Host => self.multiply_and_hash_on_host(state, mode, seed, ops, timings),
        }
    }

    /// Queues GEMM chunk `r0 .. r0 + rows` and, in the float modes, its -0 fix-up on the compute
    /// stream, and returns an event recorded after them.
    fn gemm_chunk(
        &self,
        state: &GpuState,
        mode: Mode,
        gemm_ops: &GemmOperands,
        ld_n: usize,
        r0: usize,
        rows: usize,
    ) -> Result<CudaEvent, BackendError> {
        gemm::gemm_rows(&state.blas, mode, gemm_ops, r0, rows)?;
        if mode != Mode::Int8 {
            // Same stream as cuBLAS: after this chunk's GEMM, before anything reads it.
            let chunk = gemm_ops.c + (r0 * ld_n * OUTPUT_BYTES) as CUdeviceptr;
            launch_positive_zeros(
                &state.compute,
                &state.kernels.positive_zeros,
                chunk,
                rows * ld_n,
            )?;
        }
        let event = self.ctx.new_event(None).map_err(dev("cuEventCreate"))?;
        event.record(&state.compute).map_err(dev("cuEventRecord"))?;
        Ok(event)
    }

    /// [`LeafPath::Device`]: each GEMM chunk is hashed by `leaves.cu` on the second stream as
    /// soon as it (and its fix-up) is done, while the next chunk multiplies; the leaves are
    /// copied to the host once at the end. One CV scratch serves every chunk: the hash stream
    /// runs them one after another.
    fn multiply_and_hash_on_device(
        &self,
        state: &GpuState,
        mode: Mode,
        seed: &DeviceSeed,
        ops: &Operands,
        timings: &mut PhaseTimings,
    ) -> Result<Vec<Leaf>, BackendError> {
        let (m, n, ld_n) = (ops.m, ops.n, ops.ld_n);
        let gemm_rows = m.div_ceil(GEMM_CHUNKS);
        let seed_words = key_words(seed);
        let [scratch_words, leaf_words] = leaf_buffer_words(m, n);
        let hash = &state.copy;
        let oom = |words: usize| driver_error("cuMemAlloc", (words * 4) as u64);
        // SAFETY: vb_leaf_chunks writes every CV of a batch before vb_leaf_roots (later on the
        // same stream) reads it; vb_leaf_roots writes all m leaves before they are copied.
        let scratch = unsafe { hash.alloc::<u32>(scratch_words) }.map_err(oom(scratch_words))?;
        let leaves = unsafe { hash.alloc::<u32>(leaf_words) }.map_err(oom(leaf_words))?;
        // Event tracking is off: these only read the addresses. Both buffers are freed on the
        // hash stream (stream-ordered) after everything queued here.
        let (scratch_ptr, _) = scratch.device_ptr(hash);
        let (leaves_ptr, _) = leaves.device_ptr(hash);

        let started = Instant::now();
        let gemm_ops = ops.gemm_operands();
        let timing_event =
            || self.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev("event"));
        let (gemm_start, gemm_end) = (timing_event()?, timing_event()?);
        gemm_start.record(&state.compute).map_err(dev("cuEventRecord"))?;
        let mut r0 = 0;
        while r0 < m {
            let rows = gemm_rows.min(m - r0);
            // The wait captures the event's state now; the event itself may then be dropped.
            let done = self.gemm_chunk(state, mode, &gemm_ops, ld_n, r0, rows)?;
            hash.wait(&done).map_err(dev("cuStreamWaitEvent"))?;
            let batch = LeafBatch {
                c: gemm_ops.c + (r0 * ld_n * OUTPUT_BYTES) as CUdeviceptr,
                stride: ld_n as u64,
                n: n as u32,
                rows: rows as u32,
                first_row: r0 as u32,
                scratch: scratch_ptr,
                out: leaves_ptr + (r0 * launch::CV_WORDS * 4) as CUdeviceptr,
            };
            launch_leaves(hash, &state.kernels, &batch, &seed_words)?;
            r0 += rows;
        }
        gemm_end.record(&state.compute).map_err(dev("cuEventRecord"))?;
        // Synchronises the hash stream: every chunk hashed, the leaves on the host.
        let words = hash.clone_dtoh(&leaves).map_err(dev("cuMemcpyDtoH"))?;
        hash.synchronize().map_err(dev("cuStreamSynchronize"))?;
        let pipeline = started.elapsed();
        let gemm_ms = gemm_start.elapsed_ms(&gemm_end).map_err(dev("cuEventElapsedTime"))?;
        timings.gemm = Duration::from_secs_f64(f64::from(gemm_ms.max(0.0)) / 1e3);
        timings.hash = pipeline.saturating_sub(timings.gemm);
        Ok(leaves_from_words(&words))
    }

    /// [`LeafPath::Host`]: each GEMM chunk's rows are copied to pinned memory on the copy stream
    /// as soon as the chunk is done and hashed on the host while later chunks compute.
    fn multiply_and_hash_on_host(
        &self,
        state: &mut GpuState,
        mode: Mode,
        seed: &DeviceSeed,
        ops: &Operands,
        timings: &mut PhaseTimings,
    ) -> Result<Vec<Leaf>, BackendError> {
        let (m, n, ld_n) = (ops.m, ops.n, ops.ld_n);
        let row_stride = ld_n * OUTPUT_BYTES;
        let row_bytes = n * OUTPUT_BYTES;
        // Copy blocks: whole rows filling one staging buffer. GEMM chunks: whole copy blocks.
        let copy_rows = (STAGE_BYTES / row_stride).clamp(1, m);
        let gemm_rows = m.div_ceil(GEMM_CHUNKS).next_multiple_of(copy_rows).min(m);
        let blocks = m.div_ceil(copy_rows);
        while state.stages.len() < STAGES {
            // SAFETY: plain page-locked host memory (flags 0: cached, so host reads are fast);
            // every byte the host reads was first written by a completed device-to-host copy.
            let stage = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(STAGE_BYTES, 0) }
                .map_err(driver_error("cuMemHostAlloc", STAGE_BYTES as u64))?;
            state.stages.push(stage);
        }

        let gemm_started = Instant::now();
        let gemm_ops = ops.gemm_operands();
        let timing_event =
            || self.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(dev("event"));
        let (gemm_start, gemm_end) = (timing_event()?, timing_event()?);
        gemm_start.record(&state.compute).map_err(dev("cuEventRecord"))?;
        let mut chunk_done = Vec::with_capacity(m.div_ceil(gemm_rows));
        let mut r0 = 0;
        while r0 < m {
            let rows = gemm_rows.min(m - r0);
            chunk_done.push(self.gemm_chunk(state, mode, &gemm_ops, ld_n, r0, rows)?);
            r0 += rows;
        }
        gemm_end.record(&state.compute).map_err(dev("cuEventRecord"))?;

        let copy_done = (0..STAGES)
            .map(|_| {
                self.ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_BLOCKING_SYNC))
                    .map_err(dev("cuEventCreate"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let c_base = ops.ptr(&ops.c);
        let GpuState { copy, stages, .. } = &mut *state;
        let issue =
            |block: usize, stages: &mut [PinnedHostSlice<u8>]| -> Result<(), BackendError> {
                let first = block * copy_rows;
                let rows = copy_rows.min(m - first);
                let last_chunk = (first + rows - 1) / gemm_rows;
                copy.wait(&chunk_done[last_chunk]).map_err(dev("cuStreamWaitEvent"))?;
                let slot = block % STAGES;
                let dst = stages[slot].as_mut_slice().map_err(dev("pinned buffer"))?;
                let src = c_base + (first * row_stride) as CUdeviceptr;
                // SAFETY: `src` addresses rows first .. first + rows of C (inside its allocation);
                // `dst` is a pinned buffer of at least that many bytes that nothing reads until
                // copy_done[slot] has completed; C outlives the copy (it is synchronised below).
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(
                        &mut dst[..rows * row_stride],
                        src,
                        copy.cu_stream(),
                    )
                }
                .map_err(dev("cuMemcpyDtoHAsync"))?;
                copy_done[slot].record(copy).map_err(dev("cuEventRecord"))
            };

        let mut leaves: Vec<Leaf> = Vec::with_capacity(m);
        for block in 0..blocks.min(STAGES) {
            issue(block, stages)?;
        }
        for block in 0..blocks {
            let slot = block % STAGES;
            copy_done[slot].synchronize().map_err(dev("D2H copy"))?;
            let first = block * copy_rows;
            let rows = copy_rows.min(m - first);
            let data = &stages[slot].as_slice().map_err(dev("pinned buffer"))?[..rows * row_stride];
            leaves.par_extend(
                data.par_chunks_exact(row_stride)
                    .enumerate()
                    .map(|(i, row)| leaf_hash(seed, (first + i) as u32, &row[..row_bytes])),
            );
            if block + STAGES < blocks {
                issue(block + STAGES, stages)?;
            }
        }
        let pipeline = gemm_started.elapsed();
        let gemm_ms = gemm_start.elapsed_ms(&gemm_end).map_err(dev("cuEventElapsedTime"))?;
        timings.gemm = Duration::from_secs_f64(f64::from(gemm_ms.max(0.0)) / 1e3);
        timings.hash = pipeline.saturating_sub(timings.gemm);
        copy.synchronize().map_err(dev("cuStreamSynchronize"))?;
        Ok(leaves)
    }
}

/// Bytes between consecutive rows of C on the device (n padded to [`PAD`]).
fn ops_row_stride(shape: Shape) -> usize {
    (shape.n as usize).next_multiple_of(PAD) * OUTPUT_BYTES
}

/// The eight little-endian u32 words of a device seed (SPEC §3.2).
pub fn key_words(seed: &DeviceSeed) -> [u32; 8] {
    let b = seed.as_bytes();
    std::array::from_fn(|i| {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

/// Launches one generator kernel over a `rows × cols` matrix.
#[allow(clippy::too_many_arguments)]
fn launch_generator(
    stream: &CudaStream,
    f: &CudaFunction,
    mode: Mode,
    key: [u32; 4],
    tag: u32,
    (rows, cols): (u32, u32),
    ld: u64,
    transposed: bool,
    out: CUdeviceptr,
) -> Result<(), BackendError> {
    let cfg = LaunchConfig::from(launch::generator(mode, rows, cols, transposed));
    let transposed = u32::from(transposed);
    let mut launch = stream.launch_builder(f);
    launch.arg(&key[0]).arg(&key[1]).arg(&key[2]).arg(&key[3]).arg(&tag);
    launch.arg(&rows).arg(&cols).arg(&ld).arg(&transposed).arg(&out);
    // SAFETY: the arguments match the vb_generate_* signature (five u32, two u32, u64, u32, a
    // pointer); `out` addresses a buffer holding every (i, j) < (rows, cols) at the given ld.
    unsafe { launch.launch(cfg) }.map_err(dev("generator launch"))?;
    Ok(())
}

// `vb_positive_zeros` walks C as uint4s: whole padded rows are a multiple of four words.
const _: () = assert!(PAD.is_multiple_of(4));

/// Launches `vb_positive_zeros` over `words` words of C from `c`: whole padded rows of a float
/// product, so `words` is a multiple of four and `c` 16-byte aligned (row strides are multiples
/// of [`PAD`] words from a 256-byte-aligned allocation).
fn launch_positive_zeros(
    stream: &CudaStream,
    f: &CudaFunction,
    c: CUdeviceptr,
    words: usize,
) -> Result<(), BackendError> {
    if !words.is_multiple_of(4) || !c.is_multiple_of(16) {
        return Err(BackendError::Device(format!(
            "vb_positive_zeros needs whole uint4s: {words} words at {c:#x}"
        )));
    }
    let quads = (words / 4) as u64;
    let cfg = LaunchConfig::from(launch::positive_zeros(quads));
    let mut launch = stream.launch_builder(f);
    launch.arg(&c).arg(&quads);
    // SAFETY: the arguments match vb_positive_zeros(uint4*, u64); `c` addresses `quads` uint4s
    // inside C (whole rows of the chunk just computed), 16-byte aligned (checked above).
    unsafe { launch.launch(cfg) }.map_err(dev("vb_positive_zeros launch"))?;
    Ok(())
}

/// Words of the device-leaf buffers of an `m`-row product of `n` columns: the chunk-CV scratch
/// of one GEMM chunk (at least one word, so it can always be allocated) and the m leaves.
fn leaf_buffer_words(m: usize, n: usize) -> [usize; 2] {
    let gemm_rows = m.div_ceil(GEMM_CHUNKS) as u32;
    [launch::leaf_scratch_words(gemm_rows, n as u32).max(1), m * launch::CV_WORDS]
}

/// Where one batch of rows of C is read and its leaves written (see `kernels/cuda/leaves.cu`).
#[derive(Clone, Copy, Debug)]
struct LeafBatch {
    /// Entry 0 of the batch's first row.
    c: CUdeviceptr,
    /// Words between rows.
    stride: u64,
    /// Entries per row.
    n: u32,
    /// Rows in the batch.
    rows: u32,
    /// Product index of the first row.
    first_row: u32,
    /// [`launch::leaf_scratch_words`]`(rows, n)` words (unused for single-chunk rows).
    scratch: CUdeviceptr,
    /// `rows` × 8 words of leaves.
    out: CUdeviceptr,
}

/// Launches `vb_leaf_chunks` (when rows span several BLAKE3 chunks) and `vb_leaf_roots` over one
/// batch, in that order on `stream`.
fn launch_leaves(
    stream: &CudaStream,
    kernels: &Kernels,
    batch: &LeafBatch,
    seed: &[u32; 8],
) -> Result<(), BackendError> {
    let launches = [
        (launch::leaf_chunks(batch.rows, batch.n), &kernels.leaf_chunks, "vb_leaf_chunks"),
        (Some(launch::leaf_roots(batch.rows)), &kernels.leaf_roots, "vb_leaf_roots"),
    ];
    for (geometry, f, name) in launches {
        let Some(geometry) = geometry else { continue };
        let mut launch = stream.launch_builder(f);
        launch.arg(&batch.c).arg(&batch.stride).arg(&batch.n).arg(&batch.rows);
        launch.arg(&batch.first_row);
        for word in seed {
            launch.arg(word);
        }
        launch.arg(&batch.scratch).arg(&batch.out);
        // SAFETY: the arguments match vb_leaf_chunks / vb_leaf_roots (const u32*, u64, three
        // u32, eight u32, two u32*) in order and type; the caller's batch addresses `rows` rows
        // of `n` words `stride` apart inside C, a scratch of leaf_scratch_words(rows, n) words
        // and rows × 8 words of output, all alive until the stream has run the kernels.
        unsafe { launch.launch(LaunchConfig::from(geometry)) }
            .map_err(|e| BackendError::Device(format!("{name} launch: {e}")))?;
    }
    Ok(())
}

/// Leaf words as copied from the device, 8 little-endian words per leaf.
fn leaves_from_words(words: &[u32]) -> Vec<Leaf> {
    words
        .chunks_exact(launch::CV_WORDS)
        .map(|cv| {
            let mut leaf = [0u8; 32];
            for (bytes, word) in leaf.chunks_exact_mut(4).zip(cv) {
                bytes.copy_from_slice(&word.to_le_bytes());
            }
            Leaf(leaf)
        })
        .collect()
}

/// The device buffers of one product.
struct Operands {
    a: CudaSlice<u8>,
    b_t: CudaSlice<u8>,
    c: CudaSlice<u8>,
    m: usize,
    n: usize,
    ld_k: usize,
    ld_n: usize,
    compute: Arc<CudaStream>,
}

impl Operands {
    fn ptr(&self, slice: &CudaSlice<u8>) -> CUdeviceptr {
        // Event tracking is off: this only reads the address.
        let (ptr, _sync) = slice.device_ptr(&self.compute);
        ptr
    }

    fn gemm_operands(&self) -> GemmOperands {
        GemmOperands {
            a: self.ptr(&self.a),
            b_t: self.ptr(&self.b_t),
            c: self.ptr(&self.c),
            ld_k: self.ld_k,
            ld_n: self.ld_n,
        }
    }
}

/// A product kept in device memory for openings.
struct CudaProduct {
    c: CudaSlice<u8>,
    ctx: Arc<CudaContext>,
    open: Arc<CudaStream>,
    rows: u32,
    row_bytes: usize,
    row_stride: usize,
}

impl Drop for CudaProduct {
    fn drop(&mut self) {
        // C is freed (stream-ordered) when the fields drop: make its context current on
        // whichever thread drops the product.
        let _ = self.ctx.bind_to_thread();
    }
}

impl RowSource for CudaProduct {
    fn row_bytes(&self, row: u32) -> Result<Vec<u8>, BackendError> {
        if row >= self.rows {
            return Err(BackendError::RowOutOfRange { row, rows: self.rows });
        }
        self.ctx.bind_to_thread().map_err(dev("cuCtxSetCurrent"))?;
        let at = row as usize * self.row_stride;
        let view = self.c.slice(at..at + self.row_bytes);
        let bytes = self.open.clone_dtoh(&view).map_err(dev("cuMemcpyDtoH"))?;
        self.open.synchronize().map_err(dev("cuStreamSynchronize"))?;
        Ok(bytes)
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError> {
        self.gpu(device)?.execute(job)
    }
}
