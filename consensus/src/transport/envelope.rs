//! Signed envelopes: every consensus message on the wire is signed by its sender's hotkey, bound
//! to one network and one message kind, so that a peer can neither forge, replay elsewhere, nor
//! relabel a message.

use veribench_protocol::{PublicKey, Signature};
use veribench_wallet::{Keypair, verify_in};

use super::proto::SignedEnvelope;

/// The schnorrkel signing context of envelopes: an envelope signature verifies in no other
/// veribench context (and no substrate signature verifies as an envelope).
pub const ENVELOPE_CONTEXT: &[u8] = b"veribench-consensus-envelope-v1";

/// What an envelope's payload is. The numbers are part of the wire format and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MessageKind {
    /// A proposer's proposal of a value.
    Proposal = 1,
    /// A part of a streamed proposal.
    ProposalPart = 2,
    /// A prevote or precommit.
    Vote = 3,
    /// A validator's score vector (its input to the weights).
    ScoreVector = 4,
    /// A polka certificate (2f+1 prevotes for a value).
    PolkaCertificate = 5,
    /// A round certificate (2f+1 votes of a round).
    RoundCertificate = 6,
}

impl MessageKind {
    /// Every kind, in wire order.
    pub fn all() -> [Self; 6] {
        [
            Self::Proposal,
            Self::ProposalPart,
            Self::Vote,
            Self::ScoreVector,
            Self::PolkaCertificate,
            Self::RoundCertificate,
        ]
    }

    /// The wire number.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// A stable lowercase name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposal => "proposal",
            Self::ProposalPart => "proposal_part",
            Self::Vote => "vote",
            Self::ScoreVector => "score_vector",
            Self::PolkaCertificate => "polka_certificate",
            Self::RoundCertificate => "round_certificate",
        }
    }
}

impl TryFrom<u32> for MessageKind {
    type Error = EnvelopeError;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::all()
            .into_iter()
            .find(|k| k.as_u32() == value)
            .ok_or(EnvelopeError::UnknownKind(value))
    }
}

/// An envelope whose sender, network, kind, size and signature have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The validator that signed it.
    pub sender: PublicKey,
    /// What the payload is.
    pub kind: MessageKind,
    /// The encoded message, not yet decoded: decoding is the node's business.
    pub payload: Vec<u8>,
}

/// Why an envelope was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The sender field is not 32 bytes.
    #[error("sender is {0} bytes, not 32")]
    BadSender(usize),
    /// The envelope belongs to another network.
    #[error("envelope for network {got}, this node is on network {expected}")]
    WrongNetwork {
        /// The network this node is on.
        expected: u32,
        /// The network of the envelope.
        got: u32,
    },
    /// The kind is not a [`MessageKind`].
    #[error("unknown message kind {0}")]
    UnknownKind(u32),
    /// The sender is not a current validator.
    #[error("sender {0} is not a validator")]
    NotAMember(PublicKey),
    /// The payload is larger than allowed.
    #[error("payload of {size} bytes exceeds {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// The signature is not 64 bytes or not the sender's signature of the envelope.
    #[error("bad signature")]
    BadSignature,
}

impl EnvelopeError {
    /// A stable snake_case code, for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadSender(_) => "bad_sender",
            Self::WrongNetwork { .. } => "wrong_network",
            Self::UnknownKind(_) => "unknown_kind",
            Self::NotAMember(_) => "not_a_member",
            Self::TooLarge { .. } => "too_large",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// The signed bytes: network (u32 LE) ‖ kind (u32 LE) ‖ payload.
fn signed_bytes(network: u32, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(8 + payload.len());
    msg.extend_from_slice(&network.to_le_bytes());
    msg.extend_from_slice(&kind.to_le_bytes());
    msg.extend_from_slice(payload);
    msg
}

/// Signs `payload` as a `kind` message of `network` with `keypair` (the node's hotkey).
pub fn seal(
    keypair: &Keypair,
    network: u32,
    kind: MessageKind,
    payload: Vec<u8>,
) -> SignedEnvelope {
    let signature =
        keypair.sign_in(ENVELOPE_CONTEXT, &signed_bytes(network, kind.as_u32(), &payload));
    SignedEnvelope {
        sender: keypair.public().0.to_vec(),
        network,
        kind: kind.as_u32(),
        payload,
        signature: signature.0.to_vec(),
    }
}

/// Checks an envelope received from a peer and returns its content.
///
/// The cheap checks come first (payload size, sender length, network, kind, membership) and the
/// signature last, so a non-member or a malformed message costs no signature verification.
pub fn open(
    env: SignedEnvelope,
    network: u32,
    is_member: &dyn Fn(&PublicKey) -> bool,
    max_payload: usize,
) -> Result<Envelope, EnvelopeError> {
    if env.payload.len() > max_payload {
        return Err(EnvelopeError::TooLarge { size: env.payload.len(), max: max_payload });
    }
    let sender = PublicKey(
        <[u8; 32]>::try_from(env.sender.as_slice())
            .map_err(|_| EnvelopeError::BadSender(env.sender.len()))?,
    );
    if env.network != network {
        return Err(EnvelopeError::WrongNetwork { expected: network, got: env.network });
    }
    let kind = MessageKind::try_from(env.kind)?;
    if !is_member(&sender) {
        return Err(EnvelopeError::NotAMember(sender));
    }
    let signature = Signature(
        <[u8; 64]>::try_from(env.signature.as_slice()).map_err(|_| EnvelopeError::BadSignature)?,
    );
    if !verify_in(
        ENVELOPE_CONTEXT,
        &sender,
        &signed_bytes(network, env.kind, &env.payload),
        &signature,
    ) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(Envelope { sender, kind, payload: env.payload })
}
