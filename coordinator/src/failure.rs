//! Why a challenge failed: the `reason` stored with it and shown by the API, and whose fault it
//! was (SPEC §8.3). Failures the coordinator caused (its restart or shutdown, its verifier) and
//! a `busy` refusal (the device serving another validator) never count against the worker: they
//! are not in a miner's failed count and never penalise ([`Failure::NOT_COUNTED`]).
//! A failing database fails no challenge: outcomes wait for it (see `service::record`).

use veribench_protocol::{ErrorCode, RejectReason};

/// Why a challenge failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The verifier rejected the openings (SPEC §6).
    Rejected(RejectReason),
    /// No commitment before the deadline.
    DeadlineMissed,
    /// No openings within the open timeout after the open request was sent.
    OpenTimeout,
    /// The worker's connection ended while the challenge was in flight.
    Disconnected,
    /// The worker refused the challenge or could not finish it (SPEC §8.2); the detail starts
    /// with the code the worker sent, e.g. `expired: `.
    WorkerRefused,
    /// The worker refused the challenge as `busy`: its device is computing another validator's
    /// challenge. Not a fault (a miner serves every validator), so it never counts against the
    /// worker; the device is challenged again soon (`schedule.busy_retry_secs`).
    Busy,
    /// The worker or its device was gone when the round's frame was to be queued.
    NotSent,
    /// The verifier itself failed.
    VerifierError,
    /// The coordinator was stopped while the challenge was in flight.
    CoordinatorShutdown,
    /// A previous coordinator process ended without finishing the challenge (or without
    /// storing its outcome: a database that stayed down through a shutdown).
    CoordinatorRestart,
}

impl Failure {
    /// The reasons the coordinator is answerable for, as stored.
    pub const COORDINATORS: [&'static str; 4] =
        ["not_sent", "verifier_error", "coordinator_shutdown", "coordinator_restart"];

    /// The reasons never counted against a worker (in a miner's failed count or a penalty), as
    /// stored: the coordinator's, and `busy`.
    pub const NOT_COUNTED: [&'static str; 5] = [
        Self::COORDINATORS[0],
        Self::COORDINATORS[1],
        Self::COORDINATORS[2],
        Self::COORDINATORS[3],
        "busy",
    ];

    /// The stored and API name (a verdict's [`RejectReason::code`]).
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Rejected(reason) => reason.code(),
            Failure::DeadlineMissed => "deadline_missed",
            Failure::OpenTimeout => "open_timeout",
            Failure::Disconnected => "disconnected",
            Failure::WorkerRefused => "worker_refused",
            Failure::Busy => "busy",
            Failure::NotSent => "not_sent",
            Failure::VerifierError => "verifier_error",
            Failure::CoordinatorShutdown => "coordinator_shutdown",
            Failure::CoordinatorRestart => "coordinator_restart",
        }
    }

    /// The code a worker is told this failure with, in an `Error` naming the challenge: only
    /// the failures decided on the coordinator's side while the worker still waits to hear.
    /// A rejection is told as a `Verdict`; the worker knows of its own refusal; a disconnected
    /// worker, a challenge never sent and one a previous run left have no one to tell.
    pub fn told_as(&self) -> Option<ErrorCode> {
        match self {
            Failure::DeadlineMissed => Some(ErrorCode::DeadlineMissed),
            Failure::OpenTimeout => Some(ErrorCode::OpenTimeout),
            Failure::CoordinatorShutdown => Some(ErrorCode::CoordinatorShutdown),
            Failure::VerifierError => Some(ErrorCode::Internal),
            Failure::Rejected(_)
            | Failure::Disconnected
            | Failure::WorkerRefused
            | Failure::Busy
            | Failure::NotSent
            | Failure::CoordinatorRestart => None,
        }
    }

    /// Whether it counts against the worker: not the coordinator's, not a busy device.
    pub fn counts_against_worker(&self) -> bool {
        !Self::NOT_COUNTED.contains(&self.as_str())
    }

    /// Whether the coordinator, not the worker, caused it.
    pub fn is_coordinators(&self) -> bool {
        matches!(
            self,
            Failure::NotSent
                | Failure::VerifierError
                | Failure::CoordinatorShutdown
                | Failure::CoordinatorRestart
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_side_failures_are_exactly_the_listed_ones() {
        let all = [
            Failure::Rejected(RejectReason::BadProof),
            Failure::DeadlineMissed,
            Failure::OpenTimeout,
            Failure::Disconnected,
            Failure::WorkerRefused,
            Failure::Busy,
            Failure::NotSent,
            Failure::VerifierError,
            Failure::CoordinatorShutdown,
            Failure::CoordinatorRestart,
        ];
        let ours: Vec<&str> =
            all.iter().filter(|f| f.is_coordinators()).map(Failure::as_str).collect();
        assert_eq!(ours, Failure::COORDINATORS);
        let not_counted: Vec<&str> =
            all.iter().filter(|f| !f.counts_against_worker()).map(Failure::as_str).collect();
        assert_eq!(
            not_counted,
            ["busy", "not_sent", "verifier_error", "coordinator_shutdown", "coordinator_restart"]
        );
        assert!(Failure::NOT_COUNTED.iter().all(|r| not_counted.contains(r)));
        assert_eq!(Failure::NOT_COUNTED.len(), not_counted.len());
        assert_eq!(Failure::Busy.told_as(), None, "a busy worker knows it refused");
        let names: std::collections::HashSet<&str> = all.iter().map(Failure::as_str).collect();
        assert_eq!(names.len(), all.len(), "names are distinct");
        // Told failures keep their stored name on the wire, except our verifier's own failure.
        for failure in &all {
            match failure.told_as() {
                Some(ErrorCode::Internal) => assert_eq!(failure, &Failure::VerifierError),
                Some(code) => assert_eq!(code.as_str(), failure.as_str()),
                None => {}
            }
        }
        let told = all.iter().filter(|f| f.told_as().is_some()).count();
        assert_eq!(told, 4);
        // A shutdown does not count against the worker, and it hears so.
        assert!(Failure::CoordinatorShutdown.told_as().is_some_and(ErrorCode::is_transient));
    }
}
