//! `veribench devnet`: a coordinator on the embedded defaults (SQLite, CPU backend, fresh keys,
//! the file-backed local chain) and local workers over real loopback WebSockets, with a short
//! challenge interval.
//!
//! Each worker is its own miner (a hotkey delegating to itself), registered on subnet 1 of the
//! local chain, so the per-miner table shows each worker's verified speed. `--slow N` makes the
//! last honest workers slower and `--cheaters N` adds workers that skip half their rows, to show
//! how both end up in the weights. `--rounds R` stops once every worker has finished R
//! challenges, scores the miners, sets weights on the local chain and, with `--json`, prints one
//! summary object including them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use veribench_chain::{LocalChain, NetUid};
use veribench_coordinator::CoordinatorConfig;
use veribench_coordinator::config::{LivenessConfig, ScheduleConfig};
use veribench_coordinator::epoch::SubmitOutcome;
use veribench_kernels::{
    Backend, BackendError, BackendKind, CpuBackend, DeviceInfo, Execution, RowSource,
};
use veribench_protocol::{Challenge, DeviceKey, Mode, PublicKey, UnixMillis, leaf_hash};
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
    /// Of the workers, this many compute honestly but take four times as long.
    #[arg(long, default_value_t = 0)]
    pub slow: u32,
    /// Extra workers that skip every odd row (send zeros) and commit to that.
    #[arg(long, default_value_t = 0)]
    pub cheaters: u32,
}

/// The subnet of the devnet's local chain.
const NETUID: NetUid = NetUid(1);

/// How a devnet worker computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Behaviour {
    Honest,
    Slow,
    Cheater,
}

/// The CPU backend with a devnet [`Behaviour`] applied.
struct DevnetBackend {
    inner: CpuBackend,
    behaviour: Behaviour,
}

/// A product whose odd rows were replaced by zeros.
struct ZeroOddRows(Box<dyn RowSource>);

impl RowSource for ZeroOddRows {
    fn row_bytes(&self, row: u32) -> Result<Vec<u8>, BackendError> {
        let bytes = self.0.row_bytes(row)?;
        Ok(if row % 2 == 1 { vec![0; bytes.len()] } else { bytes })
    }
}

impl Backend for DevnetBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn devices(&self) -> &[DeviceInfo] {
        self.inner.devices()
    }

    fn execute(
        &self,
        device: &DeviceKey,
        challenge: &Challenge,
    ) -> Result<Execution, BackendError> {
        let mut run = self.inner.execute(device, challenge)?;
        match self.behaviour {
            Behaviour::Honest => {}
            Behaviour::Slow => {
                let t = &run.timings;
                std::thread::sleep(3 * (t.generate + t.gemm + t.hash) + Duration::from_millis(20));
            }
            Behaviour::Cheater => {
                let seed = challenge.device_seed(device);
                let product = ZeroOddRows(run.product);
                for (row, leaf) in (0u32..).zip(run.leaves.iter_mut()).filter(|(r, _)| r % 2 == 1) {
                    *leaf = leaf_hash(&seed, row, &product.row_bytes(row)?);
                }
                run.product = Box::new(product);
            }
        }
        Ok(run)
    }
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct Summary {
    workers: u32,
    verified: u64,
    failed: u64,
    miners: Vec<MinerSummary>,
    /// The weights the coordinator set on the local chain after the rounds (u16, by uid).
    weights: Vec<WeightSummary>,
}

#[derive(Debug, Serialize)]
struct MinerSummary {
    hotkey: String,
    behaviour: Behaviour,
    verified: u64,
    failed: u64,
    gflops: f64,
}

#[derive(Debug, Serialize)]
struct WeightSummary {
    uid: u16,
    hotkey: String,
    weight: u16,
}

fn ss58(key: &PublicKey) -> String {
    ss58_encode(key, BITTENSOR_SS58_PREFIX).unwrap_or_else(|_| key.to_string())
}

