//! Token buckets keyed by sender or remote address, in maps whose size is bounded: a peer that
//! floods, or many addresses that each send once, cost a fixed amount of memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// One token bucket: `rate` tokens a second up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets per key, at most `max_keys` of them.
///
/// When the map is full, buckets that have refilled to the burst are dropped (forgetting them
/// changes nothing: a new bucket starts full); if none has, a new key is refused until one does.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// Buckets of `rate` tokens a second and `burst` tokens at most, for at most `max_keys` keys.
    /// A non-finite or negative rate or burst counts as zero (nothing passes).
    pub(crate) fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        let sane = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        Self { rate: sane(rate), burst: sane(burst), max_keys, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket; false when it is empty (or the map is full of
    /// active keys).
    pub(crate) fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refill(b, rate, burst, now) < burst);
            if buckets.len() >= self.max_keys {
                return false;
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, last: now });
        if refill(bucket, self.rate, self.burst, now) >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many keys are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

/// Refills `bucket` up to `now` and returns its tokens.
fn refill(bucket: &mut Bucket, rate: f64, burst: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.last = bucket.last.max(now);
    bucket.tokens
}

/// The key of a remote address for per-address limits: the IPv4 address, or the /64 prefix of an
/// IPv6 address (one host usually owns a whole /64, so it could otherwise rotate addresses).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_cuts_at_burst_and_refills() {
        let limiter = RateLimiter::new(10.0, 3.0, 16);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow_at(&1u8, t0)));
        assert!(!limiter.allow_at(&1u8, t0));
        assert!(limiter.allow_at(&2u8, t0), "another key has its own bucket");
        assert!(limiter.allow_at(&1u8, t0 + Duration::from_millis(100)));
        assert!(!limiter.allow_at(&1u8, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn map_is_bounded() {
        let limiter = RateLimiter::new(1.0, 2.0, 4);
        let t0 = Instant::now();
        for k in 0..4u32 {
            assert!(limiter.allow_at(&k, t0));
        }
        assert!(!limiter.allow_at(&99, t0), "full of active keys: a new key is refused");
        assert_eq!(limiter.len(), 4);
        // Two seconds later every bucket is full again: they are forgotten and room is made.
        assert!(limiter.allow_at(&99, t0 + Duration::from_secs(2)));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn ipv6_keyed_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
