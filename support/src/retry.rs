//! The one retry loop and the one backoff schedule of the workspace: transient failures are
//! retried after exponentially growing delays, final ones returned at once.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// An exponential schedule: the delay after failed attempt `i` (from 0) is at most
/// `min(max_ms, base_ms · factor^i)`. [`RetryPolicy`] doubles without jitter; reconnecting
/// fleets use [`Backoff::jittered`] so that they do not come back in lock step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// The ceiling of the first delay, in milliseconds.
    pub base_ms: u64,
    /// Growth of the ceiling per failed attempt (below 1 or not finite counts as 1).
    pub factor: f64,
    /// Largest ceiling, in milliseconds.
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base_ms: 1_000, factor: 2.0, max_ms: 60_000 }
    }
}

impl Backoff {
    /// The ceiling of the delay after failed attempt `attempt` (0-based). Never panics or
    /// overflows, whatever the parameters.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = if self.factor.is_finite() { self.factor.max(1.0) } else { 1.0 };
        let grown = self.base_ms as f64 * factor.powi(attempt.min(1_000) as i32);
        let ms = if grown.is_finite() { grown.min(self.max_ms as f64) } else { 0.0 };
        // `as` saturates; the min above keeps it within max_ms anyway.
        Duration::from_millis((ms as u64).min(self.max_ms))
    }

    /// A delay drawn uniformly in `[0, ceiling(attempt)]` ("full jitter").
    pub fn jittered(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Delay after the first failure, in milliseconds; doubled after each further one.
    pub initial_delay_ms: u64,
    /// Cap of the delay, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, initial_delay_ms: 1_000, max_delay_ms: 60_000 }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (0-based `attempt` that just failed).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.schedule().ceiling(attempt)
    }

    /// The schedule: doubling from `initial_delay_ms` up to `max_delay_ms`, without jitter.
    pub fn schedule(&self) -> Backoff {
        Backoff { base_ms: self.initial_delay_ms, factor: 2.0, max_ms: self.max_delay_ms }
    }
}

/// An error that may go away if the call is made again (a node or server down, a timeout).
pub trait Transient: std::fmt::Display {
    /// Whether retrying can help.
    fn is_transient(&self) -> bool;
}

/// Runs `call` until it succeeds, fails with a final error, or `policy.attempts` are used up;
/// transient errors ([`Transient::is_transient`]) wait [`RetryPolicy::delay`] in between. The
/// last error is returned. Every retry loop of the workspace is this one.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut call: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = policy.attempts.max(1);
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt + 1 < attempts => {
                let delay = policy.delay(attempt);
                tracing::warn!(what, attempt = attempt + 1, ?delay, error = %e, "call failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// A call's failure, transient or not.
    #[derive(Debug, PartialEq)]
    enum Failure {
        Down,
        Refused,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            *self == Failure::Down
        }
    }

    const FAST: RetryPolicy = RetryPolicy { attempts: 4, initial_delay_ms: 1, max_delay_ms: 2 };

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy { attempts: 10, initial_delay_ms: 100, max_delay_ms: 1_000 };
        let ms: Vec<u128> = (0..6).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(u32::MAX).as_millis(), 1000);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let out = retry(&FAST, "test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(Failure::Down) } else { Ok(7) }
        })
        .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn final_errors_are_not_retried_and_attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = retry(&FAST, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Refused)
        })
        .await;
        assert_eq!(out, Err(Failure::Refused));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let out: Result<(), _> = retry(&FAST, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Down)
        })
        .await;
        assert_eq!(out, Err(Failure::Down));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn backoff_ceilings_grow_to_the_cap_and_never_overflow() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jittered_delays_spread_within_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(1);
        let b = Backoff::default();
        let delays: Vec<_> = (0..200).map(|_| b.jittered(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter spreads the delays");
    }

    #[test]
    fn silly_parameters_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(3);
        for factor in [f64::NAN, f64::INFINITY, -3.0, 0.0, 1e300] {
            let b = Backoff { base_ms: u64::MAX, factor, max_ms: 5 };
            for attempt in [0, 1, 7, u32::MAX] {
                assert!(b.jittered(attempt, &mut rng) <= Duration::from_millis(5));
            }
        }
    }
}
