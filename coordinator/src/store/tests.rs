//! The store against real databases: every scenario runs once on a fresh SQLite file and once on
//! a fresh PostgreSQL database ([`super::test_db`]), so the tests run in parallel.

use sqlx::{AnyConnection, Connection, Row};
use veribench_protocol::{ChallengeId, DeviceKey, Mode, PublicKey, Root, Seed, Shape, UnixMillis};

use super::queries::{SqliteTarget, sqlite_target};
use super::test_db::{Backend, TestDb, on_both_databases};
use super::{
    ChallengeRow, ChallengeStatus, CommitRecord, Credit, DbKind, HeldDevice, MinerRow,
    NewChallenge, Rejection, Store, StoreError, WorkerRecord, WorkerRow,
};

type TestResult = Result<(), StoreError>;

on_both_databases!(
    super::TestResult;
    migrations_on_fresh_database_and_rerun,
    workers_register_touch_and_go_offline,
    stale_workers_are_marked_offline,
    device_claims_oldest_active_wins,
    rounds_are_stored_sent_in_one_batch,
    challenge_state_machine,
    illegal_transitions_are_refused,
    fail_unfinished_after_crash,
    ids_are_never_reused,
    miners_aggregate_workers_and_credited_challenges,
    challenges_listing,
    rejections_are_counted_per_group_and_pruned,
    old_rejections_are_grouped_by_the_migration,
    registration_nonces_are_used_once_and_pruned,
    corrupt_values_are_errors,
    values_round_trip_exactly,
    concurrent_writers,
    availability_buckets_and_ip_changes,
    verified_since_counts_credited_results_only,
    rejected_since_returns_verifier_rejections_only,
    leases_are_unique_and_filtered_by_time,
    score_runs_and_weight_sets_round_trip,
    circuit_fetches_round_trip,
    decisions_round_trip_and_are_never_overwritten,
    decisions_page_newest_first,
    corrupt_decisions_and_evidence_are_errors,
    evidence_is_idempotent_and_counted,
    proposed_vectors_are_never_submitted,
    agreed_weights_supersede_and_carry_their_decision,
    weight_sets_survive_the_consensus_migration,
    market_participants_round_trip,
    market_batches_are_assigned_oldest_first_one_at_a_time,
    market_concurrent_assignments_never_share_a_batch,
    market_open_requests_and_replays,
    market_values_round_trip_and_are_checked,
    market_summary_medians,
);

// ----------------------------------------------------------------------------- helpers

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn dev(name: &str) -> DeviceKey {
    DeviceKey::new(name).expect("device key")
}

fn worker(worker_key: PublicKey, miner: PublicKey, devices: &[&str]) -> WorkerRecord {
    WorkerRecord {
        worker_key,
        miner_hotkey: miner,
        name: format!("rig-{}", worker_key.0[0]),
        address: "10.0.0.7:41234".to_owned(),
        hardware_json: r#"{"gpus":[{"name":"RTX 4090","vram_mb":24564}]}"#.to_owned(),
        devices: devices.iter().map(|d| dev(d)).collect(),
        clock_skew_ms: Some(-42),
    }
}

/// A commitment as the coordinator records it.
fn commit(at: UnixMillis, root: Root, compute_ms: f64, rtt_ms: f64) -> CommitRecord {
    CommitRecord { at, root, compute_ms, rtt_ms }
}

/// The commitment `mark_verified` fills in where a row has none (tests that committed first
/// keep their own, so the values differ from [`challenge_in`]'s).
const COMMITTED: CommitRecord =
    CommitRecord { at: UnixMillis(4_242), root: Root([42; 32]), compute_ms: 4.0, rtt_ms: 2.0 };

fn challenge(miner: PublicKey, worker_key: PublicKey, device: &str, at: u64) -> NewChallenge {
    NewChallenge {
        miner_hotkey: miner,
        worker_key,
        device: dev(device),
        mode: Mode::Fp16,
        shape: Shape { m: 4096, k: 2048, n: 1024 },
        seed: Seed([at as u8 ^ 0x5a; 32]),
        issued_at: UnixMillis(at),
        deadline: UnixMillis(at + 30_000),
    }
}

async fn status(store: &Store, id: ChallengeId) -> Result<ChallengeStatus, StoreError> {
    Ok(store.challenge(id).await?.expect("challenge exists").status)
}

/// Drives a new challenge to `target` through the legal path.
async fn challenge_in(
    store: &Store,
    target: ChallengeStatus,
    c: &NewChallenge,
) -> Result<ChallengeId, StoreError> {
    let at = c.issued_at.0;
    let id = store.insert_challenge(c, UnixMillis(at)).await?;
    let path = [
        ChallengeStatus::Sent,
        ChallengeStatus::Committed,
        ChallengeStatus::Verifying,
        ChallengeStatus::Verified,
    ];
    for step in path.into_iter().take_while(|_| target != ChallengeStatus::Created) {
        let moved = match step {
            ChallengeStatus::Sent => store.mark_sent(id, UnixMillis(at + 1)).await?,
            ChallengeStatus::Committed => {
                store
                    .mark_committed(id, &commit(UnixMillis(at + 2), Root([7; 32]), 10.0, 1.0))
                    .await?
            }
            ChallengeStatus::Verifying => store.mark_verifying(id, UnixMillis(at + 3)).await?,
            _ => {
                store
                    .mark_verified(id, UnixMillis(at + 4), 100.0, Credit::Credited, &COMMITTED)
                    .await?
            }
        };
        assert!(moved, "{step:?}");
        if step == target {
            break;
        }
    }
    if target == ChallengeStatus::Failed {
        unreachable!("use mark_failed");
    }
    assert_eq!(status(store, id).await?, target);
    Ok(id)
}

async fn count(store: &Store, table: &str) -> i64 {
    let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&store.pool)
        .await
        .expect("count");
    row.try_get::<i64, _>("n").expect("count value")
}

// ----------------------------------------------------------------------------- scenarios

async fn migrations_on_fresh_database_and_rerun(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let migrations = i64::try_from(store.migrator().iter().count()).expect("few migrations");
    assert!(migrations >= 1);
    assert_eq!(count(&store, "_sqlx_migrations").await, migrations);
    for table in ["workers", "worker_devices", "device_claims", "challenges", "rejections"] {
        assert_eq!(count(&store, table).await, 0, "{table}");
    }
    store.upsert_worker(&worker(key(1), key(9), &["GPU-a"]), UnixMillis(5)).await?;
    store.close().await?;

    // Connecting again re-runs the migrator: nothing to apply, nothing lost.
    let store = db.open().await;
    assert_eq!(count(&store, "_sqlx_migrations").await, migrations);
    assert_eq!(store.workers().await?.len(), 1);
    // And running it explicitly once more is a no-op too.
    store.migrator().run(&store.pool).await?;
    assert_eq!(count(&store, "_sqlx_migrations").await, migrations);
    store.close().await
}

async fn workers_register_touch_and_go_offline(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.workers().await?.is_empty());

    let w1 = worker(key(1), key(9), &["GPU-b", "GPU-a"]);
    let w2 = worker(key(2), key(9), &[]);
    store.upsert_worker(&w2, UnixMillis(1_000)).await?;
    store.upsert_worker(&w1, UnixMillis(1_000)).await?;
    let row = |record: &WorkerRecord, online, connected_at, last_seen| WorkerRow {
        record: record.clone(),
        online,
        connected_at: UnixMillis(connected_at),
        last_seen: UnixMillis(last_seen),
    };
    // Ordered by key; devices kept in registration order; no devices is fine.
    assert_eq!(
        store.workers().await?,
        vec![row(&w1, true, 1_000, 1_000), row(&w2, true, 1_000, 1_000)]
    );

    assert!(store.touch(&key(1), UnixMillis(1_500)).await?);
    assert!(store.touch(&key(1), UnixMillis(1_200)).await?, "known worker");
    assert!(!store.touch(&key(3), UnixMillis(1_500)).await?, "unknown worker");
    assert_eq!(
        store.workers().await?[0],
        row(&w1, true, 1_000, 1_500),
        "last_seen never goes back"
    );
    // Batched heartbeats: one transaction, unknown workers skipped, never backwards either.
    assert_eq!(store.touch_many(&[]).await?, 0);
    let batch =
        [(key(2), UnixMillis(1_700)), (key(3), UnixMillis(1_700)), (key(1), UnixMillis(1_100))];
    assert_eq!(store.touch_many(&batch).await?, 2);
    let seen: Vec<UnixMillis> = store.workers().await?.into_iter().map(|w| w.last_seen).collect();
    assert_eq!(seen, vec![UnixMillis(1_500), UnixMillis(1_700)]);

    // A disconnection older than the registration does not take the worker offline.
    assert!(!store.set_offline(&key(1), UnixMillis(900)).await?);
    assert!(store.workers().await?[0].online);
    assert!(store.set_offline(&key(1), UnixMillis(2_000)).await?);
    assert_eq!(store.workers().await?[0], row(&w1, false, 1_000, 1_500));
    assert!(!store.set_offline(&key(3), UnixMillis(2_000)).await?);
    // A heartbeat does not bring it back; a registration does, replacing name, hotkey, devices.
    store.touch(&key(1), UnixMillis(2_100)).await?;
    assert!(!store.workers().await?[0].online);
    let w1b = WorkerRecord {
        miner_hotkey: key(8),
        name: "renamed".into(),
        devices: vec![dev("GPU-c")],
        clock_skew_ms: None,
        ..w1.clone()
    };
    store.upsert_worker(&w1b, UnixMillis(3_000)).await?;
    assert_eq!(
        store.workers().await?,
        vec![row(&w1b, true, 3_000, 3_000), row(&w2, true, 1_000, 1_700)]
    );
    assert_eq!(count(&store, "worker_devices").await, 1);
    store.close().await
}

async fn stale_workers_are_marked_offline(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    for (n, at) in [(1, 1_000), (2, 2_000), (3, 3_000), (4, 500)] {
        store.upsert_worker(&worker(key(n), key(9), &[]), UnixMillis(at)).await?;
    }
    store.set_offline(&key(4), UnixMillis(600)).await?;
    store.touch(&key(1), UnixMillis(2_400)).await?;

    // Strictly older than the cut-off; already offline workers are not reported again.
    assert_eq!(store.mark_stale_offline(UnixMillis(2_400)).await?, vec![key(2)]);
    assert_eq!(store.mark_stale_offline(UnixMillis(2_401)).await?, vec![key(1)]);
    assert!(store.mark_stale_offline(UnixMillis(2_401)).await?.is_empty());
    let online: Vec<(PublicKey, bool)> =
        store.workers().await?.into_iter().map(|w| (w.record.worker_key, w.online)).collect();
    assert_eq!(online, vec![(key(1), false), (key(2), false), (key(3), true), (key(4), false)]);
    store.close().await
}

/// Claims active after `since`, for the claim tests: an expiry of 1,000 ms before `t`.
fn since(t: UnixMillis) -> UnixMillis {
    UnixMillis(t.0 - 1_000)
}

