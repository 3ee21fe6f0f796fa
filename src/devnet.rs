//! `veribench devnet`: coordinators on the embedded defaults (SQLite, CPU backend, fresh keys,
//! the file-backed local chain) and local workers over real loopback WebSockets, with a short
//! challenge interval.
//!
//! The network is built as a real subnet is. Each coordinator has its own hotkey with a
//! validator permit, its own SQLite database and a self-signed TLS certificate, and announces
//! its `wss://` endpoint and the certificate's fingerprint on the local chain. Workers are not
//! told where the coordinators are: they read the chain, serve every permitted coordinator and
//! pin its certificate and key (SPEC §8.8). `--rogue K` adds coordinators that announce
//! themselves without a permit; no worker serves them.
//!
//! Each worker is its own miner (a hotkey delegating to itself), registered on subnet 1 of the
//! local chain, so the per-miner table shows each worker's verified speed. `--slow N` makes the
//! last honest workers slower and `--cheaters N` adds workers that skip half their rows, to show
//! how both end up in the weights. `--rounds R` stops once every permitted coordinator has
//! finished R challenges of every worker, scores the miners, sets each coordinator's weights on
//! the local chain and, with `--json`, prints one summary object including them.
//!
//! `--consensus` makes the permitted coordinators agree on every epoch's weights (gRPC on
//! loopback, a `--epoch-blocks` epoch of one-second blocks): at the end each waits for the
//! epoch after the rounds to be decided and submits the agreed vector, so every honest
//! coordinator sets the same weights. `--byzantine K` makes the last K permitted coordinators
//! equivocate and propose aggregates that do not recompute.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use veribench_chain::{Chain, LocalChain, NetUid};
use veribench_coordinator::announce::{AnnounceConfig, FingerprintSetting};
use veribench_coordinator::config::{LivenessConfig, ScheduleConfig};
use veribench_coordinator::consensus::{Byzantine, PeerConfig};
use veribench_coordinator::epoch::SubmitOutcome;
use veribench_coordinator::store::WeightSetStatus;
use veribench_coordinator::{CoordinatorConfig, Running};
use veribench_kernels::{
    Backend, BackendError, BackendKind, CpuBackend, DeviceInfo, Execution, Job, RowSource,
};
use veribench_protocol::{DeviceKey, Mode, PublicKey, UnixMillis, leaf_hash};
use veribench_wallet::{BITTENSOR_SS58_PREFIX, Keypair, Wallet, ss58_encode};
use veribench_worker::daemon::{
    DiscoveryConfig, WorkerConfig, WorkerIdentity, run_worker_with_token,
};

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
    /// Coordinators, each on its own validator hotkey with a permit, all announced on chain.
    #[arg(long, default_value_t = 1)]
    pub coordinators: u32,
    /// Extra coordinators that announce themselves without a validator permit.
    #[arg(long, default_value_t = 0)]
    pub rogue: u32,
    /// The permitted coordinators agree on each epoch's weights (validator consensus).
    #[arg(long)]
    pub consensus: bool,
    /// With --consensus: this many of the permitted coordinators are Byzantine (they equivocate
    /// and propose bad aggregates); fewer than a third.
    #[arg(long, default_value_t = 0, requires = "consensus")]
    pub byzantine: u32,
    /// With --consensus: blocks (of one second) per weights epoch, one consensus height.
    #[arg(long, default_value_t = 5)]
    pub epoch_blocks: u64,
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

    fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError> {
        let mut run = self.inner.execute_job(device, job)?;
        match self.behaviour {
            Behaviour::Honest => {}
            Behaviour::Slow => {
                let t = &run.timings;
                std::thread::sleep(3 * (t.generate + t.gemm + t.hash) + Duration::from_millis(20));
            }
            Behaviour::Cheater => {
                let product = ZeroOddRows(run.product);
                for (row, leaf) in (0u32..).zip(run.leaves.iter_mut()).filter(|(r, _)| r % 2 == 1) {
                    *leaf = leaf_hash(job.seed(), row, &product.row_bytes(row)?);
                }
                run.product = Box::new(product);
            }
        }
        Ok(run)
    }
}

