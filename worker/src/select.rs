//! Choosing a compute backend from the `--backend` flag.

use std::fmt;

use veribench_kernels::{
    Backend, BackendError, BackendKind, CpuBackend, CudaBackend, WgpuBackend, WgpuOptions,
};

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

/// Builds the backend the flag asks for. An explicit choice that cannot run is an error with the
/// reason; `auto` logs why it skipped each GPU family and falls back to the CPU.
pub fn open_backend(choice: BackendChoice) -> Result<Box<dyn Backend>, BackendError> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new())),
        BackendChoice::Cuda => Ok(Box::new(CudaBackend::new()?)),
        BackendChoice::Wgpu => Ok(Box::new(open_wgpu_explicit()?)),
        BackendChoice::Auto => {
            match CudaBackend::new() {
                Ok(cuda) => {
                    tracing::info!(devices = cuda.devices().len(), "using the CUDA backend");
                    return Ok(Box::new(cuda));
                }
                Err(e) => tracing::info!(reason = %e, "skipping the CUDA backend"),
            }
            match WgpuBackend::new(WgpuOptions::default()) {
                Ok(wgpu) => {
                    tracing::info!(devices = wgpu.devices().len(), "using the wgpu backend");
                    return Ok(Box::new(wgpu));
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
}
