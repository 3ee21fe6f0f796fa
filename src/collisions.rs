//! `veribench collisions`: how often validators' challenges meet a device that is busy with
//! another validator's, simulated.
//!
//! Every validator runs a coordinator that challenges every device once per round interval
//! (240 s by default), each round early or late by up to half the jitter (SPEC §8.8). A device
//! computes one challenge at a time, so a challenge that arrives while it computes another is
//! refused `busy`. Its coordinator challenges the device again after `retry × u`, `u` uniform
//! in [0.5, 1.5), up to `retries` times (`schedule.busy_retries`, 3); then the device waits for
//! the coordinator's next round (so a worker that answers `busy` to everything costs at most
//! `1 + retries` challenges a round).
//!
//! The simulation follows one device for many simulated hours with a seeded generator and
//! counts, per validator count `V` and busy time `d` (generation, GEMM and hashing: what the
//! worker holds the device for):
//!
//! - the share of rounds refused `busy` at first, against the estimate `(V − 1)·d / T` (the
//!   share of time the other validators keep the device busy; valid while `V·d/T`, the device's
//!   utilisation, is well below 1);
//! - the share of rounds whose every retry was refused too: that validator measures the device
//!   one round fewer (nothing counts against the worker);
//! - the delay retries add to a round.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Flags of `veribench collisions`.
#[derive(Debug, clap::Args)]
pub struct CollisionArgs {
    /// Validator counts to simulate (each with its own coordinator), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [2u32, 8, 16, 32, 64, 128, 256])]
    pub validators: Vec<u32>,
    /// Seconds a device is busy with one challenge, comma-separated (CPU default shape on a
    /// server: about 1 s; GPU default shape: well under 1 s).
    #[arg(long, value_delimiter = ',', default_values_t = [0.2f64, 1.0, 5.0])]
    pub busy_secs: Vec<f64>,
    /// Seconds between two rounds of one validator (`schedule.interval_secs`).
    #[arg(long, default_value_t = 240.0)]
    pub interval_secs: f64,
    /// Rounds start up to half this early or late (`schedule.jitter_secs`).
    #[arg(long, default_value_t = 30.0)]
    pub jitter_secs: f64,
    /// Base delay before a `busy` challenge is retried (`schedule.busy_retry_secs`).
    #[arg(long, default_value_t = 5.0)]
    pub retry_secs: f64,
    /// Retries of a round refused `busy` (`schedule.busy_retries`).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Simulated hours per case.
    #[arg(long, default_value_t = 48.0)]
    pub hours: f64,
    /// Seed of the simulation's generator (the same seed prints the same table).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One simulated case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// Validators challenging the device.
    pub validators: u32,
    /// Seconds the device is busy per challenge.
    pub busy_secs: f64,
    /// Seconds between a validator's rounds.
    pub interval_secs: f64,
    /// Rounds start up to half this early or late.
    pub jitter_secs: f64,
    /// Base delay of a retry after `busy`.
    pub retry_secs: f64,
    /// Retries of a round refused `busy`.
    pub retries: u32,
    /// Simulated seconds.
    pub horizon_secs: f64,
}

/// What one case measured.
#[derive(Clone, Debug, Serialize)]
pub struct Collisions {
    /// Validators.
    pub validators: u32,
    /// Busy time per challenge, seconds.
    pub busy_secs: f64,
    /// Rounds the validators started.
    pub rounds: u64,
    /// Of those, the share refused `busy` at first.
    pub busy_share: f64,
    /// The estimate `(V − 1)·d / T`.
    pub estimate: f64,
    /// The share of rounds whose every retry was refused `busy` too (no measurement that
    /// round).
    pub missed_share: f64,
    /// The share of the device's time spent computing.
    pub utilisation: f64,
    /// The 99th percentile of the delay from a round's start to its computation, seconds, over
    /// the rounds that were computed.
    pub p99_delay_secs: f64,
}

/// A round attempt: when, whose, and how many times it was refused so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Attempt {
    at: f64,
    validator: u32,
    retries: u32,
    /// When the round was first due (the delay is measured from here).
    due: f64,
}

/// Orders attempts by time for the heap (times are finite, so the order is total).
#[derive(Debug, PartialEq)]
struct ByTime(Attempt);

impl Eq for ByTime {}

impl PartialOrd for ByTime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByTime {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.at.total_cmp(&other.0.at).then(self.0.validator.cmp(&other.0.validator))
    }
}

