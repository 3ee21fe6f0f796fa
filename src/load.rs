//! `veribench load`: one coordinator (the real binary, as a child process) under many simulated
//! workers, each a WebSocket connection that registers and then sends heartbeats.
//!
//! The run: generate a coordinator hotkey (written as a btcli wallet), miner hotkeys and worker
//! keys with their delegations; start the coordinator on free loopback ports with challenges
//! pushed out of the run, or with `--round-secs` in synchronized rounds that the workers receive
//! and ignore; connect every worker (a bounded number of handshakes in flight, so the accept queue
//! is not overrun); once all are connected, measure for `--duration-secs` while a sampler scrapes
//! `/metrics` and the coordinator's RSS every second; print a table or one JSON object (with the
//! rounds of the window: store and issue time, the spread of the challenges' arrivals, their
//! expiry); stop the coordinator with SIGTERM. The exit status is non-zero when fewer than
//! `--workers` workers were connected at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use veribench_protocol::wire;
use veribench_protocol::{
    Delegation, DeviceKey, HardwareInfo, Heartbeat, Limits, Message, PublicKey, Register,
    Signature, UnixMillis,
};
use veribench_support::redact_url;
use veribench_wallet::{Keypair, Wallet};

/// Descriptors this process needs beyond one per worker (runtime, scrapes, log, stdio).
const FD_RESERVE: u64 = 256;
/// How long the coordinator has to answer `/healthz` after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// WebSocket upgrade plus registration, per worker, and the coordinator's handshake timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the coordinator has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Distinct failure descriptions kept (with a count and an example each).
const MAX_FAILURE_KINDS: usize = 32;

/// Flags of `veribench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Simulated workers, one WebSocket connection each.
    #[arg(long, default_value_t = 2000)]
    workers: usize,
    /// Miner hotkeys the workers are spread over (round-robin).
    #[arg(long, default_value_t = 20)]
    miners: usize,
    /// Seconds between two heartbeats of one worker (production uses 30).
    #[arg(long, default_value_t = 1.0)]
    heartbeat_secs: f64,
    /// Seconds measured once every worker is connected.
    #[arg(long, default_value_t = 30.0)]
    duration_secs: f64,
    /// Coordinator database: sqlite://path or postgres://…; default: a fresh SQLite file in a
    /// temporary directory.
    #[arg(long)]
    db: Option<String>,
    /// A `veribench-coordinator` binary to run; default: this executable's `coordinator`
    /// subcommand.
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// Connection attempts (WebSocket upgrade and registration) in flight at once.
    #[arg(long, default_value_t = 100)]
    connect_batch: usize,
    /// Print exactly one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Challenge every worker in synchronized rounds (`schedule.synchronized`) this many seconds
    /// apart. The simulated workers ignore their challenges, which miss their deadline a third
    /// of an interval later: what is measured is the coordinator's cost of issuing, storing and
    /// expiring a round, and how far apart one round's challenges reach the workers.
    #[arg(long)]
    round_secs: Option<f64>,
}

/// Runs the load harness.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let fds = raise_fd_limit(args.workers as u64 + FD_RESERVE)?;
    let bin = coordinator_bin(&args)?;
    let dir = tempfile::Builder::new()
        .prefix("veribench-load-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let progress = |msg: String| {
        if !args.json {
            eprintln!("load: {msg}");
        }
    };

    let keys = Keys::generate(dir.path(), args.miners, args.workers)?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("coordinator.db").display()));
    let coordinator = Child::start(&bin, dir.path(), &db, &keys, &args).await;
    let coordinator = match coordinator {
        Ok(c) => c,
        Err(e) => {
            let kept = dir.keep();
            return Err(e.context(format!("files kept in {}", kept.display())));
        }
    };
    progress(format!(
        "coordinator pid {} (ws {}, http {}), db {}; open-file limit {}; connecting {} workers",
        coordinator.pid,
        coordinator.ws,
        coordinator.http,
        redact_url(&db),
        fds,
        args.workers
    ));

    let outcome = tokio::select! {
        r = measure(&args, &coordinator, &keys, &progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let log = coordinator.log.clone();
    let exit = coordinator.stop().await;
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => {
            let kept = dir.keep();
            return Err(e.context(format!(
                "coordinator {exit}; its log is kept at {}",
                kept.join(log.file_name().unwrap_or_default()).display()
            )));
        }
    };
    report.db = redact_url(&db);
    report.coordinator_exit = exit;
    report.fd_limit = fds;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.workers_connected < args.workers {
        let kept = dir.keep();
        bail!(
            "only {} of {} workers were connected at the end (coordinator log kept at {})",
            report.workers_connected,
            args.workers,
            kept.join("coordinator.log").display()
        );
    }
    Ok(())
}

