//! Validators agree on each epoch's weights.
//!
//! Every coordinator scores the miners from what it measured itself and signs that score
//! vector; the validators then run Tendermint, as implemented by Malachite's core
//! (`arc-malachitebft-core-consensus`), on a value made of the signed vectors of at least 2/3
//! of the stake and their stake-weighted median. A value is only voted for when every vector in
//! it verifies and the median recomputes bit for bit, so the agreed weight of every uid lies
//! between honest validators' own weights whatever a Byzantine third sends (see `README.md`).
//!
//! Malachite's core is pure: [`node`] owns its state in one task and answers the effects it
//! yields with our own pieces: the gRPC [`transport`], tokio timers, the write-ahead log
//! ([`wal`]) and sr25519 [`signing`] with the validators' hotkeys.

pub mod codec;
pub mod context;
pub mod error;
pub mod node;
pub mod service;
pub mod signing;
pub mod stake;
pub mod status;
pub mod transport;
pub mod value;
pub mod wal;

#[cfg(test)]
mod cluster_tests;

pub use context::{Address, Height, ValidatorSet, VbContext};
pub use error::ConsensusError;
/// Malachite's round timeouts, re-exported for configuration.
pub use malachitebft_core_types::LinearTimeouts;
pub use node::{
    Byzantine, DecidedHeight, Epoch, Evidence, EvidenceKind, Host, NodeClient, NodeConfig,
    NodeHandle,
};
pub use service::{Service, ServiceConfig};
pub use stake::{Stake, rescale_stakes, validator_set};
pub use status::ConsensusStatus;
pub use value::{EpochValue, ScoreVector, SignedScoreVector, ValueId, ValueRefusal};
