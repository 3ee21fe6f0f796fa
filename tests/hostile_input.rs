//! Hostile peers: malformed, oversized and flooding frames, and connections that never finish
//! their handshake. Each is refused, persisted, and none of them stops an honest worker from
//! being served.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Harness, Next, PATIENCE, RawConn, TestWorker, eventually, http_get};
use futures_util::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use veribench_coordinator::store::ChallengeStatus;
use veribench_protocol::wire::{self, HEADER_LEN};
use veribench_protocol::{ErrorCode, Heartbeat, Message, UnixMillis, Verdict};

fn heartbeat_frame(seq: u64) -> Vec<u8> {
    wire::encode(&Message::Heartbeat(Heartbeat { seq, sent_at: UnixMillis::now() }))
}

/// Random bytes that cannot start with the magic.
fn junk(len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
    bytes[0] = b'Z';
    bytes
}

fn wrong_magic() -> Vec<u8> {
    let mut frame = heartbeat_frame(1);
    frame[..2].copy_from_slice(b"XY");
    frame
}

fn wrong_version() -> Vec<u8> {
    let mut frame = heartbeat_frame(1);
    frame[2..HEADER_LEN].copy_from_slice(&2u16.to_le_bytes());
    frame
}

/// Verified challenges of `w` so far.
async fn verified_count(h: &Harness, w: &TestWorker) -> usize {
    h.challenges_of(&w.key()).await.iter().filter(|c| c.status == ChallengeStatus::Verified).count()
}

/// Waits until `w` has more than `than` verified challenges, and checks it was never refused.
async fn still_served(h: &Harness, w: &TestWorker, than: usize) {
    h.verified(&w.key(), than + 1).await;
    assert!(w.verdicts().iter().all(|v| v.verdict == Verdict::Accepted));
    assert!(w.errors().is_empty(), "the honest worker was sent errors: {:?}", w.errors());
}

