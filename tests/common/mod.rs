//! Shared harness of the end-to-end tests: an in-process coordinator on a temporary SQLite file or
//! a fresh PostgreSQL database, generated keys, a scriptable protocol client ([`TestWorker`]) with
//! honest and cheating behaviours, a raw WebSocket client ([`RawConn`]) for hostile input, a tiny
//! HTTP/1.1 client, [`eventually`] to poll for an outcome instead of sleeping, and the coordinator
//! as a real process ([`process`]).

#![allow(dead_code, clippy::unwrap_used)]

pub mod pong_proxy;
pub mod process;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
pub use veribench_chain::{LocalChain, NetUid};
use veribench_coordinator::store::{ChallengeRow, ChallengeStatus, Rejection, Store};
use veribench_coordinator::{Coordinator, CoordinatorConfig, Running};
use veribench_kernels::{CpuBackend, run_challenge};
use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    ChallengeId, Commitment, CommitmentMsg, Delegation, DeviceKey, ErrorMsg, Generator,
    HardwareInfo, Heartbeat, Matrix, Message, Mode, Openings, OpeningsMsg, PublicKey, Register,
    Root, RowOpening, Shape, SignedChallenge, UnixMillis, VerdictMsg, Welcome, leaf_hash,
};
use veribench_wallet::Keypair;

/// Generous bound for anything the fast configuration should reach in about a second.
pub const PATIENCE: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------------------------ polling

/// Polls `probe` every 25 ms until it yields a value; panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, probe).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `probe` every 25 ms until it yields a value, or `None` after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ----------------------------------------------------------------------------------- databases

/// Which database the coordinator under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// A file in a temporary directory.
    Sqlite,
    /// A fresh database `vb_e2e_<random>` on the local server, dropped afterwards.
    Postgres,
}

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The URL handed to the coordinator.
    pub url: String,
    dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// Creates the database.
    pub async fn create(kind: Db) -> TestDb {
        match kind {
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("coordinator.db").display());
                TestDb { url, dir: Some(dir), pg_name: None }
            }
            Db::Postgres => {
                use sqlx::Connection;
                let mut admin = pg_admin().await;
                let name = format!("vb_e2e_{:016x}", rand::random::<u64>());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("CREATE DATABASE");
                let _ = admin.close().await;
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                TestDb { url, dir: None, pg_name: Some(name) }
            }
        }
    }

    /// The temporary directory of an SQLite database.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(|d| d.path())
    }
}