async fn device_claims_oldest_active_wins(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let (a, b, c, d) = (dev("GPU-a"), dev("GPU-b"), dev("cpu:machine-1"), dev("GPU-d"));
    let claim = |worker: u8, miner: u8, devices: Vec<DeviceKey>, t: u64| {
        let store = store.clone();
        async move {
            let t = UnixMillis(t);
            store.claim_devices(&key(worker), &key(miner), &devices, t, since(t)).await
        }
    };
    let held_by =
        |device: &DeviceKey, holder: u8| HeldDevice { device: device.clone(), holder: key(holder) };

    // Identity 1 claims a and b, and again (under another hotkey, a repeated device): no conflict.
    assert!(claim(1, 9, vec![a.clone(), b.clone()], 1_000).await?.is_empty());
    assert!(claim(1, 8, vec![a.clone(), a.clone()], 1_000).await?.is_empty());
    store.upsert_worker(&worker(key(1), key(9), &["GPU-a", "GPU-b"]), UnixMillis(1_000)).await?;
    // Identity 2 names b while identity 1's claim is active: refused whole, nothing recorded.
    let got = claim(2, 9, vec![c.clone(), b.clone(), b.clone()], 1_500).await?;
    assert_eq!(got, vec![held_by(&b, 1)]);
    assert_eq!(store.device_holder(&b, since(UnixMillis(1_500))).await?, Some(key(1)));
    assert_eq!(store.device_holder(&c, since(UnixMillis(1_500))).await?, None);
    assert_eq!(store.device_holder(&dev("never-seen"), UnixMillis(0)).await?, None);
    // Long after its registration identity 1 still holds b: it is connected and offers it.
    assert_eq!(claim(2, 9, vec![b.clone()], 50_000).await?, vec![held_by(&b, 1)]);
    assert_eq!(store.device_holder(&b, since(UnixMillis(50_000))).await?, Some(key(1)));

    // Identity 1 goes offline (last seen at 1,000): its claims lapse and identity 2 takes b.
    assert!(store.set_offline(&key(1), UnixMillis(50_000)).await?);
    assert_eq!(store.device_holder(&b, since(UnixMillis(50_000))).await?, None);
    assert!(claim(2, 7, vec![c.clone(), b.clone()], 50_000).await?.is_empty());
    assert_eq!(store.device_holder(&b, since(UnixMillis(50_100))).await?, Some(key(2)));
    // Identity 1 coming back is now the newcomer; its lapsed claim on b was deleted.
    assert_eq!(claim(1, 9, vec![a.clone(), b.clone()], 50_100).await?, vec![held_by(&b, 2)]);
    assert_eq!(count(&store, "device_claims").await, 3, "a by 1, b and c by 2");

    // Two active claims (only by hand, or left by a coordinator that never refused a claim):
    // the oldest holds the device, is credited and keeps it, even against the younger claimant.
    assert!(claim(4, 9, vec![d.clone()], 60_000).await?.is_empty());
    assert!(store.conflicted_devices(since(UnixMillis(60_100))).await?.is_empty());
    sqlx::query("INSERT INTO device_claims VALUES ($1, $2, $2, $3, $3)")
        .bind("GPU-d")
        .bind(key(5).to_string())
        .bind(59_900_i64)
        .execute(&store.pool)
        .await?;
    assert_eq!(store.conflicted_devices(since(UnixMillis(60_100))).await?, vec![d.clone()]);
    assert_eq!(store.device_holder(&d, since(UnixMillis(60_100))).await?, Some(key(5)));
    assert_eq!(claim(4, 9, vec![d.clone()], 60_200).await?, vec![held_by(&d, 5)]);
    assert!(claim(5, 9, vec![d.clone()], 60_200).await?.is_empty());
    assert!(claim(3, 7, vec![], 60_200).await?.is_empty());
    store.close().await
}

async fn rounds_are_stored_sent_in_one_batch(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.insert_sent_challenges(&[], UnixMillis(5)).await?.is_empty());
    // More than two statements' worth, and two challenges sharing a seed.
    let mut round: Vec<NewChallenge> = (0..1_201_u32)
        .map(|i| {
            let mut c = challenge(key(9), key((i % 7) as u8), &format!("GPU-{i}"), 1_000);
            c.seed = Seed(std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8 ^ j as u8));
            c
        })
        .collect();
    round[7].seed = round[3].seed;
    let ids = store.insert_sent_challenges(&round, UnixMillis(1_001)).await?;
    assert_eq!(ids.len(), round.len());
    let stored: std::collections::HashMap<ChallengeId, ChallengeRow> = store
        .challenges(Some(ChallengeStatus::Sent), 5_000)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    assert_eq!(stored.len(), round.len(), "unique ids, all sent");
    for (id, new) in ids.iter().zip(&round) {
        let row = &stored[id];
        assert_eq!(
            (&row.worker_key, &row.device, row.seed, row.shape, row.deadline),
            (&new.worker_key, &new.device, new.seed, new.shape, new.deadline)
        );
        assert_eq!(row.sent_at, Some(UnixMillis(1_001)));
    }
    // The usual transitions apply.
    assert!(
        store.mark_committed(ids[0], &commit(UnixMillis(1_002), Root([1; 32]), 1.0, 0.1)).await?
    );
    assert!(!store.mark_sent(ids[1], UnixMillis(1_002)).await?, "already sent");
    store.close().await
}

async fn challenge_state_machine(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let new = challenge(key(9), key(1), "GPU-a", 10_000);
    let id = store.insert_challenge(&new, UnixMillis(10_000)).await?;
    let created = ChallengeRow {
        id,
        miner_hotkey: new.miner_hotkey,
        worker_key: new.worker_key,
        device: new.device.clone(),
        mode: new.mode,
        shape: new.shape,
        seed: new.seed,
        status: ChallengeStatus::Created,
        reason: None,
        detail: None,
        issued_at: new.issued_at,
        deadline: new.deadline,
        sent_at: None,
        committed_at: None,
        finished_at: None,
        root: None,
        compute_ms: None,
        rtt_ms: None,
        gflops: None,
        credited: false,
    };
    assert_eq!(store.challenge(id).await?, Some(created.clone()));
    assert_eq!(store.challenge(ChallengeId(id.0 + 1000)).await?, None);

    assert!(store.mark_sent(id, UnixMillis(10_005)).await?);
    let sent = ChallengeRow {
        status: ChallengeStatus::Sent,
        sent_at: Some(UnixMillis(10_005)),
        ..created.clone()
    };
    assert_eq!(store.challenge(id).await?, Some(sent.clone()));

    let root = Root([0xab; 32]);
    assert!(store.mark_committed(id, &commit(UnixMillis(10_900), root, 812.25, 3.5)).await?);
    let committed = ChallengeRow {
        status: ChallengeStatus::Committed,
        committed_at: Some(UnixMillis(10_900)),
        root: Some(root),
        compute_ms: Some(812.25),
        rtt_ms: Some(3.5),
        ..sent
    };
    assert_eq!(store.challenge(id).await?, Some(committed.clone()));

    assert!(store.mark_verifying(id, UnixMillis(10_950)).await?);
    let verifying = ChallengeRow { status: ChallengeStatus::Verifying, ..committed };
    assert_eq!(store.challenge(id).await?, Some(verifying.clone()));

    assert!(
        store.mark_verified(id, UnixMillis(11_000), 21_154.5, Credit::Credited, &COMMITTED).await?
    );
    let verified = ChallengeRow {
        status: ChallengeStatus::Verified,
        finished_at: Some(UnixMillis(11_000)),
        gflops: Some(21_154.5),
        credited: true,
        ..verifying
    };
    assert_eq!(store.challenge(id).await?, Some(verified));

    // Every non-terminal status can fail, keeping what was recorded before.
    for from in [
        ChallengeStatus::Created,
        ChallengeStatus::Sent,
        ChallengeStatus::Committed,
        ChallengeStatus::Verifying,
    ] {
        let id = challenge_in(&store, from, &new).await?;
        let before = store.challenge(id).await?.expect("exists");
        assert!(store.mark_failed(id, UnixMillis(12_000), "bad_row", "row 17 differs").await?);
        let after = store.challenge(id).await?.expect("exists");
        assert_eq!(
            after,
            ChallengeRow {
                status: ChallengeStatus::Failed,
                reason: Some("bad_row".into()),
                detail: Some("row 17 differs".into()),
                finished_at: Some(UnixMillis(12_000)),
                ..before
            }
        );
        assert!(!after.credited);
    }
    // Verified but not credited (a conflicted device).
    let id = challenge_in(&store, ChallengeStatus::Verifying, &new).await?;
    assert!(
        store
            .mark_verified(id, UnixMillis(13_000), 5.0, Credit::from_flag(false), &COMMITTED)
            .await?
    );
    let row = store.challenge(id).await?.expect("exists");
    assert_eq!(
        (row.status, row.credited, row.gflops),
        (ChallengeStatus::Verified, false, Some(5.0))
    );
    store.close().await
}

async fn illegal_transitions_are_refused(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let new = challenge(key(9), key(1), "GPU-a", 1_000);
    let t = UnixMillis(5_000);
    let root = Root([1; 32]);

    let created = challenge_in(&store, ChallengeStatus::Created, &new).await?;
    assert!(!store.mark_committed(created, &commit(t, root, 1.0, 1.0)).await?, "created→committed");
    assert!(!store.mark_verifying(created, t).await?, "created→verifying");
    assert!(
        !store.mark_verified(created, t, 1.0, Credit::Credited, &COMMITTED).await?,
        "created→verified"
    );
    assert_eq!(store.challenge(created).await?.expect("exists").committed_at, None);
    assert_eq!(status(&store, created).await?, ChallengeStatus::Created);

    let sent = challenge_in(&store, ChallengeStatus::Sent, &new).await?;
    assert!(!store.mark_sent(sent, t).await?, "sent→sent");
    assert!(!store.mark_verifying(sent, t).await?, "sent→verifying");
    assert_eq!(status(&store, sent).await?, ChallengeStatus::Sent);
    // A verdict whose intermediate writes were lost (an outage): sent → verified is allowed and
    // the row gets the commitment it missed.
    assert!(
        store.mark_verified(sent, t, 1.0, Credit::Credited, &COMMITTED).await?,
        "sent→verified"
    );
    let row = store.challenge(sent).await?.expect("exists");
    assert_eq!(
        (row.status, row.committed_at, row.root, row.compute_ms, row.rtt_ms),
        (
            ChallengeStatus::Verified,
            Some(UnixMillis(4_242)),
            Some(Root([42; 32])),
            Some(4.0),
            Some(2.0)
        )
    );

    let committed = challenge_in(&store, ChallengeStatus::Committed, &new).await?;
    assert!(!store.mark_sent(committed, t).await?, "committed→sent");
    assert!(!store.mark_committed(committed, &commit(t, Root([2; 32]), 9.0, 9.0)).await?);
    let row = store.challenge(committed).await?.expect("exists");
    assert_eq!((row.status, row.root), (ChallengeStatus::Committed, Some(Root([7; 32]))));
    // committed → verified keeps the commitment already written.
    assert!(store.mark_verified(committed, t, 1.0, Credit::Credited, &COMMITTED).await?);
    let row = store.challenge(committed).await?.expect("exists");
    assert_eq!((row.status, row.root), (ChallengeStatus::Verified, Some(Root([7; 32]))));

    let verifying = challenge_in(&store, ChallengeStatus::Verifying, &new).await?;
    assert!(!store.mark_verifying(verifying, t).await?, "verifying→verifying");
    assert!(
        !store.mark_committed(verifying, &commit(t, root, 1.0, 1.0)).await?,
        "verifying→committed"
    );
    assert_eq!(status(&store, verifying).await?, ChallengeStatus::Verifying);

    let verified = challenge_in(&store, ChallengeStatus::Verified, &new).await?;
    let before = store.challenge(verified).await?;
    assert!(!store.mark_failed(verified, t, "late", "too late").await?, "verified→failed");
    assert!(
        !store.mark_verified(verified, t, 1.0, Credit::from_flag(false), &COMMITTED).await?,
        "verified→verified"
    );
    assert!(!store.mark_sent(verified, t).await?, "verified→sent");
    assert_eq!(store.challenge(verified).await?, before, "untouched");

    let failed = challenge_in(&store, ChallengeStatus::Created, &new).await?;
    assert!(store.mark_failed(failed, t, "deadline_missed", "no root").await?);
    let before = store.challenge(failed).await?;
    assert!(!store.mark_failed(failed, t, "other", "again").await?, "failed→failed");
    assert!(!store.mark_sent(failed, t).await?, "failed→sent");
    assert!(!store.mark_committed(failed, &commit(t, root, 1.0, 1.0)).await?, "failed→committed");
    assert!(!store.mark_verifying(failed, t).await?, "failed→verifying");
    assert!(
        !store.mark_verified(failed, t, 1.0, Credit::Credited, &COMMITTED).await?,
        "failed→verified"
    );
    assert_eq!(store.challenge(failed).await?, before, "untouched");

    let unknown = ChallengeId(999_999);
    assert!(!store.mark_sent(unknown, t).await?);
    assert!(!store.mark_failed(unknown, t, "x", "y").await?);
    assert!(!store.mark_sent(ChallengeId(u64::MAX), t).await?);
    store.close().await
}

