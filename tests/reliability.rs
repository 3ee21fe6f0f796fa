//! Faults under a running coordinator with real workers: its PostgreSQL server stopped and
//! started, its SQLite file's filesystem filled and freed, SIGTERM with challenges in flight, a
//! worker's clock far ahead. What must
//! hold (SPEC §8.2, §8.3): no verdict a worker was told is missing from the store, no honest
//! worker is blamed or dropped for the coordinator's trouble, `/healthz` answers at once and
//! says `degraded`, and the coordinator recovers by itself.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{CoordinatorProcess, free_port};
use common::{Behaviour, Db, Event, Harness, TestDb, TestWorker, WorkerOptions, eventually};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use veribench_coordinator::store::{ChallengeRow, ChallengeStatus, Store};
use veribench_kernels::CpuBackend;
use veribench_protocol::wire::Limits;
use veribench_protocol::{
    ChallengeId, CommitmentMsg, ErrorCode, ErrorMsg, Message, PublicKey, UnixMillis, Verdict,
};
use veribench_wallet::Wallet;
use veribench_worker::daemon::{Clock, WorkerConfig, WorkerIdentity, run_worker_with_token};

/// The reasons that blame a worker for a failure (SPEC §8.3), besides the verifier's codes.
const WORKER_REASONS: [&str; 4] =
    ["deadline_missed", "open_timeout", "disconnected", "worker_refused"];

/// `/healthz`, timed: the status code, the body and how long it took.
async fn health(http: SocketAddr, path: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = common::http_get(http, path).await;
    (r.status, r.json(), started.elapsed())
}

/// Every verdict `worker` was told matches what the store holds for that challenge.
async fn told_verdicts_are_stored(store: &Store, worker: &TestWorker) -> usize {
    let verdicts = worker.verdicts();
    for v in &verdicts {
        let row = store.challenge(v.challenge_id).await.expect("store").expect("stored");
        match &v.verdict {
            Verdict::Accepted => {
                assert_eq!(row.status, ChallengeStatus::Verified, "told Accepted: {row:?}")
            }
            Verdict::Rejected(reason) => {
                assert_eq!(row.status, ChallengeStatus::Failed, "told Rejected: {row:?}");
                assert_eq!(row.reason.as_deref(), Some(reason.code()));
            }
        }
    }
    verdicts.len()
}

