//! Many validators over real sockets, with TLS: the coordinator's TLS listener with the real
//! worker daemon connecting over `wss://` (plain TCP refused), workers that find coordinators on
//! the local chain and follow their permits and certificates, and a device shared by two
//! coordinators through `busy` (SPEC §8.8).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::free_port;
use common::{Db, Harness, LocalChain, NETUID, TestDb, eventually, fast_config, keypair};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use veribench_chain::CertFingerprint;
use veribench_coordinator::Running;
use veribench_coordinator::announce::{AnnounceConfig, FingerprintSetting};
use veribench_kernels::{Backend, CpuBackend, Delayed};
use veribench_protocol::{DeviceKey, PublicKey, UnixMillis};
use veribench_wallet::{BITTENSOR_SS58_PREFIX, Keypair, ss58_encode};
use veribench_worker::daemon::{
    DiscoveryConfig, WorkerConfig, WorkerIdentity, run_worker_with_token,
};

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

// ------------------------------------------------------------------------- many validators

/// Stake of a test validator: 10,000 TAO in rao, above the workers' default minimum.
const STAKE: u64 = 10_000_000_000_000;
/// Local-chain block time: a worker following the chain every block sees a change within it.
const BLOCK_MS: u64 = 200;
/// How long anything below may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A local chain with `miners` registered miners, one block every [`BLOCK_MS`].
struct Subnet {
    chain: LocalChain,
    miners: Vec<Keypair>,
    dir: tempfile::TempDir,
}

impl Subnet {
    fn new(miners: usize) -> Subnet {
        let dir = tempfile::tempdir().expect("temp dir");
        let chain = LocalChain::open(dir.path().join("chain.json")).expect("local chain");
        chain.set_block_ms(BLOCK_MS).expect("block time");
        let miners: Vec<Keypair> = (0..miners).map(|_| keypair()).collect();
        for m in &miners {
            chain.register(NETUID, m.public(), m.public(), 0, false).expect("register a miner");
        }
        Subnet { chain, miners, dir }
    }

    /// Sets a validator's permit (stake unchanged).
    fn set_permit(&self, validator: &Validator, permit: bool) {
        let key = validator.keys.public();
        self.chain.register(NETUID, key, key, STAKE, permit).expect("re-register");
    }
}

/// A coordinator on its own hotkey and database, serving the fixture certificate on
/// `wss://localhost:PORT` and announcing that URL with `fingerprint`.
struct Validator {
    running: Running,
    keys: Keypair,
    _db: TestDb,
}

impl Validator {
    async fn start(
        subnet: &Subnet,
        permit: bool,
        fingerprint: FingerprintSetting,
        tweak: impl FnOnce(&mut veribench_coordinator::CoordinatorConfig),
    ) -> Validator {
        Self::start_on(Db::Sqlite, keypair(), subnet, permit, fingerprint, tweak).await
    }

    /// [`Self::start`] with `keys` on a database of `kind`.
    async fn start_on(
        kind: Db,
        keys: Keypair,
        subnet: &Subnet,
        permit: bool,
        fingerprint: FingerprintSetting,
        tweak: impl FnOnce(&mut veribench_coordinator::CoordinatorConfig),
    ) -> Validator {
        subnet
            .chain
            .register(NETUID, keys.public(), keys.public(), STAKE, permit)
            .expect("register the validator");
        let db = TestDb::create(kind).await;
        let port = free_port();
        let mut config = fast_config();
        config.db = db.url.clone();
        config.ws_listen = ([127, 0, 0, 1], port).into();
        config.chain.network = format!("file:{}", subnet.chain.path().display());
        config.chain.netuid = NETUID.0;
        config.tls_cert = Some(fixture("server.pem"));
        config.tls_key = Some(fixture("server-key.pem"));
        config.announce = AnnounceConfig {
            url: Some(format!("wss://localhost:{port}")),
            fingerprint,
            check_secs: 0.5,
            block_secs: BLOCK_MS as f64 / 1000.0,
            ..AnnounceConfig::default()
        };
        tweak(&mut config);
        let running =
            veribench_coordinator::start(config, keys.clone(), Arc::new(subnet.chain.clone()))
                .await
                .expect("the coordinator starts");
        Validator { running, keys, _db: db }
    }

