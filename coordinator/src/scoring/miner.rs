//! Per-miner challenge and lease parts.

use super::{ScoringConfig, WorkerScore, sanitize};

/// What the scorer knows about one miner.
#[derive(Clone, Debug, PartialEq)]
pub struct MinerInputs<K> {
    /// The miner's identity (hotkey, uid, …); carried through to [`MinerScore`].
    pub hotkey: K,
    /// Scores of all its workers, leased ones included (their performance is 0).
    pub workers: Vec<WorkerScore>,
    /// Lease scores of its leased workers, each clamped to `[0, 1]` (NaN and negative count 0).
    pub lease_scores: Vec<f64>,
    /// Whether the miner is online; an offline miner scores 0 and does not set the best sum.
    pub online: bool,
}

/// One miner's score.
#[derive(Clone, Debug, PartialEq)]
pub struct MinerScore<K> {
    /// The miner's identity.
    pub hotkey: K,
    /// Sum of its top workers' performance / the best online miner's sum, in `[0, 1]`.
    pub challenge: f64,
    /// `min(1, Σ lease_score / min(top_workers, workers))`, in `[0, 1]`.
    pub lease: f64,
    /// `lease_weight · lease + challenge_weight · challenge`.
    pub total: f64,
}

/// Sum of the `top` largest performances (NaN and negative count 0).
fn top_sum(workers: &[WorkerScore], top: usize) -> f64 {
    let mut perf: Vec<f64> = workers.iter().map(|w| sanitize(w.performance)).collect();
    perf.sort_by(|a, b| b.total_cmp(a));
    sanitize(perf.iter().take(top).sum())
}

fn lease_part(m: &MinerInputs<impl Sized>, top: usize) -> f64 {
    let denom = m.workers.len().min(top);
    if denom == 0 {
        return 0.0;
    }
    let sum: f64 = m.lease_scores.iter().map(|&s| sanitize(s).min(1.0)).sum();
    (sum / denom as f64).min(1.0)
}

/// Scores every miner, in input order. The challenge part is normalised by the best online
/// miner's top-worker sum, so that miner has challenge 1 (and all have 0 if no one has any
/// performance). Offline miners score 0 in every part.
pub fn miner_scores<K: Clone>(
    miners: &[MinerInputs<K>],
    cfg: &ScoringConfig,
) -> Vec<MinerScore<K>> {
    let top = cfg.top_workers.max(1);
    let sums: Vec<f64> =
        miners.iter().map(|m| if m.online { top_sum(&m.workers, top) } else { 0.0 }).collect();
    let best = sums.iter().copied().fold(0.0, f64::max);
    miners
        .iter()
        .zip(&sums)
        .map(|(m, &sum)| {
            if !m.online {
                return MinerScore {
                    hotkey: m.hotkey.clone(),
                    challenge: 0.0,
                    lease: 0.0,
                    total: 0.0,
                };
            }
            let challenge = if best > 0.0 { (sum / best).min(1.0) } else { 0.0 };
            let lease = lease_part(m, top);
            let total = sanitize(
                sanitize(cfg.lease_weight) * lease + sanitize(cfg.challenge_weight) * challenge,
            );
            MinerScore { hotkey: m.hotkey.clone(), challenge, lease, total }
        })
        .collect()
}
