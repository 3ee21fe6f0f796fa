//! The daemon against a minimal in-test coordinator over a real loopback WebSocket: the whole
//! conversation, every refusal, reconnection and clean shutdown; and (module `discovery`) the
//! daemon following a subnet on the local chain. One test binary for both: each costs a link.

mod common;
#[path = "daemon/discovery.rs"]
mod discovery;

use std::sync::Arc;
use std::time::Duration;

use common::{Peer, accept, challenge, challenge_by, challenge_shaped, key};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use veribench_kernels::{CpuBackend, Delayed};
use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    ChallengeId, CommitmentMsg, DeviceKey, ErrorCode, ErrorMsg, Heartbeat, Message, OpenRequest,
    Root, Shape, Signature, SignedChallenge, UnixMillis, Verdict, VerdictMsg, Welcome,
    verify_openings,
};
use veribench_wallet::{delegate, verify_delegation};
use veribench_worker::daemon::{
    BackoffConfig, Clock, DaemonError, WorkerConfig, WorkerIdentity, run_worker_with_token,
};

fn device() -> DeviceKey {
    DeviceKey::new("cpu:loopback-test").expect("valid key")
}

/// Starts a worker (CPU backend, one device) against `ws://addr`, pinned to `pinned` if given,
/// else to the test coordinator's key (`key(9)`).
async fn start_worker(
    pinned: Option<String>,
) -> (TcpListener, CancellationToken, JoinHandle<Result<(), DaemonError>>) {
    start_worker_on(pinned, Duration::ZERO).await
}

/// [`start_worker`] with a backend that takes `delay` longer per challenge.
async fn start_worker_on(
    pinned: Option<String>,
    delay: Duration,
) -> (TcpListener, CancellationToken, JoinHandle<Result<(), DaemonError>>) {
    start_worker_with(pinned, delay, Clock::system()).await
}

/// [`start_worker_on`] on a machine whose wall clock reads `clock`.
async fn start_worker_with(
    pinned: Option<String>,
    delay: Duration,
    clock: Clock,
) -> (TcpListener, CancellationToken, JoinHandle<Result<(), DaemonError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (miner, worker) = (key(1), key(2));
    let delegation = delegate(&miner, worker.public(), UnixMillis(UnixMillis::now().0 + 3_600_000));
    let identity = WorkerIdentity::new(worker, delegation).expect("matching key");
    let config = WorkerConfig {
        coordinator: format!("ws://{addr}"),
        coordinator_hotkey: Some(pinned.unwrap_or_else(|| key(9).public().to_string())),
        name: "loopback".into(),
        backoff: BackoffConfig { base_ms: 50, factor: 2.0, max_ms: 200 },
        clock,
        ..WorkerConfig::default()
    };
    let backend = Arc::new(Delayed::new(CpuBackend::with_device_key(device()), delay));
    let token = CancellationToken::new();
    let handle = tokio::spawn(run_worker_with_token(config, identity, backend, token.clone()));
    (listener, token, handle)
}

