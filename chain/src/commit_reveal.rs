//! Subtensor's commit-reveal: the hash committed first, the values revealed later.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use parity_scale_codec::Encode;
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::{NetUid, WeightVector};

/// What `reveal_weights` discloses; its [`commit_hash`] is what `commit_weights` committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightReveal {
    /// The weights.
    pub weights: WeightVector,
    /// Random salt that keeps the commit from being guessed from likely weight vectors.
    pub salt: Vec<u16>,
    /// The version key the weights are set with.
    pub version_key: u64,
}

impl WeightReveal {
    /// A reveal of `weights` with a fresh random 8-element salt from the OS CSPRNG.
    pub fn new(weights: WeightVector, version_key: u64) -> Self {
        let salt = (0..8).map(|_| rand::random::<u16>()).collect();
        Self { weights, salt, version_key }
    }
}

/// Subtensor's `get_commit_hash`: BLAKE2b-256 of the SCALE encoding of
/// `(hotkey, netuid, uids, values, salt, version_key)`.
pub fn commit_hash(hotkey: &PublicKey, netuid: NetUid, reveal: &WeightReveal) -> [u8; 32] {
    let encoded = (
        hotkey.0,
        netuid.0,
        reveal.weights.uids().to_vec(),
        reveal.weights.weights().to_vec(),
        reveal.salt.clone(),
        reveal.version_key,
    )
        .encode();
    Blake2b::<U32>::digest(&encoded).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_hash_is_blake2_256_of_the_scale_tuple() {
        let hotkey = PublicKey([7; 32]);
        let reveal = WeightReveal {
            weights: WeightVector::new([(0, 65535), (3, 100)]).expect("distinct uids"),
            salt: vec![1, 2],
            version_key: 5,
        };
        // SCALE by hand: account (32 bytes), u16 LE, then each Vec<u16> as a compact length
        // (n << 2) followed by its u16 LE items, then u64 LE.
        let mut manual = vec![7u8; 32];
        manual.extend_from_slice(&12u16.to_le_bytes());
        manual.extend_from_slice(&[2 << 2, 0, 0, 3, 0]);
        manual.extend_from_slice(&[2 << 2, 0xff, 0xff, 100, 0]);
        manual.extend_from_slice(&[2 << 2, 1, 0, 2, 0]);
        manual.extend_from_slice(&5u64.to_le_bytes());
        let expected: [u8; 32] = Blake2b::<U32>::digest(&manual).into();
        assert_eq!(commit_hash(&hotkey, NetUid(12), &reveal), expected);

        let mut other = reveal.clone();
        other.salt[0] = 9;
        assert_ne!(commit_hash(&hotkey, NetUid(12), &other), expected, "salt is hashed");
    }

    #[test]
    fn fresh_reveals_get_different_salts() {
        let w = WeightVector::new([(0, 1)]).expect("one uid");
        let a = WeightReveal::new(w.clone(), 0);
        let b = WeightReveal::new(w, 0);
        assert_eq!(a.salt.len(), 8);
        assert_ne!(a.salt, b.salt);
    }
}