/// A connection to the `postgres` maintenance database, starting the local cluster if it is down.
async fn pg_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    if let Ok(conn) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
        return conn;
    }
    start_postgres();
    let started = Instant::now();
    loop {
        match sqlx::PgConnection::connect(PG_ADMIN_URL).await {
            Ok(conn) => return conn,
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                panic!("PostgreSQL at {PG_ADMIN_URL} is unreachable: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `pg_ctlcluster --skip-systemctl-redirect <version> main start` for every installed version.
fn start_postgres() {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else { return };
    for version in versions.flatten() {
        let version = version.file_name().to_string_lossy().into_owned();
        let _ = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop may run inside the test's runtime (or while unwinding): use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop a test database: {dropped:?}");
        }
    }
}

// ----------------------------------------------------------------------------------- coordinator

/// Settings that make a round last about a second: small CPU challenges, frequent rounds, short
/// timeouts, both listeners on loopback port 0.
pub fn fast_config() -> CoordinatorConfig {
    let mut config = CoordinatorConfig {
        ws_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..CoordinatorConfig::default()
    };
    // Field by field, so settings added later keep their defaults.
    let s = &mut config.schedule;
    s.interval_secs = 1.0;
    s.jitter_secs = 0.2;
    s.deadline_secs = 3.0;
    s.open_timeout_secs = 3.0;
    s.mode = Mode::Int8;
    s.cpu_n = 64;
    s.cpu_k = 64;
    s.gpu_n = 1024;
    s.gpu_k = 1024;
    // Half of the 64 rows: a worker wrong on half the rows cannot slip through.
    s.sampled_rows = 32;
    let l = &mut config.liveness;
    l.heartbeat_secs = 1.0;
    l.offline_after_secs = 10.0;
    l.ping_secs = 0.5;
    l.handshake_timeout_secs = 2.0;
    l.max_clock_skew_secs = 300.0;
    config
}

/// A fresh random keypair.
pub fn keypair() -> Keypair {
    Keypair::from_seed(&rand::random::<[u8; 32]>())
}

/// A device key no other test uses.
pub fn unique_device(label: &str) -> DeviceKey {
    DeviceKey::new(format!("cpu:e2e-{label}-{:012x}", rand::random::<u64>() >> 16))
        .expect("short key")
}

/// An in-process coordinator and what the tests need to talk to it.
#[derive(Debug)]
pub struct Harness {
    running: Option<Running>,
    /// The service, for store and state inspection.
    pub coordinator: Arc<Coordinator>,
    /// `ws://…/` of the worker listener.
    pub ws_url: String,
    /// The worker listener.
    pub ws_addr: SocketAddr,
    /// The HTTP API.
    pub http_addr: SocketAddr,
    /// The key that signs challenges.
    pub coordinator_key: PublicKey,
    /// Miner hotkeys registered on the chain's subnet.
    pub miners: Vec<Keypair>,
    /// The coordinator's keypair (it holds a validator permit on the chain).
    pub coordinator_keys: Keypair,
    /// The file-backed chain the coordinator reads its metagraph from and sets weights on.
    pub chain: LocalChain,
    /// Holds the chain's state file.
    _chain_dir: tempfile::TempDir,
    /// The configuration the coordinator was started with (and is restarted with).
    pub config: CoordinatorConfig,
    /// The database (dropped last).
    pub db: TestDb,
}

/// The subnet every harness uses.
pub const NETUID: NetUid = NetUid(1);

impl Harness {
    /// Starts a coordinator with [`fast_config`] on a fresh local chain where `miners` miner
    /// hotkeys and the coordinator (with a validator permit) are registered on [`NETUID`], and
    /// `tweak` applied to the configuration.
    pub async fn start(db: Db, miners: usize, tweak: impl FnOnce(&mut CoordinatorConfig)) -> Self {
        Self::start_with_chain(db, miners, tweak, |chain| Arc::new(chain)).await
    }

    /// [`Harness::start`] with the coordinator driving `wrap(local chain)` (e.g. a chain that
    /// fails on demand) instead of the local chain itself.
    pub async fn start_with_chain(
        db: Db,
        miners: usize,
        tweak: impl FnOnce(&mut CoordinatorConfig),
        wrap: impl FnOnce(LocalChain) -> Arc<dyn veribench_chain::Chain>,
    ) -> Self {
        let db = TestDb::create(db).await;
        let miners: Vec<Keypair> = (0..miners).map(|_| keypair()).collect();
        let coordinator_keys = keypair();
        let coordinator_key = coordinator_keys.public();
        let chain_dir = tempfile::tempdir().expect("chain dir");
        let chain = LocalChain::open(chain_dir.path().join("chain.json")).expect("local chain");
        chain
            .register(NETUID, coordinator_key, coordinator_key, 1_000_000, true)
            .expect("register the coordinator");
        for m in &miners {
            chain.register(NETUID, m.public(), m.public(), 0, false).expect("register a miner");
        }
        let mut config = fast_config();
        config.db = db.url.clone();
        config.chain.network = format!("file:{}", chain.path().display());
        config.chain.netuid = NETUID.0;
        tweak(&mut config);
        let running = veribench_coordinator::start(
            config.clone(),
            coordinator_keys.clone(),
            wrap(chain.clone()),
        )
        .await
        .expect("the coordinator starts");
        Harness {
            coordinator: running.coordinator.clone(),
            ws_url: format!("ws://{}/", running.ws_addr),
            ws_addr: running.ws_addr,
            http_addr: running.http_addr,
            running: Some(running),
            coordinator_key,
            miners,
            coordinator_keys,
            chain,
            _chain_dir: chain_dir,
            config,
            db,
        }
    }

    /// Stops the coordinator and starts a new one on the same database, chain, keys and
    /// configuration, as an operator restarting it would (the listeners get new ports, and the
    /// new one drives the local chain itself, not a `wrap`per).
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        let chain: Arc<dyn veribench_chain::Chain> = Arc::new(self.chain.clone());
        let running =
            veribench_coordinator::start(self.config.clone(), self.coordinator_keys.clone(), chain)
                .await
                .expect("the coordinator restarts");
        self.coordinator = running.coordinator.clone();
        self.ws_url = format!("ws://{}/", running.ws_addr);
        self.ws_addr = running.ws_addr;
        self.http_addr = running.http_addr;
        self.running = Some(running);
    }

    /// The coordinator's store.
    pub fn store(&self) -> &Store {
        self.coordinator.store()
    }

    /// A new worker identity delegated by miner `miner`, offering one fresh CPU device.
    pub fn identity(&self, miner: usize, name: &str) -> Identity {
        Identity::new(name, &self.miners[miner], vec![unique_device(name)])
    }

    /// Spawns a [`TestWorker`] for `identity`.
    pub fn spawn(
        &self,
        identity: Identity,
        behaviour: Behaviour,
        options: WorkerOptions,
    ) -> TestWorker {
        TestWorker::spawn(&self.ws_url, identity, behaviour, options)
    }

    /// Spawns an honest worker of miner `miner` with default options.
    pub fn honest(&self, miner: usize, name: &str) -> TestWorker {
        self.spawn(self.identity(miner, name), Behaviour::Honest, WorkerOptions::default())
    }

    /// Stops the service and removes the database.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Every challenge of `worker`, oldest first.
    pub async fn challenges_of(&self, worker: &PublicKey) -> Vec<ChallengeRow> {
        challenges_of(self.store(), worker).await
    }

    /// Every stored rejection group of `kind`.
    pub async fn rejections(&self, kind: &str) -> Vec<Rejection> {
        rejections_of(self.store(), kind).await
    }

    /// Waits for `worker`'s first challenge to reach a terminal status and returns it.
    pub async fn first_finished(&self, worker: &PublicKey) -> ChallengeRow {
        let store = self.store();
        eventually("a finished challenge", PATIENCE, || async move {
            challenges_of(store, worker).await.into_iter().find(|c| c.status.is_terminal())
        })
        .await
    }

    /// Waits until `worker` has at least `n` verified challenges and returns them.
    pub async fn verified(&self, worker: &PublicKey, n: usize) -> Vec<ChallengeRow> {
        let store = self.store();
        let found = poll_until(PATIENCE, || async move {
            let verified: Vec<ChallengeRow> = challenges_of(store, worker)
                .await
                .into_iter()
                .filter(|c| c.status == ChallengeStatus::Verified)
                .collect();
            (verified.len() >= n).then_some(verified)
        })
        .await;
        match found {
            Some(verified) => verified,
            None => panic!(
                "timed out after {PATIENCE:?} waiting for {n} verified challenges of {worker}; \
                 its challenges: {}",
                summary(&challenges_of(store, worker).await)
            ),
        }
    }

    /// Waits until at least `n` refusals of `kind` are counted in the store; returns the groups.
    pub async fn counted(&self, kind: &str, n: u64) -> Vec<Rejection> {
        let store = self.store();
        eventually(&format!("{n} {kind} refusals"), PATIENCE, || async move {
            let groups = rejections_of(store, kind).await;
            (total(&groups) >= n).then_some(groups)
        })
        .await
    }

    /// Waits until a rejection of `kind` (optionally concerning `worker`, see [`concerns`]) is
    /// stored and returns the groups of that kind (and worker). Refusals are written to the store
    /// about a second after they happen.
    pub async fn rejection(&self, kind: &str, worker: Option<&PublicKey>) -> Vec<Rejection> {
        let store = self.store();
        eventually(&format!("a {kind} rejection"), PATIENCE, || async move {
            let found: Vec<Rejection> = rejections_of(store, kind)
                .await
                .into_iter()
                .filter(|r| worker.is_none_or(|w| concerns(r, w)))
                .collect();
            (!found.is_empty()).then_some(found)
        })
        .await
    }
}

/// Every challenge of `worker`, oldest first.
pub async fn challenges_of(store: &Store, worker: &PublicKey) -> Vec<ChallengeRow> {
    let mut rows: Vec<ChallengeRow> = store
        .challenges(None, 1000)
        .await
        .expect("list challenges")
        .into_iter()
        .filter(|c| &c.worker_key == worker)
        .collect();
    rows.sort_by_key(|c| c.id);
    rows
}

/// `id:status[:reason]` of each challenge, for failure messages.
pub fn summary(rows: &[ChallengeRow]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|c| match &c.reason {
            Some(reason) => format!("{}:{}:{reason}", c.id, c.status.as_str()),
            None => format!("{}:{}", c.id, c.status.as_str()),
        })
        .collect();
    items.join(" ")
}