/// Sends `signed`, expects its commitment, opens three rows and checks them with the protocol's
/// verifier; returns the commitment.
async fn compute_and_verify<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    peer: &mut Peer<S>,
    signed: &veribench_protocol::SignedChallenge,
) {
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
    peer.expect_refusal(ErrorCode::BadSignature, 2).await;

    // (3) Unsigned.
    let mut unsigned = challenge(3, &device(), &coordinator);
    unsigned.signature = Signature([0; 64]);
    peer.send(&Message::Challenge(unsigned)).await;
    peer.expect_refusal(ErrorCode::BadSignature, 3).await;

    // (4) A replay of the first.
    peer.send(&Message::Challenge(first.clone())).await;
    peer.expect_refusal(ErrorCode::Replayed, 1).await;

    // (5) Validly signed by a foreign coordinator.
    let foreign = key(5);
    peer.send(&Message::Challenge(challenge(4, &device(), &foreign))).await;
    peer.expect_refusal(ErrorCode::Foreign, 4).await;

    // (6) Expired.
    let past = UnixMillis(UnixMillis::now().0 - 120_000);
    let expired = challenge_by(5, &device(), &coordinator, &coordinator, past);
    peer.send(&Message::Challenge(expired)).await;
    peer.expect_refusal(ErrorCode::Expired, 5).await;

    // (7) For a device the worker does not own.
    let elsewhere = DeviceKey::new("GPU-not-here").expect("key");
    peer.send(&Message::Challenge(challenge(6, &elsewhere, &coordinator))).await;
    peer.expect_refusal(ErrorCode::UnknownDevice, 6).await;

    // (8) Issued more than the allowed five minutes of skew ahead of the worker's clock.
    let later = UnixMillis(UnixMillis::now().0 + 6 * 60_000);
    let future = challenge_by(8, &device(), &coordinator, &coordinator, later);
    peer.send(&Message::Challenge(future)).await;
    peer.expect_refusal(ErrorCode::FromTheFuture, 8).await;

    // (9) Garbage and an open request for nothing.
    peer.send_raw(b"not a frame".to_vec()).await;
    peer.expect_error(ErrorCode::Malformed, None).await;
    peer.send(&Message::OpenRequest(OpenRequest { challenge_id: ChallengeId(99), rows: vec![0] }))
        .await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 99).await;

    // No commitment for any refused challenge came in between: the next answer is for the next
    // good challenge.
    compute_and_verify(&mut peer, &challenge(7, &device(), &coordinator)).await;
    // Heartbeats flow at the Welcome's interval (100 ms), numbered.
    let seq = peer.expect_heartbeat().await;
    assert_eq!(peer.expect_heartbeat().await, seq + 1);

    // Shutdown: a WebSocket Close, then the daemon returns Ok.
    token.cancel();
    assert!(peer.recv().await.is_none(), "the worker closes the connection");
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

/// Reliability item 7: a worker whose clock runs 120 s ahead registers within the coordinator's
/// allowed skew, then finds every 60 s deadline already past. It must say so in a form the
/// coordinator can record (`expired`), not stay silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_120_s_ahead_stamps_its_frames_so_and_refuses_challenges_as_expired() {
    const AHEAD_MS: u64 = 120_000;
    let coordinator = key(9);
    let before = UnixMillis::now();
    let (listener, token, worker) =
        start_worker_with(None, Duration::ZERO, Clock::offset_by(AHEAD_MS as i64)).await;
    let mut peer = accept(&listener).await;
    let register = peer.handshake(&coordinator, 100).await;
    let after = UnixMillis::now();
    let stamped = register.timestamp.0;
    assert!(
        (before.0 + AHEAD_MS..=after.0 + AHEAD_MS).contains(&stamped),
        "Register stamped {stamped}, not 120 s after [{}, {}]",
        before.0,
        after.0
    );

    // Heartbeats carry the shifted clock too.
    let sent_at = loop {
        let frame = tokio::time::timeout(common::TIMEOUT, peer.ws.next())
            .await
            .expect("a heartbeat in time")
            .expect("open")
            .expect("frame");
        if let WsMessage::Binary(bytes) = frame
            && let Message::Heartbeat(h) =
                wire::decode(&bytes, &Limits::default()).expect("decodes")
        {
            break h.sent_at;
        }
    };
    assert!(sent_at.0 >= before.0 + AHEAD_MS, "heartbeat sent at {}", sent_at.0);

    // Issued now by the real clock, due in 60 s: valid for the coordinator, past for the worker.
    let signed = challenge(1, &device(), &coordinator);
    let deadline = signed.challenge.deadline;
    peer.send(&Message::Challenge(signed)).await;
    let detail = peer.expect_refusal(ErrorCode::Expired, 1).await;
    assert!(detail.contains(&format!("expired at {} ms", deadline.0)), "{detail}");

    token.cancel();
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
    peer.expect_refusal(ErrorCode::Replayed, 1).await;
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
    let refusal = ErrorMsg::new(ErrorCode::UnknownHotkey, None, "not today", 256);
    peer.send(&Message::Error(refusal)).await;
    drop(peer);
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 1_000).await;
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_the_device_is_busy_while_computing() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker_on(None, Duration::from_millis(1500)).await;
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 60_000).await;

    let first = challenge(1, &device(), &coordinator);
    peer.send(&Message::Challenge(first.clone())).await;
    // A second challenge for the same device while the first computes.
    peer.send(&Message::Challenge(challenge(2, &device(), &coordinator))).await;
    peer.expect_refusal(ErrorCode::Busy, 2).await;

    // The reader keeps polling: a Ping is answered long before the computation ends.
    peer.ws.send(WsMessage::Ping(b"rtt".to_vec().into())).await.expect("ping");
    let sent = std::time::Instant::now();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), peer.ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        match frame {
            WsMessage::Pong(payload) => {
                assert_eq!(&payload[..], b"rtt");
                break;
            }
            WsMessage::Binary(_) => panic!("the pong must come before the commitment"),
            _ => {}
        }
    }
    assert!(sent.elapsed() < Duration::from_millis(1000), "pong after {:?}", sent.elapsed());

    let Message::Commitment(c) = peer.expect().await else { panic!("expected the commitment") };
    assert_eq!(c.challenge_id, first.challenge.id);
    // Free again once the computation has ended.
    compute_and_verify(&mut peer, &challenge(3, &device(), &coordinator)).await;

    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

