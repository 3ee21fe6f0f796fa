//! Voting power from stake.
//!
//! Malachite's voting power is a u64 and its quorum check computes `3 × power` with a checked
//! multiplication that panics on overflow. Stake is a u64 per validator, so a total can exceed
//! what 3× fits in: [`rescale_stakes`] divides every stake by the smallest integer that makes
//! the total fit, and drops validators whose power is then zero (their share of the total was
//! below one part in `u64::MAX / 3`, far below anything a vote could turn on).

use std::collections::BTreeMap;

use veribench_protocol::PublicKey;

use crate::context::{Address, Validator, ValidatorSet};
use crate::error::ConsensusError;

/// The largest total voting power: `3 × MAX_TOTAL_POWER` fits in a u64.
pub const MAX_TOTAL_POWER: u64 = u64::MAX / 3;

/// Most validators in a set (a subnet has at most 64 validator permits; this is a bound on
/// hostile chain data, not a policy).
pub const MAX_VALIDATORS: usize = 1024;

/// One permitted validator's stake, as the metagraph reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stake {
    /// The validator's hotkey.
    pub hotkey: PublicKey,
    /// Its stake (rao).
    pub stake: u64,
}

/// Voting powers from stakes: sorted by hotkey, one entry per hotkey (the larger stake wins if
/// one is listed twice), zero dropped, total at most [`MAX_TOTAL_POWER`], and proportional to
/// stake up to the rounding of one integer division.
pub fn rescale_stakes(stakes: &[Stake]) -> Vec<(PublicKey, u64)> {
    let mut by_key: BTreeMap<PublicKey, u64> = BTreeMap::new();
    for s in stakes.iter().filter(|s| s.stake > 0) {
        let entry = by_key.entry(s.hotkey).or_insert(0);
        *entry = (*entry).max(s.stake);
    }
    let total: u128 = by_key.values().map(|&s| u128::from(s)).sum();
    let cap = u128::from(MAX_TOTAL_POWER);
    let divisor = total.div_ceil(cap).max(1);
    by_key
        .into_iter()
        .filter_map(|(key, stake)| {
            // stake / divisor ≤ stake: fits in a u64.
            let power = u64::try_from(u128::from(stake) / divisor).ok()?;
            (power > 0).then_some((key, power))
        })
        .collect()
}

/// The validator set of a height from the permitted validators' stakes.
pub fn validator_set(stakes: &[Stake]) -> Result<ValidatorSet, ConsensusError> {
    let powers = rescale_stakes(stakes);
    if powers.is_empty() {
        return Err(ConsensusError::NoValidators);
    }
    if powers.len() > MAX_VALIDATORS {
        return Err(ConsensusError::TooManyValidators(powers.len()));
    }
    let validators = powers
        .into_iter()
        .map(|(key, power)| Validator {
            address: Address(key),
            public_key: key,
            voting_power: power,
        })
        .collect();
    Ok(ValidatorSet::from_sorted(validators))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    #[test]
    fn small_stakes_are_kept_as_they_are() {
        let stakes = [Stake { hotkey: key(2), stake: 7 }, Stake { hotkey: key(1), stake: 0 }];
        assert_eq!(rescale_stakes(&stakes), vec![(key(2), 7)]);
        assert!(matches!(validator_set(&stakes[1..]), Err(ConsensusError::NoValidators)));
    }

    #[test]
    fn huge_stakes_fit_three_times_over() {
        let stakes: Vec<Stake> =
            (1..=64).map(|i| Stake { hotkey: key(i), stake: u64::MAX - u64::from(i) }).collect();
        let set = validator_set(&stakes).expect("set");
        assert_eq!(set.validators().len(), 64);
        assert!(set.total_power().checked_mul(3).is_some());
    }

    proptest! {
        #[test]
        fn rescaling_fits_preserves_order_and_drops_only_dust(
            stakes in proptest::collection::vec((0u8..200, any::<u64>()), 0..80)
        ) {
            let stakes: Vec<Stake> =
                stakes.into_iter().map(|(k, stake)| Stake { hotkey: key(k), stake }).collect();
            let powers = rescale_stakes(&stakes);
            let total: u128 = powers.iter().map(|(_, p)| u128::from(*p)).sum();
            prop_assert!(total * 3 <= u128::from(u64::MAX));
            prop_assert!(powers.iter().all(|(_, p)| *p > 0));
            prop_assert!(powers.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique");
            let max_of = |k: PublicKey| stakes.iter().filter(|s| s.hotkey == k).map(|s| s.stake).max();
            // More stake never means less power.
            for a in &powers {
                for b in &powers {
                    if max_of(a.0) >= max_of(b.0) {
                        prop_assert!(a.1 >= b.1);
                    }
                }
            }
            // Proportional up to rounding: power × divisor ≤ stake < (power + 1) × divisor.
            let stake_total: u128 = {
                let mut seen = std::collections::BTreeMap::new();
                for s in &stakes {
                    let e = seen.entry(s.hotkey).or_insert(0u64);
                    *e = (*e).max(s.stake);
                }
                seen.values().map(|&s| u128::from(s)).sum()
            };
            let divisor = stake_total.div_ceil(u128::from(MAX_TOTAL_POWER)).max(1);
            for (k, p) in &powers {
                let s = u128::from(max_of(*k).unwrap_or(0));
                prop_assert!(u128::from(*p) * divisor <= s && s < (u128::from(*p) + 1) * divisor);
            }
            // Only dust is dropped: a dropped non-zero stake is below the divisor.
            for s in &stakes {
                if s.stake > 0 && !powers.iter().any(|(k, _)| *k == s.hotkey) {
                    prop_assert!(u128::from(s.stake) < divisor);
                }
            }
        }
    }
}