/// Whether a rejection group concerns `worker`: as the registered worker it is counted for, or
/// as the key its latest refused registration claimed.
pub fn concerns(r: &Rejection, worker: &PublicKey) -> bool {
    r.worker_key.as_ref() == Some(worker) || r.last_claimed.as_ref() == Some(worker)
}

/// Refusals counted in `groups`.
pub fn total(groups: &[Rejection]) -> u64 {
    groups.iter().map(|r| r.count).sum()
}

/// Every stored rejection group of `kind`.
pub async fn rejections_of(store: &Store, kind: &str) -> Vec<Rejection> {
    store
        .rejections(100_000)
        .await
        .expect("list rejections")
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect()
}

// ------------------------------------------------------------------------------------ identities

/// A worker key, the miner that delegates it and the devices it offers.
#[derive(Clone)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// The worker's own key.
    pub key: Keypair,
    /// The delegating miner hotkey.
    pub miner: Keypair,
    /// Offered devices.
    pub devices: Vec<DeviceKey>,
    /// When the delegation expires.
    pub expires_at: UnixMillis,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("key", &self.key.public())
            .field("miner", &self.miner.public())
            .field("devices", &self.devices)
            .finish()
    }
}

impl Identity {
    /// A fresh worker key delegated by `miner` for an hour.
    pub fn new(name: &str, miner: &Keypair, devices: Vec<DeviceKey>) -> Self {
        Identity {
            name: name.to_owned(),
            key: keypair(),
            miner: miner.clone(),
            devices,
            expires_at: UnixMillis(UnixMillis::now().0 + 3_600_000),
        }
    }

