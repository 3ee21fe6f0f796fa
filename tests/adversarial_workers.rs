//! Workers that cheat, each caught for the right reason, and the reason persisted.

mod common;

use std::time::Duration;

use common::{
    Behaviour, Db, Harness, Identity, Next, PATIENCE, RawConn, Tamper, WorkerOptions, eventually,
    keypair, sign_register, unique_device,
};
use veribench_coordinator::store::{ChallengeRow, ChallengeStatus};
use veribench_protocol::{ErrorCode, Message, Mode, RejectReason, UnixMillis, Verdict};

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
    let named = format!("challenge {} ", first.id);
    let named = named.as_str();
    let worker = &w;
    let error = eventually("an Error frame naming the challenge", PATIENCE, || async move {
        worker.errors().into_iter().find(|e| e.message.contains(named))
    })
    .await;
    assert!(error.message.contains("deadline_missed"), "{error:?}");
    // Its late commitment is refused as a commitment to a challenge no longer open.
    let late = h.rejection("unknown_challenge", Some(&w.key())).await;
    assert!(late[0].detail.contains(&first.id.to_string()), "{late:?}");
    assert!(h.challenges_of(&w.key()).await.iter().all(|c| c.status != ChallengeStatus::Verified));
    w.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_serving_two_identities_gets_no_credit() {
    let h = Harness::start(Db::Sqlite, 2, |_| {}).await;
    let shared = unique_device("shared");
    // Both register before either can finish a challenge (commitments are held back a little).
    let options = WorkerOptions { commit_delay: Duration::from_millis(500), ..Default::default() };
    let a = h.spawn(
        Identity::new("twin-a", &h.miners[0], vec![shared.clone()]),
        Behaviour::Honest,
        options,
    );
    let b = h.spawn(
        Identity::new("twin-b", &h.miners[1], vec![shared.clone()]),
        Behaviour::Honest,
        options,
    );
    let conflicts = h.rejection("device_conflict", None).await;
    assert!(conflicts.iter().all(|r| r.detail.contains(shared.as_str())), "{conflicts:?}");
    assert!(
        conflicts.iter().any(|r| r.worker_key == Some(a.key()) || r.worker_key == Some(b.key())),
        "{conflicts:?}"
    );
    assert!(h.store().is_conflicted(&shared).await.expect("query"));

    let mut verified = h.verified(&a.key(), 1).await;
    verified.extend(h.verified(&b.key(), 1).await);
    for c in &verified {
        assert_eq!(c.device, shared);
        assert!(!c.credited, "a conflicted device must not be credited: {c:?}");
    }
    for m in h.store().miners().await.expect("miners") {
        assert_eq!(m.verified, 0, "{m:?}");
        assert_eq!(m.mean_gflops, 0.0, "{m:?}");
    }
    a.stop().await;
    b.stop().await;
    h.shutdown().await;
}

/// Sends `reg` on a new connection and expects it refused as `kind`: an Unauthorized Error frame,
/// then the connection closed, and the rejection stored.
async fn refused(h: &Harness, reg: veribench_protocol::Register, kind: &str) {
    let worker = reg.delegation.worker_key;
    let mut conn = RawConn::connect(&h.ws_url).await;
    conn.send(&Message::Register(reg)).await.expect("send Register");
    match conn.next(Duration::from_secs(5)).await {
        Next::Msg(Message::Error(e)) => assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}"),
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert!(conn.closed_within(Duration::from_secs(5)).await, "connection left open");
    let stored = h.rejection(kind, Some(&worker)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
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

async fn refused_again(h: &Harness, reg: veribench_protocol::Register, kind: &str, total: usize) {
    let worker = reg.delegation.worker_key;
    let mut conn = RawConn::connect(&h.ws_url).await;
    conn.send(&Message::Register(reg)).await.expect("send Register");
    assert!(conn.next_error(Duration::from_secs(5)).await.is_some());
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    let store = h.store();
    eventually("the second rejection", PATIENCE, || async move {
        let n = common::rejections_of(store, kind)
            .await
            .iter()
            .filter(|r| r.worker_key == Some(worker))
            .count();
        (n == total).then_some(())
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