/// The `--json` summary. `verified` and `failed` add up every permitted coordinator's; each
/// miner's `verified` and `failed` too, and its `gflops` is the mean of their means; `weights`
/// are the first coordinator's.
#[derive(Debug, Serialize)]
struct Summary {
    workers: u32,
    verified: u64,
    failed: u64,
    miners: Vec<MinerSummary>,
    /// The weights the first coordinator set on the local chain after the rounds (u16, by uid).
    weights: Vec<WeightSummary>,
    /// Every coordinator, permitted ones first.
    coordinators: Vec<CoordinatorSummary>,
    /// With --consensus: what the honest coordinators agreed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    consensus: Option<ConsensusSummary>,
}

/// The honest coordinators' decisions: `heights` any of them decided, `decided` those every one
/// decided with the same value, `evidence` the misbehaviour they recorded, and `agreed` when
/// every height was decided alike and they set identical weights.
#[derive(Debug, Serialize)]
struct ConsensusSummary {
    heights: u64,
    decided: u64,
    evidence: u64,
    agreed: bool,
}

#[derive(Debug, Serialize)]
struct MinerSummary {
    hotkey: String,
    behaviour: Behaviour,
    verified: u64,
    failed: u64,
    gflops: f64,
}

#[derive(Clone, Debug, Serialize)]
struct WeightSummary {
    uid: u16,
    hotkey: String,
    weight: u16,
}

/// One coordinator's own results: what its database holds, and the weights it set.
#[derive(Debug, Serialize)]
struct CoordinatorSummary {
    hotkey: String,
    permit: bool,
    /// With --consensus: this coordinator was made Byzantine.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    byzantine: bool,
    url: String,
    verified: u64,
    failed: u64,
    /// Challenges a worker refused because its device was computing another coordinator's.
    busy: u64,
    /// Per miner: `{hotkey, verified, failed, busy, gflops}`.
    miners: Vec<CoordinatorMiner>,
    weights: Vec<WeightSummary>,
}

#[derive(Debug, Serialize)]
struct CoordinatorMiner {
    hotkey: String,
    verified: u64,
    failed: u64,
    busy: u64,
    gflops: f64,
}

/// A running coordinator of the devnet.
struct Node {
    running: Running,
    keys: Keypair,
    permit: bool,
    byzantine: bool,
    url: String,
}

/// Where each permitted coordinator's consensus node listens, and who is Byzantine.
struct ConsensusPlan {
    peers: Vec<(PublicKey, u16)>,
    byzantine: Vec<PublicKey>,
}

/// Stake of a devnet validator: 10,000 TAO in rao, above the workers' default
/// `min_validator_stake`.
const VALIDATOR_STAKE: u64 = 10_000_000_000_000;

fn ss58(key: &PublicKey) -> String {
    ss58_encode(key, BITTENSOR_SS58_PREFIX).unwrap_or_else(|_| key.to_string())
}