fn check_args(args: &LoadArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.miners == 0 || args.connect_batch == 0 {
        bail!("--workers, --miners and --connect-batch must be at least 1");
    }
    if !(args.heartbeat_secs.is_finite() && args.heartbeat_secs >= 0.001) {
        bail!("--heartbeat-secs must be at least 0.001");
    }
    if !(args.duration_secs.is_finite() && args.duration_secs > 0.0 && args.duration_secs < 1e6) {
        bail!("--duration-secs must be positive");
    }
    if let Some(r) = args.round_secs
        && !(r.is_finite() && (1.0..1e6).contains(&r))
    {
        bail!("--round-secs must be at least 1");
    }
    if let Some(db) = &args.db
        && !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| db.starts_with(p))
    {
        bail!("--db must be sqlite://path or postgres://…, got {}", redact_url(db));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Open-file limit.

/// Raises the soft RLIMIT_NOFILE to the hard limit and checks that `needed` descriptors fit.
/// The coordinator, started afterwards, inherits the raised limit.
fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let limit = veribench_support::fd_limit::raise_fd_limit()
        .context("cannot read the open-file limit (getrlimit)")?;
    let soft = limit.soft;
    if soft < needed {
        bail!(
            "the open-file limit is {soft} (hard limit {}), but {} descriptors are needed: one per \
             simulated worker plus {FD_RESERVE}, and as many again in the coordinator, which \
             inherits the limit. Raise the hard limit (e.g. `ulimit -Hn {needed}` as root, \
             LimitNOFILE= in a systemd unit, or nofile in /etc/security/limits.conf) or run \
             fewer --workers",
            limit.hard,
            needed
        );
    }
    Ok(soft)
}

// ---------------------------------------------------------------------------------------------
// Keys.

/// The coordinator's wallet and the simulated miners and workers.
struct Keys {
    wallets: PathBuf,
    wallet_name: &'static str,
    hotkey_name: &'static str,
    coordinator: PublicKey,
    miners: Vec<PublicKey>,
    workers: Vec<Arc<SimWorker>>,
}

struct SimWorker {
    name: String,
    device: DeviceKey,
    key: Keypair,
    delegation: Delegation,
}

