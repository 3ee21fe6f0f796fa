//! The worked examples of `SCORING.md`, one test per table row.

use veribench_protocol::UnixMillis;

use super::*;
use crate::config::ConfigError;

const NOW: UnixMillis = UnixMillis(100_000_000);
const MIN: u64 = 60_000;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// `n` verified results at `gflops`, finished `age_min` minutes before [`NOW`].
fn results(n: usize, gflops: f64, age_min: u64) -> Vec<(UnixMillis, f64)> {
    vec![(UnixMillis(NOW.0 - age_min * MIN), gflops); n]
}

fn worker(verified: Vec<(UnixMillis, f64)>, online_buckets: u32, ip_changes: u32) -> WorkerInputs {
    WorkerInputs { verified, rejected: Vec::new(), online_buckets, ip_changes, leased: false }
}

/// A full worker (36 × 1000 GFLOP/s 10 minutes ago, always online) with one rejection, finished
/// `age_min` minutes before [`NOW`].
fn rejected_once(code: RejectCode, age_min: u64) -> WorkerInputs {
    let at = UnixMillis(NOW.0 - age_min * MIN);
    WorkerInputs { rejected: vec![(at, code)], ..worker(results(36, 1000.0, 10), 2028, 0) }
}

/// Checks one row of table 1: (mean_gflops, participation, availability, performance).
fn check_worker(inputs: WorkerInputs, expected: [f64; 4]) {
    check_worker_with(&ScoringConfig::default(), inputs, expected);
}

fn check_worker_with(cfg: &ScoringConfig, inputs: WorkerInputs, expected: [f64; 4]) {
    let s = worker_performance(&inputs, NOW, cfg);
    let got = [s.mean_gflops, s.participation, s.availability, s.performance];
    for (g, e) in got.iter().zip(expected) {
        assert!(close(*g, e), "got {got:?}, expected {expected:?}");
    }
}

// Table 1: worker performance.

