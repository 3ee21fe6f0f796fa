//! What validators agree on: an [`EpochValue`], the signed score vectors of at least 2/3 of the
//! stake and their stake-weighted median, and the checks every validator makes before it votes
//! for one ([`check`]).

use std::collections::BTreeMap;
use std::fmt;

use malachitebft_core_types::Value;
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::context::{Height, ValidatorSet};
use crate::signing::{Domain, HotkeySigner, HotkeyVerifier, Sig};

/// Most uids in a score vector (a subnet has at most 4096 neurons): a bound on what a peer can
/// make every validator hash and store.
pub const MAX_UIDS: usize = 4096;

/// The domain-separated BLAKE3 hash of an [`EpochValue`]'s canonical encoding: what votes are for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueId(pub [u8; 32]);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueId({})", hex::encode(&self.0[..8]))
    }
}

/// One validator's own scores for one epoch: a weight per uid (index = uid) and the BLAKE3 root
/// of the evidence they came from (the verified challenges of its scoring window), so that a
/// vector can later be traced to what its validator measured.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScoreVector {
    /// The epoch.
    pub height: Height,
    /// The validator whose vector this is.
    pub validator: PublicKey,
    /// Weight per uid.
    pub weights: Vec<u16>,
    /// BLAKE3 root of the evidence.
    pub evidence_root: [u8; 32],
}

/// A score vector signed by its validator's hotkey.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SignedScoreVector {
    /// The vector.
    pub vector: ScoreVector,
    /// The validator's signature of it.
    pub signature: Sig,
}

impl SignedScoreVector {
    /// Signs `vector` (whose `validator` must be the signer's key to verify).
    pub fn sign(signer: &HotkeySigner, vector: ScoreVector) -> Self {
        let signature = signer.sign(Domain::ScoreVector, &vector);
        Self { vector, signature }
    }

    /// Whether the signature is the vector's validator's.
    pub fn verify(&self, verifier: &HotkeyVerifier) -> bool {
        verifier.verify(Domain::ScoreVector, &self.vector, &self.signature, &self.vector.validator)
    }
}

/// The value of one height: the score vectors it is made of (sorted by validator) and their
/// per-uid stake-weighted median, the weights every validator submits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpochValue {
    /// The epoch.
    pub height: Height,
    /// The signed vectors, one per validator, sorted by validator hotkey.
    pub vectors: Vec<SignedScoreVector>,
    /// Per uid, the stake-weighted median of the vectors' weights ([`aggregate`]).
    pub aggregate: Vec<u16>,
}

impl Value for EpochValue {
    type Id = ValueId;

    fn id(&self) -> ValueId {
        ValueId(veribench_protocol::canonical::digest("veribench consensus value v1", self))
    }
}

/// Why a value is voted nil.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueRefusal {
    /// The value is for another height than the proposal's.
    #[error("value for height {got}, expected {expected}")]
    WrongHeight {
        /// The proposal's height.
        expected: Height,
        /// The value's.
        got: Height,
    },
    /// A vector is for another epoch than the value.
    #[error("vector of {0} is for another height")]
    VectorHeight(PublicKey),
    /// Vectors not strictly sorted by validator: unsorted, or two from one validator.
    #[error("vectors are not one per validator in hotkey order (at {0})")]
    NotOnePerValidator(PublicKey),
    /// A vector from a hotkey that is not in this height's validator set.
    #[error("vector from {0}, which is not a validator at this height")]
    UnknownValidator(PublicKey),
    /// A vector's signature does not verify.
    #[error("vector of {0} is not signed by it")]
    BadSignature(PublicKey),
    /// Vectors of different lengths, or longer than [`MAX_UIDS`].
    #[error("vector of {0} has {1} uids, not the value's")]
    BadLength(PublicKey, usize),
    /// The included vectors' validators hold less than 2/3 of the stake.
    #[error("vectors from {included} of {total} voting power, below 2/3")]
    InsufficientStake {
        /// Voting power of the included vectors' validators.
        included: u64,
        /// Total voting power.
        total: u64,
    },
    /// The aggregate is not the stake-weighted median of the vectors.
    #[error("the aggregate does not recompute (first difference at uid {0})")]
    AggregateMismatch(usize),
}

