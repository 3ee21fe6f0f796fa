//! sr25519 signatures for consensus messages, by the validators' hotkeys.
//!
//! Everything is signed in its own schnorrkel context ([`CONSENSUS_CONTEXT`]), and the signed
//! bytes start with a tag naming the message type and the subnet: a vote can never verify as a
//! proposal, a score vector or a wallet signature, nor count on another subnet.

use async_trait::async_trait;
use malachitebft_core_types::{SignedMessage, SigningScheme, ValidatorProof, VoteExtensionScope};
use malachitebft_signing::{Error as SigningError, Signer, VerificationResult, Verifier};
use serde::{Deserialize, Serialize};
use veribench_protocol::{PublicKey, Signature};
use veribench_wallet::{Keypair, verify_in};

use crate::context::{Proposal, VbContext, Vote};

/// The schnorrkel signing context of every consensus signature.
pub const CONSENSUS_CONTEXT: &[u8] = b"veribench-consensus-v1";

/// What a signature is over; the first field of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Domain {
    /// A prevote or precommit.
    Vote,
    /// A proposal.
    Proposal,
    /// A validator's own score vector.
    ScoreVector,
    /// A vote extension (extensions are off; signed in their own domain all the same).
    Extension,
}

/// The bytes a signature covers: `postcard((domain, network, message))`.
pub fn signing_bytes<T: Serialize>(domain: Domain, network: u32, message: &T) -> Vec<u8> {
    veribench_protocol::canonical::encode(&(domain, network, message))
}

/// An sr25519 signature with the ordering Malachite's types need.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sig(pub Signature);

impl PartialOrd for Sig {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sig {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.0.cmp(&other.0.0)
    }
}

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sig({})", hex::encode(&self.0.0[..8]))
    }
}

/// A wrongly sized key or signature.
#[derive(Debug, thiserror::Error)]
#[error("expected {expected} bytes, got {got}")]
pub struct DecodingError {
    expected: usize,
    got: usize,
}

/// The sr25519 signing scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sr25519;

impl SigningScheme for Sr25519 {
    type DecodingError = DecodingError;
    type Signature = Sig;
    type PublicKey = PublicKey;
    type PrivateKey = Keypair;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, DecodingError> {
        let array: [u8; 64] =
            bytes.try_into().map_err(|_| DecodingError { expected: 64, got: bytes.len() })?;
        Ok(Sig(Signature(array)))
    }

    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0.0.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, DecodingError> {
        let array: [u8; 32] =
            bytes.try_into().map_err(|_| DecodingError { expected: 32, got: bytes.len() })?;
        Ok(PublicKey(array))
    }

    fn encode_public_key(public_key: &PublicKey) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

/// Signs with this validator's hotkey.
#[derive(Clone, Debug)]
pub struct HotkeySigner {
    keypair: Keypair,
    network: u32,
}

impl HotkeySigner {
    /// Signs for `network` with `keypair`.
    pub fn new(keypair: Keypair, network: u32) -> Self {
        Self { keypair, network }
    }

    /// The signer's hotkey.
    pub fn public(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The keypair (for the transport's envelopes).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Signs `message` in `domain`.
    pub fn sign<T: Serialize>(&self, domain: Domain, message: &T) -> Sig {
        Sig(self.keypair.sign_in(CONSENSUS_CONTEXT, &signing_bytes(domain, self.network, message)))
    }

    /// A signed vote.
    pub fn vote(&self, vote: Vote) -> SignedMessage<VbContext, Vote> {
        let signature = self.sign(Domain::Vote, &vote);
        SignedMessage::new(vote, signature)
    }

    /// A signed proposal.
    pub fn proposal(&self, proposal: Proposal) -> SignedMessage<VbContext, Proposal> {
        let signature = self.sign(Domain::Proposal, &proposal);
        SignedMessage::new(proposal, signature)
    }
}

/// Checks signatures made by [`HotkeySigner`]s of `network`.
#[derive(Clone, Copy, Debug)]
pub struct HotkeyVerifier {
    network: u32,
}

impl HotkeyVerifier {
    /// Verifies for `network`.
    pub fn new(network: u32) -> Self {
        Self { network }
    }

    /// Whether `signature` is `key`'s signature of `message` in `domain`.
    pub fn verify<T: Serialize>(
        &self,
        domain: Domain,
        message: &T,
        signature: &Sig,
        key: &PublicKey,
    ) -> bool {
        verify_in(
            CONSENSUS_CONTEXT,
            key,
            &signing_bytes(domain, self.network, message),
            &signature.0,
        )
    }
}

#[async_trait]
impl Signer<VbContext> for HotkeySigner {
    async fn sign_vote(&self, vote: Vote) -> Result<SignedMessage<VbContext, Vote>, SigningError> {
        Ok(self.vote(vote))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedMessage<VbContext, Proposal>, SigningError> {
        Ok(self.proposal(proposal))
    }

    async fn sign_vote_extension(
        &self,
        scope: VoteExtensionScope<VbContext>,
        extension: Vec<u8>,
    ) -> Result<SignedMessage<VbContext, Vec<u8>>, SigningError> {
        let signed =
            (scope.height, scope.round, scope.value_id, scope.validator_address, &extension);
        let signature = self.sign(Domain::Extension, &signed);
        Ok(SignedMessage::new(extension, signature))
    }

    async fn sign_validator_proof(
        &self,
        _public_key: Vec<u8>,
        _peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<VbContext>, SigningError> {
        // Validator proofs bind a libp2p peer id to a key; our peers are their hotkeys.
        Err(SigningError::from_source("validator proofs are not used: peers are hotkeys"))
    }
}

#[async_trait]
impl Verifier<VbContext> for HotkeyVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &Sig,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        Ok(VerificationResult::from_bool(self.verify(Domain::Vote, vote, signature, public_key)))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Sig,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let valid = self.verify(Domain::Proposal, proposal, signature, public_key);
        Ok(VerificationResult::from_bool(valid))
    }

    async fn verify_signed_vote_extension(
        &self,
        scope: &VoteExtensionScope<VbContext>,
        extension: &Vec<u8>,
        signature: &Sig,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let signed =
            (scope.height, scope.round, scope.value_id, scope.validator_address, extension);
        let valid = self.verify(Domain::Extension, &signed, signature, public_key);
        Ok(VerificationResult::from_bool(valid))
    }

    async fn verify_validator_proof(
        &self,
        _proof: &ValidatorProof<VbContext>,
    ) -> Result<VerificationResult, SigningError> {
        Ok(VerificationResult::Invalid)
    }
}
