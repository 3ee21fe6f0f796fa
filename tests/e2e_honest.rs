//! Honest workers, end to end: two miners, three workers, real WebSocket connections, real
//! verification, persisted results read back through the store and the HTTP API, on SQLite and on
//! PostgreSQL; and a device busy with another validator's challenge, challenged again soon.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Db, Harness, Next, PATIENCE, RawConn, eventually, http_get};
use veribench_coordinator::store::ChallengeStatus;
use veribench_kernels::{CpuBackend, run_challenge};
use veribench_protocol::{
    ChallengeId, CommitmentMsg, ErrorCode, ErrorMsg, Message, Mode, OpeningsMsg, Shape,
    SignedChallenge, Verdict,
};

async fn honest_workers_are_verified(db: Db) {
    let h = Harness::start(db, 2, |_| {}).await;
    let workers = [h.honest(0, "alpha"), h.honest(0, "beta"), h.honest(1, "gamma")];

    // Every worker gets at least two challenges verified.
    for w in &workers {
        let verified = h.verified(&w.key(), 2).await;
        for c in &verified {
            assert_eq!(c.status, ChallengeStatus::Verified);
            assert_eq!(c.mode, Mode::Int8);
            assert_eq!(c.shape, Shape::square(64));
            assert_eq!(&c.device, &w.identity.devices[0]);
            assert_eq!(c.miner_hotkey, w.identity.miner.public());
            assert!(c.credited, "an honest, unconflicted device is credited: {c:?}");
            let gflops = c.gflops.expect("a verified challenge has a rate");
            assert!(gflops.is_finite() && gflops > 0.0, "gflops {gflops}");
            assert!(c.compute_ms.is_some_and(|ms| ms > 0.0), "compute_ms {:?}", c.compute_ms);
            assert!(c.root.is_some() && c.sent_at.is_some() && c.committed_at.is_some());
            assert!(c.finished_at.is_some() && c.reason.is_none());
        }
    }

    // What the workers saw: a Welcome from the coordinator's key, correctly signed challenges,
    // only accepting verdicts, no error frames.
    for w in &workers {
        let welcomes = w.welcomes();
        assert_eq!(welcomes.len(), 1);
        assert_eq!(welcomes[0].coordinator, h.coordinator_key);
        let challenges = w.challenges();
        assert!(
            challenges.iter().all(|(_, signature_ok)| *signature_ok),
            "bad challenge signature"
        );
        assert!(challenges.iter().all(|(c, _)| c.device == w.identity.devices[0]));
        let verdicts = w.verdicts();
        assert!(verdicts.len() >= 2);
        assert!(verdicts.iter().all(|v| v.verdict == Verdict::Accepted), "{verdicts:?}");
        assert!(w.errors().is_empty(), "error frames to an honest worker: {:?}", w.errors());
    }

    // The HTTP API over a real socket.
    let health = http_get(h.http_addr, "/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");

    let listed = http_get(h.http_addr, "/api/v1/challenges?status=verified&limit=1000").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed = listed.json();
    let listed = listed.as_array().expect("a JSON array");
    assert!(listed.len() >= 6, "{} verified challenges listed", listed.len());
    for c in listed {
        assert_eq!(c["status"], "verified");
        assert_eq!(c["credited"], true);
        assert!(c["gflops"].as_f64().is_some_and(|g| g > 0.0), "{c}");
        assert_eq!(c["mode"], "int8");
    }
    let all_keys: Vec<String> = workers.iter().map(|w| w.key().to_string()).collect();
    for key in &all_keys {
        assert!(listed.iter().any(|c| c["worker_key"] == key.as_str()), "no challenge of {key}");
    }
    let bad = http_get(h.http_addr, "/api/v1/challenges?status=bogus").await;
    assert_eq!(bad.status, 400, "{bad:?}");

    let api_workers = http_get(h.http_addr, "/api/v1/workers").await;
    assert_eq!(api_workers.status, 200, "{api_workers:?}");
    let api_workers = api_workers.json();
    let api_workers = api_workers.as_array().expect("a JSON array");
    assert_eq!(api_workers.len(), 3);
    for w in &workers {
        let row = api_workers
            .iter()
            .find(|row| row["worker_key"]["hex"] == w.key().to_string().as_str())
            .unwrap_or_else(|| panic!("worker {} not listed", w.identity.name));
        assert_eq!(row["online"], true);
        assert_eq!(row["name"], w.identity.name.as_str());
        assert_eq!(row["miner_hotkey"]["hex"], w.identity.miner.public().to_string().as_str());
        assert_eq!(row["devices"][0], w.identity.devices[0].as_str());
        assert!(row["worker_key"]["ss58"].as_str().is_some_and(|s| !s.is_empty()));
    }

    let metrics = http_get(h.http_addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("veribench_workers_online 3"), "{}", metrics.body);
    assert!(metrics.body.contains("veribench_challenges_total{status=\"verified\"}"));
    assert!(metrics.body.contains("veribench_registrations_total 3"), "{}", metrics.body);

    // Disconnect everyone: in-flight challenges end, the totals stop moving.
    for w in workers.iter() {
        assert!(!w.welcomes().is_empty());
    }
    let keys: Vec<_> = workers.iter().map(|w| (w.key(), w.identity.miner.public())).collect();
    let verdicts: HashMap<_, _> =
        workers.iter().flat_map(|w| w.verdicts()).map(|v| (v.challenge_id, v.verdict)).collect();
    for w in workers {
        w.stop().await;
    }
    let coordinator = h.coordinator.clone();
    eventually("all workers gone", PATIENCE, || {
        let c = coordinator.clone();
        async move { (c.load() == (0, 0)).then_some(()) }
    })
    .await;
    let store = h.store();
    let miners = eventually("every worker offline", PATIENCE, || async move {
        let miners = store.miners().await.expect("miners");
        miners.iter().all(|m| m.online_workers == 0).then_some(miners)
    })
    .await;

    // Per-miner totals agree with the challenges themselves.
    // Challenges in flight when their worker left end as failed (`disconnected`).
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let all = store.challenges(None, 1000).await.expect("challenges");
            if all.iter().all(|c| c.status.is_terminal()) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    // Checked last, so that everything else is checked too when this fails.
    let (challenges, stuck) = match settled {
        Ok(all) => (all, String::new()),
        Err(_) => {
            let all = store.challenges(None, 1000).await.expect("challenges");
            let stuck: Vec<_> = all.iter().filter(|c| !c.status.is_terminal()).collect();
            let told: Vec<_> = stuck.iter().map(|c| (c.id, verdicts.get(&c.id))).collect();
            let message = format!(
                "challenges left in flight after every worker disconnected: {stuck:#?}\n\
                 verdicts the workers received for them: {told:?}"
            );
            (all, message)
        }
    };
    assert_eq!(miners.len(), 2);
    let finished = h.coordinator.finished_rounds();
    for (miner_index, expected_workers) in [(0, 2), (1, 1)] {
        let miner = h.miners[miner_index].public();
        let row = miners.iter().find(|m| m.hotkey == miner).expect("miner listed");
        let ours: Vec<_> = challenges.iter().filter(|c| c.miner_hotkey == miner).collect();
        let verified: Vec<_> =
            ours.iter().filter(|c| c.status == ChallengeStatus::Verified && c.credited).collect();
        let failed = ours.iter().filter(|c| c.status == ChallengeStatus::Failed).count();
        assert_eq!(row.workers, expected_workers);
        assert_eq!(row.verified, verified.len() as u64, "{row:?}");
        assert!(row.verified >= 2 * expected_workers as u64);
        assert_eq!(row.failed, failed as u64);
        let mean = verified.iter().filter_map(|c| c.gflops).sum::<f64>() / verified.len() as f64;
        assert!((row.mean_gflops - mean).abs() <= 1e-6 * mean.max(1.0), "{row:?} vs {mean}");
    }
    let mut per_worker: HashMap<_, u64> = HashMap::new();
    for c in &challenges {
        *per_worker.entry(c.worker_key).or_default() += 1;
    }
    for (key, _) in &keys {
        assert_eq!(
            finished.get(key).copied(),
            per_worker.get(key).copied(),
            "finished rounds of {key}"
        );
    }
    let stored_workers = store.workers().await.expect("workers");
    assert_eq!(stored_workers.len(), 3);
    for (key, miner) in &keys {
        let w = stored_workers.iter().find(|w| &w.record.worker_key == key).expect("stored");
        assert_eq!(&w.record.miner_hotkey, miner);
        assert!(!w.online);
    }
    assert!(store.rejections(100).await.expect("rejections").is_empty());
    h.shutdown().await;
    assert!(stuck.is_empty(), "{stuck}");
}

