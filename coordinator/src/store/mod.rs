//! Persistence of everything the coordinator learns: workers, their devices, every challenge and
//! each of its state transitions, and counts of rejected peer inputs.
//!
//! One `Store` over sqlx's `Any` driver serves SQLite (the embedded default, one file created
//! on first use) and PostgreSQL (production), with a migration set per database. Timestamps are
//! Unix milliseconds (i64); keys and roots are lowercase hex text.

use veribench_protocol::{ChallengeId, DeviceKey, Mode, PublicKey, Root, Seed, Shape, UnixMillis};

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// `sqlite://path` (created if missing, with its parent directory).
    Sqlite,
    /// `postgres://…`.
    Postgres,
}

/// The persisted life of a challenge: created → sent → committed → verifying → verified | failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeStatus {
    /// Recorded, not yet on the wire.
    Created,
    /// Sent to the worker; the coordinator's clock is running.
    Sent,
    /// The worker's root arrived; rows are being requested.
    Committed,
    /// Openings arrived and are being checked.
    Verifying,
    /// Terminal: accepted.
    Verified,
    /// Terminal: rejected or abandoned, with a reason.
    Failed,
}

impl ChallengeStatus {
    /// Every status.
    pub const ALL: [ChallengeStatus; 6] = [
        ChallengeStatus::Created,
        ChallengeStatus::Sent,
        ChallengeStatus::Committed,
        ChallengeStatus::Verifying,
        ChallengeStatus::Verified,
        ChallengeStatus::Failed,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeStatus::Created => "created",
            ChallengeStatus::Sent => "sent",
            ChallengeStatus::Committed => "committed",
            ChallengeStatus::Verifying => "verifying",
            ChallengeStatus::Verified => "verified",
            ChallengeStatus::Failed => "failed",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether no transition leaves this status.
    pub fn is_terminal(self) -> bool {
        matches!(self, ChallengeStatus::Verified | ChallengeStatus::Failed)
    }
}

/// Whether a verified challenge counts towards its miner's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credit {
    /// It counts.
    Credited,
    /// It was verified but does not count.
    Withheld(Withheld),
}

/// Why a verified challenge does not count (stored in its `reason` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// Faster than the worker's claimed hardware can plausibly go (SPEC §8.1).
    ImplausibleRate,
    /// Another identity holds the device.
    DeviceConflict,
}

impl Withheld {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::ImplausibleRate => "implausible_rate",
            Withheld::DeviceConflict => "device_conflict",
        }
    }
}

impl Credit {
    /// `Credited`, or withheld as a device conflict.
    #[cfg(test)]
    pub(crate) fn from_flag(credited: bool) -> Self {
        if credited { Credit::Credited } else { Credit::Withheld(Withheld::DeviceConflict) }
    }
}

/// A commitment as the coordinator measured it (SPEC §8.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommitRecord {
    /// When it arrived.
    pub at: UnixMillis,
    /// The committed root.
    pub root: Root,
    /// Compute time credited, in milliseconds.
    pub compute_ms: f64,
    /// Round trip subtracted, in milliseconds.
    pub rtt_ms: f64,
}

/// A challenge about to be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChallenge {
    /// Credited miner.
    pub miner_hotkey: PublicKey,
    /// The worker identity it goes to.
    pub worker_key: PublicKey,
    /// The device that must compute it.
    pub device: DeviceKey,
    /// Arithmetic.
    pub mode: Mode,
    /// Dimensions.
    pub shape: Shape,
    /// Fresh seed.
    pub seed: Seed,
    /// When it is issued.
    pub issued_at: UnixMillis,
    /// Commitment deadline.
    pub deadline: UnixMillis,
}

/// One stored challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct ChallengeRow {
    /// Assigned by the database, never reused.
    pub id: ChallengeId,
    /// Credited miner.
    pub miner_hotkey: PublicKey,
    /// Worker identity.
    pub worker_key: PublicKey,
    /// Device.
    pub device: DeviceKey,
    /// Arithmetic.
    pub mode: Mode,
    /// Dimensions.
    pub shape: Shape,
    /// Seed.
    pub seed: Seed,
    /// Current status.
    pub status: ChallengeStatus,
    /// Failure reason code (`RejectReason::code()` or a coordinator reason such as
    /// `deadline_missed`, `open_timeout`, `disconnected`, `coordinator_restart`).
    pub reason: Option<String>,
    /// Human-readable failure detail.
    pub detail: Option<String>,
    /// Issue time.
    pub issued_at: UnixMillis,
    /// Deadline.
    pub deadline: UnixMillis,
    /// When it went on the wire.
    pub sent_at: Option<UnixMillis>,
    /// When the commitment arrived.
    pub committed_at: Option<UnixMillis>,
    /// When it reached a terminal status.
    pub finished_at: Option<UnixMillis>,
    /// Committed root.
    pub root: Option<Root>,
    /// Commitment arrival − send − round trip, by the coordinator's clock.
    pub compute_ms: Option<f64>,
    /// Round trip subtracted.
    pub rtt_ms: Option<f64>,
    /// 2·m·k·n / compute time.
    pub gflops: Option<f64>,
    /// Whether the result counts for the miner (false when its worker did not hold the device's
    /// claim, or its rate was implausible; `reason` says which).
    pub credited: bool,
}

