//! The values that cross the [`Chain`](crate::Chain) interface.

use std::fmt;

use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::ChainError;

/// A subnet's id (`--netuid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NetUid(pub u16);

impl fmt::Display for NetUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One registered neuron of a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neuron {
    /// Its uid on the subnet: the index weights are set on.
    pub uid: u16,
    /// The hotkey registered at that uid.
    pub hotkey: PublicKey,
    /// The coldkey owning the hotkey.
    pub coldkey: PublicKey,
    /// Stake on the subnet in rao (alpha), as `TotalHotkeyAlpha` reports it.
    pub stake: u64,
    /// Whether the neuron may set weights.
    pub validator_permit: bool,
    /// Block of the neuron's last weights update (0: never).
    pub last_update: u64,
}

/// The neurons of one subnet at one block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metagraph {
    /// The subnet.
    pub netuid: NetUid,
    /// The block the state was read at.
    pub block: u64,
    /// Every neuron, ordered by uid.
    pub neurons: Vec<Neuron>,
}

impl Metagraph {
    /// The neuron registered with `hotkey`, if any.
    pub fn neuron(&self, hotkey: &PublicKey) -> Option<&Neuron> {
        self.neurons.iter().find(|n| &n.hotkey == hotkey)
    }

    /// The uid of `hotkey`, if registered.
    pub fn uid(&self, hotkey: &PublicKey) -> Option<u16> {
        self.neuron(hotkey).map(|n| n.uid)
    }
}

/// The subnet hyperparameters that decide how and when weights may be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsPolicy {
    /// `CommitRevealWeightsEnabled`: weights must go through commit then reveal.
    pub commit_reveal_enabled: bool,
    /// `WeightsSetRateLimit`: blocks that must pass between two updates of one neuron.
    pub rate_limit_blocks: u64,
    /// `Tempo`: blocks per epoch.
    pub tempo: u16,
    /// `RevealPeriodEpochs`: epochs after a commit before its reveal is accepted.
    pub reveal_period_epochs: u64,
    /// `WeightsVersionKey`: the smallest version key the chain accepts.
    pub version_key: u64,
}

/// Weights over uids, as `set_weights` takes them: two equally long lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightVector {
    uids: Vec<u16>,
    weights: Vec<u16>,
}

impl WeightVector {
    /// Pairs `(uid, weight)`; duplicate uids are refused, since the chain refuses them too.
    pub fn new(pairs: impl IntoIterator<Item = (u16, u16)>) -> Result<Self, ChainError> {
        let (uids, weights): (Vec<u16>, Vec<u16>) = pairs.into_iter().unzip();
        let mut sorted = uids.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(ChainError::Rejected("duplicate uid in the weight vector".into()));
        }
        Ok(Self { uids, weights })
    }

    /// The uids.
    pub fn uids(&self) -> &[u16] {
        &self.uids
    }

    /// The weights, in the order of [`WeightVector::uids`].
    pub fn weights(&self) -> &[u16] {
        &self.weights
    }

    /// `(uid, weight)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.uids.iter().copied().zip(self.weights.iter().copied())
    }

    /// Whether every weight is 0 (such a vector carries no information and is never submitted).
    pub fn is_all_zero(&self) -> bool {
        self.weights.iter().all(|&w| w == 0)
    }
}

/// A hotkey's commitment as stored by the `Commitments` pallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// The block it was set at.
    pub block: u64,
    /// The committed bytes.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

/// Where an extrinsic landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxReceipt {
    /// The block that included it.
    pub block: u64,
    /// The extrinsic's hash, hex (`0x…`).
    pub hash: String,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
