//! Which rows the coordinator asks a worker to open, and how likely a lazy worker is to survive.
//!
//! Rows are drawn from the coordinator's CSPRNG only after the commitment has arrived, so a worker
//! cannot know which rows matter while it computes.

use rand::CryptoRng;

/// Rows sampled per challenge unless configured otherwise. With 32 rows a worker that skipped
/// 10% of the rows passes with probability below 3.5%, and one that skipped 25% below 1e-4
/// (see [`pass_probability`] and `SPEC.md`).
pub const DEFAULT_SAMPLED_ROWS: u32 = 32;

/// `min(count, rows)` distinct row indices, uniformly without replacement, in increasing order.
pub fn sample_rows<R: CryptoRng + ?Sized>(rng: &mut R, rows: u32, count: u32) -> Vec<u32> {
    let amount = count.min(rows) as usize;
    let mut picked: Vec<u32> = rand::seq::index::sample(rng, rows as usize, amount)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    picked.sort_unstable();
    picked
}

/// Probability that `sampled` distinct rows drawn from `rows` all miss the `bad` rows a cheating
/// worker got wrong: C(rows − bad, sampled) / C(rows, sampled) ≤ (1 − bad/rows)^sampled.
pub fn pass_probability(rows: u32, bad: u32, sampled: u32) -> f64 {
    let sampled = sampled.min(rows);
    if bad > rows - sampled {
        return 0.0;
    }
    (0..sampled).fold(1.0, |p, i| p * f64::from(rows - bad - i) / f64::from(rows - i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_are_distinct_sorted_and_in_range() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for rows in [1u32, 2, 7, 100, 4096] {
            let s = sample_rows(&mut rng, rows, DEFAULT_SAMPLED_ROWS);
            assert_eq!(s.len(), rows.min(DEFAULT_SAMPLED_ROWS) as usize);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            assert!(s.iter().all(|&r| r < rows));
        }
    }

    #[test]
    fn pass_probability_matches_the_closed_forms() {
        assert_eq!(pass_probability(100, 0, 32), 1.0);
        assert_eq!(pass_probability(100, 100, 32), 0.0);
        assert_eq!(pass_probability(10, 1, 10), 0.0);
        // Without replacement is never worse for the verifier than with replacement.
        let p = pass_probability(4096, 410, 32);
        assert!(p < 0.9f64.powi(32) && p > 0.03, "{p}");
    }
}