async fn fail_unfinished_after_crash(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let mut ids = Vec::new();
    {
        let store = db.open().await;
        let new = challenge(key(9), key(1), "GPU-a", 1_000);
        for s in [
            ChallengeStatus::Created,
            ChallengeStatus::Sent,
            ChallengeStatus::Committed,
            ChallengeStatus::Verifying,
            ChallengeStatus::Verified,
        ] {
            ids.push((s, challenge_in(&store, s, &new).await?));
        }
        let failed = challenge_in(&store, ChallengeStatus::Created, &new).await?;
        store.mark_failed(failed, UnixMillis(2_000), "deadline_missed", "late").await?;
        ids.push((ChallengeStatus::Failed, failed));
        store.upsert_worker(&worker(key(1), key(9), &["GPU-a"]), UnixMillis(1_000)).await?;
        // The process dies: no close, the pool is simply dropped.
        drop(store);
    }

    let store = db.open().await;
    for &(s, id) in &ids {
        assert_eq!(status(&store, id).await?, s, "persisted across the restart");
    }
    assert_eq!(store.workers().await?.len(), 1);
    assert_eq!(store.fail_unfinished(UnixMillis(9_000), "coordinator_restart").await?, 4);
    for &(s, id) in &ids {
        let row = store.challenge(id).await?.expect("exists");
        if s.is_terminal() {
            assert_eq!(row.status, s);
            assert_ne!(row.reason.as_deref(), Some("coordinator_restart"));
        } else {
            assert_eq!(row.status, ChallengeStatus::Failed);
            assert_eq!(row.reason.as_deref(), Some("coordinator_restart"));
            assert!(row.detail.is_some());
            assert_eq!(row.finished_at, Some(UnixMillis(9_000)));
            assert!(!row.credited);
        }
    }
    assert_eq!(store.fail_unfinished(UnixMillis(9_500), "coordinator_restart").await?, 0);
    store.close().await
}

async fn ids_are_never_reused(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let new = challenge(key(9), key(1), "GPU-a", 1_000);
    let mut seen = Vec::new();
    let store = db.open().await;
    for _ in 0..3 {
        seen.push(store.insert_challenge(&new, UnixMillis(1_000)).await?);
    }
    store.close().await?;

    // After a restart with nothing deleted: the next id is new.
    let store = db.open().await;
    let id = store.insert_challenge(&new, UnixMillis(1_000)).await?;
    assert!(seen.iter().all(|&old| id > old), "{id:?} after {seen:?}");
    seen.push(id);

    // Even the newest id, deleted by hand, is not handed out again, before or after a restart.
    sqlx::query("DELETE FROM challenges WHERE id = $1")
        .bind(i64::try_from(id.0).expect("small id"))
        .execute(&store.pool)
        .await?;
    let next = store.insert_challenge(&new, UnixMillis(1_000)).await?;
    assert!(seen.iter().all(|&old| next > old), "{next:?} after {seen:?}");
    seen.push(next);
    sqlx::query("DELETE FROM challenges").execute(&store.pool).await?;
    store.close().await?;
    let store = db.open().await;
    let last = store.insert_challenge(&new, UnixMillis(1_000)).await?;
    assert!(seen.iter().all(|&old| last > old), "{last:?} after {seen:?}");
    store.close().await
}

async fn miners_aggregate_workers_and_credited_challenges(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.miners().await?.is_empty());
    let (m1, m2, m3) = (key(0x10), key(0x20), key(0x30));
    store.upsert_worker(&worker(key(1), m1, &["GPU-a"]), UnixMillis(1_000)).await?;
    store.upsert_worker(&worker(key(2), m1, &["GPU-b"]), UnixMillis(1_000)).await?;
    store.upsert_worker(&worker(key(3), m1, &["GPU-c"]), UnixMillis(1_000)).await?;
    store.set_offline(&key(3), UnixMillis(2_000)).await?;
    store.upsert_worker(&worker(key(4), m2, &["GPU-d"]), UnixMillis(1_000)).await?;

    let verify = |miner, w, gflops: f64, credited: bool| {
        let store = &store;
        async move {
            let c = challenge(miner, w, "GPU-a", 1_000);
            let id = challenge_in(store, ChallengeStatus::Verifying, &c).await?;
            assert!(
                store
                    .mark_verified(
                        id,
                        UnixMillis(1_010),
                        gflops,
                        Credit::from_flag(credited),
                        &COMMITTED
                    )
                    .await?
            );
            Ok::<_, StoreError>(id)
        }
    };
    verify(m1, key(1), 100.0, true).await?;
    verify(m1, key(2), 300.0, true).await?;
    verify(m1, key(2), 10_000.0, false).await?; // uncredited: neither counted nor averaged
    for _ in 0..2 {
        let id =
            store.insert_challenge(&challenge(m1, key(1), "GPU-a", 1_000), UnixMillis(0)).await?;
        store.mark_failed(id, UnixMillis(1_100), "bad_row", "x").await?;
    }
    store.insert_challenge(&challenge(m1, key(1), "GPU-a", 1_000), UnixMillis(0)).await?; // open
    // A busy refusal is counted apart, never as a failure.
    let id = store.insert_challenge(&challenge(m1, key(1), "GPU-a", 1_000), UnixMillis(0)).await?;
    store.mark_failed(id, UnixMillis(1_100), "busy", "busy: serving another validator").await?;
    verify(m2, key(4), 50.0, false).await?;
    // A miner known only from its challenges (its worker re-registered elsewhere).
    let id = store.insert_challenge(&challenge(m3, key(5), "GPU-e", 1_000), UnixMillis(0)).await?;
    store.mark_failed(id, UnixMillis(1_100), "disconnected", "gone").await?;

    assert_eq!(
        store.miners().await?,
        vec![
            MinerRow {
                hotkey: m1,
                workers: 3,
                online_workers: 2,
                verified: 2,
                failed: 2,
                busy: 1,
                mean_gflops: 200.0
            },
            MinerRow {
                hotkey: m2,
                workers: 1,
                online_workers: 1,
                verified: 0,
                failed: 0,
                busy: 0,
                mean_gflops: 0.0
            },
            MinerRow {
                hotkey: m3,
                workers: 0,
                online_workers: 0,
                verified: 0,
                failed: 1,
                busy: 0,
                mean_gflops: 0.0
            },
        ]
    );
    store.close().await
}

async fn challenges_listing(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.challenges(None, 10).await?.is_empty());
    let new = challenge(key(9), key(1), "GPU-a", 1_000);
    let mut ids = Vec::new();
    for i in 0..6 {
        let target = if i % 2 == 0 { ChallengeStatus::Sent } else { ChallengeStatus::Created };
        ids.push(challenge_in(&store, target, &new).await?);
    }
    let listed = |rows: Vec<ChallengeRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        listed(store.challenges(None, 100).await?),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(listed(store.challenges(None, 2).await?), vec![ids[5], ids[4]]);
    assert_eq!(
        listed(store.challenges(Some(ChallengeStatus::Sent), 100).await?),
        vec![ids[4], ids[2], ids[0]]
    );
    assert_eq!(listed(store.challenges(Some(ChallengeStatus::Created), 1).await?), vec![ids[5]]);
    assert!(store.challenges(Some(ChallengeStatus::Verified), 100).await?.is_empty());
    assert!(store.challenges(None, 0).await?.is_empty());
    store.close().await
}

/// A tally of one group, as the service's buffer hands it over.
fn tally(
    kind: &str,
    worker: Option<PublicKey>,
    claimed: Option<PublicKey>,
    count: u64,
    span: (u64, u64),
    detail: &str,
) -> Rejection {
    Rejection {
        peer: "203.0.113.9".into(),
        kind: kind.into(),
        worker_key: worker,
        last_claimed: claimed,
        count,
        first_at: UnixMillis(span.0),
        last_at: UnixMillis(span.1),
        detail: detail.into(),
    }
}

async fn rejections_are_counted_per_group_and_pruned(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.rejections(10).await?.is_empty());
    let claimed = tally("bad_signature", None, Some(key(1)), 2, (1_000, 2_000), "it's \"bad\"");
    let registered = tally("bad_signature", Some(key(3)), None, 1, (1_500, 1_500), "b");
    store.record_rejections(&[claimed.clone(), registered.clone()]).await?;
    // A later tally of the group adds up; the newer detail and claim win.
    let later = tally("bad_signature", None, Some(key(2)), 3, (500, 3_000), "newer");
    store.record_rejections(&[later]).await?;
    // A tally whose refusals are older than the row's last one keeps the row's detail and claim.
    let older = tally("bad_signature", None, None, 1, (2_500, 2_500), "older");
    store.record_rejections(&[older]).await?;
    let merged = Rejection {
        count: 6,
        first_at: UnixMillis(500),
        last_at: UnixMillis(3_000),
        last_claimed: Some(key(2)),
        detail: "newer".into(),
        ..claimed
    };
    assert_eq!(store.rejections(10).await?, vec![merged.clone(), registered.clone()]);
    assert_eq!(store.rejections(1).await?, vec![merged.clone()]);

    // Pruning by age, then by count (least recently refused first).
    let stale = tally("handshake_timeout", None, None, 9, (10, 100), "old");
    store.record_rejections(&[stale]).await?;
    assert_eq!(store.rejections(10).await?.len(), 3);
    assert_eq!(store.prune_rejections(UnixMillis(1_000), 10).await?, 1);
    assert_eq!(store.rejections(10).await?, vec![merged.clone(), registered]);
    assert_eq!(store.prune_rejections(UnixMillis(0), 1).await?, 1);
    assert_eq!(store.rejections(10).await?, vec![merged]);
    assert_eq!(store.prune_rejections(UnixMillis(0), 1).await?, 0);
    store.close().await
}

/// Applies the migrations before 0004 to `db`, then stores rows of the old one-row-per-refusal
/// table; opening the store then runs 0004, which must group them.
/// A connection to `db` with only the migrations numbered below `first_excluded` applied.
async fn migrated_before(db: &TestDb, first_excluded: &str) -> Result<AnyConnection, StoreError> {
    let (flavour, url) = match db.backend {
        Backend::Sqlite => match sqlite_target(&db.url) {
            Some(SqliteTarget::File { path, url }) => {
                if let Some(dir) = std::path::Path::new(&path).parent() {
                    std::fs::create_dir_all(dir).expect("database directory");
                }
                ("sqlite", url)
            }
            other => panic!("{other:?}"),
        },
        Backend::Postgres => ("postgres", db.url.clone()),
    };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(flavour);
    let before = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&all).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("file name").to_string_lossy().into_owned();
        if name.as_str() < first_excluded {
            std::fs::copy(&path, before.path().join(name)).expect("copy");
        }
    }
    let mut conn = AnyConnection::connect(&url).await?;
    sqlx::migrate::Migrator::new(before.path()).await?.run_direct(&mut conn).await?;
    Ok(conn)
}

