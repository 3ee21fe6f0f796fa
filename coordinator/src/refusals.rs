//! Refused peer inputs, counted rather than stored one by one.
//!
//! Anyone who can reach the ports can make the coordinator refuse something (a handshake that
//! times out, a forged registration, an unauthenticated lease report), so one stored row per
//! refusal let any stranger grow the database without bound. Refusals are instead counted per
//! group, (peer address, kind, registered worker), in a [`RefusalBuffer`] of bounded size, which
//! the service writes to the store as one upsert per group at most once a second.
//!
//! The address is the IP without its port, an IPv6 address collapsed to its /64 (see
//! [`address_group`]), so one host cannot mint groups by changing ports or rotating through its
//! prefix. A worker key is part of the group only when that worker is registered with us; the
//! key a refused registration claims is the peer's word, attacker-chosen, so it is kept as the
//! group's `last_claimed` value and never splits a group.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use veribench_protocol::{PublicKey, UnixMillis};

use crate::admission::address_group;
use crate::detail::bounded;
use crate::refusal_kind::RefusalKind;
use crate::store::Rejection;

/// The peer recorded for refusals of groups that did not fit in a full buffer.
pub const OVERFLOW_PEER: &str = "overflow";
/// How often counted refusals are written.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// How often old rows (and used registration nonces) are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What refusals are counted by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Group {
    peer: String,
    kind: String,
    worker: Option<PublicKey>,
}

/// Refusals not yet written, one entry per group, at most `capacity` groups plus one overflow
/// group per kind (kinds are a fixed set named in the code, never taken from a peer).
#[derive(Debug)]
pub struct RefusalBuffer {
    groups: HashMap<Group, Rejection>,
    capacity: usize,
    last_write: Option<Instant>,
    last_prune: Option<Instant>,
}

impl RefusalBuffer {
    /// An empty buffer of `capacity` groups.
    pub fn new(capacity: usize) -> Self {
        Self { groups: HashMap::new(), capacity, last_write: None, last_prune: None }
    }

    /// Counts one refusal of `kind` from `peer` (`ip:port`) at `at`. `worker` is a registered
    /// worker the refusal concerns (part of the group), `claimed` a key the peer only claims.
    /// Returns whether this opened a new group since the last write (worth a warning in the log;
    /// repeats are not).
    pub fn add(
        &mut self,
        peer: &str,
        kind: RefusalKind,
        worker: Option<PublicKey>,
        claimed: Option<PublicKey>,
        detail: &str,
        at: UnixMillis,
    ) -> bool {
        let rejection = Rejection {
            peer: peer_group(peer),
            kind: kind.as_str().to_owned(),
            worker_key: worker,
            last_claimed: claimed,
            count: 1,
            first_at: at,
            last_at: at,
            detail: bounded(detail),
        };
        self.merge(rejection)
    }

    /// Adds a tally to its group, or to its kind's overflow group when the buffer is full.
    /// Returns whether a group was opened.
    fn merge(&mut self, mut rejection: Rejection) -> bool {
        let mut group = Group {
            peer: rejection.peer.clone(),
            kind: rejection.kind.clone(),
            worker: rejection.worker_key,
        };
        if !self.groups.contains_key(&group) && self.groups.len() >= self.capacity {
            group = Group { peer: OVERFLOW_PEER.to_owned(), kind: group.kind, worker: None };
            rejection.peer = OVERFLOW_PEER.to_owned();
            rejection.worker_key = None;
            rejection.last_claimed = None;
        }
        match self.groups.get_mut(&group) {
            Some(tally) => {
                tally.absorb(&rejection);
                false
            }
            None => {
                self.groups.insert(group, rejection);
                true
            }
        }
    }

    /// The tallies to write now: everything, when a write is due (`force`, or [`WRITE_EVERY`]
    /// since the last one); otherwise nothing.
    pub fn take_due(&mut self, now: Instant, force: bool) -> Vec<Rejection> {
        if !force && self.last_write.is_some_and(|t| now.duration_since(t) < WRITE_EVERY) {
            return Vec::new();
        }
        self.last_write = Some(now);
        self.groups.drain().map(|(_, tally)| tally).collect()
    }

    /// Puts back tallies whose write failed, so they are tried again with the next write.
    pub fn restore(&mut self, tallies: Vec<Rejection>) {
        for tally in tallies {
            self.merge(tally);
        }
    }