impl Keys {
    fn generate(dir: &Path, miners: usize, workers: usize) -> anyhow::Result<Self> {
        let wallets = dir.join("wallets");
        let (wallet_name, hotkey_name) = ("load-coordinator", "default");
        let coordinator = Keypair::from_seed(&rand::random());
        Wallet::new(&wallets, wallet_name)?
            .save_hotkey(hotkey_name, &coordinator, false)
            .context("cannot write the coordinator hotkey")?;
        let miner_keys: Vec<Keypair> =
            (0..miners).map(|_| Keypair::from_seed(&rand::random())).collect();
        // Device keys are unique per run, so a reused (PostgreSQL) database sees no conflicts.
        let run: u32 = rand::random();
        let expires = UnixMillis(UnixMillis::now().0 + 7 * 24 * 3600 * 1000);
        let workers = (0..workers)
            .map(|i| {
                let key = Keypair::from_seed(&rand::random());
                let delegation =
                    veribench_wallet::delegate(&miner_keys[i % miners], key.public(), expires);
                let device = DeviceKey::new(format!("cpu:load-{run:08x}-{i:06}"))
                    .ok_or_else(|| anyhow!("device key too long"))?;
                Ok(Arc::new(SimWorker { name: format!("load-{i:06}"), device, key, delegation }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            wallets,
            wallet_name,
            hotkey_name,
            coordinator: coordinator.public(),
            miners: miner_keys.iter().map(Keypair::public).collect(),
            workers,
        })
    }
}

impl SimWorker {
    /// A freshly signed registration frame (new timestamp and nonce).
    fn register_frame(&self) -> Vec<u8> {
        let mut reg = Register {
            name: self.name.clone(),
            delegation: self.delegation.clone(),
            hardware: HardwareInfo {
                cpu_model: "veribench load simulator".into(),
                cpu_cores: 1,
                memory_bytes: 1 << 30,
                gpus: Vec::new(),
            },
            devices: vec![self.device.clone()],
            timestamp: UnixMillis::now(),
            nonce: rand::random(),
            signature: Signature([0; 64]),
        };
        reg.signature = self.key.sign(&reg.signing_payload());
        wire::encode(&Message::Register(reg))
    }
}

// ---------------------------------------------------------------------------------------------
// The coordinator process.

struct Child {
    child: tokio::process::Child,
    pid: u32,
    ws: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

impl Child {
    async fn start(
        bin: &CoordinatorBin,
        dir: &Path,
        db: &str,
        keys: &Keys,
        args: &LoadArgs,
    ) -> anyhow::Result<Self> {
        let (ws, http) = free_ports()?;
        let hb = args.heartbeat_secs;
        let frames_per_sec = (4.0 / hb).max(20.0);
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default(); // a valid TOML basic string
        // The miners (and the coordinator) are registered on a local chain the coordinator reads.
        let chain_path = dir.join("chain.json");
        let chain = veribench_chain::LocalChain::open(&chain_path)?;
        let netuid = veribench_chain::NetUid(1);
        chain.register(netuid, keys.coordinator, keys.coordinator, 1, true)?;
        for m in &keys.miners {
            chain.register(netuid, *m, *m, 0, false)?;
        }
        // Without --round-secs, rounds are pushed out of the run: a miner's first round comes
        // `jitter` after its first worker registers, uniformly in [0, jitter_secs); with ~1e9 s
        // the odds of one landing in the run are ~1e-6 per miner.
        let schedule = match args.round_secs {
            None => "interval_secs = 1e9\njitter_secs = 9.99e8\n".to_owned(),
            Some(r) => format!(
                "synchronized = true\ninterval_secs = {r}\njitter_secs = {jitter}\n\
                 deadline_secs = {deadline}\ncpu_n = 64\ncpu_k = 64\n",
                jitter = (r / 10.0).min(1.0),
                deadline = r / 3.0,
            ),
        };
        let config = format!(
            "ws_listen = {ws}\nhttp_listen = {http}\ndb = {db}\n\n\
             [chain]\nnetwork = {network}\nnetuid = {netuid}\n\n\
             [schedule]\n{schedule}\n\
             [liveness]\nheartbeat_secs = {hb}\noffline_after_secs = {offline}\n\
             handshake_timeout_secs = {handshake}\n\n\
             [limits]\nframes_per_sec = {frames_per_sec}\nframe_burst = {burst}\n\
             max_unregistered = {handshakes}\nmax_unregistered_per_address = {handshakes}\n",
            ws = q(&ws.to_string()),
            http = q(&http.to_string()),
            db = q(db),
            network = q(&format!("file:{}", chain_path.display())),
            netuid = netuid.0,
            offline = (hb * 10.0).max(90.0),
            handshake = HANDSHAKE_TIMEOUT.as_secs_f64(),
            burst = (frames_per_sec * 3.0).max(60.0),
            // Every simulated worker connects from this one address.
            handshakes = args.connect_batch.max(1024),
        );
        let config_path = dir.join("coordinator.toml");
        std::fs::write(&config_path, config).context("cannot write the coordinator config")?;
        let log = dir.join("coordinator.log");
        let out = std::fs::File::create(&log).context("cannot create the coordinator log")?;
        let mut command = tokio::process::Command::new(&bin.program);
        command
            .args(bin.prefix)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--wallet.path")
            .arg(&keys.wallets)
            .arg("--wallet.name")
            .arg(keys.wallet_name)
            .arg("--wallet.hotkey")
            .arg(keys.hotkey_name)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        // The operator's VERIBENCH_* settings would override the generated config.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("VERIBENCH_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the coordinator {}", bin.program.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("the coordinator exited at once"))?;

        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the coordinator exited during start-up ({status}):\n{}", log_tail(&log));
            }
            if let Ok((200, _)) = http_get(http, "/healthz").await {
                break;
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "the coordinator did not answer /healthz on {http} within {STARTUP_TIMEOUT:?}:\n{}",
                    log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { child, pid, ws, http, log })
    }

    /// SIGTERM, then wait (and kill after [`STOP_TIMEOUT`]). Describes how it ended.
    async fn stop(mut self) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("had already exited ({status})");
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else { return "has an invalid pid".into() };
        // SAFETY: kill has no memory effects; the pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        match timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => format!(
                "exited after SIGTERM in {:.1} s ({status})",
                started.elapsed().as_secs_f64()
            ),
            Ok(Err(e)) => format!("could not be waited for: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                format!("did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed")
            }
        }
    }
}

/// How to start the coordinator: a program and the arguments before `run`.
#[derive(Debug)]
struct CoordinatorBin {
    program: PathBuf,
    prefix: &'static [&'static str],
}

/// `--coordinator-bin` if given (a `veribench-coordinator`), else this executable's
/// `coordinator` subcommand (the umbrella binary carries the coordinator).
fn coordinator_bin(args: &LoadArgs) -> anyhow::Result<CoordinatorBin> {
    match &args.coordinator_bin {
        Some(p) if !p.is_file() => bail!("coordinator binary {} not found", p.display()),
        Some(p) => Ok(CoordinatorBin { program: p.clone(), prefix: &[] }),
        None => Ok(CoordinatorBin {
            program: std::env::current_exe().context("cannot locate the current executable")?,
            prefix: &["coordinator"],
        }),
    }
}

/// Two free loopback ports (there is a small window for another process to take them).
fn free_ports() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// The client of every request to the coordinator's HTTP listener (plain http on loopback).
fn http_client() -> anyhow::Result<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    // reqwest (rustls without a bundled provider) panics when it builds a client before a
    // provider is installed, even for plain http.
    veribench_support::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    Ok(CLIENT.get_or_init(|| client))
}

/// `GET path` on `addr`; the status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = http_client()?
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.with_context(|| format!("GET {path}: body"))?;
    Ok((status, body))
}

// ---------------------------------------------------------------------------------------------
// Sampling the coordinator.

/// What one `/metrics` scrape says.
#[derive(Clone, Debug, Default)]
struct Scrape {
    heartbeats_total: f64,
    registrations_total: f64,
    workers_online: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    flush_p50: f64,
    flush_p99: f64,
    rejections: BTreeMap<String, f64>,
    rounds_total: f64,
    /// The last round: challenges, store seconds, issue seconds.
    round_last: (f64, f64, f64),
}

fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.trim().rsplit_once(char::is_whitespace) else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        match name.trim() {
            "veribench_heartbeats_total" => s.heartbeats_total = value,
            "veribench_registrations_total" => s.registrations_total = value,
            "veribench_workers_online" => s.workers_online = value,
            "veribench_heartbeat_handling_seconds{quantile=\"0.5\"}" => s.p50 = value,
            "veribench_heartbeat_handling_seconds{quantile=\"0.9\"}" => s.p90 = value,
            "veribench_heartbeat_handling_seconds{quantile=\"0.99\"}" => s.p99 = value,
            "veribench_liveness_flush_seconds{quantile=\"0.5\"}" => s.flush_p50 = value,
            "veribench_liveness_flush_seconds{quantile=\"0.99\"}" => s.flush_p99 = value,
            "veribench_rounds_total" => s.rounds_total = value,
            "veribench_round_last{what=\"challenges\"}" => s.round_last.0 = value,
            "veribench_round_last{what=\"store_seconds\"}" => s.round_last.1 = value,
            "veribench_round_last{what=\"issue_seconds\"}" => s.round_last.2 = value,
            other => {
                if let Some(kind) = other
                    .strip_prefix("veribench_rejections_total{kind=\"")
                    .and_then(|k| k.strip_suffix("\"}"))
                {
                    s.rejections.insert(kind.to_owned(), value);
                }
            }
        }
    }
    s
}

/// One sample of the coordinator and the host.
#[derive(Clone, Debug, Default)]
struct Sample {
    at: Option<Instant>,
    scrape: Option<Scrape>,
    rss_kb: Option<u64>,
    cpu_ticks: Option<u64>,
    load_1m: Option<f64>,
}

async fn sample(http: SocketAddr, pid: u32) -> Sample {
    let scrape = match http_get(http, "/metrics").await {
        Ok((200, body)) => Some(parse_metrics(&body)),
        _ => None,
    };
    Sample {
        at: Some(Instant::now()),
        scrape,
        rss_kb: rss_kb(pid),
        cpu_ticks: cpu_ticks(pid),
        load_1m: load_1m(),
    }
}

/// VmRSS of `pid`, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at the state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

// ---------------------------------------------------------------------------------------------
// Simulated workers.

/// Shared counters of the simulated workers.
#[derive(Default)]
struct Counters {
    /// Connection attempts finished (either way).
    settled: AtomicUsize,
    /// Registered (Welcome received).
    registered: AtomicUsize,
    /// Registered and still connected.
    live: AtomicUsize,
    connect_failed: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    heartbeats_sent: AtomicU64,
    coordinator_errors: AtomicU64,
    /// Failure description → (count, example).
    failures: Mutex<BTreeMap<String, (u64, String)>>,
    /// Challenge rounds as the workers saw them, by issue time (ms).
    rounds: Mutex<BTreeMap<u64, RoundSeen>>,
}

/// Rounds remembered by [`Counters::round_event`]; one run has far fewer.
const MAX_ROUNDS: usize = 10_000;

/// What a simulated worker saw of a round.
enum RoundEvent {
    /// Its challenge arrived.
    Challenge,
    /// Its challenge was failed for a missed deadline.
    Expired,
}

/// One round as the simulated workers saw it.
#[derive(Clone, Debug)]
struct RoundSeen {
    challenges: u64,
    /// First and last challenge frame's arrival.
    first: Instant,
    last: Instant,
    /// The last challenge's arrival by the wall clock, ms since the epoch.
    last_ms: u64,
    expired: u64,
    /// First and last deadline failure's arrival.
    expired_first: Option<Instant>,
    expired_last: Option<Instant>,
}

impl Counters {
    fn round_event(&self, issued: u64, event: RoundEvent) {
        let Ok(mut rounds) = self.rounds.lock() else { return };
        let now = Instant::now();
        if rounds.len() >= MAX_ROUNDS && !rounds.contains_key(&issued) {
            return;
        }
        let round = rounds.entry(issued).or_insert(RoundSeen {
            challenges: 0,
            first: now,
            last: now,
            last_ms: 0,
            expired: 0,
            expired_first: None,
            expired_last: None,
        });
        match event {
            RoundEvent::Challenge => {
                round.challenges += 1;
                round.last = now;
                round.last_ms = UnixMillis::now().0;
            }
            RoundEvent::Expired => {
                round.expired += 1;
                round.expired_first.get_or_insert(now);
                round.expired_last = Some(now);
            }
        }
    }

    fn note(&self, kind: String, example: String) {
        let Ok(mut m) = self.failures.lock() else { return };
        if m.len() < MAX_FAILURE_KINDS || m.contains_key(&kind) {
            m.entry(kind).or_insert((0, example)).0 += 1;
        } else {
            m.entry("other".into()).or_insert((0, example)).0 += 1;
        }
    }
}

