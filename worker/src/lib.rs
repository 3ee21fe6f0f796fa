//! The veribench worker: computes a coordinator's challenges on this machine's devices.
//!
//! - [`daemon`]: `veribench-worker run` — connect, register with a delegated key, verify and
//!   compute signed challenges, commit, open sampled rows, reconnect; and the `wallet` commands.
//! - [`bench`]: one challenge end to end on a backend, checked by the protocol's verifier.
//! - [`select`]: the `--backend auto|cpu|cuda|wgpu` choice.

pub mod bench;
pub mod daemon;
pub mod market;
pub mod select;