#[test]
fn scoring_w1_full_worker() {
    check_worker(worker(results(36, 1000.0, 10), 2028, 0), [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w2_participation_below_baseline() {
    check_worker(worker(results(18, 1000.0, 10), 2028, 0), [1000.0, 0.5, 1.0, 500.0]);
}

#[test]
fn scoring_w3_results_outside_window_ignored() {
    let mut v = results(9, 500.0, 179);
    v.extend(results(36, 1000.0, 180));
    v.extend(results(5, 9999.0, 0).into_iter().map(|(t, g)| (UnixMillis(t.0 + MIN), g)));
    check_worker(worker(v, 2028, 0), [500.0, 0.25, 1.0, 125.0]);
}

#[test]
fn scoring_w4_zero_availability() {
    check_worker(worker(results(36, 1000.0, 10), 0, 0), [1000.0, 1.0, 0.0, 0.0]);
}

#[test]
fn scoring_w5_ip_churn_one_change() {
    check_worker(worker(results(36, 1000.0, 10), 2028, 1), [1000.0, 1.0, 0.5, 500.0]);
}

#[test]
fn scoring_w6_ip_churn_two_changes() {
    check_worker(worker(results(36, 1000.0, 10), 2028, 2), [1000.0, 1.0, 0.25, 250.0]);
}

#[test]
fn scoring_w7_availability_below_threshold() {
    // 200 / 2028 = 0.0986 < 0.1.
    check_worker(worker(results(36, 1000.0, 10), 200, 0), [1000.0, 1.0, 0.0, 0.0]);
}

#[test]
fn scoring_w8_availability_just_above_threshold() {
    // 203 / 2028 = 0.1001.
    check_worker(
        worker(results(36, 1000.0, 10), 203, 0),
        [1000.0, 1.0, 203.0 / 2028.0, 1000.0 * 203.0 / 2028.0],
    );
}

#[test]
fn scoring_w9_half_online_two_changes_kept() {
    check_worker(worker(results(36, 1000.0, 10), 1014, 2), [1000.0, 1.0, 0.125, 125.0]);
}

#[test]
fn scoring_w10_half_online_three_changes_below_threshold() {
    // 0.5 · 0.5³ = 0.0625 < 0.1.
    check_worker(worker(results(36, 1000.0, 10), 1014, 3), [1000.0, 1.0, 0.0, 0.0]);
}

#[test]
fn scoring_w11_buckets_capped_at_horizon() {
    check_worker(worker(results(36, 1000.0, 10), 5000, 0), [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w12_leased_worker_not_challenged() {
    let mut w = worker(results(36, 1000.0, 10), 2028, 0);
    w.leased = true;
    check_worker(w, [0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn scoring_w13_nan_inf_negative_gflops_dropped() {
    let mut v = results(18, 1000.0, 10);
    v.extend(results(6, f64::NAN, 10));
    v.extend(results(6, f64::INFINITY, 10));
    v.extend(results(6, -5.0, 10));
    check_worker(worker(v, 2028, 0), [1000.0, 0.5, 1.0, 500.0]);
}

#[test]
fn scoring_w14_no_results() {
    check_worker(worker(Vec::new(), 2028, 0), [0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn scoring_w15_huge_ip_churn() {
    check_worker(worker(results(36, 1000.0, 10), 2028, u32::MAX), [1000.0, 1.0, 0.0, 0.0]);
}

#[test]
fn scoring_w16_rejection_in_window_zeroes_performance() {
    // Each default reason, rejected 179 minutes ago (just inside the 180-minute window).
    for code in RejectCode::PENALISED_BY_DEFAULT {
        check_worker(rejected_once(code, 179), [1000.0, 1.0, 1.0, 0.0]);
    }
}

#[test]
fn scoring_w17_rejection_outside_window_ignored() {
    // 180 minutes ago is just outside the window, as for verified results (w3).
    let mut w = rejected_once(RejectCode::ValueMismatch, 180);
    w.rejected.push((UnixMillis(NOW.0 + MIN), RejectCode::ValueMismatch));
    check_worker(w, [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w18_unlisted_reason_ignored() {
    check_worker(rejected_once(RejectCode::RowLength, 10), [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w19_listed_reason_penalised() {
    let cfg =
        ScoringConfig { penalised_reasons: vec![RejectCode::RowLength], ..Default::default() };
    check_worker_with(&cfg, rejected_once(RejectCode::RowLength, 10), [1000.0, 1.0, 1.0, 0.0]);
    let w = rejected_once(RejectCode::ValueMismatch, 10);
    check_worker_with(&cfg, w, [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w20_penalty_off() {
    let cfg = ScoringConfig { penalised_reasons: Vec::new(), ..Default::default() };
    let w = rejected_once(RejectCode::ValueMismatch, 10);
    check_worker_with(&cfg, w, [1000.0, 1.0, 1.0, 1000.0]);
}

#[test]
fn scoring_w21_failures_other_than_verdicts_are_not_rejections() {
    // What the coordinator stores for failures that are not the verifier's verdict: none has a
    // code, so none reaches `WorkerInputs::rejected` (the store skips them) and none penalises.
    for reason in [
        "deadline_missed",
        "open_timeout",
        "disconnected",
        "not_sent",
        "coordinator_restart",
        "verifier_error",
    ] {
        assert_eq!(RejectCode::parse(reason), None, "{reason}");
    }
    // Every verdict has a code, and it is the stored one.
    use veribench_protocol::RejectReason;
    let verdicts = [
        RejectReason::WrongRows { asked: 32 },
        RejectReason::RowLength { row: 1, expected: 8, got: 4 },
        RejectReason::BadProof,
        RejectReason::Mismatch { row: 1, col: 2, expected: 1.0, got: 0.0 },
        RejectReason::OutOfTolerance { row: 1, col: 2, expected: 1.0, got: 0.0, bound: 1e-6 },
    ];
    for reason in &verdicts {
        let code = RejectCode::from(reason);
        assert_eq!((code.as_str(), RejectCode::parse(reason.code())), (reason.code(), Some(code)));
    }
    assert_eq!(verdicts.len(), RejectCode::ALL.len());
}

// Table 2: miner scores. One population, scored together.

fn perf(p: f64) -> WorkerScore {
    WorkerScore { performance: p, ..WorkerScore::default() }
}

fn miner(
    hotkey: &'static str,
    perfs: &[f64],
    lease_scores: &[f64],
    online: bool,
) -> MinerInputs<&'static str> {
    MinerInputs {
        hotkey,
        workers: perfs.iter().copied().map(perf).collect(),
        lease_scores: lease_scores.to_vec(),
        online,
    }
}

fn population() -> Vec<MinerInputs<&'static str>> {
    let mut big = vec![100.0; 50];
    big.extend(vec![20.0; 100]);
    vec![
        miner("A", &[1000.0, 500.0], &[], true),
        miner("B", &[3000.0], &[], true),
        miner("BIG", &big, &[0.5; 150], true),
        miner("OFF", &[10_000.0], &[1.0], false),
        miner("LEASED", &[0.0; 4], &[1.0, 1.0], true),
        miner("MIXED", &[0.0, 1500.0], &[1.0], true),
        miner("NAN", &[f64::NAN, 600.0, -3.0], &[f64::NAN, -1.0, 2.0], true),
        miner("EMPTY", &[], &[1.0], true),
    ]
}

/// Checks one row of table 2: (challenge, lease, total).
fn check_miner(hotkey: &str, expected: [f64; 3]) {
    let scores = miner_scores(&population(), &ScoringConfig::default());
    let s = scores.iter().find(|s| s.hotkey == hotkey).expect("miner in population");
    let got = [s.challenge, s.lease, s.total];
    for (g, e) in got.iter().zip(expected) {
        assert!(close(*g, e), "{hotkey}: got {got:?}, expected {expected:?}");
    }
}

#[test]
fn scoring_m1_two_workers() {
    check_miner("A", [0.25, 0.0, 0.075]);
}

#[test]
fn scoring_m2_one_strong_worker() {
    check_miner("B", [0.5, 0.0, 0.15]);
}

#[test]
fn scoring_m3_more_than_100_workers_top_100_count() {
    // Top 100 = 50·100 + 50·20 = 6000 (all 150 would be 7000); it is the best, so 1.
    // Lease: 150·0.5 / min(100, 150) = 0.75.
    check_miner("BIG", [1.0, 0.75, 0.825]);
}

#[test]
fn scoring_m4_offline_miner_zero_and_not_the_best() {
    check_miner("OFF", [0.0, 0.0, 0.0]);
}

#[test]
fn scoring_m5_leased_workers_lease_only() {
    check_miner("LEASED", [0.0, 0.5, 0.35]);
}

#[test]
fn scoring_m6_leased_and_challenged() {
    check_miner("MIXED", [0.25, 0.5, 0.425]);
}

#[test]
fn scoring_m7_nan_and_negative_inputs() {
    // Challenge 600 / 6000; lease (0 + 0 + 1) / 3.
    check_miner("NAN", [0.1, 1.0 / 3.0, 0.7 / 3.0 + 0.03]);
}

#[test]
fn scoring_m8_no_workers() {
    check_miner("EMPTY", [0.0, 0.0, 0.0]);
}

#[test]
fn scoring_m9_order_kept() {
    let order: Vec<_> = miner_scores(&population(), &ScoringConfig::default())
        .into_iter()
        .map(|s| s.hotkey)
        .collect();
    assert_eq!(order, ["A", "B", "BIG", "OFF", "LEASED", "MIXED", "NAN", "EMPTY"]);
}

#[test]
fn scoring_m10_nobody_performs() {
    let miners = vec![miner("X", &[0.0], &[], true), miner("Y", &[5.0], &[], false)];
    let scores = miner_scores(&miners, &ScoringConfig::default());
    assert!(scores.iter().all(|s| s.challenge == 0.0 && s.lease == 0.0 && s.total == 0.0));
}

// Table 3: weights.

#[test]
fn scoring_t1_proportional() {
    assert_eq!(to_weights(&[(0, 1.0), (1, 0.5), (2, 0.25)]), [(0, 65535), (1, 32768), (2, 16384)]);
}

#[test]
fn scoring_t2_ties() {
    assert_eq!(to_weights(&[(3, 0.4), (1, 0.4), (2, 0.2)]), [(3, 65535), (1, 65535), (2, 32768)]);
}

#[test]
fn scoring_t3_zeros_kept() {
    assert_eq!(to_weights(&[(0, 0.0), (1, 2.0)]), [(0, 0), (1, 65535)]);
}

#[test]
fn scoring_t4_all_zero() {
    assert_eq!(to_weights(&[(0, 0.0), (1, 0.0)]), [(0, 0), (1, 0)]);
}

#[test]
fn scoring_t5_nan_negative_infinite() {
    assert_eq!(
        to_weights(&[(0, f64::NAN), (1, -1.0), (2, f64::INFINITY), (3, 0.5)]),
        [(0, 0), (1, 0), (2, 0), (3, 65535)]
    );
}

#[test]
fn scoring_t6_all_nan() {
    assert_eq!(to_weights(&[(0, f64::NAN), (1, f64::NAN)]), [(0, 0), (1, 0)]);
}

#[test]
fn scoring_t7_empty() {
    assert!(to_weights(&[]).is_empty());
}

#[test]
fn scoring_t8_tiny_rounds_to_zero() {
    assert_eq!(to_weights(&[(0, 1.0), (1, 1e-6)]), [(0, 65535), (1, 0)]);
}

#[test]
fn scoring_t9_end_to_end_population() {
    let scores = miner_scores(&population(), &ScoringConfig::default());
    let by_uid: Vec<(u16, f64)> = (0u16..).zip(scores.iter().map(|s| s.total)).collect();
    // Totals: .075 .15 .825 0 .35 .425 .2633… 0 → ÷ .825 · 65535, rounded.
    assert_eq!(
        to_weights(&by_uid),
        [(0, 5958), (1, 11915), (2, 65535), (3, 0), (4, 27803), (5, 33760), (6, 20918), (7, 0)]
    );
}

// Config and row helpers.

#[test]
fn scoring_config_defaults_and_serde() {
    let cfg = ScoringConfig::default();
    assert!(cfg.validate().is_ok());
    assert_eq!(cfg.window_ms(), 180 * MIN);
    let partial: ScoringConfig =
        serde_json::from_str(r#"{"window_minutes": 60, "top_workers": 10}"#).expect("parses");
    assert_eq!(partial, ScoringConfig { window_minutes: 60, top_workers: 10, ..cfg.clone() });
    assert!(serde_json::from_str::<ScoringConfig>(r#"{"windw": 1}"#).is_err());
    let bad = ScoringConfig { lease_weight: 0.8, ..cfg.clone() };
    assert!(matches!(bad.validate(), Err(ConfigError::WeightSum(_))));
    let bad = ScoringConfig { participation_baseline: 0, ..cfg.clone() };
    assert!(matches!(
        bad.validate(),
        Err(ConfigError::NotPositive("scoring.participation_baseline"))
    ));
    let bad = ScoringConfig { ip_change_factor: f64::NAN, ..cfg.clone() };
    assert!(matches!(bad.validate(), Err(ConfigError::OutOfRange("scoring.ip_change_factor", _))));

    use RejectCode::*;
    assert_eq!(cfg.penalised_reasons, [ValueMismatch, OutOfTolerance, BadProof, WrongRows]);
    let listed: ScoringConfig =
        serde_json::from_str(r#"{"penalised_reasons": ["row_length", "bad_proof"]}"#)
            .expect("parses");
    assert_eq!(listed.penalised_reasons, [RowLength, BadProof]);
    let off: ScoringConfig = serde_json::from_str(r#"{"penalised_reasons": []}"#).expect("parses");
    assert!(off.penalised_reasons.is_empty() && off.validate().is_ok());
    assert!(
        serde_json::from_str::<ScoringConfig>(r#"{"penalised_reasons": ["deadline_missed"]}"#)
            .is_err(),
        "only verifier rejections can be penalised"
    );
    let bad = ScoringConfig { penalised_reasons: vec![BadProof, WrongRows, BadProof], ..cfg };
    assert!(matches!(
        bad.validate(),
        Err(ConfigError::Duplicate("scoring.penalised_reasons", "bad_proof"))
    ));
}