/// Runs the devnet until Ctrl-C or `--rounds`.
pub async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(args.slow <= args.workers, "--slow cannot exceed --workers");
    anyhow::ensure!(args.coordinators >= 1, "--coordinators must be at least 1");
    anyhow::ensure!(
        args.byzantine * 3 < args.coordinators,
        "--byzantine must be fewer than a third of --coordinators (honest stake above 2/3)"
    );
    anyhow::ensure!(args.epoch_blocks >= 1, "--epoch-blocks must be at least 1");
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

    // The local chain, one block a second so that workers follow announcements and permits
    // within seconds: the coordinators are validators, every miner is registered.
    let chain = LocalChain::open(dir.join("chain.json")).context("cannot open the local chain")?;
    chain.set_block_ms(1_000)?;
    let mut nodes = Vec::new();
    let roles = (0..args.coordinators)
        .map(|i| (format!("coordinator{i}"), true))
        .chain((0..args.rogue).map(|i| (format!("rogue{i}"), false)));
    for (name, permit) in roles {
        let keys = load_or_create(&wallet, &name)?;
        let stake = if permit { VALIDATOR_STAKE } else { 0 };
        chain.register(NETUID, keys.public(), keys.public(), stake, permit)?;
        nodes.push((name, keys, permit));
    }
    for m in &miners {
        chain.register(NETUID, m.public(), m.public(), 0, false)?;
    }
    let plan = if args.consensus {
        // Several epochs' weights go on chain: no rate limit between them on the devnet.
        chain.configure_subnet(NETUID, |s| s.rate_limit_blocks = 0)?;
        let permitted: Vec<PublicKey> =
            nodes.iter().filter(|n| n.2).map(|n| n.1.public()).collect();
        let mut peers = Vec::new();
        for key in &permitted {
            peers.push((*key, free_port()?));
        }
        let byzantine = permitted.iter().rev().take(args.byzantine as usize).copied().collect();
        Some(ConsensusPlan { peers, byzantine })
    } else {
        None
    };
    let mut started = Vec::new();
    for (name, keys, permit) in nodes {
        let node =
            start_coordinator(&args, &dir, &chain, &name, keys, permit, total, plan.as_ref())
                .await?;
        if !args.json {
            eprintln!(
                "devnet: {name} ({}) on {} (API http://{}){}",
                ss58(&node.keys.public()),
                node.url,
                node.running.http_addr,
                if !permit {
                    ", no validator permit"
                } else if node.byzantine {
                    ", Byzantine"
                } else {
                    ""
                }
            );
        }
        started.push(node);
    }
    let nodes = started;
    if !args.json {
        eprintln!("devnet: data in {}", dir.display());
    }

    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for (i, miner) in miners.iter().enumerate() {
        let device = DeviceKey::new(format!("cpu:devnet-{i}")).context("device key")?;
        let behaviour = behaviours[&miner.public()];
        let backend =
            Arc::new(DevnetBackend { inner: CpuBackend::with_device_key(device), behaviour });
        // No coordinator named: the worker finds them on chain.
        let config = WorkerConfig {
            coordinator: String::new(),
            discovery: DiscoveryConfig {
                network: Some(format!("file:{}", chain.path().display())),
                netuid: Some(NETUID.0),
                refresh_blocks: 1,
                poll_secs: 0.25,
                state_file: Some(dir.join(format!("worker{i}-coordinators.json"))),
                // The coordinators listen on localhost.
                allow_private_endpoints: true,
                ..DiscoveryConfig::default()
            },
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

    let permitted: Vec<&Node> = nodes.iter().filter(|n| n.permit).collect();
    let worker_keys: Vec<PublicKey> = miners.iter().map(Keypair::public).collect();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        if !args.json {
            draw_table(&nodes).await;
        }
        if let Some(r) = args.rounds
            && rounds_done(&permitted, &worker_keys, r).await
        {
            break;
        }
    }
    // Scored while the workers are still online: an offline miner scores 0.
    let mut weights = Vec::new();
    if args.consensus {
        // The first epoch that starts after the rounds scores all of them.
        let block = chain.current_block().await?;
        let target = block / args.epoch_blocks + 1;
        for node in &permitted {
            // A Byzantine coordinator's submissions are its own business: read what it set.
            weights.push(match node.byzantine {
                true => chain_weights(&node.running.coordinator, &chain),
                false => agreed_weights(node, &chain, target).await,
            });
        }
    } else {
        for node in &permitted {
            weights.push(set_weights(&node.running, &chain).await);
        }
    }
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    // Permitted coordinators come first in `nodes`, in the order of `weights`; rogues set none.
    let mut weights = weights.into_iter();
    let mut coordinators = Vec::new();
    for node in &nodes {
        let set = if node.permit { weights.next().transpose()? } else { None };
        coordinators.push(summarise(node, set.unwrap_or_default()).await?);
    }
    let consensus = match args.consensus {
        true => Some(consensus_summary(&nodes, &coordinators).await?),
        false => None,
    };
    let summary = Summary {
        workers: total,
        verified: coordinators.iter().filter(|c| c.permit).map(|c| c.verified).sum(),
        failed: coordinators.iter().filter(|c| c.permit).map(|c| c.failed).sum(),
        miners: miners
            .iter()
            .map(|m| merge_miner(&coordinators, &ss58(&m.public()), behaviours[&m.public()]))
            .collect(),
        weights: coordinators.first().map(|c| c.weights.clone()).unwrap_or_default(),
        coordinators,
        consensus,
    };
    for node in nodes {
        node.running.shutdown().await;
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Starts one coordinator on a loopback port with a fresh self-signed certificate for
/// `localhost`, announcing `wss://localhost:PORT` and the certificate's fingerprint.
#[allow(clippy::too_many_arguments)]
async fn start_coordinator(
    args: &DevnetArgs,
    dir: &Path,
    chain: &LocalChain,
    name: &str,
    keys: Keypair,
    permit: bool,
    workers: u32,
    plan: Option<&ConsensusPlan>,
) -> anyhow::Result<Node> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    let (cert, key) = self_signed_certificate(&home)?;
    let port = free_port()?;
    let url = format!("wss://localhost:{port}");
    let defaults = CoordinatorConfig::default();
    let mut config = CoordinatorConfig {
        db: format!("sqlite://{}", home.join("coordinator.db").display()),
        ws_listen: format!("127.0.0.1:{port}").parse()?,
        http_listen: "127.0.0.1:0".parse()?,
        tls_cert: Some(cert),
        tls_key: Some(key),
        announce: AnnounceConfig {
            url: Some(url.clone()),
            fingerprint: FingerprintSetting::Auto,
            check_secs: 1.0,
            block_secs: 1.0,
            ..AnnounceConfig::default()
        },
        schedule: ScheduleConfig {
            interval_secs: args.interval_secs,
            jitter_secs: args.interval_secs * 0.1,
            mode: args.mode,
            cpu_n: args.n,
            cpu_k: args.n,
            gpu_n: args.n,
            gpu_k: args.n,
            busy_retry_secs: (args.interval_secs / 4.0).max(0.1),
            ..defaults.schedule.clone()
        },
        liveness: LivenessConfig {
            heartbeat_secs: 5.0,
            offline_after_secs: 30.0,
            ..defaults.liveness.clone()
        },
        ..defaults
    };
    config.chain.network = format!("file:{}", chain.path().display());
    config.chain.netuid = NETUID.0;
    // A devnet lives minutes, not the 169-hour availability horizon: one 5-minute bucket online
    // counts as fully available, and the rounds asked for are full participation.
    config.scoring.availability_buckets = 1;
    config.scoring.participation_baseline = args.rounds.map_or(10, |r| r.clamp(1, 36) as u32);
    config.weights.interval_secs = 30.0;
    // Every devnet worker connects from loopback, one address: let them all register at once.
    let everyone =
        config.limits.max_unregistered.max(usize::try_from(workers).unwrap_or(usize::MAX));
    config.limits.max_unregistered = everyone;
    config.limits.max_unregistered_per_address = everyone;
    let me = keys.public();
    let byzantine = plan.is_some_and(|p| p.byzantine.contains(&me));
    if let Some(plan) = plan.filter(|_| permit) {
        let port = plan.peers.iter().find(|(k, _)| *k == me).map(|(_, p)| *p).context("port")?;
        let c = &mut config.consensus;
        c.enabled = true;
        c.listen = format!("127.0.0.1:{port}").parse()?;
        c.peers = plan
            .peers
            .iter()
            .filter(|(k, _)| *k != me)
            .map(|(k, port)| PeerConfig {
                hotkey: k.to_string(),
                url: format!("http://127.0.0.1:{port}"),
            })
            .collect();
        c.epoch_blocks = args.epoch_blocks;
        c.poll_secs = 0.25;
        c.wal = home.join("consensus.wal");
        c.timeout_propose_ms = 1000;
        c.timeout_prevote_ms = 500;
        c.timeout_precommit_ms = 500;
        c.timeout_delta_ms = 250;
        c.sync_after_secs = 3.0;
        c.byzantine = Byzantine { equivocate: byzantine, bad_aggregate: byzantine };
        config.weights.min_blocks_between_updates = 0;
    }
    let running = veribench_coordinator::start(config, keys.clone(), Arc::new(chain.clone()))
        .await
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Node { running, keys, permit, byzantine, url })
}