impl ValueRefusal {
    /// A stable name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongHeight { .. } => "wrong_height",
            Self::VectorHeight(_) => "vector_height",
            Self::NotOnePerValidator(_) => "not_one_per_validator",
            Self::UnknownValidator(_) => "unknown_validator",
            Self::BadSignature(_) => "bad_signature",
            Self::BadLength(..) => "bad_length",
            Self::InsufficientStake { .. } => "insufficient_stake",
            Self::AggregateMismatch(_) => "aggregate_mismatch",
        }
    }
}

/// Per uid, the stake-weighted (lower) median of `vectors`' weights: sort the vectors' weights
/// for that uid, with their validators' power, ascending; the median is the first weight at
/// which the cumulative power reaches half the total (`2 × cumulative ≥ total`). Ties in weight
/// do not matter (equal weights are interchangeable), so the result depends on nothing but the
/// multiset of (weight, power) pairs.
///
/// Every vector must have `uids` weights; the caller has checked that.
pub fn aggregate(vectors: &[(&[u16], u64)], uids: usize) -> Vec<u16> {
    let total: u128 = vectors.iter().map(|(_, p)| u128::from(*p)).sum();
    let mut column: Vec<(u16, u64)> = Vec::with_capacity(vectors.len());
    (0..uids)
        .map(|uid| {
            column.clear();
            column.extend(vectors.iter().map(|(w, p)| (w.get(uid).copied().unwrap_or(0), *p)));
            column.sort_unstable();
            let mut cumulative: u128 = 0;
            for (weight, power) in &column {
                cumulative += u128::from(*power);
                if 2 * cumulative >= total {
                    return *weight;
                }
            }
            0
        })
        .collect()
}

/// Whether `included` of `total` power is at least 2/3: `3 × included ≥ 2 × total`.
pub fn two_thirds(included: u64, total: u64) -> bool {
    3 * u128::from(included) >= 2 * u128::from(total)
}

/// The value a proposer builds for `height` from the vectors it holds: those of validators in
/// `set`, for this height, validly signed, of the length that has the most power behind it (a
/// registration between two validators' metagraph reads changes the number of uids). `None`
/// while they hold less than 2/3 of the power.
pub fn build<'a>(
    height: Height,
    set: &ValidatorSet,
    verifier: &HotkeyVerifier,
    held: impl IntoIterator<Item = &'a SignedScoreVector>,
) -> Option<EpochValue> {
    let mut chosen: BTreeMap<PublicKey, &SignedScoreVector> = BTreeMap::new();
    for v in held {
        let ok = v.vector.height == height
            && set.contains(&v.vector.validator)
            && v.vector.weights.len() <= MAX_UIDS
            && v.verify(verifier);
        if ok {
            chosen.entry(v.vector.validator).or_insert(v);
        }
    }
    let mut power_by_len: BTreeMap<usize, u64> = BTreeMap::new();
    for v in chosen.values() {
        let power = set.get(&v.vector.validator).map_or(0, |x| x.voting_power);
        *power_by_len.entry(v.vector.weights.len()).or_insert(0) += power;
    }
    let (&uids, &power) = power_by_len.iter().max_by_key(|(len, power)| (**power, **len))?;
    if !two_thirds(power, set.total_power()) {
        return None;
    }
    let vectors: Vec<SignedScoreVector> =
        chosen.into_values().filter(|v| v.vector.weights.len() == uids).cloned().collect();
    let weighted: Vec<(&[u16], u64)> = vectors
        .iter()
        .map(|v| {
            let power = set.get(&v.vector.validator).map_or(0, |x| x.voting_power);
            (v.vector.weights.as_slice(), power)
        })
        .collect();
    let aggregate = aggregate(&weighted, uids);
    Some(EpochValue { height, vectors, aggregate })
}