    /// The worker key.
    pub fn public(&self) -> PublicKey {
        self.key.public()
    }

    /// The miner's signed delegation.
    pub fn delegation(&self) -> Delegation {
        veribench_wallet::delegate(&self.miner, self.key.public(), self.expires_at)
    }

    /// A signed registration with a fresh nonce and the current time.
    pub fn register(&self) -> Register {
        let mut reg = Register {
            name: self.name.clone(),
            delegation: self.delegation(),
            hardware: HardwareInfo {
                cpu_model: "e2e test cpu".into(),
                cpu_cores: 2,
                memory_bytes: 1 << 30,
                gpus: vec![],
            },
            devices: self.devices.clone(),
            timestamp: UnixMillis::now(),
            nonce: rand::random(),
            signature: veribench_protocol::Signature([0; 64]),
        };
        sign_register(&mut reg, &self.key);
        reg
    }
}

/// Signs `reg` with `key` (the worker key, for a valid registration).
pub fn sign_register(reg: &mut Register, key: &Keypair) {
    reg.signature = key.sign(&reg.signing_payload());
}

// ------------------------------------------------------------------------------------ behaviours

/// How a [`TestWorker`] answers each challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Computes with the real CPU backend and opens what it committed.
    Honest,
    /// Computes the product itself from the generator, applying `Tamper` before hashing; opens
    /// consistently with its (wrong) commitment.
    Compute(Tamper),
    /// Commits to a product of zeros without computing, then opens the true rows (computed
    /// after the fact) with the proof of the zero tree.
    GarbageRoot,
    /// Answers its first challenge honestly, then every later one with the first one's root and
    /// the first run's openings of the asked rows.
    ReplayFirst,
    /// Never commits.
    Silent,
}

