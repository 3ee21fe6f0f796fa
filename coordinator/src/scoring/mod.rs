//! Pure scoring and weight math: per-worker performance over a sliding window, per-miner
//! challenge and lease parts, and the u16 weight vector submitted on chain.
//!
//! Nothing here touches a database, the network or the clock: every function takes its inputs
//! (and `now`) explicitly, so the same inputs always give the same scores. The model follows
//! ByteLeap's (see `SCORING.md` in the crate root for the formulas, the deviations and the
//! worked examples that the unit tests check).
//!
//! - [`worker_performance`]: mean verified GFLOP/s in the window × participation × availability,
//!   0 while a challenge rejected as wrong is in the window ([`penalised_rejections`]).
//! - [`miner_scores`]: challenge part (top workers, normalised by the best miner), lease part,
//!   weighted total.
//! - [`to_weights`]: scores → u16 weights, largest = 65535.

mod miner;
mod penalty;
mod weights;
mod window;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

pub use miner::{MinerInputs, MinerScore, miner_scores};
pub use penalty::{RejectCode, penalised_rejections};
pub use weights::{WEIGHT_MAX, to_weights};
pub use window::{WorkerInputs, WorkerScore, worker_performance};

/// Every constant of the scoring model. `Default` gives the ByteLeap values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Sliding window of verified challenges that count, in minutes (180).
    pub window_minutes: u64,
    /// Verified challenges in the window needed for full participation (36).
    pub participation_baseline: u32,
    /// 5-minute buckets in the availability horizon: 169 h × 12 = 2028.
    pub availability_buckets: u32,
    /// Factor applied to availability per observed IP change (0.5: halved).
    pub ip_change_factor: f64,
    /// Availability below this is treated as 0 (0.1).
    pub min_availability: f64,
    /// Workers per miner whose performance counts towards the challenge part (100); also the cap
    /// of the lease denominator.
    pub top_workers: usize,
    /// Weight of the lease part in the total (0.70).
    pub lease_weight: f64,
    /// Weight of the challenge part in the total (0.30).
    pub challenge_weight: f64,
    /// Verifier rejections that make a worker's performance 0 while one is in the window
    /// (`value_mismatch`, `out_of_tolerance`, `bad_proof`, `wrong_rows`); empty turns the
    /// penalty off. Missed deadlines and timeouts are not rejections and cannot be listed.
    pub penalised_reasons: Vec<RejectCode>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            window_minutes: 180,
            participation_baseline: 36,
            availability_buckets: 2028,
            ip_change_factor: 0.5,
            min_availability: 0.1,
            top_workers: 100,
            lease_weight: 0.70,
            challenge_weight: 0.30,
            penalised_reasons: RejectCode::PENALISED_BY_DEFAULT.to_vec(),
        }
    }
}

impl ScoringConfig {
    /// The window in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_minutes.saturating_mul(60_000)
    }

    /// Checks the invariants the formulas rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window_minutes == 0 {
            return Err(ConfigError::NotPositive("scoring.window_minutes"));
        }
        if self.participation_baseline == 0 {
            return Err(ConfigError::NotPositive("scoring.participation_baseline"));
        }
        if self.availability_buckets == 0 {
            return Err(ConfigError::NotPositive("scoring.availability_buckets"));
        }
        if self.top_workers == 0 {
            return Err(ConfigError::NotPositive("scoring.top_workers"));
        }
        for (name, v) in [
            ("scoring.ip_change_factor", self.ip_change_factor),
            ("scoring.min_availability", self.min_availability),
            ("scoring.lease_weight", self.lease_weight),
            ("scoring.challenge_weight", self.challenge_weight),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::OutOfRange(name, v));
            }
        }
        let sum = self.lease_weight + self.challenge_weight;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(ConfigError::WeightSum(sum));
        }
        for (i, code) in self.penalised_reasons.iter().enumerate() {
            if self.penalised_reasons[..i].contains(code) {
                return Err(ConfigError::Duplicate("scoring.penalised_reasons", code.as_str()));
            }
        }
        Ok(())
    }
}

/// `v` if it is finite and positive, else 0: the one rule for NaN, ±∞ and negative inputs.
pub(crate) fn sanitize(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}
