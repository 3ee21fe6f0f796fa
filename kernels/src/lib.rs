//! Compute backends for veribench challenges.
//!
//! One [`Backend`] trait, implemented per device family: [`cpu::CpuBackend`] today (rayon,
//! AVX-512 fp32 GEMM through the `gemm` crate, VNNI int8 GEMM of our own). A backend generates a
//! challenge's matrices from its seed, multiplies them, hashes each product row to its Merkle
//! leaf and keeps the product so sampled rows can be opened later; [`prover`] turns that into a
//! commitment and openings, identically for every backend.
//!
//! The GPU backends are cargo features, both on by default: `cuda` ([`cuda::CudaBackend`],
//! cudarc) and `wgpu` ([`wgpu::WgpuBackend`]). The CPU backend is always built (the `cpu`
//! feature only names it), so `--no-default-features --features cpu` builds neither GPU stack;
//! [`BackendKind::is_compiled`] tells a caller which families this build has.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod delayed;
mod host;
pub mod prover;
#[cfg(feature = "wgpu")]
pub mod wgpu;

#[cfg(feature = "wgpu")]
pub use crate::wgpu::{Fault, TileConfig, WgpuBackend, WgpuOptions};
pub use backend::{
    Backend, BackendError, BackendKind, DeviceInfo, Execution, Job, LeafPath, PhaseTimings,
    RowSource,
};
pub use cpu::CpuBackend;
#[cfg(feature = "cuda")]
pub use cuda::CudaBackend;
pub use delayed::Delayed;
pub use prover::{CommittedRun, run_challenge};
