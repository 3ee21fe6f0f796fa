//! The penalty for wrong answers (SPEC §6): a challenge the verifier rejected as wrong zeroes the
//! worker's performance for as long as the rejection is in the scoring window. Without it, a
//! worker that skips a fraction of every product is paid for each challenge its luck lets through.

use serde::{Deserialize, Serialize};
use veribench_protocol::{RejectReason, UnixMillis};

use super::ScoringConfig;
use super::window::in_window;

/// Why the verifier rejected a challenge, as stored in the `reason` column of a failed challenge
/// ([`RejectReason::code`]). Only the verifier's verdicts are here: missed deadlines, open
/// timeouts, disconnects and our own verifier errors are not answers found wrong, so they cost a
/// worker participation but can never be penalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The opened rows are not the sampled ones.
    WrongRows,
    /// An opened row has the wrong length.
    RowLength,
    /// The opened rows do not hash up to the committed root.
    BadProof,
    /// An exact-mode entry differs from the reference.
    ValueMismatch,
    /// An fp32 entry is outside the error bound.
    OutOfTolerance,
}

impl RejectCode {
    /// Every code.
    pub const ALL: [Self; 5] = [
        Self::WrongRows,
        Self::RowLength,
        Self::BadProof,
        Self::ValueMismatch,
        Self::OutOfTolerance,
    ];

    /// The codes penalised by default: every way of committing to or opening a wrong product.
    pub const PENALISED_BY_DEFAULT: [Self; 4] =
        [Self::ValueMismatch, Self::OutOfTolerance, Self::BadProof, Self::WrongRows];

    /// The stored form, equal to [`RejectReason::code`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongRows => "wrong_rows",
            Self::RowLength => "row_length",
            Self::BadProof => "bad_proof",
            Self::ValueMismatch => "value_mismatch",
            Self::OutOfTolerance => "out_of_tolerance",
        }
    }

    /// The code of a stored `reason`; `None` for failures that are not verifier rejections
    /// (`deadline_missed`, `open_timeout`, `disconnected`, …).
    pub fn parse(reason: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == reason)
    }
}

impl From<&RejectReason> for RejectCode {
    /// Exhaustive, so a new [`RejectReason`] does not compile until it has a code here.
    fn from(reason: &RejectReason) -> Self {
        match reason {
            RejectReason::WrongRows { .. } => Self::WrongRows,
            RejectReason::RowLength { .. } => Self::RowLength,
            RejectReason::BadProof => Self::BadProof,
            RejectReason::Mismatch { .. } => Self::ValueMismatch,
            RejectReason::OutOfTolerance { .. } => Self::OutOfTolerance,
        }
    }
}

/// How many of `rejected` (finish time, code) finished in the window `(now − window, now]` with
/// a code in `cfg.penalised_reasons`. Any at all zeroes the worker's performance.
pub fn penalised_rejections(
    rejected: &[(UnixMillis, RejectCode)],
    now: UnixMillis,
    cfg: &ScoringConfig,
) -> usize {
    rejected
        .iter()
        .filter(|(at, code)| in_window(*at, now, cfg) && cfg.penalised_reasons.contains(code))
        .count()
}
