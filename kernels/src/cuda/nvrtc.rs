//! Run-time compilation of the `.cu` sources with NVRTC.
//!
//! The sources are embedded with `include_str!`, so a worker binary carries them; NVRTC turns
//! them into PTX for the device's architecture when the backend starts, and the driver
//! JIT-compiles that PTX to the exact GPU. No CUDA toolkit (nvcc) is needed anywhere: NVRTC is a
//! single shared library (`libnvrtc.so.12`), which `scripts/nvrtc-env` installs from PyPI.
//!
//! PTX is cached in memory per architecture (compiling takes a few hundred milliseconds; a
//! multi-GPU box with one model compiles once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};

use crate::backend::BackendError;

/// `kernels/cuda/common.cuh`: Threefry-4x32-13 and the element mapping (SPEC §3), and the
/// canonical zero of float product entries.
pub const COMMON_CUH: &str = include_str!("../../cuda/common.cuh");

/// `kernels/cuda/blake3.cuh`: BLAKE3 in derive-key mode over a leaf's message (row ‖ seed ‖
/// index), for `leaves.cu`.
pub const BLAKE3_CUH: &str = include_str!("../../cuda/blake3.cuh");

/// The headers [`expand`] splices in place of their `#include` lines.
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", COMMON_CUH), ("blake3.cuh", BLAKE3_CUH)];

/// One `.cu` file and the `extern "C"` kernels it must define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaSource {
    /// File name under `kernels/cuda/`.
    pub file: &'static str,
    /// Its text as written (before `common.cuh` is spliced in).
    pub text: &'static str,
    /// Kernel entry points (`.entry` names in the PTX).
    pub entries: &'static [&'static str],
}

/// Entry points of `generator.cu`.
pub mod entry {
    /// int8 A/B fill.
    pub const GENERATE_INT8: &str = "vb_generate_int8";
    /// fp16 A/B fill.
    pub const GENERATE_FP16: &str = "vb_generate_fp16";
    /// bf16 A/B fill.
    pub const GENERATE_BF16: &str = "vb_generate_bf16";
    /// fp32 A/B fill.
    pub const GENERATE_FP32: &str = "vb_generate_fp32";
    /// Raw stream words of one row (self-test against the protocol's generator).
    pub const STREAM_WORDS: &str = "vb_stream_words";
    /// Rewrites the -0 words of a float-mode chunk of C to +0 (`product.cu`).
    pub const POSITIVE_ZEROS: &str = "vb_positive_zeros";
    /// Chaining values of every chunk of rows' leaf messages (`leaves.cu`).
    pub const LEAF_CHUNKS: &str = "vb_leaf_chunks";
    /// Rows' leaves from their chunk chaining values (`leaves.cu`).
    pub const LEAF_ROOTS: &str = "vb_leaf_roots";
}

/// Threads per block the generator kernels are written for (`VB_GEN_THREADS`).
pub const GENERATOR_THREADS: u32 = 256;

/// `kernels/cuda/generator.cu`.
pub const GENERATOR: CudaSource = CudaSource {
    file: "generator.cu",
    text: include_str!("../../cuda/generator.cu"),
    entries: &[
        entry::GENERATE_INT8,
        entry::GENERATE_FP16,
        entry::GENERATE_BF16,
        entry::GENERATE_FP32,
        entry::STREAM_WORDS,
    ],
};

/// Threads per block `vb_positive_zeros` is written for (`VB_PRODUCT_THREADS`).
pub const PRODUCT_THREADS: u32 = 256;

/// `kernels/cuda/product.cu`: fix-ups of C after the GEMM.
pub const PRODUCT: CudaSource = CudaSource {
    file: "product.cu",
    text: include_str!("../../cuda/product.cu"),
    entries: &[entry::POSITIVE_ZEROS],
};

/// Threads per block the leaf kernels are written for (`VB_LEAF_THREADS`).
pub const LEAF_THREADS: u32 = 256;

/// `kernels/cuda/leaves.cu`: row leaves (BLAKE3, `blake3.cuh`) of a chunk of C.
pub const LEAVES: CudaSource = CudaSource {
    file: "leaves.cu",
    text: include_str!("../../cuda/leaves.cu"),
    entries: &[entry::LEAF_CHUNKS, entry::LEAF_ROOTS],
};

