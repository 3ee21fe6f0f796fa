//! Per-worker performance over the sliding window.

use veribench_protocol::UnixMillis;

use super::{RejectCode, ScoringConfig, penalised_rejections, sanitize};

/// What the scorer knows about one worker: scoring's own input, which the store fills from its
/// rows (so this module depends on no database type).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerInputs {
    /// Verified, credited challenges: (finish time, measured GFLOP/s). Entries outside the window,
    /// in the future, or with a non-finite or non-positive rate are ignored.
    pub verified: Vec<(UnixMillis, f64)>,
    /// Challenges the verifier rejected: (finish time, code). One in the window whose code is in
    /// [`ScoringConfig::penalised_reasons`] makes the worker's performance 0; the others (outside
    /// the window, in the future, or with an unpenalised code) are ignored.
    pub rejected: Vec<(UnixMillis, RejectCode)>,
    /// 5-minute buckets in which the worker was online during the last 169 hours.
    pub online_buckets: u32,
    /// IP changes observed over the same horizon.
    pub ip_changes: u32,
    /// Whether the worker is leased (then it is not challenged and scores through the lease part
    /// only).
    pub leased: bool,
}

/// One worker's score and its factors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkerScore {
    /// Mean GFLOP/s of the counted verified challenges (0 if none, or if leased).
    pub mean_gflops: f64,
    /// `min(1, counted / participation_baseline)` (0 if leased).
    pub participation: f64,
    /// `min(1, online_buckets / availability_buckets) · ip_change_factor^ip_changes`, 0 below
    /// `min_availability`.
    pub availability: f64,
    /// `mean_gflops · participation · availability`, or 0 if a penalised rejection is in the
    /// window (the three factors are still reported, so the forfeited score stays visible).
    pub performance: f64,
}

/// Availability in `[0, 1]`.
fn availability(inputs: &WorkerInputs, cfg: &ScoringConfig) -> f64 {
    if cfg.availability_buckets == 0 {
        return 0.0;
    }
    let online = (f64::from(inputs.online_buckets) / f64::from(cfg.availability_buckets)).min(1.0);
    // Past ~1100 halvings the factor is 0 anyway; the cap keeps the exponent in `i32`.
    let churn = sanitize(cfg.ip_change_factor).min(1.0).powi(inputs.ip_changes.min(1 << 16) as i32);
    let a = sanitize(online * churn);
    if a < cfg.min_availability { 0.0 } else { a }
}

/// Whether `at` is in the window `(now − window, now]`: the one window test for verified and
/// rejected challenges alike.
pub(super) fn in_window(at: UnixMillis, now: UnixMillis, cfg: &ScoringConfig) -> bool {
    at <= now && now.0 - at.0 < cfg.window_ms()
}

/// Scores one worker at `now`: the mean GFLOP/s of its verified challenges finished in the window
/// `(now − window, now]`, times participation, times availability; 0 if a challenge rejected for
/// a penalised reason finished in the same window. A leased worker's challenge results are
/// ignored (it is not challenged), so its performance is 0.
pub fn worker_performance(
    inputs: &WorkerInputs,
    now: UnixMillis,
    cfg: &ScoringConfig,
) -> WorkerScore {
    let availability = availability(inputs, cfg);
    if inputs.leased {
        return WorkerScore { availability, ..WorkerScore::default() };
    }
    let (mut count, mut sum) = (0u32, 0.0f64);
    for &(at, gflops) in &inputs.verified {
        let g = sanitize(gflops);
        if in_window(at, now, cfg) && g > 0.0 {
            count += 1;
            sum += g;
        }
    }
    let mean_gflops = if count == 0 { 0.0 } else { sanitize(sum / f64::from(count)) };
    let participation = if cfg.participation_baseline == 0 {
        if count > 0 { 1.0 } else { 0.0 }
    } else {
        (f64::from(count) / f64::from(cfg.participation_baseline)).min(1.0)
    };
    let penalised = penalised_rejections(&inputs.rejected, now, cfg) > 0;
    let performance =
        if penalised { 0.0 } else { sanitize(mean_gflops * participation * availability) };
    WorkerScore { mean_gflops, participation, availability, performance }
}