/// Sends `signed` and returns the root of the worker's commitment to it.
async fn commit(peer: &mut Peer, signed: &SignedChallenge) -> Root {
    peer.send(&Message::Challenge(signed.clone())).await;
    match peer.expect().await {
        Message::Commitment(c) if c.challenge_id == signed.challenge.id => c.root,
        other => panic!("expected the commitment to {}, got {other:?}", signed.challenge.id),
    }
}

/// Frames that do not decode are answered with the code of their failure, in a version the
/// sender can read, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_answered_with_typed_codes() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker(None).await;
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 60_000).await;

    // An open request listing no row (encode does not validate; decode refuses it).
    let empty = OpenRequest { challenge_id: ChallengeId(1), rows: vec![] };
    peer.send_raw(wire::encode(&Message::OpenRequest(empty))).await;
    peer.expect_error(ErrorCode::Invalid, None).await;

    // A version-1 frame is refused in version 1, so a version-1 coordinator can read why.
    let heartbeat = Message::Heartbeat(Heartbeat { seq: 1, sent_at: UnixMillis::now() });
    let with_version = |version: u16| {
        let mut frame = wire::encode(&heartbeat);
        frame[2..4].copy_from_slice(&version.to_le_bytes());
        frame
    };
    peer.send_raw(with_version(1)).await;
    let answer = peer.recv_raw().await;
    assert!(answer.starts_with(b"VB\x01\x00\x08\x02"), "{answer:?}");
    assert_eq!(answer, wire::version_refusal(1, &Limits::default()));
    // Any other version is told in the current one.
    peer.send_raw(with_version(3)).await;
    peer.expect_error(ErrorCode::UnsupportedVersion, None).await;

    // A message a worker never accepts.
    let welcome = Welcome {
        coordinator: coordinator.public(),
        heartbeat_interval_ms: 60_000,
        server_time: UnixMillis::now(),
    };
    peer.send(&Message::Welcome(welcome)).await;
    peer.expect_error(ErrorCode::Unexpected, None).await;

    compute_and_verify(&mut peer, &challenge(2, &device(), &coordinator)).await;
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

/// Open requests the worker cannot answer are refused with their code and challenge; a
/// coordinator's error naming a challenge ends it on the worker too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_requests_are_refused_by_code_and_a_coordinator_error_drops_the_run() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker(None).await;
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 60_000).await;
    let signed = challenge(1, &device(), &coordinator);
    let root = commit(&mut peer, &signed).await;
    let id = signed.challenge.id;
    let open = |rows: Vec<u32>| Message::OpenRequest(OpenRequest { challenge_id: id, rows });

    // The product has 16 rows.
    peer.send(&open(vec![3, 16])).await;
    peer.expect_refusal(ErrorCode::RowsOutOfRange, 1).await;

    // The run survives the refusal, and an error naming no challenge.
    let unrelated = ErrorMsg::new(ErrorCode::RateLimited, None, "slow down", 256);
    peer.send(&Message::Error(unrelated)).await;
    peer.send(&open(vec![3, 15])).await;
    let Message::Openings(openings) = peer.expect().await else { panic!("expected openings") };
    let c = &signed.challenge;
    let seed = c.device_seed(&signed.device);
    let verdict = verify_openings(c.mode, c.shape, &seed, &root, &[3, 15], &openings.openings);
    assert_eq!(verdict, Verdict::Accepted);

    // The coordinator gives the challenge up: nothing of it can be opened any more.
    let given_up = ErrorMsg::new(ErrorCode::OpenTimeout, Some(id), "too slow", 256);
    peer.send(&Message::Error(given_up)).await;
    peer.send(&open(vec![0])).await;
    peer.expect_refusal(ErrorCode::UnknownChallenge, 1).await;

    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

