//! Encodings: consensus messages on the wire, decisions in the database and on `GetDecided`,
//! and the write-ahead log's entries. All are postcard over the serde forms below, so each has
//! exactly one byte form; decoding hostile bytes gives a [`CodecError`], never a panic.

use malachitebft_core_consensus::{Input, ProposedValue};
use malachitebft_core_types::{
    CommitCertificate, CommitSignature, ExtendedCommitCertificate, NilOrVal, PolkaCertificate,
    PolkaSignature, Round, RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage,
    Timeout, Validity, ValueOrigin, VoteType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::{Address, Height, Proposal, VbContext, Vote};
use crate::signing::Sig;
use crate::value::{EpochValue, ValueId};

/// Bytes that do not decode as what they were sent as.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not the postcard form of the expected type.
    #[error("undecodable {what}: {source}")]
    Decode {
        /// What was expected.
        what: &'static str,
        /// postcard's reason.
        source: postcard::Error,
    },
    /// Trailing bytes after a complete message (there is one byte form per message).
    #[error("{0} has trailing bytes")]
    Trailing(&'static str),
    /// An input the write-ahead log does not keep.
    #[error("the write-ahead log does not keep {0} inputs")]
    NotLogged(&'static str),
}

/// Encodes `value` ([`veribench_protocol::canonical::encode`]: a failure is a bug, and fatal).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    veribench_protocol::canonical::encode(value)
}

/// Decodes exactly one `T` from `bytes`.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|source| CodecError::Decode { what, source })?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(what));
    }
    Ok(value)
}

/// A signed message as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The message.
    pub message: T,
    /// Its signer's signature.
    pub signature: Sig,
}

impl<T> From<SignedMessage<VbContext, T>> for Signed<T> {
    fn from(m: SignedMessage<VbContext, T>) -> Self {
        Self { message: m.message, signature: m.signature }
    }
}

impl<T> From<Signed<T>> for SignedMessage<VbContext, T> {
    fn from(m: Signed<T>) -> Self {
        SignedMessage::new(m.message, m.signature)
    }
}

/// A polka certificate: 2/3+ prevotes for one value in one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolkaWire {
    height: Height,
    round: Round,
    value_id: ValueId,
    signatures: Vec<(Address, Sig)>,
}

impl From<PolkaCertificate<VbContext>> for PolkaWire {
    fn from(c: PolkaCertificate<VbContext>) -> Self {
        Self {
            height: c.height,
            round: c.round,
            value_id: c.value_id,
            signatures: c.polka_signatures.into_iter().map(|s| (s.address, s.signature)).collect(),
        }
    }
}

impl From<PolkaWire> for PolkaCertificate<VbContext> {
    fn from(w: PolkaWire) -> Self {
        PolkaCertificate {
            height: w.height,
            round: w.round,
            value_id: w.value_id,
            polka_signatures: w
                .signatures
                .into_iter()
                .map(|(a, s)| PolkaSignature::new(a, s))
                .collect(),
        }
    }
}

/// A round certificate: the votes that let a lagging validator skip to a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundWire {
    height: Height,
    round: Round,
    cert_type: RoundCertificateType,
    signatures: Vec<(VoteType, NilOrVal<ValueId>, Address, Sig)>,
}

impl From<RoundCertificate<VbContext>> for RoundWire {
    fn from(c: RoundCertificate<VbContext>) -> Self {
        Self {
            height: c.height,
            round: c.round,
            cert_type: c.cert_type,
            signatures: c
                .round_signatures
                .into_iter()
                .map(|s| (s.vote_type, s.value_id, s.address, s.signature))
                .collect(),
        }
    }
}

impl From<RoundWire> for RoundCertificate<VbContext> {
    fn from(w: RoundWire) -> Self {
        RoundCertificate {
            height: w.height,
            round: w.round,
            cert_type: w.cert_type,
            round_signatures: w
                .signatures
                .into_iter()
                .map(|(t, v, a, s)| RoundSignature::new(t, v, a, s))
                .collect(),
        }
    }
}

/// A commit certificate: 2/3+ precommits for the decided value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitWire {
    /// The height.
    pub height: Height,
    /// The deciding round.
    pub round: Round,
    /// The decided value's id.
    pub value_id: ValueId,
    /// The precommits' signers and signatures, sorted by signer.
    pub signatures: Vec<(Address, Sig)>,
}

impl From<CommitCertificate<VbContext>> for CommitWire {
    fn from(c: CommitCertificate<VbContext>) -> Self {
        let mut signatures: Vec<_> =
            c.commit_signatures.into_iter().map(|s| (s.address, s.signature)).collect();
        signatures.sort();
        Self { height: c.height, round: c.round, value_id: c.value_id, signatures }
    }
}