/// Every challenge a worker was told was accepted is stored as verified (not left behind in an
/// earlier status by a transition that raced the worker's answer).
async fn every_accepted_verdict_is_stored_as_verified(db: Db) {
    let h = Harness::start(db, 1, |_| {}).await;
    let workers: Vec<_> = (0..3).map(|i| h.honest(0, &format!("w{i}"))).collect();
    let all = &workers;
    eventually("three accepted verdicts per worker", PATIENCE, || async move {
        all.iter().all(|w| w.verdicts().len() >= 3).then_some(())
    })
    .await;
    let accepted: Vec<ChallengeId> = workers
        .iter()
        .flat_map(|w| w.verdicts())
        .filter(|v| v.verdict == Verdict::Accepted)
        .map(|v| v.challenge_id)
        .collect();
    assert!(accepted.len() >= 9);
    for w in workers {
        w.stop().await;
    }
    let store = h.store();
    let accepted = &accepted;
    let consistent = common::poll_until(Duration::from_secs(3), || async move {
        let rows = store.challenges(None, 1000).await.expect("challenges");
        accepted
            .iter()
            .all(|id| rows.iter().any(|c| c.id == *id && c.status == ChallengeStatus::Verified))
            .then_some(())
    })
    .await;
    if consistent.is_none() {
        let rows = store.challenges(None, 1000).await.expect("challenges");
        let wrong: Vec<String> = accepted
            .iter()
            .filter_map(|id| rows.iter().find(|c| c.id == *id))
            .filter(|c| c.status != ChallengeStatus::Verified)
            .map(|c| format!("{}:{}", c.id, c.status.as_str()))
            .collect();
        h.shutdown().await;
        panic!(
            "{} of {} challenges whose workers were sent an Accepted verdict are not stored as \
             verified: {wrong:?}",
            wrong.len(),
            accepted.len()
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_verdict_is_stored_as_verified_on_sqlite() {
    every_accepted_verdict_is_stored_as_verified(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_verdict_is_stored_as_verified_on_postgres() {
    every_accepted_verdict_is_stored_as_verified(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_workers_are_verified_on_sqlite() {
    tokio::time::timeout(Duration::from_secs(60), honest_workers_are_verified(Db::Sqlite))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_workers_are_verified_on_postgres() {
    tokio::time::timeout(Duration::from_secs(60), honest_workers_are_verified(Db::Postgres))
        .await
        .expect("test timed out");
}

/// The next challenge on `conn`; panics on anything else but open requests and verdicts of
/// earlier challenges (none here), or when nothing arrives within `timeout`.
async fn next_challenge(conn: &mut RawConn, timeout: Duration) -> SignedChallenge {
    match conn.next(timeout).await {
        Next::Msg(Message::Challenge(signed)) => signed,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// Refuses `signed` as busy.
async fn refuse_busy(conn: &mut RawConn, signed: &SignedChallenge) {
    let message = "device busy with another validator's challenge";
    let busy = ErrorMsg::new(ErrorCode::Busy, Some(signed.challenge.id), message, 256);
    conn.send(&Message::Error(busy)).await.expect("send the refusal");
}

/// A worker whose device is computing another validator's challenge refuses one as `busy`: the
/// challenge is stored failed with reason `busy` (not told back, not counted against the miner)
/// and the same device is challenged again within seconds, though rounds are ten minutes apart.
/// Retries are bounded (here by `busy_retries = 1`): a retry refused as busy again is not
/// retried, the device waits for its next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_device_is_challenged_again_soon_and_not_counted_as_failing() {
    let h = Harness::start(Db::Sqlite, 1, |c| {
        c.schedule.interval_secs = 600.0;
        c.schedule.jitter_secs = 0.5;
        c.schedule.busy_retry_secs = 0.5;
        c.schedule.busy_retries = 1;
    })
    .await;
    let identity = h.identity(0, "busy");
    let device = identity.devices[0].clone();
    let (mut conn, _) = RawConn::registered(&h.ws_url, &identity).await;
    // A second worker of the miner, busy every time.
    let always = h.identity(0, "always-busy");
    let (mut always_conn, _) = RawConn::registered(&h.ws_url, &always).await;
    let always_busy = tokio::spawn(async move {
        let first = next_challenge(&mut always_conn, PATIENCE).await;
        refuse_busy(&mut always_conn, &first).await;
        let retry = next_challenge(&mut always_conn, Duration::from_secs(5)).await;
        refuse_busy(&mut always_conn, &retry).await;
        let third = always_conn.next(Duration::from_secs(2)).await;
        assert!(matches!(third, Next::Timeout), "a busy retry refused again: {third:?}");
        always_conn
    });
    let first = next_challenge(&mut conn, PATIENCE).await;
    assert_eq!(first.device, device);
    refuse_busy(&mut conn, &first).await;
    let refused = Instant::now();

    // No answer to the refusal; the device's next challenge comes after about
    // busy_retry_secs (× [0.5, 1.5)), not at the next round.
    let second = next_challenge(&mut conn, Duration::from_secs(5)).await;
    assert!(refused.elapsed() < Duration::from_secs(4), "{:?}", refused.elapsed());
    assert_ne!(second.challenge.id, first.challenge.id);
    assert_eq!(second.device, device);

    // Answered honestly, it verifies.
    let backend = CpuBackend::with_device_key(device.clone());
    let run = run_challenge(&backend, &device, &second.challenge).expect("CPU backend run");
    let id = second.challenge.id;
    let commitment = CommitmentMsg { challenge_id: id, device: device.clone(), root: run.root() };
    conn.send(&Message::Commitment(commitment)).await.expect("send the commitment");
    let rows = match conn.next(PATIENCE).await {
        Next::Msg(Message::OpenRequest(request)) if request.challenge_id == id => request.rows,
        other => panic!("expected an open request, got {other:?}"),
    };
    let openings = run.open(&rows).expect("open rows");
    conn.send(&Message::Openings(OpeningsMsg { challenge_id: id, openings }))
        .await
        .expect("send the openings");
    match conn.next(PATIENCE).await {
        Next::Msg(Message::Verdict(v)) => {
            assert_eq!((v.challenge_id, v.verdict), (id, Verdict::Accepted));
        }
        other => panic!("expected a verdict, got {other:?}"),
    }

    let rows = h.challenges_of(&identity.public()).await;
    let stored = rows.iter().find(|c| c.id == first.challenge.id).expect("the refused challenge");
    assert_eq!(stored.status, ChallengeStatus::Failed);
    assert_eq!(stored.reason.as_deref(), Some("busy"));
    let miner = h.miners[0].public();
    eventually("the verified challenge in the miner's totals", PATIENCE, || async {
        let miners = h.store().miners().await.expect("miners");
        miners.into_iter().find(|m| m.hotkey == miner && m.verified == 1)
    })
    .await;
    let _always_conn = always_busy.await.expect("the always-busy worker's script");
    let busy = h.store().miners().await.expect("miners");
    let totals = busy.iter().find(|m| m.hotkey == miner).expect("the miner");
    assert_eq!((totals.verified, totals.failed, totals.busy), (1, 0, 3), "{totals:?}");
    h.shutdown().await;
}