async fn old_rejections_are_grouped_by_the_migration(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let mut conn = migrated_before(&db, "0004").await?;
    let long = "x".repeat(1_000);
    sqlx::query(
        "INSERT INTO rejections (at, peer, worker_key, kind, detail) VALUES \
             (1000, '203.0.113.9:5555', NULL, 'handshake_timeout', 'first'), \
             (2000, '203.0.113.9:6666', NULL, 'handshake_timeout', 'last'), \
             (1500, '[2001:db8::1]:80', $1, 'bad_signature', $2), \
             (1700, 'http', NULL, 'bad_lease', 'c')",
    )
    .bind(key(1).to_string())
    .bind(&long)
    .execute(&mut conn)
    .await?;
    conn.close().await?;

    let store = db.open().await;
    let row = |peer: &str, kind: &str, claimed, count, span: (u64, u64), detail: &str| Rejection {
        peer: peer.into(),
        last_claimed: claimed,
        ..tally(kind, None, None, count, span, detail)
    };
    assert_eq!(
        store.rejections(10).await?,
        vec![
            row("203.0.113.9", "handshake_timeout", None, 2, (1_000, 2_000), "last"),
            row("http", "bad_lease", None, 1, (1_700, 1_700), "c"),
            row("2001:db8::1", "bad_signature", Some(key(1)), 1, (1_500, 1_500), &long[..240]),
        ]
    );
    assert_eq!(count(&store, "registration_nonces").await, 0);
    store.close().await
}

async fn registration_nonces_are_used_once_and_pruned(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.use_registration_nonce(&key(1), 7, UnixMillis(1_000)).await?);
    assert!(!store.use_registration_nonce(&key(1), 7, UnixMillis(1_001)).await?);
    assert!(store.use_registration_nonce(&key(2), 7, UnixMillis(1_000)).await?);
    // Nonces use all 64 bits.
    assert!(store.use_registration_nonce(&key(1), u64::MAX, UnixMillis(5_000)).await?);
    assert!(store.use_registration_nonce(&key(1), i64::MAX as u64, UnixMillis(5_000)).await?);
    assert!(!store.use_registration_nonce(&key(1), u64::MAX, UnixMillis(5_000)).await?);
    store.close().await?;

    // Still used after a restart; forgotten once pruned.
    let store = db.open().await;
    assert!(!store.use_registration_nonce(&key(1), 7, UnixMillis(1_000)).await?);
    assert_eq!(store.prune_registration_nonces(UnixMillis(2_000)).await?, 2);
    assert!(store.use_registration_nonce(&key(1), 7, UnixMillis(6_000)).await?);
    assert!(!store.use_registration_nonce(&key(1), u64::MAX, UnixMillis(6_000)).await?);
    assert_eq!(count(&store, "registration_nonces").await, 3);
    store.close().await
}

/// The column and value of a [`StoreError::Corrupt`], `None` for anything else.
fn corrupt_column<T>(r: Result<T, StoreError>) -> Option<(&'static str, String)> {
    match r {
        Err(StoreError::Corrupt { column, value }) => Some((column, value)),
        _ => None,
    }
}

async fn corrupt_values_are_errors(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let new = challenge(key(9), key(1), "GPU-a", 1_000);
    let id = store.insert_challenge(&new, UnixMillis(1_000)).await?;
    let id_value = i64::try_from(id.0).expect("small id");

    for (column, bad) in [
        ("seed", "zz"),
        ("seed", "AB"),
        ("miner_hotkey", "not hex"),
        ("worker_key", &"g".repeat(64)),
        ("mode", "int9"),
        ("device_key", ""),
        ("root", "0123"),
    ] {
        // Fresh copy each time.
        let id = store.insert_challenge(&new, UnixMillis(1_000)).await?;
        let id_value = i64::try_from(id.0).expect("small id");
        sqlx::query(&format!("UPDATE challenges SET {column} = $1 WHERE id = $2"))
            .bind(bad)
            .bind(id_value)
            .execute(&store.pool)
            .await?;
        assert_eq!(corrupt_column(store.challenge(id).await), Some((column, bad.to_owned())));
        assert!(corrupt_column(store.challenges(None, 100).await).is_some());
        sqlx::query("DELETE FROM challenges WHERE id = $1")
            .bind(id_value)
            .execute(&store.pool)
            .await?;
    }
    for (column, bad) in [("issued_at", -1_i64), ("m", -5), ("n", 1 << 40), ("credited", 2)] {
        if column == "credited" {
            // The CHECK constraint keeps a 2 out on both databases.
            let r = sqlx::query("UPDATE challenges SET credited = 2 WHERE id = $1")
                .bind(id_value)
                .execute(&store.pool)
                .await;
            assert!(r.is_err());
            continue;
        }
        sqlx::query(&format!("UPDATE challenges SET {column} = $1 WHERE id = $2"))
            .bind(bad)
            .bind(id_value)
            .execute(&store.pool)
            .await?;
        assert_eq!(corrupt_column(store.challenge(id).await), Some((column, bad.to_string())));
        sqlx::query(&format!("UPDATE challenges SET {column} = 1000 WHERE id = $1"))
            .bind(id_value)
            .execute(&store.pool)
            .await?;
    }
    assert!(store.challenge(id).await?.is_some());

    store.upsert_worker(&worker(key(1), key(9), &["GPU-a"]), UnixMillis(1_000)).await?;
    sqlx::query("UPDATE workers SET miner_hotkey = 'xyz'").execute(&store.pool).await?;
    assert_eq!(corrupt_column(store.workers().await), Some(("miner_hotkey", "xyz".to_owned())));
    assert_eq!(corrupt_column(store.miners().await), Some(("miner_hotkey", "xyz".to_owned())));
    sqlx::query("UPDATE workers SET miner_hotkey = $1")
        .bind(key(9).to_string())
        .execute(&store.pool)
        .await?;
    sqlx::query(
        "INSERT INTO workers (worker_key, miner_hotkey, name, address, hardware_json, online, \
             connected_at, last_seen) VALUES ('bad-key', $1, 'n', 'a', '{}', 1, 1, 1)",
    )
    .bind(key(9).to_string())
    .execute(&store.pool)
    .await?;
    assert_eq!(corrupt_column(store.workers().await), Some(("worker_key", "bad-key".to_owned())));
    assert_eq!(
        corrupt_column(store.mark_stale_offline(UnixMillis(10)).await),
        Some(("worker_key", "bad-key".to_owned()))
    );
    sqlx::query(
        "INSERT INTO rejections (peer, kind, worker_key, count, first_at, last_at, detail) \
         VALUES ('p', 'k', 'nothex', 1, 1, 1, 'd')",
    )
    .execute(&store.pool)
    .await?;
    assert_eq!(
        corrupt_column(store.rejections(5).await),
        Some(("worker_key", "nothex".to_owned()))
    );
    sqlx::query("INSERT INTO device_claims VALUES ('', $1, $1, 1, 1), ('', $2, $2, 1, 1)")
        .bind(key(1).to_string())
        .bind(key(2).to_string())
        .execute(&store.pool)
        .await?;
    assert_eq!(
        corrupt_column(store.conflicted_devices(UnixMillis(0)).await),
        Some(("device_key", String::new()))
    );
    store.close().await
}

async fn values_round_trip_exactly(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let mut new = challenge(key(0xfe), key(0x01), "GPU-9f2c4a1e-0000-4000-8000-00000000abcd", 0);
    new.shape = Shape { m: u32::MAX, k: 1, n: 65_536 };
    new.mode = Mode::Bf16;
    new.seed = Seed(std::array::from_fn(|i| i as u8 * 7));
    new.issued_at = UnixMillis(1_767_225_600_123);
    new.deadline = UnixMillis(i64::MAX as u64);
    let id = store.insert_challenge(&new, new.issued_at).await?;
    store.mark_sent(id, UnixMillis(1_767_225_600_124)).await?;
    let root = Root(std::array::from_fn(|i| 255 - i as u8));
    let (compute, rtt) = (std::f64::consts::PI * 1e3, 0.1 + 0.2);
    store.mark_committed(id, &commit(UnixMillis(1_767_225_601_000), root, compute, rtt)).await?;
    store.mark_verifying(id, UnixMillis(1_767_225_601_001)).await?;
    store
        .mark_verified(id, UnixMillis(1_767_225_601_002), f64::NAN, Credit::Credited, &COMMITTED)
        .await?;
    let row = store.challenge(id).await?.expect("exists");
    assert_eq!(row.shape, new.shape);
    assert_eq!(row.mode, Mode::Bf16);
    assert_eq!(row.seed, new.seed);
    assert_eq!(row.root, Some(root));
    assert_eq!(row.deadline, new.deadline);
    assert_eq!(row.issued_at, new.issued_at);
    assert_eq!(row.compute_ms.map(f64::to_bits), Some(compute.to_bits()), "bit-exact f64");
    assert_eq!(row.rtt_ms.map(f64::to_bits), Some(rtt.to_bits()));
    assert_eq!(row.gflops, None, "non-finite measurements are stored as NULL");
    assert!(row.credited);

    for mode in Mode::ALL {
        let id =
            store.insert_challenge(&NewChallenge { mode, ..new.clone() }, UnixMillis(0)).await?;
        assert_eq!(store.challenge(id).await?.expect("exists").mode, mode);
    }

    let mut w = worker(key(0xaa), key(0xbb), &["GPU-1", "cpu:abc", "GPU-1"]);
    w.name = "Zoë's 'rig' \"one\"; DROP TABLE workers; --".into();
    w.hardware_json = "{\"unicode\":\"✓\"}".into();
    store.upsert_worker(&w, UnixMillis(u64::MAX)).await?;
    let rows = store.workers().await?;
    assert_eq!(rows[0].record, w, "strings, and repeated devices in order");
    assert_eq!(rows[0].last_seen, UnixMillis(i64::MAX as u64), "saturated, not wrapped");
    store.close().await
}

async fn concurrent_writers(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let mut tasks = Vec::new();
    for t in 0..8_u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            store.upsert_worker(&worker(key(t), key(9), &["GPU-x"]), UnixMillis(1)).await?;
            let (x, at) = ([dev("GPU-x")], UnixMillis(1));
            let won =
                store.claim_devices(&key(t), &key(9), &x, at, UnixMillis(0)).await?.is_empty();
            for i in 0..10 {
                let id = store
                    .insert_challenge(&challenge(key(9), key(t), "GPU-x", i), UnixMillis(i))
                    .await?;
                assert!(store.mark_sent(id, UnixMillis(i + 1)).await?);
                store.touch(&key(t), UnixMillis(i + 2)).await?;
                ids.push(id);
            }
            Ok::<_, StoreError>((ids, won.then_some(key(t))))
        }));
    }
    let mut all = Vec::new();
    let mut winners = Vec::new();
    for task in tasks {
        let (ids, won) = task.await.expect("task")?;
        all.extend(ids);
        winners.extend(won);
    }
    // Of eight identities claiming one free device at once, exactly one holds it.
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(store.device_holder(&dev("GPU-x"), UnixMillis(0)).await?, winners.pop());
    assert!(store.conflicted_devices(UnixMillis(0)).await?.is_empty());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 80, "unique ids");
    assert_eq!(store.challenges(Some(ChallengeStatus::Sent), 1_000).await?.len(), 80);
    store.close().await
}

// ------------------------------------------------------------------------ SQLite only

#[tokio::test]
async fn sqlite_file_directory_wal_and_busy_timeout() -> TestResult {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a").join("b").join("c.db");
    let store = Store::connect(&format!("sqlite:{}", path.display())).await?;
    assert!(path.exists());
    let mode: String =
        sqlx::query("PRAGMA journal_mode").fetch_one(&store.pool).await?.try_get(0)?;
    assert_eq!(mode, "wal");
    let timeout: i64 =
        sqlx::query("PRAGMA busy_timeout").fetch_one(&store.pool).await?.try_get(0)?;
    assert_eq!(timeout, 5_000);
    let fk: i64 = sqlx::query("PRAGMA foreign_keys").fetch_one(&store.pool).await?.try_get(0)?;
    assert_eq!(fk, 1);
    store.close().await?;

    // The same file through the other URL spelling.
    let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
    assert_eq!(store.kind(), DbKind::Sqlite);
    store.close().await
}