/// A worker as it registered.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    /// The worker's own key (identity).
    pub worker_key: PublicKey,
    /// The miner hotkey that delegated it.
    pub miner_hotkey: PublicKey,
    /// Display name.
    pub name: String,
    /// Peer address.
    pub address: String,
    /// Hardware description as JSON.
    pub hardware_json: String,
    /// Devices offered.
    pub devices: Vec<DeviceKey>,
    /// The worker's clock minus ours, measured at registration (SPEC §8.2), when measured.
    pub clock_skew_ms: Option<i64>,
}

/// A stored worker.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRow {
    /// Registration.
    pub record: WorkerRecord,
    /// Connected and heard from within the offline timeout.
    pub online: bool,
    /// Last registration.
    pub connected_at: UnixMillis,
    /// Last frame or heartbeat.
    pub last_seen: UnixMillis,
}

/// Per-miner totals for the API and the devnet table.
#[derive(Clone, Debug, PartialEq)]
pub struct MinerRow {
    /// The hotkey.
    pub hotkey: PublicKey,
    /// Registered workers.
    pub workers: u32,
    /// Online workers.
    pub online_workers: u32,
    /// Credited verified challenges.
    pub verified: u64,
    /// Failed challenges the worker is answerable for: coordinator-side failures and busy
    /// refusals ([`crate::failure::Failure::NOT_COUNTED`]) are not counted.
    pub failed: u64,
    /// Challenges its workers refused as `busy` (their device serving another validator).
    pub busy: u64,
    /// Mean GFLOP/s (GOP/s for int8) over credited verified challenges, 0 if none.
    pub mean_gflops: f64,
}

/// Refused peer inputs (bad frames, bad signatures, floods, …) of one group, counted for
/// operators: one row per (peer address, kind, registered worker), see [`crate::refusals`].
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The peer's IP, its /64 for IPv6, or `overflow` for refusals counted while the in-memory
    /// buffer was full.
    pub peer: String,
    /// Short stable kind (`malformed_frame`, `frame_too_large`, `rate_limited`, `bad_signature`,
    /// `unknown_hotkey`, `replayed_registration`, `handshake_timeout`, `bad_lease`, …).
    pub kind: String,
    /// The registered worker the refusals concern (its connection proved the key).
    pub worker_key: Option<PublicKey>,
    /// The worker key the most recent refused registration of the group claimed, unproven.
    pub last_claimed: Option<PublicKey>,
    /// Refusals counted.
    pub count: u64,
    /// The first one.
    pub first_at: UnixMillis,
    /// The most recent one.
    pub last_at: UnixMillis,
    /// Details of the most recent one (bounded, [`crate::detail::bounded`]).
    pub detail: String,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not `sqlite:` or `postgres:`.
    #[error("unsupported database URL {0:?} (expected sqlite://… or postgres://…)")]
    UnsupportedUrl(String),
    /// Connecting, migrating or querying failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value that does not parse (hex key, mode, status).
    #[error("corrupt stored value in {column}: {value:?}")]
    Corrupt {
        /// Column name.
        column: &'static str,
        /// The value.
        value: String,
    },
    /// A different value was offered for a height already decided: a consensus safety violation.
    /// The stored decision is kept.
    #[error(
        "conflicting decision at height {height}: stored value {}, offered {}",
        hex::encode(.stored),
        hex::encode(.offered)
    )]
    ConflictingDecision {
        /// The height.
        height: u64,
        /// The value id already stored.
        stored: [u8; 32],
        /// The value id offered.
        offered: [u8; 32],
    },
    /// A value the database cannot hold without changing its meaning (a height above
    /// `i64::MAX`, which would collide with others if saturated).
    #[error("{column} {value} is out of the stored range")]
    OutOfRange {
        /// Column name.
        column: &'static str,
        /// The value.
        value: u64,
    },
    /// A measurement that must be a finite, non-negative number (a batch's operation count).
    #[error("{column} {value} is not a finite non-negative number")]
    InvalidMeasure {
        /// Column name.
        column: &'static str,
        /// The value.
        value: f64,
    },
    /// A weight set refers to a score run that is not stored.
    #[error("no score run {0}")]
    UnknownScoreRun(i64),
    /// Creating the SQLite file's directory failed.
    #[error("cannot create database directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The coordinator's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: sqlx::AnyPool,
    kind: DbKind,
    health: std::sync::Arc<StoreHealth>,
}

/// How the store waits on its database.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreOptions {
    /// Longest wait for a pooled connection before a call fails (sqlx's default is 30 s, during
    /// which every caller of a stopped database would hang).
    pub acquire_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { acquire_timeout: std::time::Duration::from_secs(3) }
    }
}

mod circuits;
mod claims;
mod decisions;
mod health;
mod liveness;
mod market;
mod nonces;
mod queries;
mod rejections;
mod row;
mod scoring;
mod status;
#[cfg(test)]
pub(crate) mod test_db;

pub use claims::HeldDevice;
pub use decisions::{DecisionRecord, EvidenceKind, EvidenceRecord, MAX_CONSENSUS_LISTING};
pub use health::{HealthReport, StoreHealth, is_outage};
pub use market::{
    BatchRow, BatchState, MAX_SUBMISSION_LISTING, MAX_SUMMARY_SUBMISSIONS, NewBatch, Participant,
    SubmissionRecord, SubmissionRow, SummaryRow, Verdict,
};
pub use scoring::{
    BUCKET_MS, LeaseRow, MinerScoreRecord, NewLease, ScoreRun, ScoreRunRow, WeightEntry,
    WeightSetRow, WeightSetStatus, WeightSetUpdate, WorkerScoreRecord, bucket_of,
};
pub use status::{IpChange, LeaseSummary, RateSample, Throughput};
#[cfg(test)]
mod tests;
