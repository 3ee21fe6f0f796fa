//! Which rows the coordinator asks a worker to open, and how likely a lazy worker is to survive.
//!
//! Rows are drawn from the coordinator's CSPRNG only after the commitment has arrived, so a worker
//! cannot know which rows matter while it computes.

use rand::CryptoRng;

use crate::challenge::Mode;

/// Rows sampled per challenge of an exact mode (int8, fp16, bf16) unless configured otherwise:
/// the fewest with which a worker that skipped 1% of the rows (`ceil(m/100)` wrong) passes with
/// probability at most 1% at every `m` (`0.99^460 < 0.0099`, and sampling without replacement only
/// lowers it: [`pass_probability`], SPEC §6). Freivalds' check (§7.2) makes each row cost
/// `O(k + n)`, so the sample barely changes the verifier's cost; a coordinator still caps it so
/// the openings fit in one frame ([`crate::wire::max_open_rows`]: 254 rows at n = 16384).
pub const DEFAULT_SAMPLED_ROWS: u32 = 460;

/// Rows sampled per fp32 challenge unless configured otherwise. fp32 has no cheap exact check:
/// every opened row is recomputed (`2·k·n` operations, §7.3), so its sample is kept small and the
/// scoring window, not one challenge, carries the soundness (SPEC §6).
pub const DEFAULT_FP32_SAMPLED_ROWS: u32 = 32;

/// The default sample of a challenge in `mode`.
pub fn default_sampled_rows(mode: Mode) -> u32 {
    match mode {
        Mode::Int8 | Mode::Fp16 | Mode::Bf16 => DEFAULT_SAMPLED_ROWS,
        Mode::Fp32 => DEFAULT_FP32_SAMPLED_ROWS,
    }
}

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
    fn the_exact_modes_default_catches_one_percent_skipped_with_99_percent_at_every_size() {
        for rows in [100u32, 1024, 2048, 4096, 16_384, 65_536] {
            let bad = rows.div_ceil(100);
            let p = pass_probability(rows, bad, DEFAULT_SAMPLED_ROWS);
            assert!(p <= 0.01, "m = {rows}: {p}");
        }
        // Without replacement tends to `0.99^s` as m grows: 460 holds in the limit, 458 does not.
        assert!(0.99f64.powi(DEFAULT_SAMPLED_ROWS as i32) < 0.01);
        assert!(0.99f64.powi(458) > 0.01);
        assert_eq!(default_sampled_rows(Mode::Bf16), DEFAULT_SAMPLED_ROWS);
        assert_eq!(default_sampled_rows(Mode::Fp32), DEFAULT_FP32_SAMPLED_ROWS);
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