/// Openings that might not fit the 16 MiB frame every receiver accepts are refused before any
/// is computed; one row fewer of the same product opens and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openings_too_large_for_a_frame_are_refused_and_fewer_rows_open() {
    let coordinator = key(9);
    let (listener, token, worker) = start_worker(None).await;
    let mut peer = accept(&listener).await;
    peer.handshake(&coordinator, 60_000).await;
    // 65536 columns: each opened row is 256 KiB, so 63 rows fit in a frame and 64 may not.
    let shape = Shape { m: 64, k: 1, n: 65_536 };
    let signed = challenge_shaped(1, &device(), &coordinator, shape);
    let root = commit(&mut peer, &signed).await;
    let id = signed.challenge.id;

    let all: Vec<u32> = (0..64).collect();
    peer.send(&Message::OpenRequest(OpenRequest { challenge_id: id, rows: all.clone() })).await;
    peer.expect_refusal(ErrorCode::OpeningsTooLarge, 1).await;

    let rows = all[..63].to_vec();
    peer.send(&Message::OpenRequest(OpenRequest { challenge_id: id, rows: rows.clone() })).await;
    let Message::Openings(openings) = peer.expect().await else { panic!("expected openings") };
    assert_eq!(openings.challenge_id, id);
    let c = &signed.challenge;
    let seed = c.device_seed(&signed.device);
    let verdict = verify_openings(c.mode, c.shape, &seed, &root, &rows, &openings.openings);
    assert_eq!(verdict, Verdict::Accepted);

    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), worker).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
}

/// A TLS acceptor serving the fixture certificate for `localhost` / `127.0.0.1`.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).expect("server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_test_ca() {
    let coordinator = key(9);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (miner, worker) = (key(1), key(2));
    let delegation = delegate(&miner, worker.public(), UnixMillis(UnixMillis::now().0 + 3_600_000));
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-ca.pem");
    let config = |tls_ca| WorkerConfig {
        coordinator: format!("wss://localhost:{}", addr.port()),
        coordinator_hotkey: Some(coordinator.public().to_string()),
        tls_ca,
        backoff: BackoffConfig { base_ms: 50, factor: 2.0, max_ms: 200 },
        ..WorkerConfig::default()
    };
    let acceptor = tls_acceptor();

    // Without the test CA the worker does not trust the server.
    let identity = WorkerIdentity::new(worker.clone(), delegation.clone()).expect("identity");
    let backend = Arc::new(CpuBackend::with_device_key(device()));
    let token = CancellationToken::new();
    let untrusting =
        tokio::spawn(run_worker_with_token(config(None), identity, backend, token.clone()));
    let (tcp, _) = listener.accept().await.expect("accept");
    assert!(acceptor.accept(tcp).await.is_err(), "the worker refuses an unknown issuer");
    token.cancel();
    untrusting.await.expect("no panic").expect("clean exit");

    // With it, the whole conversation runs over TLS.
    let identity = WorkerIdentity::new(worker, delegation).expect("identity");
    let backend = Arc::new(CpuBackend::with_device_key(device()));
    let token = CancellationToken::new();
    let trusting =
        tokio::spawn(run_worker_with_token(config(Some(ca)), identity, backend, token.clone()));
    let tls = loop {
        let (tcp, _) = listener.accept().await.expect("accept");
        // Skip any retry of the untrusting worker that raced in before it stopped.
        if let Ok(tls) = acceptor.accept(tcp).await {
            break tls;
        }
    };
    let ws = tokio_tungstenite::accept_async(tls).await.expect("WebSocket over TLS");
    let mut peer = common::Peer { ws, heartbeats: 0 };
    peer.handshake(&coordinator, 60_000).await;
    compute_and_verify(&mut peer, &challenge(1, &device(), &coordinator)).await;
    token.cancel();
    assert!(peer.recv().await.is_none());
    trusting.await.expect("no panic").expect("clean exit");
}