/// What a [`Behaviour::Compute`] worker gets wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tamper {
    /// Round every input to bf16 before multiplying (non-int8 modes).
    pub bf16_inputs: bool,
    /// Skip the odd rows: send zeros instead of computing them.
    pub zero_odd_rows: bool,
}

/// Opens the asked rows of a commitment.
type Opener = Box<dyn Fn(&[u32]) -> Openings + Send + Sync>;

/// A commitment kept until its rows are asked for.
struct Prepared {
    root: Root,
    open: Opener,
}

/// Per-worker memory across challenges and reconnections.
#[derive(Default)]
struct Memory {
    prepared: Mutex<HashMap<ChallengeId, Arc<Prepared>>>,
    first: Mutex<Option<Arc<Prepared>>>,
}

/// The rows of the product of `signed`, computed here from the generator (little-endian i32 for
/// int8, f32 otherwise), with `tamper` applied.
pub fn product_rows(signed: &SignedChallenge, tamper: Tamper) -> Vec<Vec<u8>> {
    let challenge = &signed.challenge;
    let generator = Generator::new(&challenge.device_seed(&signed.device), challenge.mode);
    let Shape { m, k, n } = challenge.shape;
    let (k_us, n_us) = (k as usize, n as usize);
    let mut rows = Vec::with_capacity(m as usize);
    if challenge.mode == Mode::Int8 {
        let mut b = vec![0i8; k_us * n_us];
        for (r, row) in b.chunks_exact_mut(n_us).enumerate() {
            generator.fill_i8(Matrix::B, r as u32, 0, row).expect("int8 elements");
        }
        let mut a = vec![0i8; k_us];
        for i in 0..m {
            generator.fill_i8(Matrix::A, i, 0, &mut a).expect("int8 elements");
            let mut c = vec![0i32; n_us];
            for (t, &at) in a.iter().enumerate() {
                for (cj, &bj) in c.iter_mut().zip(&b[t * n_us..(t + 1) * n_us]) {
                    *cj += i32::from(at) * i32::from(bj);
                }
            }
            rows.push(c.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        }
    } else {
        let round = |x: f32| if tamper.bf16_inputs { half::bf16::from_f32(x).to_f32() } else { x };
        let mut b = vec![0f32; k_us * n_us];
        for (r, row) in b.chunks_exact_mut(n_us).enumerate() {
            generator.fill_f32(Matrix::B, r as u32, 0, row);
        }
        b.iter_mut().for_each(|x| *x = round(*x));
        let mut a = vec![0f32; k_us];
        for i in 0..m {
            generator.fill_f32(Matrix::A, i, 0, &mut a);
            let mut c = vec![0f32; n_us];
            for (t, &at) in a.iter().enumerate() {
                let at = round(at);
                for (cj, &bj) in c.iter_mut().zip(&b[t * n_us..(t + 1) * n_us]) {
                    *cj += at * bj;
                }
            }
            rows.push(c.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        }
    }
    if tamper.zero_odd_rows {
        for row in rows.iter_mut().skip(1).step_by(2) {
            row.fill(0);
        }
    }
    rows
}

/// A commitment over `committed` rows whose openings carry `opened` rows' bytes.
fn commit_rows(signed: &SignedChallenge, committed: &[Vec<u8>], opened: Vec<Vec<u8>>) -> Prepared {
    let seed = signed.challenge.device_seed(&signed.device);
    let leaves: Vec<_> =
        committed.iter().enumerate().map(|(i, row)| leaf_hash(&seed, i as u32, row)).collect();
    let tree = Commitment::from_leaves(&leaves).expect("a non-empty product");
    Prepared {
        root: tree.root(),
        open: Box::new(move |rows: &[u32]| Openings {
            rows: rows
                .iter()
                .map(|&row| RowOpening { row, bytes: opened[row as usize].clone() })
                .collect(),
            proof: tree.prove(rows).expect("rows in range"),
        }),
    }
}

fn honest(signed: &SignedChallenge) -> Prepared {
    let backend = CpuBackend::with_device_key(signed.device.clone());
    let run = run_challenge(&backend, &signed.device, &signed.challenge).expect("CPU backend run");
    let root = run.root();
    Prepared { root, open: Box::new(move |rows: &[u32]| run.open(rows).expect("open rows")) }
}

impl Behaviour {
    /// The commitment to send for `signed`, or `None` to stay silent.
    fn prepare(self, signed: &SignedChallenge, memory: &Memory) -> Option<Arc<Prepared>> {
        Some(Arc::new(match self {
            Behaviour::Honest => honest(signed),
            Behaviour::Compute(tamper) => {
                let rows = product_rows(signed, tamper);
                commit_rows(signed, &rows, rows.clone())
            }
            Behaviour::GarbageRoot => {
                let true_rows = product_rows(signed, Tamper::default());
                let zeros = vec![vec![0u8; true_rows[0].len()]; true_rows.len()];
                commit_rows(signed, &zeros, true_rows)
            }
            Behaviour::ReplayFirst => {
                let mut first = memory.first.lock().unwrap();
                match &*first {
                    Some(earlier) => return Some(earlier.clone()),
                    None => {
                        let prepared = Arc::new(honest(signed));
                        *first = Some(prepared.clone());
                        return Some(prepared);
                    }
                }
            }
            Behaviour::Silent => return None,
        }))
    }
}

// ------------------------------------------------------------------------------------ TestWorker

/// Knobs of a [`TestWorker`].
#[derive(Clone, Copy, Debug)]
pub struct WorkerOptions {
    /// Wait this long after computing before sending the commitment.
    pub commit_delay: Duration,
    /// Reconnect (with backoff, 50 ms doubling to 500 ms) whenever the connection ends.
    pub reconnect: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self { commit_delay: Duration::ZERO, reconnect: false }
    }
}

/// What a [`TestWorker`] saw.
#[derive(Clone, Debug)]
pub enum Event {
    /// The TCP/WebSocket connection was established.
    Connected,
    /// A connection attempt failed.
    ConnectFailed(String),
    /// Registration accepted.
    Welcome(Welcome),
    /// A challenge, and whether its signature verified against the coordinator's key.
    Challenge(SignedChallenge, bool),
    /// Rows asked.
    OpenRequest(ChallengeId, Vec<u32>),
    /// A decision.
    Verdict(VerdictMsg),
    /// A refusal or a failed challenge.
    Error(ErrorMsg),
    /// A binary frame that did not decode.
    Undecodable(String),
    /// The connection ended (close reason or error).
    Closed(String),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// A scripted worker speaking the protocol over a real WebSocket connection.
pub struct TestWorker {
    /// Its identity.
    pub identity: Identity,
    log: Log,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestWorker").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl TestWorker {
    /// Connects to `url` and serves challenges with `behaviour` until stopped.
    pub fn spawn(
        url: &str,
        identity: Identity,
        behaviour: Behaviour,
        options: WorkerOptions,
    ) -> Self {
        let log: Log = Arc::default();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_worker(
            url.to_owned(),
            identity.clone(),
            behaviour,
            options,
            log.clone(),
            stop_rx,
        ));
        TestWorker { identity, log, stop, task }
    }

    /// The worker key.
    pub fn key(&self) -> PublicKey {
        self.identity.public()
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    /// Verdicts received.
    pub fn verdicts(&self) -> Vec<VerdictMsg> {
        self.events()
            .into_iter()
            .filter_map(|e| if let Event::Verdict(v) = e { Some(v) } else { None })
            .collect()
    }

    /// Error frames received.
    pub fn errors(&self) -> Vec<ErrorMsg> {
        self.events()
            .into_iter()
            .filter_map(|e| if let Event::Error(m) = e { Some(m) } else { None })
            .collect()
    }

    /// Accepted registrations.
    pub fn welcomes(&self) -> Vec<Welcome> {
        self.events()
            .into_iter()
            .filter_map(|e| if let Event::Welcome(w) = e { Some(w) } else { None })
            .collect()
    }

    /// Challenges received with their signature check.
    pub fn challenges(&self) -> Vec<(SignedChallenge, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| if let Event::Challenge(c, ok) = e { Some((c, ok)) } else { None })
            .collect()
    }

    /// Stops the worker and waits for its connection to close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn run_worker(
    url: String,
    identity: Identity,
    behaviour: Behaviour,
    options: WorkerOptions,
    log: Log,
    mut stop: watch::Receiver<bool>,
) {
    let memory = Arc::new(Memory::default());
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            c = tokio_tungstenite::connect_async(url.as_str()) => c,
        };
        match connected {
            Ok((ws, _)) => {
                backoff = Duration::from_millis(50);
                log.lock().unwrap().push(Event::Connected);
                let session =
                    Session { identity: &identity, behaviour, options, log: &log, memory: &memory };
                session.run(ws, &mut stop).await;
            }
            Err(e) => log.lock().unwrap().push(Event::ConnectFailed(e.to_string())),
        }
        if !options.reconnect || *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Session<'a> {
    identity: &'a Identity,
    behaviour: Behaviour,
    options: WorkerOptions,
    log: &'a Log,
    memory: &'a Arc<Memory>,
}