/// Why a connection attempt failed.
enum Failure {
    Connect(String),
    Refused(String),
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Connects, registers and waits for the Welcome.
async fn connect(url: &str, worker: &SimWorker, coordinator: &PublicKey) -> Result<Ws, Failure> {
    // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read: keep
    // it small, thousands of simulated workers share this process.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    ws.send(WsMessage::binary(worker.register_frame()))
        .await
        .map_err(|e| Failure::Connect(format!("sending the registration: {e}")))?;
    let limits = Limits::default();
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(bytes))) => {
                return match wire::decode(&bytes, &limits) {
                    Ok(Message::Welcome(w)) if &w.coordinator == coordinator => Ok(ws),
                    Ok(Message::Welcome(w)) => Err(Failure::Refused(format!(
                        "welcome from an unexpected coordinator key {}",
                        w.coordinator
                    ))),
                    Ok(Message::Error(e)) => {
                        Err(Failure::Refused(format!("{:?}: {}", e.code, e.message)))
                    }
                    Ok(other) => {
                        Err(Failure::Refused(format!("{} before the Welcome", other.kind())))
                    }
                    Err(e) => Err(Failure::Refused(format!("undecodable reply: {e}"))),
                };
            }
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(Failure::Refused(format!("closed before the Welcome: {frame:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Failure::Connect(format!("before the Welcome: {e}"))),
            None => return Err(Failure::Refused("closed before the Welcome".into())),
        }
    }
}

/// The description a failure is counted under: its text with worker-specific details (keys,
/// timestamps, addresses) elided, so equal failures of different workers count together.
fn failure_kind(prefix: &str, detail: &str) -> String {
    let words: Vec<&str> = detail
        .split_whitespace()
        .map(|w| if w.chars().filter(char::is_ascii_hexdigit).count() >= 8 { "…" } else { w })
        .collect();
    let short: String = words.join(" ").chars().take(100).collect();
    format!("{prefix}: {short}")
}

enum Event {
    Stop,
    Tick,
    Frame(Option<Result<WsMessage, tungstenite::Error>>),
}