/// Every `.cu` file of the backend.
pub const SOURCES: &[CudaSource] = &[GENERATOR, PRODUCT, LEAVES];

/// The newest virtual architecture NVRTC 12.6 emits PTX for. Newer GPUs (Blackwell, sm_100 and
/// sm_120) run `compute_90` PTX through the driver's JIT; the generator uses nothing newer.
pub const MAX_PTX_ARCH: (u32, u32) = (9, 0);

/// What to tell an operator when NVRTC cannot be loaded.
pub const NVRTC_HINT: &str = "NVRTC (libnvrtc.so.12) could not be loaded: run \
     `eval \"$(scripts/nvrtc-env)\"` from the repository (it installs the PyPI wheel \
     nvidia-cuda-nvrtc-cu12 into target/nvrtc-venv and puts it on LD_LIBRARY_PATH), or add a \
     CUDA 12 toolkit's lib64 to LD_LIBRARY_PATH";

/// Whether libnvrtc can be loaded. cudarc panics on first use of a missing library, so every
/// NVRTC call is guarded by this.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The virtual architecture PTX is generated for on a device of compute capability `cc`.
pub fn ptx_arch(cc: (u32, u32)) -> (u32, u32) {
    if cc > MAX_PTX_ARCH { MAX_PTX_ARCH } else { cc }
}

/// `source.text` with each `#include "<header>"` line of [`HEADERS`] replaced by the header's
/// text, so NVRTC needs no include path (the sources live inside the binary, not on disk).
pub fn expand(source: &CudaSource) -> String {
    let mut out = String::with_capacity(
        source.text.len() + HEADERS.iter().map(|(_, text)| text.len()).sum::<usize>(),
    );
    for (number, line) in (1..).zip(source.text.lines()) {
        let header = HEADERS.iter().find(|(name, _)| line.trim() == format!("#include \"{name}\""));
        if let Some((name, text)) = header {
            out.push_str(&format!("#line 1 \"{name}\"\n{text}\n"));
            out.push_str(&format!("#line {} \"{}\"\n", number + 1, source.file));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Compiles one source to PTX text for virtual architecture `compute_<major><minor>`.
///
/// Floating-point options are pinned to IEEE behaviour (no flush-to-zero, no fused or
/// approximate arithmetic) even though the generator only does exact integer → float
/// conversions and power-of-two scaling: nothing about the matrices may depend on flags.
pub fn compile_ptx(source: &CudaSource, arch: (u32, u32)) -> Result<String, BackendError> {
    if !nvrtc_available() {
        return Err(BackendError::Unavailable(NVRTC_HINT.to_owned()));
    }
    let options = CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        options: vec![
            format!("--gpu-architecture=compute_{}{}", arch.0, arch.1),
            "--std=c++17".to_owned(),
            "--device-as-default-execution-space".to_owned(),
        ],
        name: Some(source.file.to_owned()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(expand(source), options).map_err(|e| {
        BackendError::Device(format!(
            "NVRTC failed to compile {} for compute_{}{}: {e}",
            source.file, arch.0, arch.1
        ))
    })?;
    Ok(ptx.to_src())
}

/// Compiled sources of one architecture, in [`SOURCES`] order.
pub type CompiledSet = Vec<(CudaSource, String)>;

/// Every source compiled for `arch`, once per process (later calls share the first result).
pub fn compiled_for(arch: (u32, u32)) -> Result<Arc<CompiledSet>, BackendError> {
    type Cache = Mutex<HashMap<(u32, u32), Arc<CompiledSet>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(set) = map.get(&arch) {
        return Ok(set.clone());
    }
    let set = SOURCES
        .iter()
        .map(|s| Ok((*s, compile_ptx(s, arch)?)))
        .collect::<Result<CompiledSet, BackendError>>()?;
    let set = Arc::new(set);
    map.insert(arch, set.clone());
    Ok(set)
}

/// PTX text as cudarc's loader wants it.
pub(crate) fn as_ptx(text: &str) -> Ptx {
    Ptx::from_src(text)
}

/// The `.entry` names a PTX module defines (for tests and diagnostics).
pub fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| {
            let rest = line.trim_start();
            let rest = rest.strip_prefix(".visible").unwrap_or(rest).trim_start();
            let rest = rest.strip_prefix(".entry")?;
            let name = rest.trim_start().split(['(', ' ', '\t']).next()?;
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}
