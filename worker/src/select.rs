//! Choosing a compute backend from the `--backend` flag.
//!
//! The GPU families are cargo features (`cuda`, `wgpu`, both default): asking for one this
//! build lacks is [`BackendError::NotCompiled`], and `auto` skips it.

use std::fmt;

use veribench_kernels::{Backend, BackendError, BackendKind, CpuBackend};
#[cfg(feature = "wgpu")]
use veribench_kernels::{WgpuBackend, WgpuOptions};

/// The `--backend` flag: a device family, or `auto` for the fastest one present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// CUDA if a usable NVIDIA GPU is present, then wgpu on a real (not software) GPU, then the CPU.
    #[default]
    Auto,
    /// Host CPU cores.
    Cpu,
    /// NVIDIA GPUs (CUDA driver, cuBLAS, NVRTC).
    Cuda,
    /// Any GPU through wgpu (Vulkan, Metal, DX12); a software adapter only when nothing else exists.
    Wgpu,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => BackendKind::Cpu.as_str(),
            BackendChoice::Cuda => BackendKind::Cuda.as_str(),
            BackendChoice::Wgpu => BackendKind::Wgpu.as_str(),
        };
        f.write_str(name)
    }
}

/// The wgpu backend as `--backend wgpu` opens it: real GPUs first, a software adapter (lavapipe,
/// WARP) as a last resort, with a warning, so the backend can be exercised without a GPU.
#[cfg(feature = "wgpu")]
pub fn open_wgpu_explicit() -> Result<WgpuBackend, BackendError> {
    let backend =
        WgpuBackend::new(WgpuOptions { allow_cpu_adapter: true, ..WgpuOptions::default() })?;
    if backend.is_software() {
        tracing::warn!(
            "wgpu found only a software adapter: results are real, speeds are not a GPU's"
        );
    }
    Ok(backend)
}

/// The CUDA backend, or why not.
#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(veribench_kernels::CudaBackend::new()?))
}

/// This build has no CUDA backend.
#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::NotCompiled(BackendKind::Cuda))
}

/// The wgpu backend, or why not: with `explicit`, as [`open_wgpu_explicit`]; otherwise real
/// GPUs only (what `auto` accepts).
#[cfg(feature = "wgpu")]
fn open_wgpu(explicit: bool) -> Result<Box<dyn Backend>, BackendError> {
    Ok(if explicit {
        Box::new(open_wgpu_explicit()?)
    } else {
        Box::new(WgpuBackend::new(WgpuOptions::default())?)
    })
}

/// This build has no wgpu backend.
#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_explicit: bool) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::NotCompiled(BackendKind::Wgpu))
}

/// Builds the backend the flag asks for. An explicit choice that cannot run (or is not compiled
/// into this build) is an error with the reason; `auto` logs why it skipped each GPU family and
/// falls back to the CPU.
pub fn open_backend(choice: BackendChoice) -> Result<Box<dyn Backend>, BackendError> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new())),
        BackendChoice::Cuda => open_cuda(),
        BackendChoice::Wgpu => open_wgpu(true),
        BackendChoice::Auto => {
            match open_cuda() {
                Ok(cuda) => {
                    tracing::info!(devices = cuda.devices().len(), "using the CUDA backend");
                    return Ok(cuda);
                }
                Err(e) => tracing::info!(reason = %e, "skipping the CUDA backend"),
            }
            match open_wgpu(false) {
                Ok(wgpu) => {
                    tracing::info!(devices = wgpu.devices().len(), "using the wgpu backend");
                    return Ok(wgpu);
                }
                Err(e) => {
                    tracing::info!(reason = %e, "skipping the wgpu backend (auto uses real GPUs only)")
                }
            }
            tracing::info!("using the CPU backend");
            Ok(Box::new(CpuBackend::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_driver_is_a_clear_error_and_auto_falls_back() {
        if veribench_kernels::cuda::driver_available() {
            return; // a real NVIDIA box: nothing to check here
        }
        let err = open_backend(BackendChoice::Cuda).err().expect("no driver, no CUDA backend");
        assert!(err.to_string().contains("libcuda"), "{err}");
        let auto = open_backend(BackendChoice::Auto).expect("auto always finds a backend");
        assert_ne!(auto.kind(), BackendKind::Cuda);
    }

    /// A backend this build lacks is a typed refusal naming it, and `auto` still finds one.
    #[test]
    fn a_backend_not_compiled_in_is_a_typed_error() {
        for (choice, kind) in
            [(BackendChoice::Cuda, BackendKind::Cuda), (BackendChoice::Wgpu, BackendKind::Wgpu)]
        {
            if kind.is_compiled() {
                continue;
            }
            match open_backend(choice) {
                Err(BackendError::NotCompiled(k)) => assert_eq!(k, kind),
                Err(other) => panic!("{choice}: expected NotCompiled, got {other}"),
                Ok(b) => panic!("{choice}: opened a {} backend that is not compiled in", b.kind()),
            }
            let auto = open_backend(BackendChoice::Auto).expect("auto always finds a backend");
            assert_ne!(auto.kind(), kind);
        }
        assert!(BackendKind::Cpu.is_compiled());
        let cpu = open_backend(BackendChoice::Cpu).expect("the CPU backend is always built");
        assert_eq!(cpu.kind(), BackendKind::Cpu);
    }
}
