//! Which challenges a worker computes: the checks every incoming [`SignedChallenge`] passes
//! before any cycle is spent on it.
//!
//! [`ChallengeGuard`] is pure (no clock, no I/O: the caller passes `now` and the trusted key), so
//! every refusal is unit-tested. It refuses, in this order:
//!
//! 1. a challenge naming another issuer than the trusted coordinator key ([`Refusal::Foreign`]);
//! 2. a signature that does not verify over [`SignedChallenge::signed_bytes`] with that key
//!    (forged, altered or unsigned: [`Refusal::BadSignature`]);
//! 3. a challenge id already seen from that coordinator ([`Refusal::Replayed`]);
//! 4. a deadline at or before `now` ([`Refusal::Expired`]), or an issue time more than the
//!    allowed clock skew after `now` ([`Refusal::FromTheFuture`]);
//! 5. a device this worker does not own ([`Refusal::UnknownDevice`]);
//! 6. a device that is still computing another challenge ([`Refusal::Busy`]).
//!
//! Each refusal has its own wire code ([`Refusal::code`]), which the worker's Error frame carries
//! with the challenge id (SPEC §8.2).
//!
//! The replay memory is bounded: the ids of the last [`GuardPolicy::recent_capacity`] authentic
//! challenges. An id older than that can only come back as a replay after its deadline has long
//! passed (coordinators issue deadlines of seconds to minutes), where check 4 refuses it anyway.
//! An id is remembered as soon as its signature verifies, even when it is then refused for
//! another reason, so a signed challenge is consumed at most once.

use std::collections::{HashMap, HashSet, VecDeque};

use veribench_protocol::{
    ChallengeId, DeviceKey, ErrorCode, PublicKey, SignedChallenge, UnixMillis,
};
use veribench_wallet::verify;

/// How far in the future a challenge may be issued, by default: five minutes of clock skew.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;
/// How many challenge ids are remembered against replays, by default.
pub const DEFAULT_RECENT_CAPACITY: usize = 4096;

/// Tunables of a [`ChallengeGuard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Largest accepted `issued_at - now`, in milliseconds.
    pub max_future_skew_ms: u64,
    /// Challenge ids remembered against replays (at least 1).
    pub recent_capacity: usize,
}

impl Default for GuardPolicy {
    fn default() -> Self {
        Self {
            max_future_skew_ms: DEFAULT_MAX_FUTURE_SKEW_MS,
            recent_capacity: DEFAULT_RECENT_CAPACITY,
        }
    }
}

/// Why a challenge was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Issued by a key other than the trusted coordinator's.
    #[error("challenge {id} is issued by {signer}, not by the trusted coordinator {trusted}")]
    Foreign {
        /// The challenge.
        id: ChallengeId,
        /// The key it names as issuer.
        signer: PublicKey,
        /// The key trusted on this connection.
        trusted: PublicKey,
    },
    /// The signature does not verify: forged, altered, or unsigned.
    #[error("challenge {id} has no valid signature by the coordinator")]
    BadSignature {
        /// The challenge.
        id: ChallengeId,
    },
    /// Already received from this coordinator.
    #[error("challenge {id} was already received (replay)")]
    Replayed {
        /// The challenge.
        id: ChallengeId,
    },
    /// The deadline has passed.
    #[error("challenge {id} expired at {} ms (now {} ms)", deadline.0, now.0)]
    Expired {
        /// The challenge.
        id: ChallengeId,
        /// Its deadline.
        deadline: UnixMillis,
        /// The worker's clock.
        now: UnixMillis,
    },
    /// Issued further in the future than the allowed clock skew.
    #[error("challenge {id} is issued at {} ms, too far after now ({} ms)", issued_at.0, now.0)]
    FromTheFuture {
        /// The challenge.
        id: ChallengeId,
        /// Its issue time.
        issued_at: UnixMillis,
        /// The worker's clock.
        now: UnixMillis,
    },
    /// Names a device this worker does not have.
    #[error("challenge {id} is for device {device}, which this worker does not own")]
    UnknownDevice {
        /// The challenge.
        id: ChallengeId,
        /// The device named.
        device: DeviceKey,
    },
    /// The device is computing another challenge.
    #[error("challenge {id}: device {device} is busy with another challenge")]
    Busy {
        /// The challenge.
        id: ChallengeId,
        /// The busy device.
        device: DeviceKey,
    },
}