/// A certificate for `localhost` and its key, PEM files in `home`, made on first use.
fn self_signed_certificate(home: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (home.join("cert.pem"), home.join("key.pem"));
    if !cert.exists() || !key.exists() {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).context("self-signed certificate")?;
        std::fs::write(&key, made.signing_key.serialize_pem())
            .with_context(|| format!("cannot write {}", key.display()))?;
        std::fs::write(&cert, made.cert.pem())
            .with_context(|| format!("cannot write {}", cert.display()))?;
    }
    Ok((cert, key))
}

/// A loopback port free right now (the announcement must name it before the listener binds).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether every permitted coordinator has decided `rounds` challenges of every worker (busy
/// refusals are not rounds).
async fn rounds_done(permitted: &[&Node], workers: &[PublicKey], rounds: u64) -> bool {
    for node in permitted {
        let Ok(miners) = node.running.coordinator.store().miners().await else { return false };
        let decided = |key: &PublicKey| {
            miners.iter().find(|m| &m.hotkey == key).map_or(0, |m| m.verified + m.failed)
        };
        if workers.iter().any(|w| decided(w) < rounds) {
            return false;
        }
    }
    true
}

/// One coordinator's results from its own database.
async fn summarise(node: &Node, weights: Vec<WeightSummary>) -> anyhow::Result<CoordinatorSummary> {
    let miners = node.running.coordinator.store().miners().await.context("cannot read results")?;
    Ok(CoordinatorSummary {
        hotkey: ss58(&node.keys.public()),
        permit: node.permit,
        byzantine: node.byzantine,
        url: node.url.clone(),
        verified: miners.iter().map(|m| m.verified).sum(),
        failed: miners.iter().map(|m| m.failed).sum(),
        busy: miners.iter().map(|m| m.busy).sum(),
        miners: miners
            .iter()
            .map(|m| CoordinatorMiner {
                hotkey: ss58(&m.hotkey),
                verified: m.verified,
                failed: m.failed,
                busy: m.busy,
                gflops: m.mean_gflops,
            })
            .collect(),
        weights,
    })
}