#[tokio::test]
async fn sqlite_in_memory_keeps_one_database() -> TestResult {
    let store = Store::connect("sqlite::memory:").await?;
    store.record_rejections(&[tally("k", None, None, 1, (1, 1), "d")]).await?;
    assert_eq!(store.rejections(10).await?.len(), 1);
    store.close().await
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://localhost/db", "", "sqlite:", "sqlite://", "file:/tmp/x.db"] {
        assert!(
            matches!(Store::connect(url).await, Err(StoreError::UnsupportedUrl(u)) if u == url),
            "{url}"
        );
    }
}

#[test]
fn sqlite_urls_are_split() {
    let file =
        |path: &str, url: &str| Some(SqliteTarget::File { path: path.into(), url: url.into() });
    assert_eq!(
        sqlite_target("sqlite://data/Veri.db"),
        file("data/Veri.db", "sqlite:data/Veri.db?mode=rwc")
    );
    assert_eq!(sqlite_target("sqlite:data/v.db"), file("data/v.db", "sqlite:data/v.db?mode=rwc"));
    assert_eq!(sqlite_target("sqlite:///abs/v.db"), file("/abs/v.db", "sqlite:/abs/v.db?mode=rwc"));
    assert_eq!(
        sqlite_target("sqlite:///abs/v.db?mode=ro&cache=private"),
        file("/abs/v.db", "sqlite:/abs/v.db?mode=ro&cache=private")
    );
    assert_eq!(
        sqlite_target("sqlite::memory:"),
        Some(SqliteTarget::Memory { url: "sqlite::memory:".into() })
    );
    assert_eq!(sqlite_target("sqlite://"), None);
    assert_eq!(sqlite_target("postgres://x"), None);
}

// ----------------------------------------------------------------------------- scoring

async fn availability_buckets_and_ip_changes(backend: Backend) -> TestResult {
    use super::{BUCKET_MS, bucket_of};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let t0 = 1_000 * BUCKET_MS;
    let mut w = worker(key(1), key(9), &["cpu:a"]);
    store.upsert_worker(&w, UnixMillis(t0)).await?;
    // Heartbeats: two in the registration's bucket, one in each of the next two buckets.
    let beats = [t0 + 1_000, t0 + 2_000, t0 + BUCKET_MS, t0 + 2 * BUCKET_MS + 5];
    for at in beats {
        store.touch_many(&[(key(1), UnixMillis(at))]).await?;
    }
    let counts = store.online_bucket_counts(bucket_of(UnixMillis(t0))).await?;
    assert_eq!(counts.get(&key(1)), Some(&3));
    let later = store.online_bucket_counts(bucket_of(UnixMillis(t0)) + 2).await?;
    assert_eq!(later.get(&key(1)), Some(&1), "only buckets from the given one on count");

    // Same IP on another port is not a change; another IP is, once per registration.
    w.address = "10.0.0.7:5555".into();
    store.upsert_worker(&w, UnixMillis(t0 + 10)).await?;
    w.address = "10.0.0.8:5555".into();
    store.upsert_worker(&w, UnixMillis(t0 + 20)).await?;
    store.upsert_worker(&w, UnixMillis(t0 + 30)).await?;
    w.address = "[2001:db8::1]:80".into();
    store.upsert_worker(&w, UnixMillis(t0 + 40)).await?;
    assert_eq!(store.ip_change_counts(UnixMillis(t0)).await?.get(&key(1)), Some(&2));
    assert_eq!(store.ip_change_counts(UnixMillis(t0 + 25)).await?.get(&key(1)), Some(&1));
    assert!(store.ip_change_counts(UnixMillis(t0 + 41)).await?.is_empty());

    assert_eq!(store.prune_online_buckets(bucket_of(UnixMillis(t0)) + 2).await?, 2);
    assert_eq!(count(&store, "worker_online_buckets").await, 1);
    Ok(())
}

async fn verified_since_counts_credited_results_only(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let credited =
        challenge_in(&store, ChallengeStatus::Verified, &challenge(key(9), key(1), "cpu:a", 1_000))
            .await?;
    let uncredited = store
        .insert_challenge(&challenge(key(9), key(2), "cpu:b", 2_000), UnixMillis(2_000))
        .await?;
    store.mark_sent(uncredited, UnixMillis(2_001)).await?;
    store.mark_committed(uncredited, &commit(UnixMillis(2_002), Root([1; 32]), 5.0, 1.0)).await?;
    store.mark_verifying(uncredited, UnixMillis(2_003)).await?;
    store
        .mark_verified(uncredited, UnixMillis(2_004), 50.0, Credit::from_flag(false), &COMMITTED)
        .await?;
    challenge_in(&store, ChallengeStatus::Committed, &challenge(key(9), key(3), "cpu:c", 3_000))
        .await?;
    let rows = store.verified_since(UnixMillis(0)).await?;
    assert_eq!(rows, vec![(key(1), key(9), UnixMillis(1_004), 100.0)]);
    let samples: Vec<(UnixMillis, f64)> = store
        .challenges(None, 100)
        .await?
        .iter()
        .filter_map(ChallengeRow::verified_sample)
        .collect();
    assert_eq!(samples, [(UnixMillis(1_004), 100.0)], "a loaded row follows the same rule");
    assert!(store.verified_since(UnixMillis(1_005)).await?.is_empty(), "finish time filter");
    assert_eq!(status(&store, credited).await?, ChallengeStatus::Verified);
    Ok(())
}

async fn rejected_since_returns_verifier_rejections_only(backend: Backend) -> TestResult {
    use crate::scoring::RejectCode;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let failed = [
        (1_000, "value_mismatch"),
        (2_000, "row_length"),
        (3_000, "deadline_missed"),
        (4_000, "open_timeout"),
        (5_000, "bad_proof"),
    ];
    for (at, reason) in failed {
        let c = challenge(key(9), key(1), "cpu:a", at);
        let id = challenge_in(&store, ChallengeStatus::Committed, &c).await?;
        assert!(store.mark_failed(id, UnixMillis(at + 10), reason, "detail").await?);
    }
    challenge_in(&store, ChallengeStatus::Verified, &challenge(key(9), key(2), "cpu:b", 6_000))
        .await?;
    let rejected = |at: u64, code| (key(1), UnixMillis(at), code);
    let mut rows = store.rejected_since(UnixMillis(0)).await?;
    rows.sort_by_key(|r| r.1);
    assert_eq!(
        rows,
        [
            rejected(1_010, RejectCode::ValueMismatch),
            rejected(2_010, RejectCode::RowLength),
            rejected(5_010, RejectCode::BadProof),
        ],
        "deadline misses, timeouts and verified challenges are not rejections"
    );
    let since = store.rejected_since(UnixMillis(2_010)).await?;
    assert_eq!(since.len(), 2, "finish time filter, inclusive: {since:?}");
    assert!(store.rejected_since(UnixMillis(5_011)).await?.is_empty());
    Ok(())
}

async fn leases_are_unique_and_filtered_by_time(backend: Backend) -> TestResult {
    use super::NewLease;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let lease = NewLease {
        request_id: "r1".into(),
        worker_key: key(1),
        score: 0.75,
        starts_at: UnixMillis(1_000),
        ends_at: UnixMillis(2_000),
        submitted_by: "token".into(),
    };
    let id = store.insert_lease(&lease, UnixMillis(900)).await?;
    assert!(id.is_some());
    assert_eq!(store.insert_lease(&lease, UnixMillis(950)).await?, None, "replayed request id");
    let later = NewLease {
        request_id: "r2".into(),
        starts_at: UnixMillis(1_500),
        ends_at: UnixMillis(3_000),
        ..lease.clone()
    };
    store.insert_lease(&later, UnixMillis(960)).await?;
    let ids = |rows: Vec<super::LeaseRow>| {
        rows.into_iter().map(|r| r.lease.request_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(store.leases(None, 10).await?), ["r2", "r1"], "newest first");
    assert_eq!(ids(store.leases(Some(UnixMillis(1_200)), 10).await?), ["r1"]);
    assert_eq!(ids(store.leases(Some(UnixMillis(1_700)), 10).await?), ["r2", "r1"]);
    assert_eq!(ids(store.leases(Some(UnixMillis(2_000)), 10).await?), ["r2"], "end is exclusive");
    assert!(store.leases(Some(UnixMillis(3_000)), 10).await?.is_empty());
    let stored = store.leases(None, 10).await?.pop().expect("r1");
    assert_eq!((stored.lease, stored.created_at), (lease, UnixMillis(900)));
    Ok(())
}

async fn score_runs_and_weight_sets_round_trip(backend: Backend) -> TestResult {
    use super::{
        MinerScoreRecord, ScoreRun, WeightEntry, WeightSetStatus, WeightSetUpdate,
        WorkerScoreRecord,
    };
    use crate::scoring::WorkerScore;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let run = |at: u64, w0: u16, w1: u16| ScoreRun {
        at: UnixMillis(at),
        block: Some(77),
        config_json: "{\"window_minutes\":180}".into(),
        miners: vec![
            MinerScoreRecord {
                hotkey: key(1),
                uid: Some(0),
                online: true,
                workers: 2,
                challenge: 1.0,
                lease: 0.25,
                total: 0.475,
            },
            MinerScoreRecord {
                hotkey: key(2),
                uid: Some(1),
                online: false,
                workers: 0,
                challenge: 0.0,
                lease: 0.0,
                total: 0.0,
            },
        ],
        workers: vec![WorkerScoreRecord {
            worker_key: key(5),
            miner_hotkey: key(1),
            leased: false,
            lease_score: 0.0,
            verified: 36,
            online_buckets: 2028,
            ip_changes: 1,
            penalised: 2,
            score: WorkerScore {
                mean_gflops: 1234.5,
                participation: 1.0,
                availability: 0.5,
                performance: 617.25,
            },
        }],
        weights: vec![
            WeightEntry { uid: 0, hotkey: key(1), weight: w0 },
            WeightEntry { uid: 1, hotkey: key(2), weight: w1 },
        ],
    };
    let first = run(1_000, 65535, 0);
    let (run1, set1) = store.record_score_run(&first).await?;
    let stored = store.score_runs(10).await?;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id, &stored[0].run), (run1, &first), "every component round-trips");
    assert_eq!(store.next_weight_set().await?.map(|s| s.id), Some(set1));

    // A newer vector supersedes the pending one; an all-zero one is skipped and supersedes nothing.
    let (_, set2) = store.record_score_run(&run(2_000, 100, 65535)).await?;
    let (_, set3) = store.record_score_run(&run(3_000, 0, 0)).await?;
    let sets = store.weight_sets(10).await?;
    let status_of = |id| sets.iter().find(|s| s.id == id).map(|s| s.status);
    assert_eq!(status_of(set1), Some(WeightSetStatus::Superseded));
    assert_eq!(status_of(set2), Some(WeightSetStatus::Pending));
    assert_eq!(status_of(set3), Some(WeightSetStatus::Skipped));
    let next = store.next_weight_set().await?.expect("pending");
    assert_eq!((next.id, next.entries[1].weight), (set2, 65535));

    // Commit-reveal keeps its reveal and is worked on before newer pending vectors.
    let committed = WeightSetUpdate {
        status: WeightSetStatus::Committed,
        error: None,
        commit: Some(("{\"salt\":[1]}".into(), 90)),
        included: None,
    };
    store.update_weight_set(set2, &committed).await?;
    let (_, set4) = store.record_score_run(&run(4_000, 1, 2)).await?;
    let next = store.next_weight_set().await?.expect("committed first");
    assert_eq!(
        (next.id, next.commit_block, next.reveal_json.as_deref()),
        (set2, Some(90), Some("{\"salt\":[1]}"))
    );
    let failed_attempt = WeightSetUpdate {
        status: WeightSetStatus::Committed,
        error: Some("node down".into()),
        commit: None,
        included: None,
    };
    store.update_weight_set(set2, &failed_attempt).await?;
    let revealed = WeightSetUpdate {
        status: WeightSetStatus::Submitted,
        error: None,
        commit: None,
        included: Some((UnixMillis(5_000), 95, "0xabc".into())),
    };
    store.update_weight_set(set2, &revealed).await?;
    let sets = store.weight_sets(10).await?;
    let s2 = sets.iter().find(|s| s.id == set2).expect("set 2");
    assert_eq!(
        (s2.status, s2.attempts, s2.block, s2.tx_hash.as_deref()),
        (WeightSetStatus::Submitted, 3, Some(95), Some("0xabc"))
    );
    assert_eq!(
        (s2.commit_block, s2.submitted_at, s2.last_error.as_deref()),
        (Some(90), Some(UnixMillis(5_000)), None)
    );
    assert_eq!(store.next_weight_set().await?.map(|s| s.id), Some(set4));
    Ok(())
}