impl Session<'_> {
    async fn run(&self, ws: Ws, stop: &mut watch::Receiver<bool>) {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if sink.send(WsMessage::binary(wire::encode(&msg))).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let _ = tx.send(Message::Register(self.identity.register()));
        let mut coordinator: Option<PublicKey> = None;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut seq = 0;
        let limits = Limits::default();
        let log = |e: Event| self.log.lock().unwrap().push(e);
        loop {
            let frame = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = heartbeat.tick() => {
                    if coordinator.is_some() {
                        seq += 1;
                        let _ = tx.send(Message::Heartbeat(Heartbeat { seq, sent_at: UnixMillis::now() }));
                    }
                    continue;
                }
                frame = stream.next() => frame,
            };
            let bytes = match frame {
                None => {
                    log(Event::Closed("end of stream".into()));
                    break;
                }
                Some(Err(e)) => {
                    log(Event::Closed(e.to_string()));
                    break;
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    log(Event::Closed(frame.map(|f| f.reason.to_string()).unwrap_or_default()));
                    continue; // the stream ends right after
                }
                Some(Ok(WsMessage::Binary(bytes))) => bytes,
                Some(Ok(_)) => continue,
            };
            let msg = match wire::decode(&bytes, &limits) {
                Ok(msg) => msg,
                Err(e) => {
                    log(Event::Undecodable(e.to_string()));
                    continue;
                }
            };
            match msg {
                Message::Welcome(w) => {
                    coordinator = Some(w.coordinator);
                    log(Event::Welcome(w));
                }
                Message::Challenge(signed) => {
                    let ok = coordinator.is_some_and(|key| {
                        signed.coordinator == key
                            && veribench_wallet::verify(
                                &key,
                                &signed.signed_bytes(),
                                &signed.signature,
                            )
                    });
                    log(Event::Challenge(signed.clone(), ok));
                    let (behaviour, memory, tx) = (self.behaviour, self.memory.clone(), tx.clone());
                    let delay = self.options.commit_delay;
                    tokio::spawn(async move {
                        let id = signed.challenge.id;
                        let device = signed.device.clone();
                        let mem = memory.clone();
                        let prepared =
                            tokio::task::spawn_blocking(move || behaviour.prepare(&signed, &mem))
                                .await
                                .expect("prepare does not panic");
                        let Some(prepared) = prepared else { return };
                        tokio::time::sleep(delay).await;
                        let root = prepared.root;
                        memory.prepared.lock().unwrap().insert(id, prepared);
                        let _ = tx.send(Message::Commitment(CommitmentMsg {
                            challenge_id: id,
                            device,
                            root,
                        }));
                    });
                }
                Message::OpenRequest(request) => {
                    log(Event::OpenRequest(request.challenge_id, request.rows.clone()));
                    let prepared =
                        self.memory.prepared.lock().unwrap().get(&request.challenge_id).cloned();
                    if let Some(prepared) = prepared {
                        let openings = (prepared.open)(&request.rows);
                        let _ = tx.send(Message::Openings(OpeningsMsg {
                            challenge_id: request.challenge_id,
                            openings,
                        }));
                    }
                }
                Message::Verdict(v) => {
                    self.memory.prepared.lock().unwrap().remove(&v.challenge_id);
                    log(Event::Verdict(v));
                }
                Message::Error(e) => log(Event::Error(e)),
                _ => {}
            }
        }
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
}