/// A miner's totals over the permitted coordinators.
fn merge_miner(
    coordinators: &[CoordinatorSummary],
    hotkey: &str,
    behaviour: Behaviour,
) -> MinerSummary {
    let seen: Vec<&CoordinatorMiner> = coordinators
        .iter()
        .filter(|c| c.permit)
        .filter_map(|c| c.miners.iter().find(|m| m.hotkey == hotkey))
        .collect();
    let rated: Vec<f64> = seen.iter().map(|m| m.gflops).filter(|g| *g > 0.0).collect();
    MinerSummary {
        hotkey: hotkey.to_owned(),
        behaviour,
        verified: seen.iter().map(|m| m.verified).sum(),
        failed: seen.iter().map(|m| m.failed).sum(),
        gflops: if rated.is_empty() { 0.0 } else { rated.iter().sum::<f64>() / rated.len() as f64 },
    }
}

/// Scores the miners now, submits the weights to the local chain and reads back what the chain
/// stored for the coordinator's uid.
async fn set_weights(running: &Running, chain: &LocalChain) -> anyhow::Result<Vec<WeightSummary>> {
    let c = &running.coordinator;
    c.score_epoch(UnixMillis::now()).await.context("cannot score the miners")?;
    match c.submit_weights().await.context("cannot set weights")? {
        SubmitOutcome::Submitted { .. } => {}
        other => anyhow::bail!("weights were not set on the local chain: {other:?}"),
    }
    chain_weights(c, chain)
}

