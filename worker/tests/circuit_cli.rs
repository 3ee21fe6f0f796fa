//! The miner's `circuit` commands as `veribench-worker` runs them, against a real S3-compatible
//! server (s3s-fs on loopback, the harness of the circuit crate's tests): TOML configuration
//! files, `publish`, `offer --out`, then a validator fetch of that offer from the validator's
//! TOML configuration, a cache hit, and a hotkey without a commitment refused with its code.

#![allow(clippy::unwrap_used)]

#[path = "../../circuit/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::*;
use veribench_chain::Chain;
use veribench_circuit::{CircuitOffer, FetchConfig, Fetcher};
use veribench_protocol::UnixMillis;
use veribench_worker::circuit_cli::{MinerArtifactArgs, WorkerCircuitCommand, run_worker_circuit};

/// `publish` and `offer --out` from a TOML configuration, then the offer fetched by a validator.
#[tokio::test]
async fn cli_publish_offer_fetch_with_toml_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let local = chain(tmp.path());
    let dir = artifact(tmp.path(), 20);
    let miner_toml = tmp.path().join("miner.toml");
    std::fs::write(
        &miner_toml,
        format!(
            r#"url_expiry_secs = 900

[artifact]
files = ["vk.key", "pk.key", "settings.json", "model.compiled"]
committed = "vk.key"

[storage]
provider = "s3"
endpoint = "http://127.0.0.1:{port}"
bucket = "{BUCKET}"
region = "us-east-1"
access_key_id = "veribench-test-access"
secret_access_key = "veribench-test-secret-key-0123456789"

[transfer]
connect_timeout_secs = 2
read_timeout_secs = 5
retry = {{ attempts = 2, initial_delay_ms = 10, max_delay_ms = 20 }}
"#,
            port = s3.port
        ),
    )
    .unwrap();
    let args = || MinerArtifactArgs {
        dir: dir.clone(),
        config: Some(miner_toml.clone()),
        files: None,
        committed: None,
    };
    let chain: Arc<dyn Chain> = Arc::new(local.clone());
    run_worker_circuit(
        WorkerCircuitCommand::Publish { artifact: args(), no_progress: true },
        chain.clone(),
        &key(2),
        NET,
    )
    .await
    .unwrap();
    let offer_file = tmp.path().join("offer.json");
    run_worker_circuit(
        WorkerCircuitCommand::Offer {
            artifact: args(),
            expiry_secs: None,
            out: Some(offer_file.clone()),
        },
        chain.clone(),
        &key(2),
        NET,
    )
    .await
    .unwrap();
    let offer: CircuitOffer =
        serde_json::from_str(&std::fs::read_to_string(&offer_file).unwrap()).unwrap();
    let left = offer.expires_at.0 - UnixMillis::now().0;
    assert!((800_000..=900_000).contains(&left), "url_expiry_secs = 900 gives {left} ms");

    let cache = tmp.path().join("cli-cache");
    let coord_toml = tmp.path().join("coordinator.toml");
    std::fs::write(
        &coord_toml,
        format!(
            r#"cache_dir = "{}"
cache_max_bytes = 1073741824
max_file_bytes = 104857600
max_total_bytes = 209715200
max_redirects = 2

[artifact]
committed = "vk.key"

[url_policy]
allowed_hosts = ["127.0.0.1"]
http_hosts = ["127.0.0.1"]

[transfer]
connect_timeout_secs = 2
"#,
            cache.display()
        ),
    )
    .unwrap();
    let cfg = FetchConfig::load(Some(&coord_toml)).unwrap();
    assert_eq!((cfg.cache_dir.as_path(), cfg.max_redirects), (cache.as_path(), 2));
    let fetcher = Fetcher::new(cfg, chain.clone(), NET).unwrap();
    let first = fetcher.fetch(&key(2).public(), &offer).await;
    assert_eq!(first.record.outcome, "fetched", "{:?}", first.result);
    assert!(cache.join(offer.hash.to_hex()).join("pk.key").is_file());
    assert!(fetcher.fetch(&key(2).public(), &offer).await.result.unwrap().cache_hit);

    // The same offer claimed by a hotkey without a commitment is refused with its code.
    let stranger = fetcher.fetch(&key(3).public(), &offer).await;
    assert_eq!(stranger.record.outcome, "no_commitment");
    assert_eq!(stranger.result.unwrap_err().code(), "no_commitment");
}