/// Everything a validator checks before it prevotes `value` for `height`: every vector is for
/// this height, from a distinct validator of `set` (in hotkey order), validly signed, all of one
/// length of at most [`MAX_UIDS`]; together they hold at least 2/3 of the power; and the
/// aggregate is their stake-weighted median, bit for bit.
pub fn check(
    value: &EpochValue,
    height: Height,
    set: &ValidatorSet,
    verifier: &HotkeyVerifier,
) -> Result<(), ValueRefusal> {
    if value.height != height {
        return Err(ValueRefusal::WrongHeight { expected: height, got: value.height });
    }
    let uids = value.aggregate.len();
    let mut previous: Option<PublicKey> = None;
    let mut included: u64 = 0;
    let mut weighted = Vec::with_capacity(value.vectors.len());
    for v in &value.vectors {
        let key = v.vector.validator;
        if previous.is_some_and(|p| p >= key) {
            return Err(ValueRefusal::NotOnePerValidator(key));
        }
        previous = Some(key);
        let validator = set.get(&key).ok_or(ValueRefusal::UnknownValidator(key))?;
        if v.vector.height != height {
            return Err(ValueRefusal::VectorHeight(key));
        }
        if v.vector.weights.len() != uids || uids > MAX_UIDS {
            return Err(ValueRefusal::BadLength(key, v.vector.weights.len()));
        }
        included += validator.voting_power;
        weighted.push((v.vector.weights.as_slice(), validator.voting_power));
    }
    if !two_thirds(included, set.total_power()) {
        return Err(ValueRefusal::InsufficientStake { included, total: set.total_power() });
    }
    // Signatures last: they are the expensive part, and a value that fails a cheap check costs
    // nothing more.
    for v in &value.vectors {
        if !v.verify(verifier) {
            return Err(ValueRefusal::BadSignature(v.vector.validator));
        }
    }
    let expected = aggregate(&weighted, uids);
    if let Some(uid) = expected.iter().zip(&value.aggregate).position(|(a, b)| a != b) {
        return Err(ValueRefusal::AggregateMismatch(uid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use veribench_wallet::Keypair;

    use super::*;
    use crate::stake::{Stake, validator_set};

    const NET: u32 = 7;

    fn signers(n: u8) -> Vec<HotkeySigner> {
        (1..=n).map(|i| HotkeySigner::new(Keypair::from_seed(&[i; 32]), NET)).collect()
    }

    fn set_of(signers: &[HotkeySigner], stakes: &[u64]) -> ValidatorSet {
        let stakes: Vec<Stake> = signers
            .iter()
            .zip(stakes)
            .map(|(s, &stake)| Stake { hotkey: s.public(), stake })
            .collect();
        validator_set(&stakes).expect("set")
    }

    fn vector(signer: &HotkeySigner, height: u64, weights: Vec<u16>) -> SignedScoreVector {
        let vector = ScoreVector {
            height: Height(height),
            validator: signer.public(),
            weights,
            evidence_root: [9; 32],
        };
        SignedScoreVector::sign(signer, vector)
    }

    #[test]
    fn median_is_stake_weighted() {
        // Powers 1, 1, 5: the heavy validator's weight is the median whatever the others say.
        let a = [10u16, 0];
        let b = [20u16, 0];
        let c = [15u16, 65535];
        let agg = aggregate(&[(&a, 1), (&b, 1), (&c, 5)], 2);
        assert_eq!(agg, vec![15, 65535]);
        // Equal powers, even count: the lower median.
        assert_eq!(aggregate(&[(&a, 1), (&b, 1)], 2), vec![10, 0]);
    }

    #[test]
    fn honest_value_checks_and_each_forgery_is_refused() {
        let s = signers(4);
        let set = set_of(&s, &[10, 10, 10, 10]);
        let verifier = HotkeyVerifier::new(NET);
        let held: Vec<_> = s.iter().map(|x| vector(x, 3, vec![1, 2, 3])).collect();
        let value = build(Height(3), &set, &verifier, &held).expect("4 of 4");
        assert_eq!(value.vectors.len(), 4);
        assert_eq!(check(&value, Height(3), &set, &verifier), Ok(()));

        let refuse = |v: &EpochValue| check(v, Height(3), &set, &verifier).map_err(|e| e.code());
        assert_eq!(
            check(&value, Height(4), &set, &verifier).map_err(|e| e.code()),
            Err("wrong_height")
        );

        let mut bad = value.clone();
        bad.aggregate[1] = 60_000;
        assert_eq!(refuse(&bad), Err("aggregate_mismatch"));

        let mut bad = value.clone();
        bad.vectors[0].vector.weights[0] = 9;
        assert_eq!(refuse(&bad), Err("bad_signature"));

        let mut bad = value.clone();
        bad.vectors.swap(0, 1);
        assert_eq!(refuse(&bad), Err("not_one_per_validator"));

        let mut bad = value.clone();
        bad.vectors.truncate(2);
        bad.aggregate = aggregate(
            &bad.vectors.iter().map(|v| (v.vector.weights.as_slice(), 10)).collect::<Vec<_>>(),
            3,
        );
        assert_eq!(refuse(&bad), Err("insufficient_stake"));

        let outsider = HotkeySigner::new(Keypair::from_seed(&[99; 32]), NET);
        let mut bad = value.clone();
        bad.vectors.push(vector(&outsider, 3, vec![1, 2, 3]));
        bad.vectors.sort();
        assert_eq!(refuse(&bad), Err("unknown_validator"));

        // A vector signed for another subnet does not verify here.
        let other_net = HotkeySigner::new(Keypair::from_seed(&[1; 32]), NET + 1);
        let mut bad = value.clone();
        let i =
            bad.vectors.iter().position(|v| v.vector.validator == other_net.public()).expect("in");
        bad.vectors[i] = vector(&other_net, 3, vec![1, 2, 3]);
        assert_eq!(refuse(&bad), Err("bad_signature"));
    }

    #[test]
    fn proposer_waits_for_two_thirds_and_uses_the_majority_length() {
        let s = signers(4);
        let set = set_of(&s, &[10, 10, 10, 10]);
        let verifier = HotkeyVerifier::new(NET);
        let two: Vec<_> = s[..2].iter().map(|x| vector(x, 1, vec![5])).collect();
        assert!(build(Height(1), &set, &verifier, &two).is_none());
        let mut held: Vec<_> = s[..3].iter().map(|x| vector(x, 1, vec![5, 6])).collect();
        held.push(vector(&s[3], 1, vec![5]));
        let value = build(Height(1), &set, &verifier, &held).expect("3 of 4 agree on length");
        assert_eq!(value.vectors.len(), 3);
        assert_eq!(check(&value, Height(1), &set, &verifier), Ok(()));
    }

    proptest! {
        /// With Byzantine power below 1/3 of the total and at least 2/3 included, every
        /// aggregate weight lies within the honest vectors' range for that uid, whatever the
        /// Byzantine vectors say.
        #[test]
        fn aggregate_is_bounded_by_honest_weights(
            honest in proptest::collection::vec((1u64..1000, proptest::collection::vec(any::<u16>(), 4)), 3..8),
            byzantine in proptest::collection::vec(proptest::collection::vec(any::<u16>(), 4), 0..4),
        ) {
            let honest_power: u64 = honest.iter().map(|(p, _)| *p).sum();
            // Byzantine validators share strictly less than half the honest power, so less
            // than a third of the total.
            let each = (honest_power.saturating_sub(1) / 2) / (byzantine.len() as u64).max(1);
            let mut all: Vec<(&[u16], u64)> = honest.iter().map(|(p, w)| (w.as_slice(), *p)).collect();
            all.extend(byzantine.iter().map(|w| (w.as_slice(), each)));
            let agg = aggregate(&all, 4);
            for (uid, a) in agg.iter().enumerate() {
                let lo = honest.iter().map(|(_, w)| w[uid]).min().unwrap_or(0);
                let hi = honest.iter().map(|(_, w)| w[uid]).max().unwrap_or(0);
                prop_assert!(lo <= *a && *a <= hi, "uid {uid}: {a} outside [{lo}, {hi}]");
            }
        }
    }
}