    fn ss58(&self) -> String {
        ss58_encode(&self.keys.public(), BITTENSOR_SS58_PREFIX).expect("ss58")
    }

    /// Connected workers.
    fn connected(&self) -> usize {
        self.running.coordinator.load().0
    }

    /// `(verified, failed, busy)` of `miner` in this coordinator's own store.
    async fn tally(&self, miner: &PublicKey) -> (u64, u64, u64) {
        let miners = self.running.coordinator.store().miners().await.expect("miners");
        miners
            .iter()
            .find(|m| &m.hotkey == miner)
            .map_or((0, 0, 0), |m| (m.verified, m.failed, m.busy))
    }

    /// Waits until this coordinator has verified `n` challenges of `miner`.
    async fn verifies(&self, miner: &PublicKey, n: u64) {
        let what = format!("{n} verified challenges of {miner} at {}", self.ss58());
        eventually(&what, PATIENCE, || async { (self.tally(miner).await.0 >= n).then_some(()) })
            .await;
    }
}

/// A worker of `miner` that finds its coordinators on `subnet`'s chain, following it every
/// block, and records its decisions in `state`.
fn discovering_worker(
    subnet: &Subnet,
    miner: &Keypair,
    backend: Arc<dyn Backend>,
    state: &Path,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), veribench_worker::daemon::DaemonError>> {
    let config = WorkerConfig {
        coordinator: String::new(),
        discovery: DiscoveryConfig {
            network: Some(format!("file:{}", subnet.chain.path().display())),
            netuid: Some(NETUID.0),
            refresh_blocks: 1,
            poll_secs: 0.1,
            state_file: Some(state.to_owned()),
            // Every coordinator here listens on localhost.
            allow_private_endpoints: true,
            ..DiscoveryConfig::default()
        },
        name: "discovering-worker".into(),
        backend: "cpu".into(),
        ..WorkerConfig::default()
    };
    let identity =
        WorkerIdentity::self_delegated(miner.clone(), Duration::from_secs(3600), UnixMillis::now());
    tokio::spawn(run_worker_with_token(config, identity, backend, stop.clone()))
}

/// The worker's persisted decision about `validator`: `(status, reason)`.
fn decision(state: &Path, validator: &Validator) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(state).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let entry = state["coordinators"]
        .as_array()?
        .iter()
        .find(|e| e["hotkey"] == validator.ss58().as_str())?
        .clone();
    Some((entry["status"].as_str()?.to_owned(), entry["reason"].as_str().map(str::to_owned)))
}

/// Waits until the worker's state file says `status` (and `reason`) about `validator`.
async fn decided(state: &Path, validator: &Validator, status: &str, reason: Option<&str>) {
    let want = (status.to_owned(), reason.map(str::to_owned));
    let what = format!("the worker's decision {want:?} about {}", validator.ss58());
    eventually(&what, PATIENCE, || {
        let matches = decision(state, validator).as_ref() == Some(&want);
        async move { matches.then_some(()) }
    })
    .await;
}

fn cpu(label: &str) -> Arc<dyn Backend> {
    Arc::new(CpuBackend::with_device_key(common::unique_device(label)))
}