/// Number of stored rejections of `kind` by `worker` (any peer when `None`).
async fn count(h: &Harness, kind: &str, worker: Option<veribench_protocol::PublicKey>) -> usize {
    h.rejections(kind).await.iter().filter(|r| worker.is_none() || r.worker_key == worker).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_error_replies_and_repeated_strikes_close_the_connection() {
    let h = Harness::start(Db::Sqlite, 2, |c| c.limits.max_strikes = 6).await;
    let honest = h.honest(0, "steady");
    h.verified(&honest.key(), 1).await;

    let hostile = h.identity(1, "hostile");
    let (mut conn, _) = RawConn::registered(&h.ws_url, &hostile).await;
    let truncated = heartbeat_frame(1)[..HEADER_LEN + 1].to_vec();
    let strikes: [(&str, Option<Vec<u8>>, ErrorCode); 5] = [
        ("random bytes", Some(junk(48)), ErrorCode::Malformed),
        ("wrong magic", Some(wrong_magic()), ErrorCode::Malformed),
        ("wrong version", Some(wrong_version()), ErrorCode::Unsupported),
        ("text frame", None, ErrorCode::Malformed),
        ("truncated body", Some(truncated), ErrorCode::Malformed),
    ];
    for (what, frame, code) in strikes {
        match frame {
            Some(bytes) => conn.send_bytes(bytes).await.expect("send"),
            None => conn.send_text("{\"register\": true}").await.expect("send"),
        }
        let error = conn.next_error(Duration::from_secs(5)).await;
        let error = error.unwrap_or_else(|| panic!("no Error frame after {what}"));
        assert_eq!(error.code, code, "{what}: {error:?}");
        // A valid frame between strikes is still served (no reply expected, no strike).
        conn.send_bytes(heartbeat_frame(2)).await.expect("send");
    }
    let honest_before = verified_count(&h, &honest).await;
    // The strike that reaches the limit closes the connection.
    conn.send_bytes(junk(16)).await.expect("send");
    assert!(conn.closed_within(Duration::from_secs(5)).await, "still open after max_strikes");

    let worker = Some(hostile.public());
    let store = h.store();
    eventually("every strike persisted", PATIENCE, || async move {
        let malformed = common::rejections_of(store, "malformed_frame").await;
        let version = common::rejections_of(store, "unsupported_version").await;
        let mine = |v: &Vec<veribench_coordinator::store::Rejection>| {
            v.iter().filter(|r| r.worker_key == worker).count()
        };
        (mine(&malformed) == 5 && mine(&version) == 1).then_some(())
    })
    .await;
    assert_eq!(count(&h, "unexpected_message", None).await, 0);
    still_served(&h, &honest, honest_before).await;
    honest.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_registration_is_refused_and_closed() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let honest = h.honest(0, "steady");
    let heartbeat_first = heartbeat_frame(1);
    let cases: [(&str, Option<Vec<u8>>, &str); 4] = [
        ("random bytes", Some(junk(64)), "malformed_frame"),
        ("wrong magic", Some(wrong_magic()), "malformed_frame"),
        ("text frame", None, "malformed_frame"),
        ("heartbeat before register", Some(heartbeat_first), "unexpected_message"),
    ];
    for (what, frame, kind) in cases {
        let before = count(&h, kind, None).await;
        let mut conn = RawConn::connect(&h.ws_url).await;
        match frame {
            Some(bytes) => conn.send_bytes(bytes).await.expect("send"),
            None => conn.send_text("hello").await.expect("send"),
        }
        match conn.next(Duration::from_secs(5)).await {
            Next::Msg(Message::Error(_)) => {}
            other => panic!("{what}: expected an Error frame, got {other:?}"),
        }
        assert!(conn.closed_within(Duration::from_secs(5)).await, "{what}: left open");
        let store = h.store();
        eventually(&format!("{what} persisted as {kind}"), PATIENCE, || async move {
            let stored = common::rejections_of(store, kind).await;
            (stored.len() == before + 1 && stored.iter().all(|r| r.worker_key.is_none()))
                .then_some(())
        })
        .await;
    }
    still_served(&h, &honest, 0).await;
    honest.stop().await;
    h.shutdown().await;
}

/// A worker of another protocol version registering is told its version is unsupported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_in_another_protocol_version_is_refused_as_unsupported() {
    let h = Harness::start(Db::Sqlite, 1, |_| {}).await;
    let mut frame = wire::encode(&Message::Register(h.identity(0, "future").register()));
    frame[2..HEADER_LEN].copy_from_slice(&2u16.to_le_bytes());
    let mut conn = RawConn::connect(&h.ws_url).await;
    conn.send_bytes(frame).await.expect("send");
    let error = conn.next_error(Duration::from_secs(5)).await.expect("an Error frame");
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    h.rejection("unsupported_version", None).await;
    assert_eq!(error.code, ErrorCode::Unsupported, "{error:?}");
    h.shutdown().await;
}

