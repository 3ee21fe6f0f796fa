//! Workers that cheat, each caught for the right reason, and the reason persisted.

mod common;

use std::time::Duration;

use common::{
    Behaviour, Db, Harness, Identity, Next, PATIENCE, RawConn, Tamper, WorkerOptions, eventually,
    keypair, sign_register, unique_device,
};
use veribench_coordinator::store::{ChallengeRow, ChallengeStatus};
use veribench_protocol::{ErrorCode, Message, Mode, PublicKey, RejectReason, UnixMillis, Verdict};

/// Asserts `c` failed with `reason`.
fn assert_failed(c: &ChallengeRow, reason: &str) {
    assert_eq!(c.status, ChallengeStatus::Failed, "{c:?}");
    assert_eq!(c.reason.as_deref(), Some(reason), "{c:?}");
    assert!(!c.credited, "{c:?}");
    assert!(c.gflops.is_none(), "{c:?}");
}

/// The first finished challenge of a cheating worker failed with `reason`, the worker was told,
/// and none of its challenges were verified.
async fn caught(h: &Harness, w: &common::TestWorker, reason: &str) {
    let first = h.first_finished(&w.key()).await;
    assert_failed(&first, reason);
    let id = first.id;
    let verdict = eventually("the verdict frame", PATIENCE, || async move {
        w.verdicts().into_iter().find(|v| v.challenge_id == id)
    })
    .await;
    match &verdict.verdict {
        Verdict::Rejected(r) => assert_eq!(r.code(), reason, "{r}"),
        Verdict::Accepted => panic!("accepted a cheat"),
    }
    let verified = h.challenges_of(&w.key()).await;
    assert!(verified.iter().all(|c| c.status != ChallengeStatus::Verified), "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_skipping_rows_is_rejected() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let tamper = Tamper { zero_odd_rows: true, ..Tamper::default() };
    let w = h.spawn(h.identity(0, "lazy"), Behaviour::Compute(tamper), WorkerOptions::default());
    caught(&h, &w, "value_mismatch").await;
    let detail = h.first_finished(&w.key()).await.detail.unwrap_or_default();
    // Only odd rows are wrong.
    assert!(detail.starts_with("row "), "{detail}");
    let row: u32 = detail[4..].split(' ').next().and_then(|r| r.parse().ok()).expect("row number");
    assert_eq!(row % 2, 1, "{detail}");
    w.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_computing_in_lower_precision_is_rejected() {
    let h = Harness::start(Db::Sqlite, 1, |c| c.schedule.mode = Mode::Fp32).await;
    let tamper = Tamper { bf16_inputs: true, ..Tamper::default() };
    let cheat =
        h.spawn(h.identity(0, "bf16"), Behaviour::Compute(tamper), WorkerOptions::default());
    // Control: exact fp32 inputs, computed the same way, pass.
    let control = h.spawn(
        h.identity(0, "fp32"),
        Behaviour::Compute(Tamper::default()),
        WorkerOptions::default(),
    );
    let honest = h.honest(0, "honest-fp32");
    caught(&h, &cheat, "out_of_tolerance").await;
    for w in [&control, &honest] {
        let verified = h.verified(&w.key(), 1).await;
        assert_eq!(verified[0].mode, Mode::Fp32);
    }
    let verdict = cheat.verdicts().remove(0).verdict;
    let Verdict::Rejected(RejectReason::OutOfTolerance { got, expected, bound, .. }) = verdict
    else {
        panic!("{verdict:?}")
    };
    assert!((got - expected).abs() > bound);
    for w in [cheat, control, honest] {
        w.stop().await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_opening_rows_that_do_not_match_its_root_is_rejected() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let w = h.spawn(h.identity(0, "garbage"), Behaviour::GarbageRoot, WorkerOptions::default());
    caught(&h, &w, "bad_proof").await;
    w.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_replaying_an_earlier_commitment_is_rejected() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let w = h.spawn(h.identity(0, "replay"), Behaviour::ReplayFirst, WorkerOptions::default());
    let store = h.store();
    let key = w.key();
    let rows = eventually("two finished challenges", PATIENCE, || async move {
        let done: Vec<ChallengeRow> = common::challenges_of(store, &key)
            .await
            .into_iter()
            .filter(|c| c.status.is_terminal())
            .collect();
        (done.len() >= 2).then_some(done)
    })
    .await;
    // The first one was computed honestly; the second reuses its root and openings.
    assert_eq!(rows[0].status, ChallengeStatus::Verified, "{:?}", rows[0]);
    assert_failed(&rows[1], "bad_proof");
    assert_eq!(rows[1].root, rows[0].root, "the replayed root is stored as committed");
    w.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_missing_the_deadline_fails_the_challenge() {
    let h = Harness::start(Db::Sqlite, 1, |c| c.schedule.deadline_secs = 0.6).await;
    let options = WorkerOptions { commit_delay: Duration::from_millis(1500), ..Default::default() };
    let w = h.spawn(h.identity(0, "slow"), Behaviour::Honest, options);
    let first = h.first_finished(&w.key()).await;
    assert_failed(&first, "deadline_missed");
    assert!(first.root.is_none() && first.committed_at.is_none(), "{first:?}");
    // The worker is told, by an Error frame naming the challenge.
    let (worker, id) = (&w, first.id);
    let error = eventually("an Error frame naming the challenge", PATIENCE, || async move {
        worker.errors().into_iter().find(|e| e.challenge_id == Some(id))
    })
    .await;
    assert_eq!(error.code, ErrorCode::DeadlineMissed, "{error:?}");
    // Its late commitment is refused as a commitment to a challenge no longer open.
    let late = h.rejection("unknown_challenge", Some(&w.key())).await;
    // Refusals are counted per group with the latest detail: it names a challenge that missed
    // its deadline (the first, or a later one refused within the same second).
    let missed: Vec<String> = h
        .challenges_of(&w.key())
        .await
        .iter()
        .filter(|c| c.reason.as_deref() == Some("deadline_missed"))
        .map(|c| format!("challenge {} ", c.id))
        .collect();
    assert!(missed.iter().any(|m| late[0].detail.contains(m.as_str())), "{late:?}");
    assert!(h.challenges_of(&w.key()).await.iter().all(|c| c.status != ChallengeStatus::Verified));
    w.stop().await;
    h.shutdown().await;
}

/// Waits for a credited verified challenge of `worker` that finished after `after`.
async fn credited_after(h: &Harness, worker: &PublicKey, after: UnixMillis) -> ChallengeRow {
    let store = h.store();
    eventually("a credited challenge", PATIENCE, || async move {
        common::challenges_of(store, worker).await.into_iter().find(|c| {
            c.status == ChallengeStatus::Verified && c.finished_at.is_some_and(|t| t > after)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_copied_by_another_identity_takes_nothing_from_its_holder() {
    // Claims lapse half a second after their worker was last active: a connected worker keeps
    // its device however long it stays, an absent one loses it quickly.
    let h = Harness::start(Db::Sqlite, 2, |c| c.claims.expiry_secs = 0.5).await;
    let device = unique_device("contested");
    let honest = h.spawn(
        Identity::new("holder", &h.miners[0], vec![device.clone()]),
        Behaviour::Honest,
        WorkerOptions::default(),
    );
    let first = credited_after(&h, &honest.key(), UnixMillis(0)).await;
    assert!(first.credited, "{first:?}");

    // Another miner's worker names the same device (device keys are public): refused whole.
    let attacker =
        Identity::new("copycat", &h.miners[1], vec![unique_device("own"), device.clone()]);
    refused(&h, attacker.register(), "device_conflict").await;
    let stored = h.rejection("device_conflict", Some(&attacker.public())).await;
    assert!(stored[0].detail.contains(device.as_str()), "{stored:?}");
    assert!(stored[0].detail.contains(&honest.key().to_string()), "names the holder: {stored:?}");
    never_registered(&h, &attacker.public()).await;
    // The holder keeps being credited for its device.
    let attacked = UnixMillis::now();
    let later = credited_after(&h, &honest.key(), attacked).await;
    assert!(later.credited, "the holder lost its credit: {later:?}");

    // Once the holder is gone for longer than the expiry, a new identity takes the device.
    honest.stop().await;
    let store = h.store();
    let (d, expiry) = (&device, 500);
    eventually("the holder's claim to lapse", PATIENCE, || async move {
        let since = UnixMillis(UnixMillis::now().0 - expiry);
        store.device_holder(d, since).await.expect("holder").is_none().then_some(())
    })
    .await;
    let successor = h.spawn(
        Identity::new("successor", &h.miners[1], vec![device.clone()]),
        Behaviour::Honest,
        WorkerOptions::default(),
    );
    let taken = credited_after(&h, &successor.key(), UnixMillis(0)).await;
    assert!(taken.credited, "{taken:?}");
    assert_eq!(taken.device, device);
    successor.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronized_rounds_challenge_every_miners_devices_at_once() {
    // Two miners' workers on this one machine under two device names: per-miner rounds would let
    // the machine answer them in turn, synchronized rounds challenge both in the same round.
    let h = Harness::start(Db::Sqlite, 2, |c| c.schedule.synchronized = true).await;
    let a = h.honest(0, "sync-a");
    let b = h.honest(1, "sync-b");
    let (store, ka, kb) = (h.store(), a.key(), b.key());
    let shared = eventually("two rounds challenging both miners", PATIENCE, || async move {
        let issued: std::collections::HashSet<UnixMillis> =
            common::challenges_of(store, &ka).await.iter().map(|c| c.issued_at).collect();
        let shared: Vec<ChallengeRow> = common::challenges_of(store, &kb)
            .await
            .into_iter()
            .filter(|c| issued.contains(&c.issued_at))
            .collect();
        (shared.len() >= 2).then_some(shared)
    })
    .await;
    assert!(
        shared.iter().all(|c| c.sent_at == Some(c.issued_at)),
        "stored sent with the round: {shared:?}"
    );
    a.stop().await;
    b.stop().await;
    h.shutdown().await;
}

/// Sends `reg` on a new connection and expects it refused as `kind`: an Error frame with the code
/// of the same name, then the connection closed, and the refusal counted (in the group of this
/// address and kind, with the key the registration claimed).
async fn refused(h: &Harness, reg: veribench_protocol::Register, kind: &str) {
    let worker = reg.delegation.worker_key;
    let before = common::total(&h.rejections(kind).await);
    let mut conn = RawConn::connect(&h.ws_url).await;
    conn.send(&Message::Register(reg)).await.expect("send Register");
    match conn.next(Duration::from_secs(5)).await {
        Next::Msg(Message::Error(e)) => {
            assert_eq!(e.code.as_str(), kind, "{e:?}");
            assert_eq!(e.challenge_id, None, "{e:?}");
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert!(conn.closed_within(Duration::from_secs(5)).await, "connection left open");
    let stored = h.counted(kind, before + 1).await;
    assert_eq!(common::total(&stored), before + 1, "{stored:?}");
    assert!(stored.iter().any(|r| common::concerns(r, &worker)), "{stored:?}");
}

/// Asserts that `worker` was never recorded as registered.
async fn never_registered(h: &Harness, worker: &veribench_protocol::PublicKey) {
    let workers = h.store().workers().await.expect("workers");
    assert!(workers.iter().all(|w| &w.record.worker_key != worker), "{workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_a_bad_signature_is_refused() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let identity = h.identity(0, "forged");
    let mut reg = identity.register();
    sign_register(&mut reg, &keypair()); // signed by someone else
    refused(&h, reg, "bad_signature").await;
    never_registered(&h, &identity.public()).await;
    // A valid signature over other contents is as bad.
    let mut reg = identity.register();
    reg.name = "renamed after signing".into();
    refused_again(&h, reg, "bad_signature", 2).await;
    h.shutdown().await;
}

async fn refused_again(h: &Harness, reg: veribench_protocol::Register, kind: &str, total: u64) {
    let worker = reg.delegation.worker_key;
    let mut conn = RawConn::connect(&h.ws_url).await;
    conn.send(&Message::Register(reg)).await.expect("send Register");
    assert!(conn.next_error(Duration::from_secs(5)).await.is_some());
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    let store = h.store();
    eventually("the second rejection", PATIENCE, || async move {
        let groups = common::rejections_of(store, kind).await;
        let mine: Vec<_> = groups.into_iter().filter(|r| common::concerns(r, &worker)).collect();
        (common::total(&mine) == total).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_from_an_unknown_hotkey_is_refused() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let stranger = keypair();
    let identity = Identity::new("stranger", &stranger, vec![unique_device("stranger")]);
    refused(&h, identity.register(), "unknown_hotkey").await;
    never_registered(&h, &identity.public()).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_registration_is_refused() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let identity = h.identity(0, "replayed");
    let reg = identity.register();
    let mut first = RawConn::connect(&h.ws_url).await;
    first.send(&Message::Register(reg.clone())).await.expect("send Register");
    assert!(matches!(first.next(Duration::from_secs(5)).await, Next::Msg(Message::Welcome(_))));
    let first_addr = match first.ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address"),
        _ => unreachable!("plain ws://"),
    };
    // The same frame again, as an eavesdropper would replay it.
    refused(&h, reg, "replayed_registration").await;
    // The stored registration is still the first connection's.
    let workers = h.store().workers().await.expect("workers");
    let stored = workers.iter().find(|w| w.record.worker_key == identity.public()).expect("stored");
    assert_eq!(stored.record.address, first_addr.to_string());
    assert!(stored.online);
    // The legitimate connection is untouched: it is still challenged.
    let challenged = loop {
        match first.next(Duration::from_secs(5)).await {
            Next::Msg(Message::Challenge(c)) => break c,
            Next::Msg(_) => continue,
            other => panic!("the first connection should still be served, got {other:?}"),
        }
    };
    assert_eq!(challenged.device, identity.devices[0]);
    h.shutdown().await;
}

/// The same `Register` frame, recorded by an eavesdropper, is refused as a replay even by a
/// coordinator restarted (on the same database) since the frame was first welcomed.
async fn registration_replayed_after_a_restart_is_refused(db: Db) {
    let mut h = Harness::start(db, 1, |_| {}).await;
    let reg = h.identity(0, "recorded").register();
    let mut first = RawConn::connect(&h.ws_url).await;
    first.send(&Message::Register(reg.clone())).await.expect("send Register");
    assert!(matches!(first.next(Duration::from_secs(5)).await, Next::Msg(Message::Welcome(_))));
    drop(first);
    h.restart().await;
    refused(&h, reg, "replayed_registration").await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_replayed_after_a_restart_is_refused_on_sqlite() {
    registration_replayed_after_a_restart_is_refused(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_replayed_after_a_restart_is_refused_on_postgres() {
    registration_replayed_after_a_restart_is_refused(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_delegation_is_refused() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let mut identity = h.identity(0, "expired");
    identity.expires_at = UnixMillis(UnixMillis::now().0 - 60_000);
    refused(&h, identity.register(), "bad_delegation").await;
    never_registered(&h, &identity.public()).await;
    // A delegation signed by another key than the hotkey it names is refused the same way.
    let identity = h.identity(0, "misdelegated");
    let mut reg = identity.register();
    reg.delegation.signature = keypair().sign(&reg.delegation.signing_payload());
    sign_register(&mut reg, &identity.key); // the registration itself is properly signed
    refused(&h, reg, "bad_delegation").await;
    h.shutdown().await;
}

/// Waits for `n` verified challenges of `worker` and returns their rates, all of which must be
/// credited.
async fn credited_rates(h: &Harness, worker: &veribench_protocol::PublicKey, n: usize) -> Vec<f64> {
    let rows = h.verified(worker, n).await;
    assert!(rows.iter().all(|c| c.credited), "{}", common::summary(&rows));
    rows.iter().map(|c| c.gflops.expect("a verified challenge has a rate")).collect()
}

/// SPEC §8.1: a worker can make a round trip longer, never shorter, so delaying or dropping its
/// pongs must never make it look faster than an honest worker computing the same challenges on
/// the same machine. All four take 150 ms per challenge; the pong-tampering ones go through a
/// proxy that holds their pongs a second (always, or only while a challenge is in flight) or
/// drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_or_dropped_pongs_buy_no_speed() {
    use common::pong_proxy::{PongPolicy, PongProxy};
    const ROUNDS: usize = 5;
    let h = Harness::start(Db::Sqlite, 4, |c| {
        c.schedule.deadline_secs = 5.0;
        c.liveness.ping_secs = 0.25;
    })
    .await;
    let options =
        WorkerOptions { commit_delay: Duration::from_millis(150), ..WorkerOptions::default() };
    let honest =
        common::TestWorker::spawn(&h.ws_url, h.identity(0, "honest"), Behaviour::Honest, options);
    let hold = Duration::from_secs(1);
    let policies =
        [PongPolicy::Delay(hold), PongPolicy::DelayDuringChallenges(hold), PongPolicy::Drop];
    let mut attackers = Vec::new();
    for (i, policy) in policies.into_iter().enumerate() {
        let proxy = PongProxy::start(h.ws_addr, policy).await;
        let identity = h.identity(i + 1, &format!("pongs-{i}"));
        let worker = common::TestWorker::spawn(&proxy.url, identity, Behaviour::Honest, options);
        attackers.push((policy, proxy, worker));
    }

    let mut honest_rates = credited_rates(&h, &honest.key(), ROUNDS).await;
    honest_rates.sort_by(f64::total_cmp);
    let honest_median = honest_rates[honest_rates.len() / 2];
    for (policy, _proxy, worker) in &attackers {
        let rates = credited_rates(&h, &worker.key(), ROUNDS).await;
        let best = rates.iter().copied().fold(0.0, f64::max);
        // 150 ms of compute either way; 1.25 leaves room for scheduling noise, a forged credit
        // of a second would be a factor of thousands.
        assert!(
            best <= honest_median * 1.25,
            "{policy:?}: credited {best} GFLOP/s against the honest median {honest_median} ({rates:?})"
        );
    }
    for (_, _proxy, worker) in attackers {
        worker.stop().await;
    }
    honest.stop().await;
    h.shutdown().await;
}

/// SPEC §8.1: a verified rate above what the worker's reported hardware can do is stored as
/// `implausible_rate` and not credited. Here the per-core peak is set far below what the test
/// machine computes, so every verified challenge is implausible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_beyond_the_claimed_hardware_are_not_credited() {
    let h = Harness::start(Db::Sqlite, 1, |c| {
        let tiny = 1e-9;
        c.timing.cpu_core_peak.int8 = tiny;
        c.timing.plausibility_factor = 1.0;
    })
    .await;
    let w = h.honest(0, "too-fast");
    let rows = h.verified(&w.key(), 2).await;
    for c in &rows {
        assert!(!c.credited, "{c:?}");
        assert_eq!(c.reason.as_deref(), Some("implausible_rate"), "{c:?}");
        assert!(c.gflops.is_some_and(|g| g > 0.0), "{c:?}");
    }
    w.stop().await;
    h.shutdown().await;
}
