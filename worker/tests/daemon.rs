//! The daemon against a minimal in-test coordinator over a real loopback WebSocket: the whole
//! conversation, every refusal, reconnection and clean shutdown.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Peer, accept, challenge, challenge_by, key};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use veribench_kernels::CpuBackend;
use veribench_protocol::{
    CommitmentMsg, DeviceKey, ErrorCode, Message, OpenRequest, Signature, UnixMillis, Verdict,
    VerdictMsg, verify_openings,
};
use veribench_wallet::{delegate, verify_delegation};
use veribench_worker::daemon::{
    BackoffConfig, DaemonError, WorkerConfig, WorkerIdentity, run_worker_with_token,
};

fn device() -> DeviceKey {
    DeviceKey::new("cpu:loopback-test").expect("valid key")
}

/// Starts a worker (CPU backend, one device) against `ws://addr`, pinned to `pinned` if given.
async fn start_worker(
    pinned: Option<String>,
) -> (TcpListener, CancellationToken, JoinHandle<Result<(), DaemonError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (miner, worker) = (key(1), key(2));
    let delegation = delegate(&miner, worker.public(), UnixMillis(UnixMillis::now().0 + 3_600_000));
    let identity = WorkerIdentity::new(worker, delegation).expect("matching key");
    let config = WorkerConfig {
        coordinator: format!("ws://{addr}"),
        coordinator_hotkey: pinned,
        name: "loopback".into(),
        backoff: BackoffConfig { base_ms: 50, factor: 2.0, max_ms: 200 },
        ..WorkerConfig::default()
    };
    let backend = Arc::new(CpuBackend::with_device_key(device()));
    let token = CancellationToken::new();
    let handle = tokio::spawn(run_worker_with_token(config, identity, backend, token.clone()));
    (listener, token, handle)
}