async fn circuit_fetches_round_trip(backend: Backend) -> TestResult {
    use veribench_circuit::{ArtifactHash, FetchRecord};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let hash: ArtifactHash = "ab".repeat(32).parse().expect("hash");
    let record = |miner: u8, at: u64, outcome: &str| FetchRecord {
        miner: key(miner),
        hash,
        outcome: outcome.into(),
        reason: (outcome != "fetched").then(|| "sha256 differs from the chain".into()),
        bytes: 1 << 40,
        duration_ms: 1234,
        at: UnixMillis(at),
    };
    let (a, b, c) =
        (record(1, 10, "fetched"), record(2, 20, "hash_mismatch"), record(1, 30, "cache_hit"));
    for r in [&a, &b, &c] {
        store.record_fetch(r).await?;
    }
    assert_eq!(store.fetches(None, 10).await?, vec![c.clone(), b, a.clone()], "newest first");
    assert_eq!(store.fetches(Some(&key(1)), 10).await?, vec![c, a]);
    assert_eq!(store.fetches(Some(&key(1)), 1).await?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------------------ consensus

fn decision(height: u64, value_byte: u8) -> super::DecisionRecord {
    super::DecisionRecord {
        height,
        round: 2,
        value_id: [value_byte; 32],
        proposer: key(7),
        aggregate: vec![0, 65_535, 1, 300],
        vectors: 4,
        signers: 3,
        // Every byte value, NUL included, and a value id that differs per decision.
        value: (0..=255u8).chain([value_byte]).collect(),
        certificate: vec![0, 0, 1, 0xff, 0x80],
        decided_at: UnixMillis(1_767_225_600_000_u64.saturating_add(height)),
        decide_ms: 1_234,
    }
}

async fn decisions_round_trip_and_are_never_overwritten(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert_eq!(store.decision(5).await?, None);
    assert_eq!(store.latest_decision_height().await?, None);
    assert!(store.decisions(None, 10).await?.is_empty());

    let d = decision(5, 0xab);
    assert!(store.record_decision(&d).await?, "new");
    assert_eq!(store.decision(5).await?, Some(d.clone()), "every field, bytes included");
    assert_eq!(store.latest_decision_height().await?, Some(5));
    let rounds: i64 = sqlx::query_scalar("SELECT rounds FROM decisions WHERE height = 5")
        .fetch_one(&store.pool)
        .await?;
    assert_eq!(rounds, 3, "round + 1");

    // The same decision again (even learnt later): nothing changes.
    let again = super::DecisionRecord { decided_at: UnixMillis(9), ..d.clone() };
    assert!(!store.record_decision(&again).await?);
    assert_eq!(store.decision(5).await?, Some(d.clone()));

    // Another value at the same height: refused, the stored one stays.
    let other = decision(5, 0xcd);
    match store.record_decision(&other).await {
        Err(StoreError::ConflictingDecision { height, stored, offered }) => {
            assert_eq!((height, stored, offered), (5, [0xab; 32], [0xcd; 32]));
        }
        r => panic!("expected a conflict, got {r:?}"),
    }
    assert_eq!(store.decision(5).await?, Some(d));
    assert_eq!(count(&store, "decisions").await, 1);

    // Edges: empty vectors and bytes, the largest storable height; above it is refused.
    let edge = super::DecisionRecord {
        round: u32::MAX,
        aggregate: Vec::new(),
        value: Vec::new(),
        certificate: Vec::new(),
        vectors: u32::MAX,
        signers: 0,
        decided_at: UnixMillis(0),
        decide_ms: 0,
        ..decision(i64::MAX as u64, 1)
    };
    assert!(store.record_decision(&edge).await?);
    assert_eq!(store.decision(i64::MAX as u64).await?, Some(edge));
    assert_eq!(store.latest_decision_height().await?, Some(i64::MAX as u64));
    assert!(matches!(
        store.record_decision(&decision(u64::MAX, 1)).await,
        Err(StoreError::OutOfRange { column: "height", value: u64::MAX })
    ));
    assert_eq!(store.decision(u64::MAX).await?, None);
    store.close().await
}

async fn decisions_page_newest_first(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    // Out of order, with a gap.
    for h in [3, 1, 2, 5, 6] {
        assert!(store.record_decision(&decision(h, h as u8)).await?);
    }
    let heights = |v: Vec<super::DecisionRecord>| v.iter().map(|d| d.height).collect::<Vec<_>>();
    assert_eq!(heights(store.decisions(None, 10).await?), [6, 5, 3, 2, 1]);
    assert_eq!(heights(store.decisions(None, 2).await?), [6, 5]);
    assert_eq!(heights(store.decisions(Some(5), 2).await?), [3, 2], "strictly below");
    assert_eq!(heights(store.decisions(Some(2), 2).await?), [1]);
    assert!(store.decisions(Some(1), 2).await?.is_empty());
    assert!(store.decisions(None, 0).await?.is_empty());
    assert_eq!(heights(store.decisions(Some(u64::MAX), 1).await?), [6]);
    assert_eq!(store.decisions(None, u32::MAX).await?.len(), 5, "a huge limit is capped");
    assert_eq!(store.decisions(Some(4), 1).await?, vec![decision(3, 3)]);
    store.close().await
}

fn evidence(height: u64, validator: u8, kind: super::EvidenceKind) -> super::EvidenceRecord {
    super::EvidenceRecord {
        height,
        round: 1,
        validator: key(validator),
        kind,
        detail: format!("{{\"votes\":[\"{}\"]}}", "ab".repeat(32)),
        recorded_at: UnixMillis(1_000_u64.saturating_add(height)),
    }
}

async fn evidence_is_idempotent_and_counted(backend: Backend) -> TestResult {
    use super::EvidenceKind::{BadProposal, DoubleProposal, DoubleVote};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert_eq!(store.evidence_count().await?, 0);
    assert!(store.evidence(10).await?.is_empty());
    let a = evidence(1, 1, DoubleVote);
    let b = evidence(1, 1, DoubleProposal);
    let c = evidence(2, 2, BadProposal);
    for e in [&a, &b, &c] {
        assert!(store.record_evidence(e).await?, "new");
    }
    // Again, even with another detail and time: the first record stays.
    let again =
        super::EvidenceRecord { detail: "{}".into(), recorded_at: UnixMillis(9_999), ..a.clone() };
    assert!(!store.record_evidence(&again).await?);
    assert_eq!(store.evidence_count().await?, 3);
    assert_eq!(store.evidence(10).await?, vec![c.clone(), b.clone(), a.clone()], "newest first");
    assert_eq!(store.evidence(1).await?, vec![c]);
    // Another round, validator or kind is other evidence.
    assert!(store.record_evidence(&super::EvidenceRecord { round: 2, ..a.clone() }).await?);
    assert!(store.record_evidence(&evidence(1, 3, DoubleVote)).await?);
    assert_eq!(store.evidence_count().await?, 5);
    for kind in super::EvidenceKind::ALL {
        assert_eq!(super::EvidenceKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(super::EvidenceKind::parse("double-vote"), None);
    assert!(matches!(
        store.record_evidence(&evidence(u64::MAX, 1, DoubleVote)).await,
        Err(StoreError::OutOfRange { .. })
    ));
    store.close().await
}

async fn corrupt_decisions_and_evidence_are_errors(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store.record_decision(&decision(1, 1)).await?;
    for (column, bad) in [
        ("value_id", "zz".repeat(32)),
        ("value_id", "ab".repeat(31)),
        ("proposer", "not hex".to_owned()),
        ("aggregate_json", "[1, 65536]".to_owned()),
        ("aggregate_json", "[-1]".to_owned()),
        ("aggregate_json", "{".to_owned()),
    ] {
        let good: String = sqlx::query_scalar(&format!("SELECT {column} FROM decisions"))
            .fetch_one(&store.pool)
            .await?;
        sqlx::query(&format!("UPDATE decisions SET {column} = $1"))
            .bind(&bad)
            .execute(&store.pool)
            .await?;
        assert_eq!(corrupt_column(store.decision(1).await), Some((column, bad.clone())));
        assert_eq!(corrupt_column(store.decisions(None, 5).await), Some((column, bad.clone())));
        if column == "value_id" {
            // Re-recording compares against the stored id: corrupt, not a conflict.
            assert_eq!(
                corrupt_column(store.record_decision(&decision(1, 1)).await),
                Some((column, bad))
            );
        }
        sqlx::query(&format!("UPDATE decisions SET {column} = $1"))
            .bind(good)
            .execute(&store.pool)
            .await?;
    }
    sqlx::query("UPDATE decisions SET decided_at = -1").execute(&store.pool).await?;
    assert_eq!(corrupt_column(store.decision(1).await), Some(("decided_at", "-1".to_owned())));

    store.record_evidence(&evidence(1, 1, super::EvidenceKind::DoubleVote)).await?;
    sqlx::query("UPDATE consensus_evidence SET validator = 'xyz'").execute(&store.pool).await?;
    assert_eq!(corrupt_column(store.evidence(5).await), Some(("validator", "xyz".to_owned())));
    // The CHECK constraint keeps an unknown kind out on both databases.
    assert!(
        sqlx::query("UPDATE consensus_evidence SET kind = 'other'")
            .execute(&store.pool)
            .await
            .is_err()
    );
    store.close().await
}

/// A score run whose vector gives `weights[uid]` to uid `uid`.
fn weights_run(at: u64, weights: &[u16]) -> super::ScoreRun {
    super::ScoreRun {
        at: UnixMillis(at),
        block: Some(100),
        config_json: "{}".into(),
        miners: Vec::new(),
        workers: Vec::new(),
        weights: entries(weights),
    }
}

fn entries(weights: &[u16]) -> Vec<super::WeightEntry> {
    weights
        .iter()
        .enumerate()
        .map(|(uid, &weight)| super::WeightEntry {
            uid: u16::try_from(uid).expect("small uid"),
            hotkey: key(u8::try_from(uid).expect("small uid") + 1),
            weight,
        })
        .collect()
}

async fn set_status(store: &Store, id: i64) -> Result<super::WeightSetStatus, StoreError> {
    let sets = store.weight_sets(100).await?;
    Ok(sets.iter().find(|s| s.id == id).map(|s| s.status).expect("stored set"))
}

async fn proposed_vectors_are_never_submitted(backend: Backend) -> TestResult {
    use super::WeightSetStatus::{Pending, Proposed};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let (_, pending) = store.record_score_run(&weights_run(1_000, &[1, 2])).await?;
    let (run, proposed) = store.record_score_run_as(&weights_run(2_000, &[3, 4]), Proposed).await?;
    assert_eq!(set_status(&store, pending).await?, Pending, "not superseded");
    assert_eq!(set_status(&store, proposed).await?, Proposed);
    assert_eq!(store.next_weight_set().await?.map(|s| s.id), Some(pending));
    // All zero stays proposed (what was offered is kept as is).
    let (_, zero) = store.record_score_run_as(&weights_run(3_000, &[0, 0]), Proposed).await?;
    assert_eq!(set_status(&store, zero).await?, Proposed);

    // With nothing pending, there is nothing to submit.
    let db2 = TestDb::new(backend).await;
    let store2 = db2.open().await;
    store2.record_score_run_as(&weights_run(1_000, &[3, 4]), Proposed).await?;
    assert_eq!(store2.next_weight_set().await?, None);
    store2.close().await?;

    // The run keeps its own vector.
    let runs = store.score_runs(10).await?;
    let own = runs.iter().find(|r| r.id == run).expect("run");
    assert_eq!(own.run.weights, entries(&[3, 4]));
    let listed = store.weight_sets(10).await?;
    assert!(listed.iter().all(|s| s.decision_height.is_none()));
    store.close().await
}

async fn agreed_weights_supersede_and_carry_their_decision(backend: Backend) -> TestResult {
    use super::WeightSetStatus::{Pending, Proposed, Skipped, Superseded};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let (_, old_pending) = store.record_score_run(&weights_run(1_000, &[1, 2])).await?;
    let (run, proposed) = store.record_score_run_as(&weights_run(2_000, &[3, 4]), Proposed).await?;

    // The decision is stored: the agreed set takes its time.
    let d = decision(42, 9);
    store.record_decision(&d).await?;
    let agreed = store.record_agreed_weights(run, 42, &entries(&[5, 6])).await?;
    assert_eq!(set_status(&store, old_pending).await?, Superseded);
    assert_eq!(set_status(&store, proposed).await?, Proposed, "what was offered stays");
    let next = store.next_weight_set().await?.expect("the agreed set");
    assert_eq!(
        (next.id, next.run_id, next.status, next.decision_height),
        (agreed, run, Pending, Some(42))
    );
    assert_eq!((next.created_at, next.entries), (d.decided_at, entries(&[5, 6])));
    // The run still shows its own vector.
    let runs = store.score_runs(10).await?;
    assert_eq!(runs.iter().find(|r| r.id == run).expect("run").run.weights, entries(&[3, 4]));

    // Without a stored decision the set takes the run's time; a newer one supersedes it.
    let (run2, _) = store.record_score_run_as(&weights_run(3_000, &[7, 8]), Proposed).await?;
    let agreed2 = store.record_agreed_weights(run2, 43, &entries(&[9, 10])).await?;
    assert_eq!(set_status(&store, agreed).await?, Superseded);
    let next = store.next_weight_set().await?.expect("newest agreed set");
    assert_eq!(
        (next.id, next.decision_height, next.created_at),
        (agreed2, Some(43), UnixMillis(3_000))
    );

    // All zero: skipped, supersedes nothing.
    let zero = store.record_agreed_weights(run2, 44, &entries(&[0, 0])).await?;
    assert_eq!(set_status(&store, zero).await?, Skipped);
    assert_eq!(store.next_weight_set().await?.map(|s| s.id), Some(agreed2));

    // An unknown run is refused and rolls the superseding back.
    assert!(matches!(
        store.record_agreed_weights(run2 + 1_000, 45, &entries(&[1])).await,
        Err(StoreError::UnknownScoreRun(r)) if r == run2 + 1_000
    ));
    assert_eq!(set_status(&store, agreed2).await?, Pending);
    assert!(matches!(
        store.record_agreed_weights(run2, u64::MAX, &entries(&[1])).await,
        Err(StoreError::OutOfRange { column: "decision_height", .. })
    ));
    store.close().await
}

async fn weight_sets_survive_the_consensus_migration(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let mut conn = migrated_before(&db, "0006").await?;
    sqlx::raw_sql(
        "INSERT INTO score_runs (at, block, config_json) VALUES (1000, 7, '{}'); \
         INSERT INTO weight_sets (run_id, created_at, status, attempts, reveal_json, \
                                  commit_block) \
             VALUES (1, 1000, 'superseded', 0, NULL, NULL), \
                    (1, 1500, 'committed', 2, '{\"salt\":[1]}', 90), \
                    (1, 1600, 'pending', 0, NULL, NULL); \
         INSERT INTO weight_entries (set_id, uid, hotkey, weight) VALUES \
             (2, 0, 'aa', 5), (2, 1, 'bb', 6), (3, 0, 'cc', 7); \
         DELETE FROM weight_sets WHERE id = 3;",
    )
    .execute(&mut conn)
    .await?;
    // Real keys, so the rows decode.
    sqlx::query("UPDATE weight_entries SET hotkey = $1")
        .bind(key(1).to_string())
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    let store = db.open().await;
    let sets = store.weight_sets(10).await?;
    assert_eq!(sets.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 1]);
    let committed = &sets[0];
    assert_eq!(
        (committed.status, committed.attempts, committed.commit_block, committed.decision_height),
        (super::WeightSetStatus::Committed, 2, Some(90), None)
    );
    assert_eq!(committed.reveal_json.as_deref(), Some("{\"salt\":[1]}"));
    assert_eq!(committed.entries.iter().map(|e| e.weight).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(count(&store, "weight_entries").await, 2, "the deleted set's entries went with it");
    // Ids are not reused, and the entries still cascade with their set.
    let agreed = store.record_agreed_weights(1, 1, &entries(&[1, 2])).await?;
    assert_eq!(agreed, 4);
    sqlx::query("DELETE FROM weight_sets WHERE id = $1").bind(agreed).execute(&store.pool).await?;
    assert_eq!(count(&store, "weight_entries").await, 2);
    sqlx::query("INSERT INTO weight_entries (set_id, uid, hotkey, weight) VALUES (99, 0, 'x', 1)")
        .execute(&store.pool)
        .await
        .expect_err("entries still reference weight sets");
    store.close().await
}

// ----------------------------------------------------------------------------- market

fn new_batch(request_id: u64) -> super::NewBatch {
    super::NewBatch {
        request_id,
        token: format!("tok-{request_id}"),
        system: "matmul".to_owned(),
        descriptor: format!("{{\"request_id\":{request_id}}}"),
        ops: 2e12,
    }
}

/// An accepted submission of `participant` for `request_id`.
fn submission(
    participant: &str,
    request_id: u64,
    batch_id: Option<i64>,
) -> super::SubmissionRecord {
    super::SubmissionRecord {
        participant_id: participant.to_owned(),
        request_id,
        batch_id,
        verdict: super::Verdict::Accepted,
        reason: None,
        proving_time_ms: 1_500,
        cost_cents: 12,
        price_cents: 30,
        deployment_version: "3".to_owned(),
        extra: "{}".to_owned(),
        server_ms: Some(1_700),
        ops: 2e12,
        submitted_at: UnixMillis(5_000),
    }
}

/// Answers `batch` for its holder.
async fn answer(store: &Store, batch: &super::BatchRow) -> Result<bool, StoreError> {
    let holder = batch.participant_id.as_deref().expect("assigned");
    store
        .record_submission(&submission(holder, batch.request_id, Some(batch.id)), Some(batch.id))
        .await
}

async fn market_participants_round_trip(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.participants().await?.is_empty());
    store.add_participant("secret-b", "Bob's 'prover'", UnixMillis(2_000)).await?;
    store.add_participant("secret-a", "Alice ✓", UnixMillis(1_000)).await?;
    assert!(store.add_participant("secret-a", "again", UnixMillis(3_000)).await.is_err());
    let alice = super::Participant {
        id: "secret-a".to_owned(),
        name: "Alice ✓".to_owned(),
        created_at: UnixMillis(1_000),
    };
    assert_eq!(store.participant("secret-a").await?, Some(alice.clone()));
    assert_eq!(store.participant("nobody").await?, None);
    let all = store.participants().await?;
    assert_eq!(all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["secret-a", "secret-b"]);
    assert_eq!(all[0], alice);
    assert_eq!(all[1].name, "Bob's 'prover'");

    sqlx::query("UPDATE market_participants SET created_at = -1 WHERE id = 'secret-b'")
        .execute(&store.pool)
        .await?;
    assert_eq!(
        corrupt_column(store.participant("secret-b").await),
        Some(("created_at", "-1".to_owned()))
    );
    store.close().await
}

async fn market_batches_are_assigned_oldest_first_one_at_a_time(backend: Backend) -> TestResult {
    use super::BatchState::{Answered, Assigned, Queued};
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert_eq!(store.assign_batch("p", UnixMillis(1)).await?, None, "nothing queued");
    assert_eq!(store.add_batches(&[], UnixMillis(1)).await?, 0);
    assert_eq!(store.add_batches(&[new_batch(30), new_batch(10)], UnixMillis(100)).await?, 2);
    assert_eq!(store.add_batches(&[new_batch(20)], UnixMillis(200)).await?, 1);
    assert_eq!(store.queued_batches().await?, 3);
    // One duplicate refuses the whole call.
    assert!(store.add_batches(&[new_batch(40), new_batch(10)], UnixMillis(300)).await.is_err());
    assert_eq!(store.queued_batches().await?, 3);

    let queued = store.batch_by_token("tok-30").await?.expect("stored");
    assert_eq!(
        (queued.state, queued.participant_id.as_deref(), queued.assigned_at, queued.created_at),
        (Queued, None, None, UnixMillis(100))
    );
    assert_eq!(store.batch_by_token("tok-99").await?, None);

    // Oldest queued first (insertion order, not request id), and the same one again until it
    // is answered.
    let first = store.assign_batch("p", UnixMillis(1_000)).await?.expect("queued");
    assert_eq!((first.request_id, first.state), (30, Assigned));
    assert_eq!(
        (first.participant_id.as_deref(), first.assigned_at),
        (Some("p"), Some(UnixMillis(1_000)))
    );
    assert_eq!(store.queued_batches().await?, 2);
    let again = store.assign_batch("p", UnixMillis(2_000)).await?.expect("outstanding");
    assert_eq!(again, first, "the outstanding batch, assigned_at unchanged");
    assert_eq!(store.queued_batches().await?, 2);

    // A rejected proof keeps it assigned.
    let mut rejected = submission("p", 30, Some(first.id));
    rejected.verdict = super::Verdict::Rejected;
    rejected.reason = Some("invalid_proof".to_owned());
    assert!(store.record_submission(&rejected, Some(first.id)).await?);
    assert_eq!(store.assign_batch("p", UnixMillis(3_000)).await?, Some(first.clone()));

    // An accepted one answers it; the next assignment is the next oldest.
    assert!(answer(&store, &first).await?);
    let answered = store.batch_by_token("tok-30").await?.expect("stored");
    assert_eq!(
        (answered.state, answered.answered_at, answered.participant_id.as_deref()),
        (Answered, Some(UnixMillis(5_000)), Some("p"))
    );
    let second = store.assign_batch("p", UnixMillis(6_000)).await?.expect("queued");
    assert_eq!((second.request_id, second.state), (10, Assigned));
    let other = store.assign_batch("q", UnixMillis(6_001)).await?.expect("queued");
    assert_eq!(other.request_id, 20);
    assert_eq!(store.queued_batches().await?, 0);
    assert_eq!(store.assign_batch("r", UnixMillis(6_002)).await?, None);
    assert!(answer(&store, &second).await?);
    assert_eq!(store.assign_batch("p", UnixMillis(7_000)).await?, None, "p holds nothing now");
    // The database itself refuses a second outstanding batch.
    store.add_batches(&[new_batch(50)], UnixMillis(8_000)).await?;
    assert!(
        sqlx::query(
            "UPDATE market_batches SET state = 'assigned', participant_id = 'q' \
             WHERE request_id = 50"
        )
        .execute(&store.pool)
        .await
        .is_err()
    );
    store.close().await
}

async fn market_concurrent_assignments_never_share_a_batch(backend: Backend) -> TestResult {
    use futures_util::future::join_all;
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let batches: Vec<super::NewBatch> = (1..=24).map(new_batch).collect();
    store.add_batches(&batches, UnixMillis(1)).await?;

    // Each participant takes and answers batches until none is left, both at once; several
    // calls of one participant at once all get its one outstanding batch.
    let take_all = |who: &'static str| {
        let store = store.clone();
        async move {
            let mut taken = Vec::new();
            loop {
                let calls = (0..4).map(|i| store.assign_batch(who, UnixMillis(10 + i)));
                let got = join_all(calls).await.into_iter().collect::<Result<Vec<_>, _>>()?;
                let Some(batch) = got[0].clone() else {
                    assert!(got.iter().all(Option::is_none));
                    return Ok::<_, StoreError>(taken);
                };
                assert!(got.iter().all(|b| b.as_ref().map(|b| b.id) == Some(batch.id)), "{who}");
                assert_eq!(batch.participant_id.as_deref(), Some(who));
                assert!(answer(&store, &batch).await?);
                taken.push(batch.request_id);
            }
        }
    };
    let (a, b) = tokio::join!(take_all("alice"), take_all("bob"));
    let (a, b) = (a?, b?);
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=24).collect::<Vec<_>>(), "every batch exactly once: {a:?} {b:?}");
    assert_eq!(store.queued_batches().await?, 0);
    store.close().await
}

