//! The real coordinator process (`veribench coordinator run`), killed with SIGKILL in the middle of
//! a round and restarted on the same database and ports: what was verified stays verified, what was
//! in flight is failed as `coordinator_restart`, and the workers reconnect and are verified again.
//! SIGTERM then stops it cleanly.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{CoordinatorProcess, free_port};
use common::{Behaviour, Identity, PATIENCE, TestWorker, WorkerOptions, eventually, keypair};
use serde_json::Value;
use veribench_protocol::UnixMillis;
use veribench_wallet::Wallet;

/// Every challenge, through the HTTP API, oldest first.
async fn challenges(http: SocketAddr) -> Vec<Value> {
    let r = common::http_get(http, "/api/v1/challenges?limit=1000").await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut all = r.json().as_array().expect("a JSON array").clone();
    all.sort_by_key(|c| c["id"].as_u64());
    all
}

fn id(c: &Value) -> u64 {
    c["id"].as_u64().expect("id")
}

fn is_terminal(c: &Value) -> bool {
    matches!(c["status"].as_str(), Some("verified" | "failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_round_keeps_results_and_serves_reconnected_workers() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let wallets = dir.path().join("wallets");
    let coordinator_key = Wallet::new(&wallets, "coordinator")
        .expect("wallet")
        .create_hotkey("default", false)
        .expect("coordinator hotkey")
        .public();
    let miner = keypair();
    // The miner is registered on the subnet of a local chain the coordinator reads.
    let chain_path = dir.path().join("chain.json");
    let chain = common::LocalChain::open(&chain_path).expect("local chain");
    chain.register(common::NETUID, miner.public(), miner.public(), 0, false).expect("register");
    let (ws_port, http_port) = (free_port(), free_port());
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            r#"ws_listen = "127.0.0.1:{ws_port}"
http_listen = "127.0.0.1:{http_port}"
db = "sqlite://{db}"

[wallet]
name = "coordinator"
hotkey = "default"
path = "{wallets}"

[chain]
network = "file:{chain}"
netuid = 1

[schedule]
interval_secs = 1.0
jitter_secs = 0.2
deadline_secs = 4.0
open_timeout_secs = 3.0
mode = "int8"
cpu_n = 64
cpu_k = 64
sampled_rows = 32

[liveness]
heartbeat_secs = 1.0
offline_after_secs = 10.0
ping_secs = 0.5
handshake_timeout_secs = 2.0
"#,
            db = dir.path().join("db").join("coordinator.db").display(),
            wallets = wallets.display(),
            chain = chain_path.display(),
        ),
    )
    .expect("write config");
    let log = dir.path().join("coordinator.log");

    let mut process = CoordinatorProcess::spawn(&config, &log);
    process.healthy(http).await;

    let url = format!("ws://127.0.0.1:{ws_port}/");
    let reconnect = WorkerOptions { reconnect: true, ..Default::default() };
    let quick = TestWorker::spawn(
        &url,
        Identity::new("quick", &miner, vec![common::unique_device("quick")]),
        Behaviour::Honest,
        reconnect,
    );
    // Holds its commitments back, so one of its challenges is in flight when the process dies.
    let slow = TestWorker::spawn(
        &url,
        Identity::new("slow", &miner, vec![common::unique_device("slow")]),
        Behaviour::Honest,
        WorkerOptions { commit_delay: Duration::from_millis(1500), ..reconnect },
    );
    let slow_key = slow.key().to_string();
    let slow_key = slow_key.as_str();
    let before = eventually("a verified and an in-flight challenge", PATIENCE, || async move {
        let all = challenges(http).await;
        let verified = all.iter().any(|c| c["status"] == "verified");
        let in_flight = all.iter().any(|c| c["worker_key"] == slow_key && !is_terminal(c));
        (verified && in_flight).then_some(all)
    })
    .await;
    process.kill();
    let killed_at = UnixMillis::now();
    for w in [&quick, &slow] {
        assert!(w.welcomes().iter().all(|w| w.coordinator == coordinator_key));
        assert!(w.challenges().iter().all(|(_, signature_ok)| *signature_ok));
    }

    let mut process = CoordinatorProcess::spawn(&config, &log);
    process.healthy(http).await;
    let after = challenges(http).await;
    let old: Vec<&Value> = after
        .iter()
        .filter(|c| c["issued_at_ms"].as_u64().is_some_and(|t| t <= killed_at.0))
        .collect();
    let max_old = old.iter().map(|c| id(c)).max().expect("challenges of the first run");
    assert!(max_old >= before.iter().map(id).max().expect("some"));

    // What was verified before the kill is still verified, unchanged.
    for b in before.iter().filter(|c| c["status"] == "verified") {
        let a = after.iter().find(|a| id(a) == id(b)).expect("still stored");
        assert_eq!(a["status"], "verified", "{a}");
        assert_eq!(a["gflops"], b["gflops"]);
        assert_eq!(a["root"], b["root"]);
        assert_eq!(a["credited"], true);
    }
    // Nothing of the first run is left in flight; what was in flight failed as a restart.
    for c in &old {
        assert!(is_terminal(c), "left in flight after the restart: {c}");
    }
    let restarted: Vec<&&Value> =
        old.iter().filter(|c| c["reason"] == "coordinator_restart").collect();
    assert!(!restarted.is_empty(), "no challenge failed as coordinator_restart: {old:?}");
    for c in &restarted {
        assert_eq!(c["status"], "failed");
        assert_eq!(c["credited"], false);
    }
    for b in before.iter().filter(|c| c["worker_key"] == slow_key && !is_terminal(c)) {
        let a = after.iter().find(|a| id(a) == id(b)).expect("still stored");
        assert_eq!(a["reason"], "coordinator_restart", "{a}");
    }

    // Both workers reconnect and are verified again, on new challenges.
    for w in [&quick, &slow] {
        let key = w.key().to_string();
        let key = key.as_str();
        eventually("a verification after the restart", Duration::from_secs(20), || async move {
            challenges(http)
                .await
                .into_iter()
                .find(|c| c["worker_key"] == key && c["status"] == "verified" && id(c) > max_old)
        })
        .await;
        assert!(
            w.welcomes().len() >= 2,
            "{} registered {} times",
            w.identity.name,
            w.welcomes().len()
        );
    }
    let workers = common::http_get(http, "/api/v1/workers").await.json();
    let workers = workers.as_array().expect("a JSON array");
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w["online"] == true), "{workers:?}");

    quick.stop().await;
    slow.stop().await;
    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(30)).await;
    let status = status.unwrap_or_else(|| {
        panic!("the coordinator did not exit after SIGTERM:\n{}", process.log_tail())
    });
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", process.log_tail());
    drop(dir);
}
