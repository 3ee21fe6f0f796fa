//! Scores → the u16 weights set on chain.

use super::sanitize;

/// The weight of the best miner.
pub const WEIGHT_MAX: u16 = u16::MAX;

/// Maps `(uid, score)` to `(uid, weight)`, in input order: `weight = round(score / max · 65535)`,
/// so every uid with the largest score gets 65535 and equal scores get equal weights.
/// NaN, infinite and negative scores count as 0; zero scores (and positive ones under half a
/// unit, `score < max / 131070`) get 0. If no score is positive, every weight is 0: the caller
/// must then skip the submission (an all-zero vector carries no information; the previous
/// weights stay in force).
pub fn to_weights(scores: &[(u16, f64)]) -> Vec<(u16, u16)> {
    let max = scores.iter().map(|&(_, s)| sanitize(s)).fold(0.0, f64::max);
    scores
        .iter()
        .map(|&(uid, s)| {
            let w = if max > 0.0 {
                (sanitize(s) / max * f64::from(WEIGHT_MAX)).round().min(f64::from(WEIGHT_MAX))
            } else {
                0.0
            };
            // `w` is an integer in [0, 65535] here.
            (uid, w as u16)
        })
        .collect()
}