/// One simulated worker: connect (holding a slot of `gate`), then heartbeat until `stop`.
async fn worker(
    sim: Arc<SimWorker>,
    url: Arc<str>,
    coordinator: PublicKey,
    gate: Arc<Semaphore>,
    counters: Arc<Counters>,
    interval: Duration,
    stop: CancellationToken,
) {
    let attempt = {
        let _slot = gate.acquire().await;
        match timeout(HANDSHAKE_TIMEOUT, connect(&url, &sim, &coordinator)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Connect(format!("no Welcome within {HANDSHAKE_TIMEOUT:?}"))),
        }
    };
    let mut ws = match attempt {
        Ok(ws) => ws,
        Err(Failure::Connect(e)) => {
            counters.connect_failed.fetch_add(1, Ordering::Relaxed);
            counters.note(failure_kind("connect", &e), e);
            counters.settled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(Failure::Refused(e)) => {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            counters.note(failure_kind("refused", &e), e);
            counters.settled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.registered.fetch_add(1, Ordering::Relaxed);
    counters.live.fetch_add(1, Ordering::Relaxed);
    counters.settled.fetch_add(1, Ordering::Relaxed);

    let limits = Limits::default();
    // The challenge this worker's one device holds, and its round (issue time).
    let mut challenged: Option<(String, u64)> = None;
    let phase = rand::rng().random_range(0.0..interval.as_secs_f64());
    let mut next = tokio::time::Instant::now() + Duration::from_secs_f64(phase);
    let mut seq = 0u64;
    let dropped = loop {
        let event = tokio::select! {
            _ = stop.cancelled() => Event::Stop,
            _ = tokio::time::sleep_until(next) => Event::Tick,
            frame = ws.next() => Event::Frame(frame),
        };
        match event {
            Event::Stop => break None,
            Event::Tick => {
                seq += 1;
                let hb = Message::Heartbeat(Heartbeat { seq, sent_at: UnixMillis::now() });
                if let Err(e) = ws.send(WsMessage::binary(wire::encode(&hb))).await {
                    break Some(format!("sending a heartbeat: {e}"));
                }
                counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                next += interval;
                let now = tokio::time::Instant::now();
                if next < now {
                    next = now + interval; // fell behind: skip rather than burst
                }
            }
            Event::Frame(Some(Ok(WsMessage::Binary(bytes)))) => match wire::decode(&bytes, &limits)
            {
                Ok(Message::Challenge(c)) => {
                    let issued = c.challenge.issued_at.0;
                    challenged = Some((format!("challenge {} ", c.challenge.id), issued));
                    counters.round_event(issued, RoundEvent::Challenge);
                }
                // Ignored challenges miss their deadline: part of the round, not a failure.
                Ok(Message::Error(e))
                    if e.message.contains("deadline_missed")
                        && challenged.as_ref().is_some_and(|(id, _)| e.message.contains(id)) =>
                {
                    if let Some((_, issued)) = challenged.take() {
                        counters.round_event(issued, RoundEvent::Expired);
                    }
                }
                Ok(Message::Error(e)) => {
                    counters.coordinator_errors.fetch_add(1, Ordering::Relaxed);
                    let text = format!("{:?}: {}", e.code, e.message);
                    counters.note(failure_kind("coordinator error", &text), text);
                }
                _ => {}
            },
            Event::Frame(Some(Ok(WsMessage::Close(frame)))) => {
                break Some(format!("closed by the coordinator: {frame:?}"));
            }
            Event::Frame(Some(Ok(_))) => {} // pings are answered by tungstenite
            Event::Frame(Some(Err(e))) => break Some(e.to_string()),
            Event::Frame(None) => break Some("connection closed".into()),
        }
    };
    counters.live.fetch_sub(1, Ordering::Relaxed);
    match dropped {
        Some(e) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            counters.note(failure_kind("dropped", &e), e);
        }
        None => {
            let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

async fn measure(
    args: &LoadArgs,
    coordinator: &Child,
    keys: &Keys,
    progress: &impl Fn(String),
) -> anyhow::Result<Report> {
    let (http, pid) = (coordinator.http, coordinator.pid);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn({
        let (samples, sampling) = (samples.clone(), sampling.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sampling.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let s = sample(http, pid).await;
                if let Ok(mut v) = samples.lock() {
                    v.push(s);
                }
            }
        }
    });

    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(args.connect_batch));
    let url: Arc<str> = format!("ws://{}", coordinator.ws).into();
    let interval = Duration::from_secs_f64(args.heartbeat_secs);
    let started = Instant::now();
    let tasks: Vec<_> = keys
        .workers
        .iter()
        .map(|sim| {
            tokio::spawn(worker(
                sim.clone(),
                url.clone(),
                keys.coordinator,
                gate.clone(),
                counters.clone(),
                interval,
                stop.clone(),
            ))
        })
        .collect();
    let mut last_report = Instant::now();
    while counters.settled.load(Ordering::Relaxed) < args.workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format!(
                "{} of {} connection attempts done ({} registered)",
                counters.settled.load(Ordering::Relaxed),
                args.workers,
                counters.registered.load(Ordering::Relaxed)
            ));
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let registered = counters.registered.load(Ordering::Relaxed);
    progress(format!(
        "{registered} of {} workers registered in {connect_secs:.2} s; measuring for {} s",
        args.workers, args.duration_secs
    ));

    let window = Instant::now();
    let first = sample(http, pid).await;
    let sent_before = counters.heartbeats_sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration_secs)).await;
    let last = sample(http, pid).await;
    let window_end = Instant::now();
    let window_secs = window_end.duration_since(window).as_secs_f64();
    let workers_connected = counters.live.load(Ordering::Relaxed);
    let heartbeats_sent = counters.heartbeats_sent.load(Ordering::Relaxed);

    stop.cancel();
    for task in tasks {
        let _ = timeout(Duration::from_secs(10), task).await;
    }
    sampling.cancel();
    let _ = sampler.await;

    let (Some(a), Some(b)) = (&first.scrape, &last.scrape) else {
        bail!("cannot scrape the coordinator's /metrics on {http}");
    };
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    let all = || samples.iter().chain([&first, &last]);
    let ms = |s: f64| s * 1000.0;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let cpu = match (first.cpu_ticks, last.cpu_ticks) {
        (Some(x), Some(y)) => {
            Some(y.saturating_sub(x) as f64 / clock_ticks_per_sec() / window_secs * 100.0)
        }
        _ => None,
    };
    let c = &counters;
    let failures = Failures {
        connect: c.connect_failed.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        coordinator_errors: c.coordinator_errors.load(Ordering::Relaxed),
        coordinator_rejections: b.rejections.iter().map(|(k, v)| (k.clone(), *v as u64)).collect(),
        kinds: c
            .failures
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, (n, ex))| (k.clone(), FailureKind { count: *n, example: ex.clone() }))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let rounds = args.round_secs.map(|interval_secs| {
        let in_window = |s: &&Sample| s.at.is_some_and(|t| t >= window && t <= window_end);
        let before = a.rounds_total;
        // The last round each scrape saw, once per round, after the window's first scrape.
        let issued: BTreeMap<u64, RoundIssued> = all()
            .filter(in_window)
            .filter_map(|s| s.scrape.as_ref())
            .filter(|s| s.rounds_total > before)
            .map(|s| {
                let (n, store, issue) = s.round_last;
                let round =
                    RoundIssued { challenges: n as u64, store_ms: ms(store), issue_ms: ms(issue) };
                (s.rounds_total as u64, round)
            })
            .collect();
        let seen = c.rounds.lock().map(|r| r.clone()).unwrap_or_default();
        let seen = seen
            .into_iter()
            .filter(|(_, r)| r.first >= window && r.first <= window_end)
            .map(|(issued_ms, r)| RoundReport {
                challenges: r.challenges,
                arrival_spread_ms: ms(r.last.duration_since(r.first).as_secs_f64()),
                issue_to_last_ms: r.last_ms.saturating_sub(issued_ms) as f64,
                expired: r.expired,
                expiry_spread_ms: r
                    .expired_first
                    .zip(r.expired_last)
                    .map(|(x, y)| ms(y.duration_since(x).as_secs_f64())),
            })
            .collect();
        RoundsReport { interval_secs, issued: issued.into_values().collect(), seen }
    });
    Ok(Report {
        workers: args.workers,
        miners: args.miners,
        heartbeat_secs: args.heartbeat_secs,
        duration_secs: window_secs,
        db: String::new(),
        fd_limit: 0,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        connect_secs,
        registrations_per_sec: registered as f64 / connect_secs,
        workers_connected,
        workers_online: b.workers_online as u64,
        heartbeats_sent,
        heartbeats_handled: b.heartbeats_total as u64,
        heartbeats_sent_per_sec: (heartbeats_sent - sent_before) as f64 / window_secs,
        heartbeats_per_sec: (b.heartbeats_total - a.heartbeats_total) / window_secs,
        expected_heartbeats_per_sec: args.workers as f64 / args.heartbeat_secs,
        heartbeat_p50_ms: ms(b.p50),
        heartbeat_p90_ms: ms(b.p90),
        heartbeat_p99_ms: ms(b.p99),
        liveness_flush_p50_ms: ms(b.flush_p50),
        liveness_flush_p99_ms: ms(b.flush_p99),
        heartbeat_p99_max_ms: ms(all()
            .filter_map(|s| s.scrape.as_ref())
            .map(|s| s.p99)
            .fold(0.0, f64::max)),
        rss_mb_peak: all().filter_map(|s| s.rss_kb).max().map(mb),
        rss_mb_final: last.rss_kb.map(mb),
        coordinator_cpu_percent: cpu,
        load_avg_1m_max: all().filter_map(|s| s.load_1m).reduce(f64::max),
        load_avg_1m_end: last.load_1m,
        failures,
        rounds,
        coordinator_exit: String::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
struct FailureKind {
    count: u64,
    example: String,
}

#[derive(Debug, Serialize)]
struct Failures {
    /// TCP connect, WebSocket upgrade or I/O failures before the Welcome.
    connect: u64,
    /// Registrations answered with an error or a close.
    refused: u64,
    /// Registered connections that ended before the run did.
    dropped: u64,
    /// Error frames the coordinator sent to registered workers.
    coordinator_errors: u64,
    /// The coordinator's own `veribench_rejections_total`, by kind.
    coordinator_rejections: BTreeMap<String, u64>,
    /// Failures seen by the workers, by description.
    kinds: BTreeMap<String, FailureKind>,
}

/// A synchronized round as the coordinator reported it.
#[derive(Debug, Serialize)]
struct RoundIssued {
    challenges: u64,
    /// Storing the round: one transaction inserting `challenges` rows.
    store_ms: f64,
    /// From the round's start to its last frame queued.
    issue_ms: f64,
}

/// A synchronized round as the simulated workers saw it.
#[derive(Debug, Serialize)]
struct RoundReport {
    challenges: u64,
    /// From the first challenge frame's arrival to the last: the round's window.
    arrival_spread_ms: f64,
    /// From the round's issue time to the last challenge's arrival, by the wall clock.
    issue_to_last_ms: f64,
    /// Challenges failed for their missed deadline (one row update each).
    expired: u64,
    /// From the first to the last deadline failure's arrival.
    expiry_spread_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RoundsReport {
    interval_secs: f64,
    /// Rounds issued during the measured window.
    issued: Vec<RoundIssued>,
    /// Rounds whose first challenge reached a worker during the measured window.
    seen: Vec<RoundReport>,
}

#[derive(Debug, Serialize)]
struct Report {
    workers: usize,
    miners: usize,
    heartbeat_secs: f64,
    duration_secs: f64,
    db: String,
    fd_limit: u64,
    cpus: usize,
    connect_secs: f64,
    registrations_per_sec: f64,
    /// Registered workers still connected at the end of the window (client side).
    workers_connected: usize,
    /// `veribench_workers_online` at the end of the window.
    workers_online: u64,
    heartbeats_sent: u64,
    heartbeats_handled: u64,
    heartbeats_sent_per_sec: f64,
    /// Heartbeats handled by the coordinator per second over the window.
    heartbeats_per_sec: f64,
    expected_heartbeats_per_sec: f64,
    heartbeat_p50_ms: f64,
    heartbeat_p90_ms: f64,
    heartbeat_p99_ms: f64,
    heartbeat_p99_max_ms: f64,
    /// Persisting one second's heartbeats in one transaction.
    liveness_flush_p50_ms: f64,
    liveness_flush_p99_ms: f64,
    rss_mb_peak: Option<f64>,
    rss_mb_final: Option<f64>,
    coordinator_cpu_percent: Option<f64>,
    load_avg_1m_max: Option<f64>,
    load_avg_1m_end: Option<f64>,
    failures: Failures,
    #[serde(skip_serializing_if = "Option::is_none")]
    rounds: Option<RoundsReport>,
    coordinator_exit: String,
}

impl Report {
    fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:.1}{unit}"));
        let f = &self.failures;
        let mut rows: Vec<(&str, String)> = vec![
            ("workers / miners", format!("{} / {}", self.workers, self.miners)),
            ("heartbeat interval", format!("{} s", self.heartbeat_secs)),
            ("database", self.db.clone()),
            ("open-file limit / cpus", format!("{} / {}", self.fd_limit, self.cpus)),
            (
                "connect + register all",
                format!("{:.2} s ({:.0}/s)", self.connect_secs, self.registrations_per_sec),
            ),
            ("measured window", format!("{:.1} s", self.duration_secs)),
            ("workers_connected", self.workers_connected.to_string()),
            ("workers_online (metrics)", self.workers_online.to_string()),
            ("heartbeats_sent", self.heartbeats_sent.to_string()),
            ("heartbeats_handled", self.heartbeats_handled.to_string()),
            (
                "heartbeats_per_sec",
                format!(
                    "{:.0} handled ({:.0} sent, {:.0} expected)",
                    self.heartbeats_per_sec,
                    self.heartbeats_sent_per_sec,
                    self.expected_heartbeats_per_sec
                ),
            ),
            ("heartbeat_p50_ms", format!("{:.3}", self.heartbeat_p50_ms)),
            ("heartbeat_p90_ms", format!("{:.3}", self.heartbeat_p90_ms)),
            (
                "heartbeat_p99_ms",
                format!("{:.3} (max seen {:.3})", self.heartbeat_p99_ms, self.heartbeat_p99_max_ms),
            ),
            (
                "liveness flush p50 / p99 (one transaction a second)",
                format!("{:.2} / {:.2} ms", self.liveness_flush_p50_ms, self.liveness_flush_p99_ms),
            ),
            (
                "rss_mb peak / final",
                format!("{} / {}", opt(self.rss_mb_peak, ""), opt(self.rss_mb_final, "")),
            ),
            ("coordinator cpu", opt(self.coordinator_cpu_percent, " %")),
            (
                "load avg 1m max / end",
                format!("{} / {}", opt(self.load_avg_1m_max, ""), opt(self.load_avg_1m_end, "")),
            ),
            (
                "failures",
                format!(
                    "connect {}, refused {}, dropped {}, coordinator errors {}",
                    f.connect, f.refused, f.dropped, f.coordinator_errors
                ),
            ),
        ];
        if let Some(r) = &self.rounds {
            rows.push((
                "synchronized rounds",
                format!(
                    "every {} s, deadline {:.1} s (the simulated workers ignore challenges)",
                    r.interval_secs,
                    r.interval_secs / 3.0
                ),
            ));
            for i in &r.issued {
                rows.push((
                    "  round (coordinator)",
                    format!(
                        "{} challenges stored in {:.1} ms (one transaction), last frame queued \
                         after {:.1} ms",
                        i.challenges, i.store_ms, i.issue_ms
                    ),
                ));
            }
            for w in &r.seen {
                let expiry =
                    w.expiry_spread_ms.map_or(String::new(), |x| format!(" over {x:.0} ms"));
                rows.push((
                    "  round (workers)",
                    format!(
                        "{} challenges arrived within {:.1} ms, the last {:.0} ms after issue; \
                         {} expired{expiry}",
                        w.challenges, w.arrival_spread_ms, w.issue_to_last_ms, w.expired
                    ),
                ));
            }
        }
        for (kind, n) in &f.coordinator_rejections {
            rows.push(("  coordinator rejected", format!("{kind}: {n}")));
        }
        for (kind, k) in &f.kinds {
            rows.push(("  seen", format!("{kind} ×{} (e.g. {})", k.count, k.example)));
        }
        rows.push(("coordinator", self.coordinator_exit.clone()));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_parsed() {
        let text = "# HELP x\nveribench_heartbeats_total 42\nveribench_workers_online 7\n\
                    veribench_rejections_total{kind=\"rate_limited\"} 3\n\
                    veribench_heartbeat_handling_seconds{quantile=\"0.5\"} 0.00025\n\
                    veribench_heartbeat_handling_seconds{quantile=\"0.99\"} 0.004\n\
                    veribench_rounds_total 2\nveribench_round_last{what=\"challenges\"} 9\n\
                    veribench_round_last{what=\"issue_seconds\"} 0.5\n";
        let s = parse_metrics(text);
        assert_eq!((s.rounds_total, s.round_last), (2.0, (9.0, 0.0, 0.5)));
        assert_eq!((s.heartbeats_total, s.workers_online), (42.0, 7.0));
        assert_eq!((s.p50, s.p99), (0.00025, 0.004));
        assert_eq!(s.rejections.get("rate_limited"), Some(&3.0));
    }

    /// The reqwest client against a real listener answering with a chunked body.
    #[tokio::test]
    async fn http_get_reads_status_and_chunked_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\
                      Connection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                )
                .await
                .expect("write");
            String::from_utf8_lossy(&request).into_owned()
        });
        let (status, body) = http_get(addr, "/healthz").await.expect("GET");
        assert_eq!((status, body.as_str()), (503, "abcde"));
        let request = server.await.expect("server");
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\n"), "{request}");
    }
}