/// A worker told no coordinator serves the two permitted ones, refuses one whose announced
/// certificate is not the one it serves and one without a permit, and drops a coordinator within
/// a refresh of its permit being revoked, while the other keeps verifying it.
#[tokio::test]
async fn discovery_follows_permits_and_pins_certificates() {
    let subnet = Subnet::new(1);
    let miner = subnet.miners[0].clone();
    let auto = FingerprintSetting::Auto;
    let a = Validator::start(&subnet, true, auto.clone(), |_| {}).await;
    let b = Validator::start(&subnet, true, auto.clone(), |_| {}).await;
    let other = CertFingerprint::of_der(b"not the certificate this coordinator serves");
    let wrong = Validator::start(&subnet, true, FingerprintSetting::Pinned(other), |_| {}).await;
    let rogue = Validator::start(&subnet, false, auto, |_| {}).await;

    let state = subnet.dir.path().join("worker-coordinators.json");
    let stop = CancellationToken::new();
    let worker = discovering_worker(&subnet, &miner, cpu("discovery"), &state, &stop);

    a.verifies(&miner.public(), 1).await;
    b.verifies(&miner.public(), 1).await;
    decided(&state, &wrong, "refused", Some("fingerprint_mismatch")).await;
    decided(&state, &rogue, "refused", Some("no_validator_permit")).await;
    assert_eq!(wrong.connected(), 0, "a certificate mismatch never reaches the Register");
    assert_eq!(rogue.connected(), 0, "a coordinator without a permit is never dialled");
    assert_eq!(rogue.tally(&miner.public()).await, (0, 0, 0));
    assert_eq!(decision(&state, &a), Some(("trusted".into(), None)));

    // Revoked: the worker drops the connection at its next read of the chain.
    let revoked_at = Instant::now();
    subnet.set_permit(&b, false);
    eventually("b's worker connection dropped", PATIENCE, || async {
        (b.connected() == 0).then_some(())
    })
    .await;
    let took = revoked_at.elapsed();
    decided(&state, &b, "refused", Some("no_validator_permit")).await;
    let before = a.tally(&miner.public()).await.0;
    a.verifies(&miner.public(), before + 1).await;
    assert_eq!(a.connected(), 1, "a keeps its connection: {took:?}");

    stop.cancel();
    worker.await.expect("joins").expect("the worker stops cleanly");
    for v in [a, b, wrong, rogue] {
        v.running.shutdown().await;
    }
}

/// Two coordinators share one device that takes most of a round interval per challenge: their
/// challenges collide, the device computes one and refuses the other `busy` at once, and each
/// coordinator verifies the device regardless, counting no failure.
#[tokio::test]
async fn coordinators_share_a_busy_device_without_failing_it() {
    let subnet = Subnet::new(1);
    let miner = subnet.miners[0].clone();
    let retry_soon = |c: &mut veribench_coordinator::CoordinatorConfig| {
        c.schedule.busy_retry_secs = 0.3;
    };
    let a = Validator::start(&subnet, true, FingerprintSetting::Auto, retry_soon).await;
    let b = Validator::start(&subnet, true, FingerprintSetting::Auto, retry_soon).await;
    let state = subnet.dir.path().join("worker-coordinators.json");
    let stop = CancellationToken::new();
    let device = common::unique_device("shared");
    let slow = Delayed::new(CpuBackend::with_device_key(device), Duration::from_millis(700));
    let worker = discovering_worker(&subnet, &miner, Arc::new(slow), &state, &stop);

    // Each coordinator wants the device every second for 0.7 s: together more than it has.
    a.verifies(&miner.public(), 3).await;
    b.verifies(&miner.public(), 3).await;
    let (ta, tb) = (a.tally(&miner.public()).await, b.tally(&miner.public()).await);
    assert!(ta.2 + tb.2 >= 1, "no challenge met the busy device: a {ta:?}, b {tb:?}");
    assert_eq!((ta.1, tb.1), (0, 0), "busy is not a failure: a {ta:?}, b {tb:?}");

    stop.cancel();
    worker.await.expect("joins").expect("the worker stops cleanly");
    a.running.shutdown().await;
    b.running.shutdown().await;
}

// ------------------------------------------------------------------------------- consensus