// ------------------------------------------------------------------------------------- RawConn

/// What [`RawConn::next`] read.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, matched in place
pub enum Next {
    /// A decoded frame.
    Msg(Message),
    /// A binary frame that does not decode.
    Undecodable(String),
    /// The connection ended: a close frame's reason, an error, or the end of the stream.
    Closed(String),
    /// Nothing arrived in time.
    Timeout,
}

/// A bare WebSocket connection for sending anything at all.
pub struct RawConn {
    /// The stream.
    pub ws: Ws,
}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawConn")
    }
}

impl RawConn {
    /// Connects (WebSocket upgrade only, no registration).
    pub async fn connect(url: &str) -> RawConn {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connect");
        RawConn { ws }
    }

    /// Connects and registers `identity`, expecting a Welcome.
    pub async fn registered(url: &str, identity: &Identity) -> (RawConn, Welcome) {
        let mut conn = RawConn::connect(url).await;
        conn.send(&Message::Register(identity.register())).await.expect("send Register");
        match conn.next(Duration::from_secs(5)).await {
            Next::Msg(Message::Welcome(w)) => (conn, w),
            other => panic!("expected a Welcome, got {other:?}"),
        }
    }

    /// Sends one protocol message.
    pub async fn send(
        &mut self,
        msg: &Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.send_bytes(wire::encode(msg)).await
    }

