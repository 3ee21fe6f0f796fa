//! The chain as veribench sees it: who is registered on the subnet (the metagraph), the weights
//! a validator sets, with or without commit-reveal, and the per-hotkey commitments miners use to
//! pin their circuit artifacts.
//!
//! [`Chain`] is the one interface the coordinator and the worker drive. Two implementations:
//!
//! - [`LocalChain`] (here): a file-backed chain state for single-machine runs, demos and tests. It
//!   enforces what subtensor enforces on these calls (registration, validator permit, the weights
//!   rate limit, commit-reveal, version key), so the same code paths meet the same refusals.
//! - `SubxtChain` (crate `veribench-subtensor`): the real subtensor through subxt, with calls
//!   generated from the vendored runtime metadata. subxt stays in that crate.
//!
//! [`Network`] parses btcli's `--subtensor.network` values; [`commit_hash`] is subtensor's
//! commit-reveal hash. Every chain call goes through the workspace's one retry loop,
//! `veribench_support::retry`, which [`ChainError`]'s `Transient` implementation steers.
//! [`Endpoint`] is a coordinator's announcement of where it listens, encoded to fit one
//! commitment and never mistaken for a miner's 32-byte circuit commitment.

mod commit_reveal;
pub mod endpoint;
mod error;
#[cfg(feature = "clap")]
mod flags;
mod local;
mod network;
mod types;

use async_trait::async_trait;
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

pub use commit_reveal::{WeightReveal, commit_hash};
pub use endpoint::{
    ANNOUNCEMENT_REFRESH_BLOCKS, ANNOUNCEMENT_TTL_BLOCKS, CertFingerprint, Endpoint, EndpointError,
    FingerprintParseError, MAX_COMMITMENT_BYTES, UrlError, UrlHost, WssUrl, announcement_expired,
};
pub use error::ChainError;
#[cfg(feature = "clap")]
pub use flags::ChainFlags;
pub use local::{LocalChain, LocalNeuron, LocalSubnet};
pub use network::{Network, NetworkParseError};
pub use types::{Commitment, Metagraph, NetUid, Neuron, TxReceipt, WeightVector, WeightsPolicy};

/// A Bittensor chain: reads of the subnet state and the extrinsics veribench submits.
///
/// Every method returns a [`ChainError`]; [`ChainError::is_transient`] tells the retry loop which
/// failures are worth trying again (unreachable node, rate limit, a local state file that does not
/// parse) and which are final (not registered, no validator permit, rejected call).
#[async_trait]
pub trait Chain: Send + Sync + std::fmt::Debug {
    /// A human-readable name of the endpoint, for logs (`file:/…`, `wss://…`).
    fn endpoint(&self) -> String;

    /// The number of the best block.
    async fn current_block(&self) -> Result<u64, ChainError>;

    /// Every neuron of subnet `netuid` at the best block.
    async fn metagraph(&self, netuid: NetUid) -> Result<Metagraph, ChainError>;

    /// The subnet's hyperparameters that govern setting weights.
    async fn weights_policy(&self, netuid: NetUid) -> Result<WeightsPolicy, ChainError>;

    /// `SubtensorModule.set_weights(netuid, uids, weights, version_key)`, signed by `signer`.
    async fn set_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        weights: &WeightVector,
        version_key: u64,
    ) -> Result<TxReceipt, ChainError>;

    /// `SubtensorModule.commit_weights(netuid, commit_hash)`: the first half of commit-reveal.
    async fn commit_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        hash: [u8; 32],
    ) -> Result<TxReceipt, ChainError>;

    /// `SubtensorModule.reveal_weights(netuid, uids, values, salt, version_key)`.
    async fn reveal_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        reveal: &WeightReveal,
    ) -> Result<TxReceipt, ChainError>;

    /// `Commitments.set_commitment(netuid, info)` with `data` as one raw field.
    async fn set_commitment(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        data: &[u8],
    ) -> Result<TxReceipt, ChainError>;

    /// `Commitments.CommitmentOf(netuid, hotkey)`: the hotkey's current commitment, if any.
    async fn commitment(
        &self,
        netuid: NetUid,
        hotkey: &PublicKey,
    ) -> Result<Option<Commitment>, ChainError>;

    /// The commitment of every registered hotkey of `netuid` that has one, in uid order.
    ///
    /// The default reads the metagraph, then each neuron's commitment; implementations that can
    /// read the whole `CommitmentOf` map at once override it.
    async fn commitments(
        &self,
        netuid: NetUid,
    ) -> Result<Vec<(PublicKey, Commitment)>, ChainError> {
        let metagraph = self.metagraph(netuid).await?;
        let mut out = Vec::new();
        for neuron in &metagraph.neurons {
            if let Some(commitment) = self.commitment(netuid, &neuron.hotkey).await? {
                out.push((neuron.hotkey, commitment));
            }
        }
        Ok(out)
    }
}
