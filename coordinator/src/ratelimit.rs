//! A token bucket per connection, so one peer's flood cannot starve the others.

use std::time::Instant;

/// Allows `rate` events per second on average and bursts of `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: Instant::now(),
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0);
        assert_eq!((0..8).filter(|_| b.allow(t0)).count(), 5);
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(100)));
        assert!(!b.allow(t0 + Duration::from_millis(100)));
        assert_eq!((0..20).filter(|_| b.allow(t0 + Duration::from_secs(10))).count(), 5);
    }
}