    /// Whether pruning is due ([`PRUNE_EVERY`] since the last time); if so, it counts as done.
    pub fn prune_due(&mut self, now: Instant) -> bool {
        if self.last_prune.is_some_and(|t| now.duration_since(t) < PRUNE_EVERY) {
            return false;
        }
        self.last_prune = Some(now);
        true
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl Rejection {
    /// Adds `later`, a tally of the same group, to this one: counts add up, the time span widens,
    /// and the detail and claimed key are those of the more recent refusal.
    pub fn absorb(&mut self, later: &Rejection) {
        self.count = self.count.saturating_add(later.count);
        self.first_at = self.first_at.min(later.first_at);
        if later.last_at >= self.last_at {
            self.last_at = later.last_at;
            self.detail.clone_from(&later.detail);
            if later.last_claimed.is_some() {
                self.last_claimed = later.last_claimed;
            }
        }
    }
}

/// The address refusals from `peer` are counted against: the IP of `ip:port` (or of a bare IP),
/// an IPv6 address as its `/64`; anything else (not an address) bounded as it is.
pub fn peer_group(peer: &str) -> String {
    let ip = peer
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| peer.parse::<IpAddr>())
        .map(address_group);
    match ip {
        Ok(IpAddr::V6(net)) => format!("{net}/64"),
        Ok(IpAddr::V4(ip)) => ip.to_string(),
        Err(_) => bounded(peer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    #[test]
    fn addresses_lose_their_port_and_ipv6_collapses_to_its_64() {
        assert_eq!(peer_group("203.0.113.9:5555"), "203.0.113.9");
        assert_eq!(peer_group("203.0.113.9"), "203.0.113.9");
        assert_eq!(peer_group("[2001:db8:1:2:aaaa::1]:443"), "2001:db8:1:2::/64");
        assert_eq!(peer_group("[2001:db8:1:2:bbbb::7]:80"), "2001:db8:1:2::/64");
        assert_eq!(peer_group("[::ffff:198.51.100.4]:1"), "198.51.100.4");
        assert_eq!(peer_group("http"), "http");
    }

    #[test]
    fn refusals_are_counted_per_address_kind_and_registered_worker() {
        let mut buffer = RefusalBuffer::new(16);
        let t = |ms| UnixMillis(ms);
        // Ports and claimed keys do not split a group; the last claim and detail are kept.
        assert!(buffer.add(
            "10.0.0.1:1",
            RefusalKind::BadSignature,
            None,
            Some(key(1)),
            "first",
            t(5)
        ));
        assert!(!buffer.add(
            "10.0.0.1:2",
            RefusalKind::BadSignature,
            None,
            Some(key(2)),
            "second",
            t(7)
        ));
        // A registered worker, another kind, another address: three more groups.
        assert!(buffer.add(
            "10.0.0.1:3",
            RefusalKind::RateLimited,
            Some(key(3)),
            None,
            "flood",
            t(6)
        ));
        assert!(buffer.add("10.0.0.1:3", RefusalKind::BadSignature, Some(key(3)), None, "x", t(6)));
        assert!(buffer.add("10.0.0.2:1", RefusalKind::BadSignature, None, None, "y", t(6)));
        let mut rows = buffer.take_due(Instant::now(), false);
        rows.sort_by(|a, b| {
            (&a.peer, &a.kind, a.worker_key).cmp(&(&b.peer, &b.kind, b.worker_key))
        });
        assert_eq!(rows.len(), 4, "{rows:?}");
        let claimed = &rows[0];
        assert_eq!((claimed.kind.as_str(), claimed.worker_key), ("bad_signature", None));
        assert_eq!((claimed.count, claimed.first_at, claimed.last_at), (2, t(5), t(7)));
        assert_eq!((claimed.detail.as_str(), claimed.last_claimed), ("second", Some(key(2))));
        assert_eq!(rows[1].worker_key, Some(key(3)));
        assert!(buffer.is_empty());
        // The next write is not due within the second, unless forced.
        buffer.add("10.0.0.1:1", RefusalKind::Flood, None, None, "d", t(9));
        assert!(buffer.take_due(Instant::now(), false).is_empty());
        assert_eq!(buffer.take_due(Instant::now(), true).len(), 1);
    }

    #[test]
    fn a_full_buffer_folds_new_groups_into_one_overflow_group_per_kind() {
        let mut buffer = RefusalBuffer::new(2);
        let long = "z".repeat(10_000);
        for i in 0..1000u32 {
            let peer = format!("10.{}.{}.{}:9", i >> 16, (i >> 8) & 255, i & 255);
            buffer.add(
                &peer,
                RefusalKind::HandshakeTimeout,
                None,
                Some(key(1)),
                &long,
                UnixMillis(1),
            );
            buffer.add(&peer, RefusalKind::MalformedFrame, None, None, "m", UnixMillis(2));
        }
        // Two groups, plus one overflow group per kind.
        assert_eq!(buffer.len(), 4);
        let rows = buffer.take_due(Instant::now(), true);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 2000);
        let overflow: Vec<&Rejection> = rows.iter().filter(|r| r.peer == OVERFLOW_PEER).collect();
        assert_eq!(overflow.len(), 2, "{rows:?}");
        assert!(overflow.iter().all(|r| r.worker_key.is_none() && r.last_claimed.is_none()));
        assert!(rows.iter().all(|r| r.detail.chars().count() < 300), "details are bounded");
        // A failed write puts its tallies back, bounded the same way.
        buffer.add("10.9.9.9:1", RefusalKind::NoDevices, None, None, "d", UnixMillis(3));
        buffer.add("10.9.9.8:1", RefusalKind::BadLease, None, None, "d", UnixMillis(3));
        buffer.restore(rows);
        assert_eq!(buffer.len(), 4, "two groups and two overflow groups");
        let back = buffer.take_due(Instant::now(), true);
        assert_eq!(back.iter().map(|r| r.count).sum::<u64>(), 2002);
    }
}