/// Simulates `s` with a generator seeded by `seed`.
pub fn simulate(s: &Scenario, seed: u64) -> Collisions {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut queue = BinaryHeap::new();
    for validator in 0..s.validators {
        // Coordinators start independently: a uniform phase within the first interval.
        let at = rng.random_range(0.0..s.interval_secs);
        queue.push(Reverse(ByTime(Attempt { at, validator, retries: 0, due: at })));
    }
    let (mut rounds, mut refused, mut missed) = (0u64, 0u64, 0u64);
    let mut busy_time = 0.0;
    let mut busy_until = f64::NEG_INFINITY;
    let mut delays = Vec::new();
    while let Some(Reverse(ByTime(attempt))) = queue.pop() {
        if attempt.at >= s.horizon_secs {
            break;
        }
        if attempt.retries == 0 {
            rounds += 1;
            // The validator's next round is due one interval after this one, jittered, whatever
            // becomes of this one: a retry does not move the round timer (SPEC §8.8).
            let jitter = rng.random_range(-0.5..0.5) * s.jitter_secs;
            let due = attempt.due + s.interval_secs + jitter;
            let next = Attempt { at: due, validator: attempt.validator, retries: 0, due };
            queue.push(Reverse(ByTime(next)));
        }
        if attempt.at < busy_until {
            if attempt.retries == 0 {
                refused += 1;
            }
            if attempt.retries < s.retries {
                // Refused `busy`: challenged again after the jittered retry delay.
                let wait = s.retry_secs * rng.random_range(0.5..1.5);
                let retry =
                    Attempt { at: attempt.at + wait, retries: attempt.retries + 1, ..attempt };
                queue.push(Reverse(ByTime(retry)));
            } else {
                missed += 1;
            }
            continue;
        }
        busy_until = attempt.at + s.busy_secs;
        busy_time += s.busy_secs.min(s.horizon_secs - attempt.at);
        delays.push(attempt.at - attempt.due);
    }
    delays.sort_by(f64::total_cmp);
    let p99 = delays.get(delays.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0.0);
    let per_round = |x: u64| if rounds == 0 { 0.0 } else { x as f64 / rounds as f64 };
    Collisions {
        validators: s.validators,
        busy_secs: s.busy_secs,
        rounds,
        busy_share: per_round(refused),
        estimate: f64::from(s.validators.saturating_sub(1)) * s.busy_secs / s.interval_secs,
        missed_share: per_round(missed),
        utilisation: busy_time / s.horizon_secs,
        p99_delay_secs: p99,
    }
}

/// Runs every case of `args` and prints the table (or JSON).
pub fn run(args: &CollisionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.interval_secs > 0.0, "--interval-secs must be positive");
    anyhow::ensure!(
        (0.0..args.interval_secs).contains(&args.jitter_secs),
        "--jitter-secs must be in [0, interval)"
    );
    anyhow::ensure!(args.retry_secs > 0.0 && args.hours > 0.0, "--retry-secs and --hours > 0");
    anyhow::ensure!(
        args.busy_secs.iter().all(|d| *d > 0.0 && *d < args.interval_secs),
        "--busy-secs must be in (0, interval)"
    );
    let mut results = Vec::new();
    for &busy_secs in &args.busy_secs {
        for &validators in &args.validators {
            let scenario = Scenario {
                validators,
                busy_secs,
                interval_secs: args.interval_secs,
                jitter_secs: args.jitter_secs,
                retry_secs: args.retry_secs,
                retries: args.retries,
                horizon_secs: args.hours * 3600.0,
            };
            results.push(simulate(&scenario, args.seed));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    println!(
        "{:>10} {:>7} {:>8} {:>11} {:>9} {:>9} {:>12} {:>10}",
        "validators",
        "busy s",
        "rounds",
        "busy first",
        "estimate",
        "missed",
        "utilisation",
        "p99 delay"
    );
    for r in &results {
        println!(
            "{:>10} {:>7.1} {:>8} {:>10.2}% {:>8.2}% {:>8.3}% {:>11.1}% {:>9.1}s",
            r.validators,
            r.busy_secs,
            r.rounds,
            100.0 * r.busy_share,
            100.0 * r.estimate,
            100.0 * r.missed_share,
            100.0 * r.utilisation,
            r.p99_delay_secs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(validators: u32, busy_secs: f64) -> Scenario {
        Scenario {
            validators,
            busy_secs,
            interval_secs: 240.0,
            jitter_secs: 30.0,
            retry_secs: 5.0,
            retries: 3,
            horizon_secs: 200.0 * 3600.0,
        }
    }

    /// One validator never collides with itself.
    #[test]
    fn a_single_validator_never_meets_a_busy_device() {
        let r = simulate(&scenario(1, 5.0), 7);
        assert_eq!((r.busy_share, r.missed_share, r.p99_delay_secs), (0.0, 0.0, 0.0));
        assert!((r.rounds as f64 - 3000.0).abs() <= 2.0, "{r:?}");
    }

    /// The simulated share of busy refusals follows the estimate `(V − 1)·d / T` where the
    /// device is lightly used; each retry is refused about as often as a first attempt, so
    /// rounds without a measurement are rare.
    #[test]
    fn collisions_follow_the_utilisation_estimate() {
        for (validators, busy_secs) in [(16, 2.0), (64, 1.0), (8, 5.0)] {
            let r = simulate(&scenario(validators, busy_secs), 3);
            let relative = (r.busy_share - r.estimate).abs() / r.estimate;
            assert!(relative < 0.15, "{r:?}");
            assert!(r.missed_share < r.estimate.powi(2), "{r:?}");
            let expected = f64::from(validators) * 3000.0;
            assert!((r.rounds as f64 - expected).abs() < 0.01 * expected, "{r:?}");
            assert!((r.utilisation - f64::from(validators) * busy_secs / 240.0).abs() < 0.02);
        }
    }

    /// Past saturation the device still computes, and each validator's load stays
    /// `1 + retries` challenges a round at most: the simulation ends, with many rounds missed.
    #[test]
    fn a_saturated_device_misses_rounds_but_the_load_stays_bounded() {
        let r = simulate(&Scenario { horizon_secs: 10.0 * 3600.0, ..scenario(256, 5.0) }, 5);
        assert!(r.utilisation > 0.85 && r.missed_share > 0.5, "{r:?}");
    }
}
