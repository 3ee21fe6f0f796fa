//! The coordinator's TLS listener (`tls_cert` / `tls_key`) with the real worker daemon connecting
//! over `wss://`, trusting a test CA; a client that does not speak TLS is refused and the refusal
//! is persisted.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Db, Harness};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use veribench_kernels::CpuBackend;
use veribench_protocol::{DeviceKey, UnixMillis};
use veribench_worker::daemon::{WorkerConfig, WorkerIdentity, run_worker_with_token};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("worker/tests/fixtures").join(name)
}

#[tokio::test]
async fn a_worker_is_verified_over_wss_and_plain_tcp_is_refused() {
    let harness = Harness::start(Db::Sqlite, 1, |c| {
        c.tls_cert = Some(fixture("server.pem"));
        c.tls_key = Some(fixture("server-key.pem"));
    })
    .await;
    let miner = harness.miners[0].clone();
    let worker_key = miner.public();
    let config = WorkerConfig {
        coordinator: format!("wss://localhost:{}", harness.ws_addr.port()),
        coordinator_hotkey: Some(harness.coordinator_key.to_string()),
        tls_ca: Some(fixture("test-ca.pem")),
        name: "tls-worker".into(),
        backend: "cpu".into(),
        ..WorkerConfig::default()
    };
    let identity =
        WorkerIdentity::self_delegated(miner, Duration::from_secs(3600), UnixMillis::now());
    let device = DeviceKey::new("cpu:tls-test").expect("device key");
    let stop = CancellationToken::new();
    let worker = tokio::spawn(run_worker_with_token(
        config,
        identity,
        Arc::new(CpuBackend::with_device_key(device)),
        stop.clone(),
    ));

    let verified = harness.verified(&worker_key, 1).await;
    assert!(verified[0].gflops.is_some_and(|g| g > 0.0), "{verified:?}");

    // A client that sends plain bytes where a TLS ClientHello belongs.
    let mut plain = tokio::net::TcpStream::connect(harness.ws_addr).await.expect("connects");
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("writes");
    let refused = harness.rejection("tls_handshake", None).await;
    assert!(refused.iter().all(|r| r.worker_key.is_none()), "{refused:?}");

    stop.cancel();
    let _ = worker.await;
    harness.shutdown().await;
}