impl From<CommitWire> for CommitCertificate<VbContext> {
    fn from(w: CommitWire) -> Self {
        CommitCertificate {
            height: w.height,
            round: w.round,
            value_id: w.value_id,
            commit_signatures: w
                .signatures
                .into_iter()
                .map(|(a, s)| CommitSignature::new(a, s))
                .collect(),
        }
    }
}

impl From<CommitWire> for ExtendedCommitCertificate<VbContext> {
    fn from(w: CommitWire) -> Self {
        let commits = w
            .signatures
            .into_iter()
            .map(|(address, signature)| {
                let vote = Vote {
                    vote_type: VoteType::Precommit,
                    height: w.height,
                    round: w.round,
                    value: NilOrVal::Val(w.value_id),
                    validator: address,
                };
                SignedMessage::new(vote, signature)
            })
            .collect();
        ExtendedCommitCertificate::from_votes(w.height, w.round, w.value_id, commits)
    }
}

/// A decided height as it is stored and served: the value and the certificate that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The value.
    pub value: EpochValue,
    /// Its commit certificate.
    pub certificate: CommitWire,
}

/// The consensus inputs the write-ahead log keeps: those whose loss after a crash could make a
/// validator sign twice or forget a lock (Malachite's list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    /// A vote, ours or a peer's.
    Vote(Signed<Vote>),
    /// A proposal.
    Proposal(Signed<Proposal>),
    /// A timeout that fired.
    Timeout(Timeout),
    /// A full proposed value and our verdict on it.
    ProposedValue {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Proof-of-lock round.
        valid_round: Round,
        /// Proposer.
        proposer: Address,
        /// The value.
        value: EpochValue,
        /// Our verdict.
        valid: bool,
        /// Whether it came by sync.
        synced: bool,
    },
    /// A polka certificate.
    Polka(PolkaWire),
}

impl TryFrom<Input<VbContext>> for WalEntry {
    type Error = CodecError;

    fn try_from(input: Input<VbContext>) -> Result<Self, CodecError> {
        Ok(match input {
            Input::Vote(v) => WalEntry::Vote(v.into()),
            Input::Proposal(p) => WalEntry::Proposal(p.into()),
            Input::TimeoutElapsed(t) => WalEntry::Timeout(t),
            Input::ProposedValue(pv, origin) => WalEntry::ProposedValue {
                height: pv.height,
                round: pv.round,
                valid_round: pv.valid_round,
                proposer: pv.proposer,
                value: pv.value,
                valid: pv.validity.is_valid(),
                synced: origin.is_sync(),
            },
            Input::PolkaCertificate(c) => WalEntry::Polka(c.into()),
            Input::StartHeight(..) => return Err(CodecError::NotLogged("StartHeight")),
            Input::RoundCertificate(_) => return Err(CodecError::NotLogged("RoundCertificate")),
            Input::Propose(_) => return Err(CodecError::NotLogged("Propose")),
            Input::SyncValueResponse(_) => return Err(CodecError::NotLogged("SyncValueResponse")),
        })
    }
}

impl From<WalEntry> for Input<VbContext> {
    fn from(entry: WalEntry) -> Self {
        match entry {
            WalEntry::Vote(v) => Input::Vote(v.into()),
            WalEntry::Proposal(p) => Input::Proposal(p.into()),
            WalEntry::Timeout(t) => Input::TimeoutElapsed(t),
            WalEntry::ProposedValue {
                height,
                round,
                valid_round,
                proposer,
                value,
                valid,
                synced,
            } => {
                let pv = ProposedValue {
                    height,
                    round,
                    valid_round,
                    proposer,
                    value,
                    validity: Validity::from_bool(valid),
                };
                let origin = if synced { ValueOrigin::Sync } else { ValueOrigin::Consensus };
                Input::ProposedValue(pv, origin)
            }
            WalEntry::Polka(c) => Input::PolkaCertificate(c.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        for bytes in [&[][..], &[0xff; 9][..], &[1, 2, 3][..], &[0x80; 64][..]] {
            assert!(decode::<Decision>("decision", bytes).is_err());
            assert!(decode::<WalEntry>("wal entry", bytes).is_err());
            assert!(decode::<Signed<Proposal>>("proposal", bytes).is_err());
        }
        let t = WalEntry::Timeout(Timeout::propose(Round::new(2)));
        let mut bytes = encode(&t);
        assert_eq!(decode::<WalEntry>("wal entry", &bytes).expect("round trip"), t);
        bytes.push(0);
        assert!(matches!(decode::<WalEntry>("wal entry", &bytes), Err(CodecError::Trailing(_))));
    }
}
