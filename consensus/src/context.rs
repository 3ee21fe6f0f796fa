//! Malachite's [`Context`] for veribench: who votes (validators by hotkey, with stake as voting
//! power), on what (an [`EpochValue`] per weights epoch) and how messages are signed (sr25519).

use std::fmt;
use std::sync::Arc;

use malachitebft_core_types::{
    Context, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::signing::Sr25519;
use crate::value::{EpochValue, ValueId};

/// A consensus height: the weights epoch, `floor(block / epoch_blocks)`, the same number for
/// every validator that reads the same chain.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Height(pub u64);

impl Height {
    /// The height (epoch) of `block`. `epoch_blocks` of 0 is read as 1.
    pub fn of_block(block: u64, epoch_blocks: u64) -> Self {
        Height(block / epoch_blocks.max(1))
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl malachitebft_core_types::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(0);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its hotkey.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Address(pub PublicKey);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl malachitebft_core_types::Address for Address {}

/// One validator: its hotkey and its voting power (rescaled stake, never zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// The hotkey.
    pub address: Address,
    /// The same hotkey as the key its signatures verify with.
    pub public_key: PublicKey,
    /// Rescaled stake (see [`crate::stake::rescale_stakes`]).
    pub voting_power: VotingPower,
}

impl malachitebft_core_types::Validator<VbContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// The validators of one height, sorted by hotkey, with a total that `3 × total` cannot overflow
/// (Malachite's threshold check multiplies by 3 and panics on overflow). Only
/// [`crate::stake::validator_set`] builds one, which is what guarantees both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<Vec<Validator>>,
    total: VotingPower,
}

impl ValidatorSet {
    /// From validators already sorted by address, unique, with non-zero powers whose total
    /// times 3 fits in a u64.
    pub(crate) fn from_sorted(validators: Vec<Validator>) -> Self {
        let total = validators.iter().map(|v| v.voting_power).sum();
        Self { validators: Arc::new(validators), total }
    }

    /// The validators, sorted by hotkey.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// The validator with this hotkey.
    pub fn get(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators.binary_search_by(|v| v.address.0.cmp(key)).ok().map(|i| &self.validators[i])
    }

    /// Whether `key` votes at this height.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.get(key).is_some()
    }

    /// The sum of the voting powers.
    pub fn total_power(&self) -> VotingPower {
        self.total
    }
}

impl malachitebft_core_types::ValidatorSet<VbContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.total
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.get(&address.0)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal: the value for `height` at `round`, signed by its proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The proposed value, whole: it is a few kilobytes, so it travels in the proposal itself.
    pub value: EpochValue,
    /// The proof-of-lock round (`Round::Nil` when none).
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl malachitebft_core_types::Proposal<VbContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &EpochValue {
        &self.value
    }

    fn take_value(self) -> EpochValue {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Proposal parts: the whole value is carried by its [`Proposal`], so a proposal is its only
/// part. The type exists because Malachite's context requires one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WholeValue;

impl malachitebft_core_types::ProposalPart<VbContext> for WholeValue {
    fn is_first(&self) -> bool {
        true
    }

    fn is_last(&self) -> bool {
        true
    }
}

/// A prevote or precommit. Vote extensions are off, so a vote never carries one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The value voted for, or nil.
    pub value: NilOrVal<ValueId>,
    /// The voter.
    pub validator: Address,
}

impl malachitebft_core_types::Vote<VbContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<ValueId> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<ValueId> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.vote_type
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<VbContext>> {
        None
    }

    fn take_extension(&mut self) -> Option<SignedExtension<VbContext>> {
        None
    }

    fn extend(self, _extension: SignedExtension<VbContext>) -> Self {
        self
    }
}

/// The context: which subnet (its netuid, bound into every signature so that a message of one
/// subnet's consensus never counts in another's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VbContext {
    /// The subnet's netuid.
    pub network: u32,
}

impl Context for VbContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = WholeValue;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = EpochValue;
    type Vote = Vote;
    type Extension = Vec<u8>;
    type SigningScheme = Sr25519;

    /// Round robin over the validators sorted by hotkey, starting at `height mod n`: every
    /// validator proposes in turn, whatever its stake, and a proposer that fails one round is
    /// not the proposer of the next.
    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let n = validator_set.validators.len().max(1) as u64;
        let round = u64::from(round.as_u32().unwrap_or(0));
        let index = (height.0 % n + round % n) % n;
        // The core never starts a height with an empty set; `stake::validator_set` refuses one.
        &validator_set.validators[index as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: EpochValue,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal { height, round, value, pol_round, proposer: address }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: Address,
    ) -> Vote {
        Vote { vote_type: VoteType::Prevote, height, round, value: value_id, validator: address }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<ValueId>,
        address: Address,
    ) -> Vote {
        Vote { vote_type: VoteType::Precommit, height, round, value: value_id, validator: address }
    }
}