/// Runs the devnet until Ctrl-C or `--rounds`.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.slow <= args.workers, "--slow cannot exceed --workers");
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
    let total = args.workers + args.cheaters;
    let miners: Vec<Keypair> = (0..total)
        .map(|i| load_or_create(&wallet, &format!("miner{i}")))
        .collect::<anyhow::Result<_>>()?;
    let behaviour = |i: u32| match i {
        i if i >= args.workers => Behaviour::Cheater,
        i if i >= args.workers - args.slow => Behaviour::Slow,
        _ => Behaviour::Honest,
    };
    let behaviours: HashMap<PublicKey, Behaviour> =
        miners.iter().zip(0..).map(|(m, i)| (m.public(), behaviour(i))).collect();

    // The local chain: the coordinator holds a validator permit, every miner is registered.
    let chain = LocalChain::open(dir.join("chain.json")).context("cannot open the local chain")?;
    chain.register(NETUID, coordinator_key.public(), coordinator_key.public(), 1_000_000, true)?;
    for m in &miners {
        chain.register(NETUID, m.public(), m.public(), 0, false)?;
    }

    let defaults = CoordinatorConfig::default();
    let config = CoordinatorConfig {
        db: format!("sqlite://{}", dir.join("coordinator.db").display()),
        ws_listen: "127.0.0.1:0".parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        schedule: ScheduleConfig {
            interval_secs: args.interval_secs,
            jitter_secs: args.interval_secs * 0.1,
            mode: args.mode,
            cpu_n: args.n,
            cpu_k: args.n,
            gpu_n: args.n,
            gpu_k: args.n,
            ..defaults.schedule.clone()
        },
        liveness: LivenessConfig {
            heartbeat_secs: 5.0,
            offline_after_secs: 30.0,
            ..defaults.liveness.clone()
        },
        ..defaults
    };
    let mut config = config;
    config.chain.network = format!("file:{}", chain.path().display());
    config.chain.netuid = NETUID.0;
    // A devnet lives minutes, not the 169-hour availability horizon: one 5-minute bucket online
    // counts as fully available, and the rounds asked for are full participation.
    config.scoring.availability_buckets = 1;
    config.scoring.participation_baseline = args.rounds.map_or(10, |r| r.clamp(1, 36) as u32);
    config.weights.interval_secs = 30.0;
    // Every devnet worker connects from loopback, one address: let them all register at once.
    let everyone = config.limits.max_unregistered.max(usize::try_from(total).unwrap_or(usize::MAX));
    config.limits.max_unregistered = everyone;
    config.limits.max_unregistered_per_address = everyone;
    let running =
        veribench_coordinator::start(config, coordinator_key.clone(), Arc::new(chain.clone()))
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
        let behaviour = behaviours[&miner.public()];
        let backend =
            Arc::new(DevnetBackend { inner: CpuBackend::with_device_key(device), behaviour });
        let config = WorkerConfig {
            coordinator: format!("ws://{}", running.ws_addr),
            coordinator_hotkey: Some(coordinator_key.public().to_string()),
            name: format!("devnet-{i}-{behaviour:?}").to_lowercase(),
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
    // Scored while the workers are still online: an offline miner scores 0.
    let weights = set_weights(&running, &chain).await;
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    let weights = weights?;
    let miners = running.coordinator.store().miners().await.context("cannot read the results")?;
    let summary = Summary {
        workers: total,
        verified: miners.iter().map(|m| m.verified).sum(),
        failed: miners.iter().map(|m| m.failed).sum(),
        miners: miners
            .iter()
            .map(|m| MinerSummary {
                hotkey: ss58(&m.hotkey),
                behaviour: behaviours.get(&m.hotkey).copied().unwrap_or(Behaviour::Honest),
                verified: m.verified,
                failed: m.failed,
                gflops: m.mean_gflops,
            })
            .collect(),
        weights,
    };
    running.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Scores the miners now, submits the weights to the local chain and reads back what the chain
/// stored for the coordinator's uid.
async fn set_weights(
    running: &veribench_coordinator::Running,
    chain: &LocalChain,
) -> anyhow::Result<Vec<WeightSummary>> {
    let c = &running.coordinator;
    c.score_epoch(UnixMillis::now()).await.context("cannot score the miners")?;
    match c.submit_weights().await.context("cannot set weights")? {
        SubmitOutcome::Submitted { .. } => {}
        other => anyhow::bail!("weights were not set on the local chain: {other:?}"),
    }
    let mg = c.metagraph().context("no metagraph")?;
    let me = mg.uid(&c.public_key()).context("the coordinator is not registered")?;
    let set = chain.weights(NETUID)?.remove(&me).unwrap_or_default();
    Ok(set
        .into_iter()
        .map(|(uid, weight)| WeightSummary {
            uid,
            hotkey: mg.neurons.get(usize::from(uid)).map_or_else(String::new, |n| ss58(&n.hotkey)),
            weight,
        })
        .collect())
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