async fn market_open_requests_and_replays(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    store.add_batches(&[new_batch(7), new_batch(8)], UnixMillis(1)).await?;
    let mine = store.assign_batch("p", UnixMillis(2)).await?.expect("queued");
    let theirs = store.assign_batch("q", UnixMillis(3)).await?.expect("queued");
    assert_eq!(store.open_request("p", 7).await?, Some(mine.clone()));
    assert_eq!(store.open_request("p", 8).await?, None, "someone else's");
    assert_eq!(store.open_request("p", 9).await?, None, "unknown");
    assert_eq!(store.open_request("p", u64::MAX).await?, None, "unstorable");

    // Answering someone else's batch writes nothing.
    let stolen = submission("p", 8, Some(theirs.id));
    assert!(!store.record_submission(&stolen, Some(theirs.id)).await?);
    assert_eq!(count(&store, "market_submissions").await, 0);
    assert_eq!(store.open_request("q", 8).await?, Some(theirs));

    assert!(answer(&store, &mine).await?);
    assert_eq!(store.open_request("p", 7).await?, None, "answered");
    // The replay is refused and writes nothing.
    assert!(!answer(&store, &mine).await?);
    assert_eq!(count(&store, "market_submissions").await, 1);
    let answered = store.batch_by_token("tok-7").await?.expect("stored");
    assert_eq!(answered.answered_at, Some(UnixMillis(5_000)));

    // A submission naming no batch is recorded as it is.
    let mut unknown = submission("p", 1234, None);
    unknown.verdict = super::Verdict::Rejected;
    unknown.reason = Some("unknown_request".to_owned());
    unknown.server_ms = None;
    unknown.ops = 0.0;
    assert!(store.record_submission(&unknown, None).await?);
    let rows = store.submissions(Some("p"), 10).await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        {
            let r = &rows[0].record;
            (r.request_id, r.batch_id, r.reason.as_deref(), r.server_ms)
        },
        (1234, None, Some("unknown_request"), None)
    );
    assert_eq!(
        (rows[1].record.batch_id, rows[1].record.verdict),
        (Some(mine.id), super::Verdict::Accepted)
    );
    assert!(store.submissions(Some("q"), 10).await?.is_empty());
    store.close().await
}