/// Sends `signed`, expects its commitment, opens three rows and checks them with the protocol's
/// verifier; returns the commitment.
async fn compute_and_verify(peer: &mut Peer, signed: &veribench_protocol::SignedChallenge) {
    peer.send(&Message::Challenge(signed.clone())).await;
    let Message::Commitment(CommitmentMsg { challenge_id, device: got_device, root }) =
        peer.expect().await
    else {
        panic!("expected a commitment");
    };
    assert_eq!(challenge_id, signed.challenge.id);
    assert_eq!(got_device, signed.device);
    let rows = vec![0, 5, 15];
    peer.send(&Message::OpenRequest(OpenRequest { challenge_id, rows: rows.clone() })).await;
    let Message::Openings(openings) = peer.expect().await else {
        panic!("expected openings");
    };
    assert_eq!(openings.challenge_id, challenge_id);
    let c = &signed.challenge;
    let verdict = verify_openings(
        c.mode,
        c.shape,
        &c.device_seed(&signed.device),
        &root,
        &rows,
        &openings.openings,
    );
    assert_eq!(verdict, Verdict::Accepted);
    peer.send(&Message::Verdict(VerdictMsg { challenge_id, verdict })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_verified_work_and_refuses_bad_challenges() {
    let coordinator = key(9);
    let pinned = format!("0x{}", coordinator.public());
    let (listener, token, worker) = start_worker(Some(pinned)).await;
    let mut peer = accept(&listener).await;

    let register = peer.handshake(&coordinator, 100).await;
    assert_eq!(register.devices, vec![device()]);
    assert_eq!(register.name, "loopback");
    assert_eq!(register.delegation.miner_hotkey, key(1).public());
    verify_delegation(&register.delegation, UnixMillis::now()).expect("valid delegation");
    assert!(register.hardware.cpu_cores >= 1);

    // (1) A properly signed challenge: committed, opened, verified.
    let first = challenge(1, &device(), &coordinator);
    compute_and_verify(&mut peer, &first).await;

    // (2) Forged: claims the coordinator, signed by someone else.
    let forged = challenge_by(2, &device(), &coordinator, &key(7), UnixMillis::now());
    peer.send(&Message::Challenge(forged)).await;
    peer.expect_refusal(ErrorCode::Unauthorized, 2).await;

    // (3) Unsigned.
    let mut unsigned = challenge(3, &device(), &coordinator);
    unsigned.signature = Signature([0; 64]);
    peer.send(&Message::Challenge(unsigned)).await;
    peer.expect_refusal(ErrorCode::Unauthorized, 3).await;

    // (4) A replay of the first.
    peer.send(&Message::Challenge(first.clone())).await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 1).await;

    // (5) Validly signed by a foreign coordinator.
    let foreign = key(5);
    peer.send(&Message::Challenge(challenge(4, &device(), &foreign))).await;
    peer.expect_refusal(ErrorCode::Unauthorized, 4).await;

    // (6) Expired.
    let past = UnixMillis(UnixMillis::now().0 - 120_000);
    let expired = challenge_by(5, &device(), &coordinator, &coordinator, past);
    peer.send(&Message::Challenge(expired)).await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 5).await;

    // (7) For a device the worker does not own.
    let elsewhere = DeviceKey::new("GPU-not-here").expect("key");
    peer.send(&Message::Challenge(challenge(6, &elsewhere, &coordinator))).await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 6).await;

    // (8) Garbage and an open request for nothing.
    peer.send_raw(b"not a frame".to_vec()).await;
    match peer.expect().await {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::Malformed, "{}", e.message),
        other => panic!("expected Malformed, got {other:?}"),
    }
    peer.send(&Message::OpenRequest(OpenRequest {
        challenge_id: veribench_protocol::ChallengeId(99),
        rows: vec![0],
    }))
    .await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 99).await;

    // No commitment for any refused challenge came in between: the next answer is for the next
    // good challenge.
    compute_and_verify(&mut peer, &challenge(7, &device(), &coordinator)).await;
    assert!(peer.heartbeats > 0, "heartbeats flow at the Welcome's interval");

    // Shutdown: a WebSocket Close, then the daemon returns Ok.
    token.cancel();
    assert!(peer.recv().await.is_none(), "the worker closes the connection");
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_coordinator_drops_it() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker(None).await;

    let mut peer = accept(&listener).await;
    let first_register = peer.handshake(&coordinator, 1_000).await;
    let first = challenge(1, &device(), &coordinator);
    compute_and_verify(&mut peer, &first).await;
    drop(peer);

    // The worker comes back on its own, with a fresh registration.
    let mut peer = accept(&listener).await;
    let second_register = peer.handshake(&coordinator, 1_000).await;
    assert_ne!(first_register.nonce, second_register.nonce);
    // Replay protection survives the reconnection.
    peer.send(&Message::Challenge(first)).await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 1).await;
    compute_and_verify(&mut peer, &challenge(2, &device(), &coordinator)).await;

    token.cancel();
    assert!(peer.recv().await.is_none());
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_another_key_than_the_pinned_one_is_left() {
    let (pinned, impostor) = (key(9), key(6));
    let (listener, token, worker) = start_worker(Some(format!("0x{}", pinned.public()))).await;

    let mut peer = accept(&listener).await;
    peer.handshake(&impostor, 1_000).await;
    assert!(peer.recv().await.is_none(), "the worker disconnects from the impostor");

    // It retries, and serves the real coordinator.
    let mut peer = accept(&listener).await;
    peer.handshake(&pinned, 1_000).await;
    compute_and_verify(&mut peer, &challenge(1, &device(), &pinned)).await;

    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_retried_with_backoff() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker(None).await;
    let mut peer = accept(&listener).await;
    assert!(matches!(peer.expect().await, Message::Register(_)));
    peer.send(&Message::Error(veribench_protocol::ErrorMsg {
        code: ErrorCode::Unauthorized,
        message: "not today".into(),
    }))
    .await;
    drop(peer);
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 1_000).await;
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}