impl Refusal {
    /// The wire error code to answer with: one per refusal, so the coordinator records why
    /// without reading the text (its [`ErrorCode::as_str`] is the refusal's stable name).
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Foreign { .. } => ErrorCode::Foreign,
            Refusal::BadSignature { .. } => ErrorCode::BadSignature,
            Refusal::Replayed { .. } => ErrorCode::Replayed,
            Refusal::Expired { .. } => ErrorCode::Expired,
            Refusal::FromTheFuture { .. } => ErrorCode::FromTheFuture,
            Refusal::UnknownDevice { .. } => ErrorCode::UnknownDevice,
            Refusal::Busy { .. } => ErrorCode::Busy,
        }
    }
}

/// The ids of recent challenges per coordinator key, forgetting the oldest past a capacity.
#[derive(Debug)]
struct RecentIds {
    capacity: usize,
    order: VecDeque<(PublicKey, ChallengeId)>,
    set: HashSet<(PublicKey, ChallengeId)>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { capacity, order: VecDeque::new(), set: HashSet::new() }
    }

    /// Remembers `entry`; false if it was already remembered.
    fn insert(&mut self, entry: (PublicKey, ChallengeId)) -> bool {
        if !self.set.insert(entry) {
            return false;
        }
        self.order.push_back(entry);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Admits or refuses challenges, and tracks which devices are computing. One per worker: it
/// outlives connections, so a device still computing for a dropped connection stays busy and a
/// challenge seen before a reconnect is still a replay after it.
#[derive(Debug)]
pub struct ChallengeGuard {
    policy: GuardPolicy,
    devices: HashSet<DeviceKey>,
    busy: HashMap<DeviceKey, ChallengeId>,
    recent: RecentIds,
}

impl ChallengeGuard {
    /// A guard for a worker owning `devices`.
    pub fn new(devices: impl IntoIterator<Item = DeviceKey>, policy: GuardPolicy) -> Self {
        Self {
            policy,
            devices: devices.into_iter().collect(),
            busy: HashMap::new(),
            recent: RecentIds::new(policy.recent_capacity),
        }
    }

    /// Checks `signed` against `trusted` (the coordinator key of this connection) at `now`. On
    /// success its device is marked busy until [`ChallengeGuard::release`].
    pub fn admit(
        &mut self,
        trusted: &PublicKey,
        signed: &SignedChallenge,
        now: UnixMillis,
    ) -> Result<(), Refusal> {
        let challenge = &signed.challenge;
        let id = challenge.id;
        if signed.coordinator != *trusted {
            return Err(Refusal::Foreign { id, signer: signed.coordinator, trusted: *trusted });
        }
        if !verify(trusted, &signed.signed_bytes(), &signed.signature) {
            return Err(Refusal::BadSignature { id });
        }
        if !self.recent.insert((*trusted, id)) {
            return Err(Refusal::Replayed { id });
        }
        if challenge.deadline <= now {
            return Err(Refusal::Expired { id, deadline: challenge.deadline, now });
        }
        if challenge.issued_at.0 > now.0.saturating_add(self.policy.max_future_skew_ms) {
            return Err(Refusal::FromTheFuture { id, issued_at: challenge.issued_at, now });
        }
        if !self.devices.contains(&signed.device) {
            return Err(Refusal::UnknownDevice { id, device: signed.device.clone() });
        }
        if self.busy.contains_key(&signed.device) {
            return Err(Refusal::Busy { id, device: signed.device.clone() });
        }
        self.busy.insert(signed.device.clone(), id);
        Ok(())
    }

    /// Marks `device` free again, once its computation ended (however it ended).
    pub fn release(&mut self, device: &DeviceKey) {
        self.busy.remove(device);
    }

    /// The challenge `device` is computing, if any.
    pub fn computing(&self, device: &DeviceKey) -> Option<ChallengeId> {
        self.busy.get(device).copied()
    }
}