/// Four coordinators, two on SQLite and two on PostgreSQL, agree over gRPC on loopback on each
/// epoch's weights (epochs of 10 blocks of the local chain), store every decision alike, and
/// each submits the agreed vector through its own submission path. The API and `veribench
/// coordinator consensus status` report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_coordinators_agree_on_the_weights_they_submit() {
    let subnet = Subnet::new(1);
    let miner = subnet.miners[0].clone();
    let keys: Vec<Keypair> = (0..4).map(|_| keypair()).collect();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let wal_dir = tempfile::tempdir().expect("temp dir");
    let mut validators = Vec::new();
    for (i, db) in [Db::Sqlite, Db::Postgres, Db::Sqlite, Db::Postgres].into_iter().enumerate() {
        let peers = (0..4)
            .filter(|&j| j != i)
            .map(|j| veribench_coordinator::consensus::PeerConfig {
                hotkey: keys[j].public().to_string(),
                url: format!("http://127.0.0.1:{}", ports[j]),
            })
            .collect();
        let wal = wal_dir.path().join(format!("validator{i}.wal"));
        let port = ports[i];
        let consensus = move |c: &mut veribench_coordinator::CoordinatorConfig| {
            let k = &mut c.consensus;
            k.enabled = true;
            k.listen = ([127, 0, 0, 1], port).into();
            k.peers = peers;
            k.epoch_blocks = 10;
            k.poll_secs = 0.1;
            k.wal = wal;
            k.timeout_propose_ms = 1000;
            k.timeout_prevote_ms = 500;
            k.timeout_precommit_ms = 500;
            k.timeout_delta_ms = 250;
            k.sync_after_secs = 3.0;
            // A test lives seconds: one bucket online is full availability, one verified
            // challenge full participation.
            c.scoring.availability_buckets = 1;
            c.scoring.participation_baseline = 1;
        };
        let v = Validator::start_on(
            db,
            keys[i].clone(),
            &subnet,
            true,
            FingerprintSetting::Auto,
            consensus,
        )
        .await;
        validators.push(v);
    }
    let state = subnet.dir.path().join("worker-coordinators.json");
    let stop = CancellationToken::new();
    let worker = discovering_worker(&subnet, &miner, cpu("consensus"), &state, &stop);
    for v in &validators {
        v.verifies(&miner.public(), 1).await;
    }

    // Every coordinator submits an agreed vector that gives the miner weight.
    let mut submitted = Vec::new();
    for v in &validators {
        let set = eventually("an agreed vector on chain", Duration::from_secs(90), || async {
            let sets = v.running.coordinator.store().weight_sets(50).await.ok()?;
            sets.into_iter().find(|s| {
                s.decision_height.is_some()
                    && s.status == veribench_coordinator::store::WeightSetStatus::Submitted
                    && s.entries.iter().any(|e| e.hotkey == miner.public() && e.weight > 0)
            })
        })
        .await;
        submitted.push(set);
    }
    // Whatever height each submitted, the stores agree on every decided height and on the
    // agreed vector recorded for it.
    /// A decision as compared: the value id and the agreed weights.
    type Decided = ([u8; 32], Vec<u16>);
    let mut by_height: std::collections::BTreeMap<u64, Vec<Decided>> = Default::default();
    for v in &validators {
        for d in v.running.coordinator.store().decisions(None, 100).await.expect("decisions") {
            by_height.entry(d.height).or_default().push((d.value_id, d.aggregate));
        }
    }
    let common: Vec<u64> =
        by_height.iter().filter(|(_, ds)| ds.len() == 4).map(|(h, _)| *h).collect();
    assert!(!common.is_empty(), "no height decided by all four: {by_height:?}");
    for (height, ds) in &by_height {
        assert!(ds.iter().all(|d| d == &ds[0]), "height {height} decided two ways: {ds:?}");
    }
    for (v, set) in validators.iter().zip(&submitted) {
        let height = set.decision_height.expect("a decision");
        let decided = &by_height[&height][0].1;
        for e in &set.entries {
            assert_eq!(Some(&e.weight), decided.get(usize::from(e.uid)), "{set:?}");
        }
        let mg = v.running.coordinator.metagraph().expect("metagraph");
        let uid = mg.uid(&v.keys.public()).expect("uid");
        let on_chain = subnet.chain.weights(NETUID).expect("weights").remove(&uid).expect("set");
        assert!(
            on_chain.iter().any(|(u, w)| *u == mg.uid(&miner.public()).expect("uid") && *w > 0)
        );
    }

    // The API and the operator's command.
    let http = validators[1].running.http_addr;
    let api = common::http_get(http, "/api/v1/consensus?limit=5").await;
    assert_eq!(api.status, 200, "{}", api.body);
    let body: serde_json::Value = serde_json::from_str(&api.body).expect("JSON");
    assert_eq!(body["enabled"], true, "{body}");
    assert!(body["status"]["heights_decided"].as_u64().is_some_and(|n| n >= 1), "{body}");
    assert_eq!(body["status"]["validators"], 4, "{body}");
    assert!(!body["decisions"].as_array().expect("decisions").is_empty(), "{body}");
    let metrics = common::http_get(http, "/metrics").await;
    assert!(metrics.body.contains("veribench_consensus_heights_decided_total"), "{}", metrics.body);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_veribench"))
        .args(["coordinator", "consensus", "status", "--api", &format!("http://{http}")])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("decision height") && text.contains("validators 4"), "{text}");

    stop.cancel();
    let _ = worker.await;
    for v in validators {
        v.running.shutdown().await;
    }
}