async fn market_values_round_trip_and_are_checked(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    let mut big = new_batch(i64::MAX as u64);
    big.ops = 0.1 + 0.2;
    big.descriptor = "{\"name\":\"Zoë's \\\"batch\\\"\"}".to_owned();
    store.add_batches(&[big.clone()], UnixMillis(1)).await?;
    let row = store.batch_by_token(&big.token).await?.expect("stored");
    assert_eq!(
        (row.request_id, row.descriptor.as_str()),
        (big.request_id, big.descriptor.as_str())
    );
    assert_eq!(row.ops.to_bits(), big.ops.to_bits(), "bit-exact f64");

    assert!(matches!(
        store.add_batches(&[new_batch(1), new_batch(1 << 63)], UnixMillis(1)).await,
        Err(StoreError::OutOfRange { column: "request_id", value }) if value == 1 << 63
    ));
    for ops in [f64::NAN, f64::INFINITY, -1.0] {
        let bad = super::NewBatch { ops, ..new_batch(2) };
        assert!(matches!(
            store.add_batches(&[bad], UnixMillis(1)).await,
            Err(StoreError::InvalidMeasure { column: "ops", .. })
        ));
    }
    assert_eq!(store.queued_batches().await?, 1, "refused calls write nothing");

    // The deployment version is kept as the JSON text it was sent as.
    let mut number = submission("p", 1, None);
    number.extra = "{\"gpu\":\"H100\",\"n\":[1,2]}".to_owned();
    let string = super::SubmissionRecord {
        deployment_version: "\"3\"".to_owned(),
        proving_time_ms: i64::MAX as u64,
        server_ms: Some(u64::MAX),
        submitted_at: UnixMillis(6_000),
        ..submission("p", 2, None)
    };
    assert!(store.record_submission(&number, None).await?);
    assert!(store.record_submission(&string, None).await?);
    let rows = store.submissions(None, 10).await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].record, number);
    assert_eq!(rows[0].record.deployment_version, "\"3\"");
    assert_eq!(rows[0].record.server_ms, Some(i64::MAX as u64), "the server's time saturates");
    assert_eq!(
        rows[0].record,
        super::SubmissionRecord { server_ms: Some(i64::MAX as u64), ..string }
    );
    assert!(rows[0].id > rows[1].id);
    assert_eq!(store.submissions(None, 1).await?.len(), 1);

    // The peer's numbers are refused rather than saturated.
    for (column, s) in [
        (
            "request_id",
            super::SubmissionRecord { request_id: u64::MAX, ..submission("p", 3, None) },
        ),
        ("cost_cents", super::SubmissionRecord { cost_cents: 1 << 63, ..submission("p", 3, None) }),
        (
            "price_cents",
            super::SubmissionRecord { price_cents: 1 << 63, ..submission("p", 3, None) },
        ),
    ] {
        assert!(matches!(
            store.record_submission(&s, None).await,
            Err(StoreError::OutOfRange { column: c, .. }) if c == column
        ));
    }
    let nan = super::SubmissionRecord { ops: f64::NAN, ..submission("p", 3, None) };
    assert!(matches!(
        store.record_submission(&nan, None).await,
        Err(StoreError::InvalidMeasure { column: "ops", .. })
    ));
    assert_eq!(count(&store, "market_submissions").await, 2);
    store.close().await
}

async fn market_summary_medians(backend: Backend) -> TestResult {
    let db = TestDb::new(backend).await;
    let store = db.open().await;
    assert!(store.market_summary().await?.is_empty());
    let record =
        |participant: &str,
         version: &str,
         verdict: super::Verdict,
         (proving_time_ms, cost_cents, price_cents, ops): (u64, u64, u64, f64)| {
            super::SubmissionRecord {
                deployment_version: version.to_owned(),
                verdict,
                proving_time_ms,
                cost_cents,
                price_cents,
                ops,
                ..submission(participant, 1, None)
            }
        };
    use super::Verdict::{Accepted, Rejected};
    for s in [
        // p1, version 3: per tera-op costs 5, 10, 9 and prices 15, 15, 36.
        record("p1", "3", Accepted, (100, 10, 30, 2e12)),
        record("p1", "3", Accepted, (300, 40, 60, 4e12)),
        record("p1", "3", Accepted, (200, 9, 36, 1e12)),
        record("p1", "3", Rejected, (999, 1_000, 1_000, 1e12)),
        // p1, version "3": one without operations (no per tera-op figures), one costing 0.
        record("p1", "\"3\"", Accepted, (50, 7, 7, 0.0)),
        record("p1", "\"3\"", Accepted, (70, 0, 5, 1e12)),
        // p2: rejected only.
        record("p2", "1", Rejected, (10, 1, 1, 1e12)),
    ] {
        assert!(store.record_submission(&s, None).await?);
    }
    let summary = store.market_summary().await?;
    let expected = [
        super::SummaryRow {
            participant_id: "p1".to_owned(),
            deployment_version: "\"3\"".to_owned(),
            accepted: 2,
            rejected: 0,
            median_proving_time_ms: Some(60.0),
            median_cost_per_tops_cents: Some(0.0),
            median_price_per_tops_cents: Some(5.0),
            price_over_cost: None,
        },
        super::SummaryRow {
            participant_id: "p1".to_owned(),
            deployment_version: "3".to_owned(),
            accepted: 3,
            rejected: 1,
            median_proving_time_ms: Some(200.0),
            median_cost_per_tops_cents: Some(9.0),
            median_price_per_tops_cents: Some(15.0),
            price_over_cost: Some(15.0 / 9.0),
        },
        super::SummaryRow {
            participant_id: "p2".to_owned(),
            deployment_version: "1".to_owned(),
            accepted: 0,
            rejected: 1,
            median_proving_time_ms: None,
            median_cost_per_tops_cents: None,
            median_price_per_tops_cents: None,
            price_over_cost: None,
        },
    ];
    assert_eq!(summary, expected);
    store.close().await
}

/// The scorer's `verified` entries from loaded rows: verified, credited, finished and rated only.
#[test]
fn verified_samples_are_verified_credited_rows_only() {
    let row = |status, credited, finished: Option<u64>, gflops| ChallengeRow {
        id: ChallengeId(1),
        miner_hotkey: key(1),
        worker_key: key(2),
        device: dev("GPU-a"),
        mode: Mode::Fp16,
        shape: Shape { m: 1024, k: 1024, n: 1024 },
        seed: Seed([3; 32]),
        status,
        reason: None,
        detail: None,
        issued_at: UnixMillis(1),
        deadline: UnixMillis(2),
        sent_at: None,
        committed_at: None,
        finished_at: finished.map(UnixMillis),
        root: None,
        compute_ms: None,
        rtt_ms: None,
        gflops,
        credited,
    };
    let rows = [
        row(ChallengeStatus::Verified, true, Some(10), Some(900.0)),
        row(ChallengeStatus::Verified, false, Some(11), Some(800.0)),
        row(ChallengeStatus::Failed, true, Some(12), Some(700.0)),
        row(ChallengeStatus::Verified, true, None, Some(600.0)),
        row(ChallengeStatus::Verified, true, Some(13), None),
        row(ChallengeStatus::Committed, true, None, None),
    ];
    let samples: Vec<_> = rows.iter().filter_map(ChallengeRow::verified_sample).collect();
    assert_eq!(samples, [(UnixMillis(10), 900.0)]);
}

/// Sorted `(table, column)` pairs of a migrated database, sqlx's bookkeeping table left out.
async fn schema_columns(url: &str, backend: Backend) -> Vec<(String, String)> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
               AND m.name <> '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'"
        }
    };
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let rows = sqlx::query(sql).fetch_all(&mut conn).await.expect("schema query");
    let _ = conn.close().await;
    let mut columns: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.try_get("t").expect("table"), r.try_get("c").expect("column")))
        .collect();
    columns.sort();
    columns
}

/// The two migration sets differ only in dialect: after each runs on a fresh database, both
/// have the same tables with the same column names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrations_make_the_same_schema() {
    let (sqlite, postgres) =
        (TestDb::new(Backend::Sqlite).await, TestDb::new(Backend::Postgres).await);
    drop((sqlite.open().await, postgres.open().await));
    let lite = schema_columns(&sqlite.url, Backend::Sqlite).await;
    let pg = schema_columns(&postgres.url, Backend::Postgres).await;
    assert!(lite.iter().any(|(t, c)| t == "challenges" && c == "gflops"), "{lite:?}");
    let only_lite: Vec<_> = lite.iter().filter(|c| !pg.contains(c)).collect();
    let only_pg: Vec<_> = pg.iter().filter(|c| !lite.contains(c)).collect();
    assert!(
        only_lite.is_empty() && only_pg.is_empty(),
        "only in SQLite: {only_lite:?}; only in PostgreSQL: {only_pg:?}"
    );
}
