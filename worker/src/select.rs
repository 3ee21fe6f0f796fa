//! Choosing a compute backend from the `--backend` flag.

use std::fmt;

use veribench_kernels::{Backend, BackendError, BackendKind, CpuBackend};

/// The `--backend` flag: a device family, or `auto` for the fastest one present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// CUDA if a usable NVIDIA GPU is present, then wgpu on a real GPU, then the CPU.
    #[default]
    Auto,
    /// Host CPU cores.
    Cpu,
    /// NVIDIA GPUs (CUDA driver, cuBLAS, NVRTC).
    Cuda,
    /// Any GPU through wgpu (Vulkan, Metal, DX12).
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

/// Builds the backend the flag asks for. An explicit GPU choice that cannot run is an error;
/// `auto` logs why it skipped each GPU family and falls back to the CPU.
pub fn open_backend(choice: BackendChoice) -> Result<Box<dyn Backend>, BackendError> {
    match choice {
        BackendChoice::Cpu => Ok(Box::new(CpuBackend::new())),
        BackendChoice::Cuda | BackendChoice::Wgpu => Err(gpu_unavailable(choice)),
        BackendChoice::Auto => {
            for gpu in [BackendChoice::Cuda, BackendChoice::Wgpu] {
                tracing::info!(backend = %gpu, reason = %gpu_unavailable(gpu), "skipping backend");
            }
            tracing::info!("using the CPU backend");
            Ok(Box::new(CpuBackend::new()))
        }
    }
}

/// The GPU backends are not part of this build yet.
fn gpu_unavailable(choice: BackendChoice) -> BackendError {
    BackendError::Unavailable(format!(
        "the {choice} backend is not implemented in this build yet; use --backend cpu"
    ))
}
