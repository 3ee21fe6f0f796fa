//! Reconnection delays: exponential backoff with full jitter.
//!
//! Attempt `i` (from 0) waits a uniformly random time in `[0, min(cap, base · factor^i)]`, so a
//! fleet of workers that lost their coordinator at the same moment does not reconnect in lock
//! step. The daemon resets the backoff once a connection has been welcomed.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Parameters of a [`Backoff`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// The ceiling of the first delay, in milliseconds.
    pub base_ms: u64,
    /// Growth of the ceiling per failed attempt.
    pub factor: f64,
    /// Largest ceiling, in milliseconds.
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self { base_ms: 1_000, factor: 2.0, max_ms: 60_000 }
    }
}

/// Successive reconnection delays.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A backoff at its first attempt.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = if self.config.factor.is_finite() { self.config.factor.max(1.0) } else { 1.0 };
        let grown = self.config.base_ms as f64 * factor.powi(self.attempt.min(1_000) as i32);
        let ms = if grown.is_finite() { grown.min(self.config.max_ms as f64) } else { 0.0 };
        // `as` saturates; the min above keeps it within max_ms anyway.
        Duration::from_millis((ms as u64).min(self.config.max_ms))
    }

    /// The next delay, jittered uniformly in `[0, ceiling]`, and one more failed attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling().as_millis()).unwrap_or(u64::MAX);
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// Back to the first attempt, after a connection succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(backoff.ceiling().as_secs());
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= Duration::from_secs(60));
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
        for _ in 0..100_000 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60), "no overflow after many attempts");
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<_> =
            (0..200).map(|_| Backoff::new(BackoffConfig::default()).next_delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads the delays");
    }

    #[test]
    fn silly_parameters_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(3);
        for factor in [f64::NAN, f64::INFINITY, -3.0, 0.0, 1e300] {
            let mut b = Backoff::new(BackoffConfig { base_ms: u64::MAX, factor, max_ms: 5 });
            for _ in 0..5 {
                assert!(b.next_delay(&mut rng) <= Duration::from_millis(5));
            }
        }
    }
}