/// No challenge of an honest worker failed for a reason that blames it.
fn none_blamed(rows: &[ChallengeRow]) {
    for r in rows {
        if let Some(reason) = r.reason.as_deref() {
            assert!(
                r.status != ChallengeStatus::Failed || !WORKER_REASONS.contains(&reason),
                "an honest worker was blamed: {r:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary directory), so it can be
/// stopped without disturbing the machine's server.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().expect("an initdb")
    }

    /// Runs a PostgreSQL tool as the `postgres` user (the server refuses to run as root).
    fn run(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        let tool = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        cmd.args(args).stdout(std::process::Stdio::null()).status().expect("run a PostgreSQL tool")
    }

    fn start_new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        if is_root() {
            chown_postgres(dir.path());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = PrivatePostgres { bin: Self::bin_dir(), dir, port };
        let data = pg.data();
        let status =
            pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"]);
        assert!(status.success(), "initdb: {status}");
        pg.start();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let status =
            self.run("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
        assert!(status.success(), "pg_ctl start: {status}");
    }

    /// Stops the server at once, as a crash or an operator's `kill` would.
    fn stop(&self) {
        let status = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        assert!(status.success(), "pg_ctl stop: {status}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown").arg("postgres").arg(path).status().expect("chown");
    assert!(status.success(), "chown postgres {}: {status}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_loses_no_verdict_blames_no_worker_and_heals_by_itself() {
    let pg = PrivatePostgres::start_new();
    let url = pg.url();
    let h = Harness::start(Db::Sqlite, 1, |c| {
        c.db = url.clone();
        // Heartbeats left unread this long would drop a worker as silent.
        c.liveness.offline_after_secs = 4.0;
        c.schedule.deadline_secs = 6.0;
        c.storage.acquire_timeout_secs = 1.0;
    })
    .await;
    let steady = h.honest(0, "steady");
    let slow = h.spawn(
        h.identity(0, "slow"),
        Behaviour::Honest,
        WorkerOptions { commit_delay: Duration::from_millis(1500), ..Default::default() },
    );
    let leaving = h.honest(0, "leaving");
    for w in [&steady, &slow, &leaving] {
        h.verified(&w.key(), 1).await;
    }
    // Stopped while the slow worker's challenge is in flight.
    let slow_key = slow.key();
    let in_flight = eventually("a challenge in flight", Duration::from_secs(20), || async {
        h.challenges_of(&slow_key).await.into_iter().find(|c| c.status == ChallengeStatus::Sent)
    })
    .await;
    pg.stop();
    let outage = Instant::now();

    // `/healthz` answers at once, and says why.
    let degraded = eventually("/healthz degraded", Duration::from_secs(10), || async {
        let (status, body, took) = health(h.http_addr, "/healthz").await;
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert!(degraded["database"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{degraded}");
    let (live, _, took) = health(h.http_addr, "/livez").await;
    assert_eq!(live, 200);
    assert!(took < Duration::from_secs(1));
    let (ready, _, _) = health(h.http_addr, "/readyz").await;
    assert_eq!(ready, 503);

    // A worker leaves while the database is down: its `online` flag cannot be written now.
    let leaving_key = leaving.key();
    leaving.stop().await;
    // Longer than the offline timeout and the pool's acquire timeout.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(outage.elapsed())).await;
    let (status, _, took) = health(h.http_addr, "/healthz").await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(1), "/healthz took {took:?} during the outage");
    pg.start();

    eventually("/healthz ok again", Duration::from_secs(20), || async {
        (health(h.http_addr, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    // The challenge in flight when the database stopped was verified, stored, then told.
    let id = in_flight.id;
    let row = eventually("the in-flight challenge decided", Duration::from_secs(20), || async {
        h.store().challenge(id).await.expect("store").filter(|r| r.status.is_terminal())
    })
    .await;
    assert_eq!(row.status, ChallengeStatus::Verified, "{row:?}");
    assert!(row.root.is_some() && row.compute_ms.is_some(), "the commitment was recorded: {row:?}");
    eventually("the verdict told", Duration::from_secs(5), || async {
        slow.verdicts().iter().any(|v| v.challenge_id == id).then_some(())
    })
    .await;
    // Both keep being verified, on the connection they had all along: never dropped as silent.
    for w in [&steady, &slow] {
        let before = h.verified(&w.key(), 1).await.len();
        h.verified(&w.key(), before + 1).await;
        assert_eq!(w.welcomes().len(), 1, "{} reconnected", w.identity.name);
        none_blamed(&h.challenges_of(&w.key()).await);
        told_verdicts_are_stored(h.store(), w).await;
    }
    // The worker that left is shown offline, although its disconnection was not written.
    let key = leaving_key.to_string();
    let departed = |workers: &Value| {
        workers
            .as_array()
            .and_then(|all| all.iter().find(|w| w["worker_key"]["hex"] == key.as_str()))
            .cloned()
    };
    let workers = common::poll_until(Duration::from_secs(20), || async {
        let workers = common::http_get(h.http_addr, "/api/v1/workers").await.json();
        (departed(&workers)?["online"] == false).then_some(workers)
    })
    .await;
    let Some(workers) = workers else {
        let now = common::http_get(h.http_addr, "/api/v1/workers").await.json();
        panic!("the departed worker is still online: {:?}", departed(&now));
    };
    assert_eq!(workers.as_array().map(Vec::len), Some(3), "{workers}");
    steady.stop().await;
    slow.stop().await;
    h.shutdown().await;
}

// --------------------------------------------------------------------------------- a full disk

/// A 16 MiB tmpfs mounted for one test, unmounted when dropped.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs ({status}): this test needs root (CI runs as root)"
        );
        SmallFilesystem { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        // The last bytes too.
        while let Ok(1) = f.write(&chunk[..1]) {}
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_loses_no_verdict_and_heals_when_space_returns() {
    let fs = SmallFilesystem::mount();
    let url = format!("sqlite://{}", fs.path().join("coordinator.db").display());
    let h = Harness::start(Db::Sqlite, 1, |c| c.db = url.clone()).await;
    let workers = [h.honest(0, "first"), h.honest(0, "second")];
    for w in &workers {
        h.verified(&w.key(), 1).await;
    }
    let filler = fs.fill();
    let degraded =
        eventually("/healthz degraded on a full disk", Duration::from_secs(60), || async {
            let (status, body, took) = health(h.http_addr, "/healthz").await;
            assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
            (status == 503).then_some(body)
        })
        .await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    // Told verdicts are stored, whatever was in flight.
    for w in &workers {
        told_verdicts_are_stored(h.store(), w).await;
    }
    std::fs::remove_file(&filler).expect("free the space");

    eventually("/healthz ok once space returns", Duration::from_secs(30), || async {
        (health(h.http_addr, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    // Writes go through again: new rounds are verified (no lock left held by the pool).
    for w in &workers {
        let key: PublicKey = w.key();
        let before = h.verified(&key, 1).await.len();
        h.verified(&key, before + 2).await;
        none_blamed(&h.challenges_of(&key).await);
        told_verdicts_are_stored(h.store(), w).await;
        assert_eq!(w.welcomes().len(), 1, "{} was dropped", w.identity.name);
    }
    for w in workers {
        w.stop().await;
    }
    h.shutdown().await;
}

// ------------------------------------------------------------------------------------ SIGTERM

/// The coordinator as a process on `db`, SIGTERMed while challenges are in flight.
async fn sigterm_with_challenges_in_flight(db: Db) {
    let test_db = TestDb::create(db).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let wallets = dir.path().join("wallets");
    Wallet::new(&wallets, "coordinator")
        .expect("wallet")
        .create_hotkey("default", false)
        .expect("coordinator hotkey");
    let miner = common::keypair();
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
db = "{db}"

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
deadline_secs = 8.0
mode = "int8"
cpu_n = 64
cpu_k = 64

[liveness]
heartbeat_secs = 1.0
ping_secs = 0.5
"#,
            db = test_db.url,
            wallets = wallets.display(),
            chain = chain_path.display(),
        ),
    )
    .expect("write config");
    let log = dir.path().join("coordinator.log");
    let mut process = CoordinatorProcess::spawn(&config, &log);
    process.healthy(http).await;

    let url = format!("ws://127.0.0.1:{ws_port}/");
    let worker = |name: &str, delay: u64| {
        let identity = common::Identity::new(name, &miner, vec![common::unique_device(name)]);
        let options =
            WorkerOptions { commit_delay: Duration::from_secs(delay), ..Default::default() };
        TestWorker::spawn(&url, identity, Behaviour::Honest, options)
    };
    let workers = [worker("quick", 0), worker("slow", 4), worker("slower", 4)];
    let store = Store::connect(&test_db.url).await.expect("the coordinator's database");
    eventually("a verdict and two challenges in flight", Duration::from_secs(30), || async {
        let rows = store.challenges(None, 1000).await.expect("challenges");
        let of = |w: &TestWorker, status| {
            let key = w.key();
            rows.iter().any(|r| r.worker_key == key && r.status == status)
        };
        (of(&workers[0], ChallengeStatus::Verified)
            && of(&workers[1], ChallengeStatus::Sent)
            && of(&workers[2], ChallengeStatus::Sent))
        .then_some(())
    })
    .await;

    process.sigterm();
    let exit = process.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}:\n{}", process.log_tail());
    let text = std::fs::read_to_string(&log).expect("log");
    for bad in ["closed pool", "cannot mark", "cannot persist"] {
        assert!(!text.contains(bad), "{bad:?} in the log:\n{}", process.log_tail());
    }

    // Nothing left in flight: what was waiting on a worker failed on the coordinator's side.
    let rows = store.challenges(None, 1000).await.expect("challenges");
    for r in &rows {
        assert!(r.status.is_terminal(), "left in flight: {r:?}");
    }
    for w in &workers[1..] {
        let key = w.key();
        let stopped: Vec<&ChallengeRow> = rows
            .iter()
            .filter(|r| r.worker_key == key && r.reason.as_deref() == Some("coordinator_shutdown"))
            .collect();
        assert!(!stopped.is_empty(), "{}: {rows:?}", w.identity.name);
        // Told, which challenge and why.
        let told = w.errors().iter().any(|e| {
            e.code == ErrorCode::CoordinatorShutdown
                && stopped.iter().any(|r| e.challenge_id == Some(r.id))
        });
        assert!(told, "{} was not told: {:?}", w.identity.name, w.errors());
    }
    for w in &workers {
        none_blamed(&rows.iter().filter(|r| r.worker_key == w.key()).cloned().collect::<Vec<_>>());
        told_verdicts_are_stored(&store, w).await;
        let closed = w
            .events()
            .iter()
            .any(|e| matches!(e, Event::Closed(why) if why.contains("shutting down")));
        assert!(closed, "{} was not told the coordinator is shutting down", w.identity.name);
    }
    // Every worker offline.
    for w in store.workers().await.expect("workers") {
        assert!(!w.online, "left online: {}", w.record.name);
    }
    for w in workers {
        w.stop().await;
    }
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_challenges_in_flight_on_sqlite_stores_everything_in_order() {
    sigterm_with_challenges_in_flight(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_challenges_in_flight_on_postgres_stores_everything_in_order() {
    sigterm_with_challenges_in_flight(Db::Postgres).await;
}

// ----------------------------------------------------------------------------------- clocks

/// The real worker daemon of miner `miner` (self-delegated: its key is the miner's), with its
/// clock `offset_ms` ahead, against `h`.
fn skewed_worker(
    h: &Harness,
    miner: usize,
    name: &str,
    offset_ms: i64,
) -> (PublicKey, CancellationToken) {
    let miner = h.miners[miner].clone();
    let identity =
        WorkerIdentity::self_delegated(miner, Duration::from_secs(3600), UnixMillis::now());
    let key = identity.keypair.public();
    let config = WorkerConfig {
        coordinator: h.ws_url.clone(),
        coordinator_hotkey: Some(h.coordinator_key.to_string()),
        name: name.into(),
        backend: "cpu".into(),
        clock: Clock::offset_by(offset_ms),
        ..WorkerConfig::default()
    };
    let device = common::unique_device(name);
    let stop = CancellationToken::new();
    tokio::spawn(run_worker_with_token(
        config,
        identity,
        Arc::new(CpuBackend::with_device_key(device)),
        stop.clone(),
    ));
    (key, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_clock_too_far_ahead_is_refused_at_registration_and_skew_is_shown() {
    // Deadlines of 60 s: a clock up to 30 s ahead is accepted.
    let h = Harness::start(Db::Sqlite, 2, |c| c.schedule.deadline_secs = 60.0).await;
    let (ahead, stop_ahead) = skewed_worker(&h, 0, "ahead", 120_000);
    let (slightly, stop_slightly) = skewed_worker(&h, 1, "slightly", 10_000);

    // 120 s ahead: refused with the measured skew, never challenged.
    let refused = h.counted("clock_skew", 1).await;
    assert!(refused.iter().any(|r| r.last_claimed == Some(ahead)), "{refused:?}");
    assert!(refused.iter().any(|r| r.detail.contains("ahead")), "{refused:?}");
    // 10 s ahead: served, and its skew is shown.
    h.verified(&slightly, 1).await;
    let workers = common::http_get(h.http_addr, "/api/v1/workers").await.json();
    let shown = workers
        .as_array()
        .and_then(|all| {
            all.iter().find(|w| w["worker_key"]["hex"] == slightly.to_string().as_str())
        })
        .and_then(|w| w["clock_skew_ms"].as_i64())
        .expect("the served worker's skew");
    assert!((9_000..=11_000).contains(&shown), "clock_skew_ms {shown}");
    assert!(h.challenges_of(&ahead).await.is_empty());
    stop_ahead.cancel();
    stop_slightly.cancel();
    h.shutdown().await;
}

/// The next challenge `conn` receives.
async fn next_challenge(conn: &mut common::RawConn) -> veribench_protocol::SignedChallenge {
    loop {
        match conn.next(Duration::from_secs(10)).await {
            common::Next::Msg(Message::Challenge(signed)) => break signed,
            common::Next::Msg(_) => {}
            other => panic!("no challenge: {other:?}"),
        }
    }
}

/// SPEC §8.2: a worker refuses a challenge with an `Error` carrying its code and the challenge's
/// id; the coordinator fails that challenge at once, storing `<code>: <text>` (a `busy` refusal
/// as `busy`, never counted against the worker; other codes as `worker_refused`). An `Error`
/// naming another worker's challenge changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_the_worker_refuses_is_recorded_as_its_refusal_at_once() {
    let h = Harness::start(Db::Sqlite, 1, |c| c.schedule.deadline_secs = 60.0).await;
    let identity = h.identity(0, "refuser");
    let key = identity.public();
    let (mut conn, _) = common::RawConn::registered(&h.ws_url, &identity).await;
    let (mut other, _) = common::RawConn::registered(&h.ws_url, &h.identity(0, "meddler")).await;
    let signed = next_challenge(&mut conn).await;
    let id = signed.challenge.id;
    let theirs = next_challenge(&mut other).await.challenge.id;
    let limit = Limits::default().max_text_bytes;

    // The meddler refuses the refuser's challenge: ignored, no answer, no strike.
    let meddling = ErrorMsg::new(ErrorCode::Busy, Some(id), "not mine to refuse", limit);
    other.send(&Message::Error(meddling)).await.expect("send");
    // A frame refused on the same connection afterwards: its answer means the Error before it
    // was handled.
    let stray = CommitmentMsg {
        challenge_id: ChallengeId(u64::MAX),
        device: signed.device.clone(),
        root: veribench_protocol::Root([0; 32]),
    };
    other.send(&Message::Commitment(stray)).await.expect("send");
    let answer = other.next_error(Duration::from_secs(5)).await.expect("an answer to the stray");
    assert_eq!(
        (answer.code, answer.challenge_id),
        (ErrorCode::UnknownChallenge, Some(ChallengeId(u64::MAX))),
        "{answer:?}"
    );
    let row = h.store().challenge(id).await.expect("store").expect("stored");
    assert_eq!(row.status, ChallengeStatus::Sent, "another worker's Error touched it: {row:?}");

    // What the worker daemon sends when the device is computing another validator's challenge.
    let text = format!("device {} is busy", signed.device);
    let refusal = ErrorMsg::new(ErrorCode::Busy, Some(id), &text, limit);
    conn.send(&Message::Error(refusal)).await.expect("send");
    let row = eventually("the refusal recorded", Duration::from_secs(5), || async {
        h.store().challenge(id).await.expect("store").filter(|r| r.status.is_terminal())
    })
    .await;
    assert_eq!(row.reason.as_deref(), Some("busy"), "{row:?}");
    assert_eq!(row.detail.as_deref(), Some(format!("busy: {text}").as_str()), "{row:?}");
    assert_eq!(h.challenges_of(&key).await[0].id, id, "the refused challenge was its first");
    // The meddler's own challenge is untouched, and the refuser is not answered.
    let row = h.store().challenge(theirs).await.expect("store").expect("stored");
    assert_eq!(row.status, ChallengeStatus::Sent, "{row:?}");
    let answered = conn.next_error(Duration::from_millis(300)).await;
    assert!(answered.is_none(), "a refusal is not answered: {answered:?}");
    h.shutdown().await;
}
