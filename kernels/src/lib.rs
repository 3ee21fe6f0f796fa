//! Compute backends for veribench challenges.
//!
//! One [`Backend`] trait, implemented per device family: [`cpu::CpuBackend`] today (rayon,
//! AVX-512 fp32 GEMM through the `gemm` crate, VNNI int8 GEMM of our own). A backend generates a
//! challenge's matrices from its seed, multiplies them, hashes each product row to its Merkle
//! leaf and keeps the product so sampled rows can be opened later; [`prover`] turns that into a
//! commitment and openings, identically for every backend.

pub mod backend;
pub mod cpu;
pub mod cuda;
mod delayed;
mod host;
pub mod prover;
pub mod wgpu;

pub use crate::wgpu::{Fault, TileConfig, WgpuBackend, WgpuOptions};
pub use backend::{
    Backend, BackendError, BackendKind, DeviceInfo, Execution, LeafPath, PhaseTimings, RowSource,
};
pub use cpu::CpuBackend;
pub use cuda::CudaBackend;
pub use delayed::Delayed;
pub use prover::{CommittedRun, run_challenge};
