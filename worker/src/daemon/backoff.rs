//! Reconnection delays: the workspace's one exponential schedule
//! ([`veribench_support::Backoff`]) with full jitter.
//!
//! Attempt `i` (from 0) waits a uniformly random time in `[0, min(cap, base · factor^i)]`, so a
//! fleet of workers that lost their coordinator at the same moment does not reconnect in lock
//! step. The daemon resets the backoff once a connection has been welcomed.

use std::time::Duration;

use rand::Rng;

/// Parameters of a [`Backoff`] (the `[backoff]` table: `base_ms`, `factor`, `max_ms`).
pub use veribench_support::Backoff as BackoffConfig;

/// Successive reconnection delays: the schedule and how many attempts have failed.
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
        self.config.ceiling(self.attempt)
    }

    /// The next delay, jittered uniformly in `[0, ceiling]`, and one more failed attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = self.config.jittered(self.attempt, rng);
        self.attempt = self.attempt.saturating_add(1);
        delay
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
    fn ceilings_grow_with_failures_and_reset_after_a_welcome() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let mut rng = StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(backoff.ceiling().as_secs());
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(60));
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.attempt(), 9);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
        for _ in 0..100_000 {
            backoff.next_delay(&mut rng);
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60), "no overflow after many attempts");
    }
}