const SMALL_FRAME_LIMIT: usize = 64 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_connection() {
    let h = Harness::start(Db::Sqlite, 2, |c| c.limits.max_frame_bytes = SMALL_FRAME_LIMIT).await;
    let honest = h.honest(0, "steady");
    h.verified(&honest.key(), 1).await;
    let hostile = h.identity(1, "bloated");
    let (mut conn, _) = RawConn::registered(&h.ws_url, &hostile).await;
    let before = verified_count(&h, &honest).await;
    let mut big = heartbeat_frame(1);
    big.resize(SMALL_FRAME_LIMIT + 40_000, 0);
    let _ = conn.send_bytes(big).await;
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "still open after an oversized frame"
    );
    let stored = h.rejection("frame_too_large", Some(&hostile.public())).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    still_served(&h, &honest, before).await;
    honest.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_first_frame_is_refused_as_too_large() {
    let h = Harness::start(Db::Sqlite, 1, |c| c.limits.max_frame_bytes = SMALL_FRAME_LIMIT).await;
    let mut conn = RawConn::connect(&h.ws_url).await;
    let _ = conn.send_bytes(vec![0x56; SMALL_FRAME_LIMIT * 2]).await;
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "still open after an oversized frame"
    );
    let store = h.store();
    let kinds = eventually("a rejection", PATIENCE, || async move {
        let all = store.rejections(10).await.expect("rejections");
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(kinds[0].kind, "frame_too_large", "{kinds:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_flood_is_rate_limited_and_the_coordinator_stays_responsive() {
    let h = Harness::start(Db::Sqlite, 2, |_| {}).await;
    let honest = h.honest(0, "steady");
    h.verified(&honest.key(), 1).await;
    let before = verified_count(&h, &honest).await;

    let flooder = h.identity(1, "flooder");
    let (conn, _) = RawConn::registered(&h.ws_url, &flooder).await;
    const FLOOD: u64 = 5000;
    let flood = tokio::spawn(async move {
        let mut ws = conn.ws;
        for seq in 0..FLOOD {
            if ws.feed(WsMessage::binary(heartbeat_frame(seq))).await.is_err() {
                break;
            }
        }
        let _ = ws.flush().await;
        ws // keep the connection open until the test is done with it
    });

    // The API answers promptly during the flood.
    let started = Instant::now();
    let health = http_get(h.http_addr, "/healthz").await;
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "healthz took {:?}", started.elapsed());
    let _ws = flood.await.expect("flood task");

    let stored = h.rejection("rate_limited", Some(&flooder.public())).await;
    // Persisted at most about once a second per connection, not once per dropped frame.
    assert!(stored.len() <= 5, "{} rate_limited rows", stored.len());
    let addr = h.http_addr;
    let metrics = eventually("the dropped frames counted", PATIENCE, || async move {
        let body = http_get(addr, "/metrics").await.body;
        let dropped: f64 = body
            .lines()
            .find(|l| l.starts_with("veribench_rejections_total{kind=\"rate_limited\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        (dropped >= (FLOOD - 200) as f64).then_some(body)
    })
    .await;
    assert!(metrics.contains("veribench_frames_total"));

    let started = Instant::now();
    assert_eq!(http_get(h.http_addr, "/healthz").await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    still_served(&h, &honest, before).await;
    honest.stop().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_time_out_without_stalling_others() {
    const HALF_OPEN: usize = 200;
    let h = Harness::start(Db::Sqlite, 1, |c| c.liveness.handshake_timeout_secs = 1.0).await;

    // TCP connections that never send a byte, and one WebSocket that never registers.
    let opened = Instant::now();
    let mut silent = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        silent.push(TcpStream::connect(h.ws_addr).await.expect("TCP connect"));
    }
    let mut upgraded = RawConn::connect(&h.ws_url).await;

    // Meanwhile an honest worker registers and is served at once.
    let honest = h.honest(0, "steady");
    let worker = &honest;
    eventually("the honest worker welcomed", Duration::from_millis(900), || async move {
        (!worker.welcomes().is_empty()).then_some(())
    })
    .await;
    assert!(opened.elapsed() < Duration::from_secs(1), "the half-open peers were not pending");

    // Every silent connection is closed by the coordinator after the handshake timeout.
    let closed = futures_util::future::join_all(silent.into_iter().map(|mut tcp| async move {
        let mut buf = [0u8; 64];
        let result = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        (matches!(result, Ok(Ok(0)) | Ok(Err(_))), Instant::now())
    }))
    .await;
    let open = closed.iter().filter(|(c, _)| !c).count();
    assert_eq!(open, 0, "{open} half-open connections still open");
    let first_close = closed.iter().map(|(_, at)| *at).min().expect("some");
    assert!(first_close.duration_since(opened) >= Duration::from_millis(900), "closed too early");
    assert!(upgraded.closed_within(Duration::from_secs(5)).await, "upgraded socket left open");

    let store = h.store();
    let timeouts = eventually("handshake timeouts persisted", PATIENCE, || async move {
        let stored = common::rejections_of(store, "handshake_timeout").await;
        (stored.len() > HALF_OPEN).then_some(stored)
    })
    .await;
    assert_eq!(timeouts.len(), HALF_OPEN + 1);
    assert!(timeouts.iter().all(|r| r.worker_key.is_none()));
    let registration = timeouts.iter().filter(|r| r.detail.contains("registration")).count();
    assert_eq!(registration, 1, "{timeouts:?}");

    still_served(&h, &honest, 0).await;
    let started = Instant::now();
    assert_eq!(http_get(h.http_addr, "/healthz").await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    honest.stop().await;
    h.shutdown().await;
}