    /// Sends one binary frame.
    pub async fn send_bytes(
        &mut self,
        bytes: Vec<u8>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(WsMessage::binary(bytes)).await
    }

    /// Sends one text frame.
    pub async fn send_text(
        &mut self,
        text: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(WsMessage::text(text)).await
    }

    /// The next frame of interest (pings and pongs are skipped).
    pub async fn next(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Timeout,
                Ok(frame) => frame,
            };
            return match frame {
                None => Next::Closed("end of stream".into()),
                Some(Err(e)) => Next::Closed(e.to_string()),
                Some(Ok(WsMessage::Close(f))) => {
                    Next::Closed(f.map(|f| f.reason.to_string()).unwrap_or_default())
                }
                Some(Ok(WsMessage::Binary(bytes))) => {
                    match wire::decode(&bytes, &Limits::default()) {
                        Ok(msg) => Next::Msg(msg),
                        Err(e) => Next::Undecodable(e.to_string()),
                    }
                }
                Some(Ok(_)) => continue,
            };
        }
    }

    /// The next Error frame, skipping other messages; `None` if the connection ends or nothing
    /// arrives in time.
    pub async fn next_error(&mut self, timeout: Duration) -> Option<ErrorMsg> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Msg(Message::Error(e)) => return Some(e),
                Next::Msg(_) | Next::Undecodable(_) => continue,
                Next::Closed(_) | Next::Timeout => return None,
            }
        }
    }

    /// Reads until the connection ends; false if it is still open after `timeout`.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Closed(_) => return true,
                Next::Timeout => return false,
                _ => continue,
            }
        }
    }
}

// ----------------------------------------------------------------------------------------- HTTP

/// An HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Lower-cased header names with their values.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    try_http_get(addr, path).await.unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// `GET path`, or the I/O error (connection refused while a server is down).
pub async fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    try_http(addr, "GET", path, &[], b"").await
}

/// `POST path` with `headers` and `body`.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http(addr, "POST", path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("POST http://{addr}{path}: {e}"))
}

/// One HTTP/1.1 request on a fresh connection.
async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    tcp.write_all(request.as_bytes()).await?;
    tcp.write_all(body).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    let body = String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&s| s > 0) else { return out };
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = data.get(start + size + 2..).unwrap_or(&[]);
    }
}
