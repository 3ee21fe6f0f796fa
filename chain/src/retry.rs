//! Exponential backoff for chain calls: transient failures are retried, final ones returned.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ChainError;

/// How often and how patiently a chain call is retried.
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
        let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(self.initial_delay_ms.saturating_mul(factor).min(self.max_delay_ms))
    }
}

/// An error that may go away if the call is made again (a node or server down, a timeout).
pub trait Transient: std::fmt::Display {
    /// Whether retrying can help.
    fn is_transient(&self) -> bool;
}

impl Transient for ChainError {
    fn is_transient(&self) -> bool {
        ChainError::is_transient(self)
    }
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

    use super::*;

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
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ChainError::Unreachable("down".into()))
            } else {
                Ok(7)
            }
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
            Err(ChainError::Rejected("bad".into()))
        })
        .await;
        assert!(matches!(out, Err(ChainError::Rejected(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let out: Result<(), _> = retry(&FAST, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ChainError::RateLimited { blocks_left: 3 })
        })
        .await;
        assert!(matches!(out, Err(ChainError::RateLimited { blocks_left: 3 })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }
}
