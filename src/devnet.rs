//! `veribench devnet`: a coordinator on the embedded defaults (SQLite, CPU backend, fresh keys)
//! and local workers over real loopback WebSockets, with a short challenge interval.
//!
//! Each worker is its own miner (a hotkey delegating to itself), so the per-miner table shows
//! each worker's verified speed. `--rounds R` stops once every worker has finished R challenges;
//! `--json` then prints one summary object.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use veribench_coordinator::CoordinatorConfig;
use veribench_coordinator::config::{LivenessConfig, ScheduleConfig};
use veribench_kernels::CpuBackend;
use veribench_protocol::{DeviceKey, Mode, PublicKey, UnixMillis};
use veribench_wallet::{BITTENSOR_SS58_PREFIX, Keypair, Wallet, ss58_encode};
use veribench_worker::daemon::{WorkerConfig, WorkerIdentity, run_worker_with_token};

/// Flags of `veribench devnet`.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Local workers, each its own miner.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// Exit after every worker has finished this many challenges.
    #[arg(long)]
    pub rounds: Option<u64>,
    /// With --rounds: print exactly one JSON object on stdout instead of the live table.
    #[arg(long)]
    pub json: bool,
    /// Directory for the SQLite database and wallets (default: a temporary one, removed at exit).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Challenge size n (n × n × n).
    #[arg(long, default_value_t = 256)]
    pub n: u32,
    /// Challenge mode: int8, fp16, bf16 or fp32.
    #[arg(long, default_value = "int8")]
    pub mode: Mode,
    /// Seconds between two challenge rounds of a miner.
    #[arg(long, default_value_t = 2.0)]
    pub interval_secs: f64,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    workers: u32,
    verified: u64,
    failed: u64,
    miners: Vec<MinerSummary>,
}

#[derive(Debug, Serialize)]
struct MinerSummary {
    hotkey: String,
    verified: u64,
    failed: u64,
    gflops: f64,
}

fn ss58(key: &PublicKey) -> String {
    ss58_encode(key, BITTENSOR_SS58_PREFIX).unwrap_or_else(|_| key.to_string())
}

/// Runs the devnet until Ctrl-C or `--rounds`.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    if args.json && args.rounds.is_none() {
        anyhow::bail!("--json needs --rounds (the summary is printed when the rounds are done)");
    }
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary directory")?),
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_owned()))
        .context("no directory")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let wallet = Wallet::new(dir.join("wallets"), "devnet").context("wallet")?;
    let coordinator_key = load_or_create(&wallet, "coordinator")?;
    let miners: Vec<Keypair> = (0..args.workers)
        .map(|i| load_or_create(&wallet, &format!("miner{i}")))
        .collect::<anyhow::Result<_>>()?;

    let defaults = CoordinatorConfig::default();
    let config = CoordinatorConfig {
        db: format!("sqlite://{}", dir.join("coordinator.db").display()),
        ws_listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        allowed_miners: miners.iter().map(|k| k.public().to_string()).collect(),
        schedule: ScheduleConfig {
            interval_secs: args.interval_secs,
            jitter_secs: args.interval_secs * 0.1,
            mode: args.mode,
            cpu_n: args.n,
            gpu_n: args.n,
            ..defaults.schedule.clone()
        },
        liveness: LivenessConfig {
            heartbeat_secs: 5.0,
            offline_after_secs: 30.0,
            ..defaults.liveness.clone()
        },
        ..defaults
    };
    let running = veribench_coordinator::start(config, coordinator_key.clone())
        .await
        .context("cannot start the coordinator")?;
    if !args.json {
        eprintln!(
            "devnet: coordinator on ws://{} (API http://{}), data in {}",
            running.ws_addr,
            running.http_addr,
            dir.display()
        );
    }

    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for (i, miner) in miners.iter().enumerate() {
        let device = DeviceKey::new(format!("cpu:devnet-{i}")).context("device key")?;
        let backend = Arc::new(CpuBackend::with_device_key(device));
        let config = WorkerConfig {
            coordinator: format!("ws://{}", running.ws_addr),
            coordinator_hotkey: Some(coordinator_key.public().to_string()),
            name: format!("devnet-{i}"),
            backend: "cpu".into(),
            ..WorkerConfig::default()
        };
        let identity = WorkerIdentity::self_delegated(
            miner.clone(),
            Duration::from_secs(24 * 3600),
            UnixMillis::now(),
        );
        workers.push(tokio::spawn(run_worker_with_token(config, identity, backend, stop.clone())));
    }

    let worker_keys: Vec<PublicKey> = miners.iter().map(Keypair::public).collect();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        let finished = running.coordinator.finished_rounds();
        if !args.json {
            draw_table(&running, &finished).await;
        }
        if let Some(r) = args.rounds
            && worker_keys.iter().all(|k| finished.get(k).copied().unwrap_or(0) >= r)
        {
            break;
        }
    }
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    let miners = running.coordinator.store().miners().await.context("cannot read the results")?;
    let summary = Summary {
        workers: args.workers,
        verified: miners.iter().map(|m| m.verified).sum(),
        failed: miners.iter().map(|m| m.failed).sum(),
        miners: miners
            .iter()
            .map(|m| MinerSummary {
                hotkey: ss58(&m.hotkey),
                verified: m.verified,
                failed: m.failed,
                gflops: m.mean_gflops,
            })
            .collect(),
    };
    running.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// A hotkey from the devnet wallet, created on first use.
fn load_or_create(wallet: &Wallet, name: &str) -> anyhow::Result<Keypair> {
    match wallet.load_hotkey(name) {
        Ok(k) => Ok(k),
        Err(_) => wallet
            .create_hotkey(name, false)
            .with_context(|| format!("cannot create hotkey {name}")),
    }
}

async fn draw_table(running: &veribench_coordinator::Running, finished: &HashMap<PublicKey, u64>) {
    let Ok(miners) = running.coordinator.store().miners().await else { return };
    let (online, pending) = running.coordinator.load();
    let mut out = String::from("\x1b[2J\x1b[H");
    out += &format!(
        "veribench devnet  ws://{}  http://{}  workers online {online}  in flight {pending}\n\n",
        running.ws_addr, running.http_addr
    );
    out += &format!(
        "{:<50} {:>8} {:>8} {:>8} {:>12}\n",
        "miner hotkey", "rounds", "verified", "failed", "GFLOP/s"
    );
    for m in &miners {
        let rounds = finished.get(&m.hotkey).copied().unwrap_or(0);
        out += &format!(
            "{:<50} {:>8} {:>8} {:>8} {:>12.1}\n",
            ss58(&m.hotkey),
            rounds,
            m.verified,
            m.failed,
            m.mean_gflops
        );
    }
    out += "\nCtrl-C to stop.\n";
    eprint!("{out}");
}