/// What the chain stored as the coordinator's weights.
fn chain_weights(
    c: &veribench_coordinator::Coordinator,
    chain: &LocalChain,
) -> anyhow::Result<Vec<WeightSummary>> {
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

/// Waits until the coordinator has submitted the agreed vector of a height at or after
/// `target` (its own epoch loop submits each decision), then reads back what the chain stored
/// for its uid.
async fn agreed_weights(
    node: &Node,
    chain: &LocalChain,
    target: u64,
) -> anyhow::Result<Vec<WeightSummary>> {
    let c = &node.running.coordinator;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let sets = c.store().weight_sets(20).await.context("cannot read weight sets")?;
        let done = sets.iter().any(|s| {
            s.decision_height.is_some_and(|h| h >= target) && s.status == WeightSetStatus::Submitted
        });
        if done {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{}: no agreed vector of height {target} or later was submitted",
            ss58(&node.keys.public())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    chain_weights(c, chain)
}

/// The honest coordinators' decisions, compared.
async fn consensus_summary(
    nodes: &[Node],
    coordinators: &[CoordinatorSummary],
) -> anyhow::Result<ConsensusSummary> {
    let mut by_height: std::collections::BTreeMap<u64, Vec<[u8; 32]>> = Default::default();
    let mut evidence = 0;
    let honest: Vec<&Node> = nodes.iter().filter(|n| n.permit && !n.byzantine).collect();
    for node in &honest {
        let store = node.running.coordinator.store();
        for d in store.decisions(None, 1000).await.context("cannot read decisions")? {
            by_height.entry(d.height).or_default().push(d.value_id);
        }
        evidence += store.evidence_count().await.context("cannot read evidence")?;
    }
    let decided = by_height
        .values()
        .filter(|ids| ids.len() == honest.len() && ids.iter().all(|id| *id == ids[0]))
        .count() as u64;
    let heights = by_height.len() as u64;
    let honest_weights: Vec<&Vec<WeightSummary>> =
        coordinators.iter().filter(|c| c.permit && !c.byzantine).map(|c| &c.weights).collect();
    let same_weights = honest_weights
        .windows(2)
        .all(|w| w[0].iter().map(|x| (x.uid, x.weight)).eq(w[1].iter().map(|x| (x.uid, x.weight))));
    let agreed = heights > 0 && decided == heights && same_weights;
    Ok(ConsensusSummary { heights, decided, evidence, agreed })
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

async fn draw_table(nodes: &[Node]) {
    let mut out = String::from("\x1b[2J\x1b[H");
    out += "veribench devnet\n";
    for node in nodes {
        let Ok(miners) = node.running.coordinator.store().miners().await else { continue };
        let (online, pending) = node.running.coordinator.load();
        out += &format!(
            "\ncoordinator {}{}  {}  http://{}  workers online {online}  in flight {pending}\n",
            ss58(&node.keys.public()),
            if node.permit { "" } else { " (no permit: workers refuse it)" },
            node.url,
            node.running.http_addr
        );
        out += &format!(
            "{:<50} {:>8} {:>8} {:>8} {:>12}\n",
            "miner hotkey", "verified", "failed", "busy", "GFLOP/s"
        );
        for m in &miners {
            out += &format!(
                "{:<50} {:>8} {:>8} {:>8} {:>12.1}\n",
                ss58(&m.hotkey),
                m.verified,
                m.failed,
                m.busy,
                m.mean_gflops
            );
        }
    }
    out += "\nCtrl-C to stop.\n";
    eprint!("{out}");
}
