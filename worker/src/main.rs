//! `veribench-worker`: parses the command line and calls into the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod circuit;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use veribench_kernels::BackendKind;
use veribench_protocol::{
    DEFAULT_CPU_SHAPE, DEFAULT_GPU_SHAPE, MAX_DIM, Mode, Shape, UnixMillis, default_sampled_rows,
};
use veribench_wallet::Wallet;
use veribench_worker::bench::{run_bench, run_cuda_bench, run_tune};
use veribench_worker::daemon::{
    ConfigOverrides, DelegationSource, WorkerConfig, WorkerIdentity, run_worker, wallet_cmd,
};
use veribench_worker::select::{BackendChoice, open_backend};

#[derive(Debug, Parser)]
#[command(
    name = "veribench-worker",
    version,
    about = "veribench worker: computes verifiable GEMM challenges"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one challenge end to end on a backend, print per-phase times and verify it.
    Bench {
        /// Compute backend.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Challenge mode: int8, fp16, bf16 or fp32.
        #[arg(long, default_value = "int8")]
        mode: Mode,
        /// Challenge shape, `MxKxN` (A is M × K, B is K × N) or `N` for N × N × N. Default: what
        /// a coordinator gives the backend's devices, 4096x8192x4096 on a CPU and 16384 on a GPU.
        #[arg(long)]
        shape: Option<Shape>,
        /// Shorthand for `--shape N`.
        #[arg(long, conflicts_with = "shape")]
        n: Option<u32>,
        /// Rows sampled and verified after the commitment. Default: a coordinator's, 460 in the
        /// exact modes and 32 in fp32 (SPEC §6).
        #[arg(long)]
        samples: Option<u32>,
        /// Print exactly one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// wgpu only: sweep the GEMM tile sizes at this mode and size and print the best.
        #[arg(long)]
        tune: bool,
        /// Untimed challenges run first, so the report shows a running worker's steady state.
        #[arg(long, default_value_t = 1)]
        warmup: u32,
    },
    /// Serve coordinators: connect, register, compute their challenges, reconnect when dropped.
    ///
    /// Either one coordinator (--coordinator with its pinned --coordinator.hotkey), or every
    /// validator of a subnet that announces a coordinator on chain (--subtensor.network and
    /// --netuid): validators with a permit and at least --min-validator-stake, whose
    /// announcement is fresh and speaks this worker's protocol.
    ///
    /// Settings come from --config (TOML), overridden by these flags or their VERIBENCH_*
    /// environment variables (shown with each flag; a flag beats its variable, and a variable
    /// set to the empty string counts as unset).
    Run(RunArgs),
    /// Manage worker keys and miner delegations (btcli wallet layout).
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Prover market participant: pull a batch (`GET /get_batch/`), compute its product on the
    /// backend, submit it (`POST /submit_proof/`) with its proving time; until no batch is left.
    Market {
        /// The market server, e.g. http://host:7800.
        #[arg(long)]
        server: String,
        /// The participant id the operator gave you.
        #[arg(long = "participant-id", env = "VERIBENCH_PARTICIPANT_ID")]
        participant_id: String,
        /// What proving one batch costs you, in US cents.
        #[arg(long = "cost-cents", default_value_t = 0)]
        cost_cents: u64,
        /// The lowest price you accept per batch, in US cents.
        #[arg(long = "price-cents", default_value_t = 0)]
        price_cents: u64,
        /// Your deployment's name or version, recorded with every submission.
        #[arg(long, default_value = "veribench-worker")]
        deployment: String,
        /// Stop after one batch.
        #[arg(long)]
        once: bool,
        /// Compute backend.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
    },
    /// Circuit artifacts (miner): publish to S3/R2 and commit the hash on chain, or write
    /// presigned URLs for a coordinator (only while the local artifact matches the commitment).
    Circuit(circuit::WorkerCircuitArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// One coordinator's URL, ws://host:port or wss://host:port (instead of discovery).
    #[arg(long, env = "VERIBENCH_COORDINATOR")]
    coordinator: Option<String>,
    /// The coordinator's key (ss58 or hex), required with --coordinator.
    #[arg(long = "coordinator.hotkey", env = "VERIBENCH_COORDINATOR_HOTKEY")]
    coordinator_hotkey: Option<String>,
    /// Serve the validators of a subnet on this chain: finney, test, local, a ws(s):// node URL
    /// or file:PATH (instead of --coordinator).
    #[arg(long = "subtensor.network", env = "VERIBENCH_SUBTENSOR_NETWORK")]
    network: Option<String>,
    /// The subnet whose validators are served (with --subtensor.network).
    #[arg(long, env = "VERIBENCH_NETUID")]
    netuid: Option<u16>,
    /// Least stake, in rao, of a validator whose coordinator is served [default: 1000 TAO].
    #[arg(long)]
    min_validator_stake: Option<u64>,
    /// Re-read the metagraph after this many blocks [default: 5].
    #[arg(long)]
    refresh_blocks: Option<u64>,
    /// Where trust decisions are written [default: ~/.veribench/worker/coordinators.json].
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Serve coordinators announced on loopback, private or link-local hosts (a private test
    /// network; never on a public subnet).
    #[arg(long)]
    allow_private_endpoints: bool,
    /// Extra CA certificate(s), PEM, trusted for wss:// besides the webpki roots.
    #[arg(long, env = "VERIBENCH_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Worker name shown by the coordinator.
    #[arg(long, env = "VERIBENCH_WORKER_NAME")]
    name: Option<String>,
    /// Heartbeat interval in seconds (default: the coordinator's, else 30).
    #[arg(long, env = "VERIBENCH_HEARTBEAT_SECS")]
    heartbeat_secs: Option<u64>,
    /// Compute backend.
    #[arg(long, value_enum, env = "VERIBENCH_BACKEND")]
    backend: Option<BackendChoice>,
    #[command(flatten)]
    wallet: WalletFlags,
}

/// btcli's wallet flags, all optional (defaults: name and hotkey `default`,
/// path ~/.bittensor/wallets).
#[derive(Debug, Args)]
struct WalletFlags {
    /// Wallet name.
    #[arg(long = "wallet.name", env = "VERIBENCH_WALLET_NAME")]
    wallet_name: Option<String>,
    /// Hotkey name (the worker's own key for `run`).
    #[arg(long = "wallet.hotkey", env = "VERIBENCH_WALLET_HOTKEY")]
    wallet_hotkey: Option<String>,
    /// Wallets directory.
    #[arg(long = "wallet.path", env = "VERIBENCH_WALLET_PATH")]
    wallet_path: Option<PathBuf>,
}

/// The wallet flags where a wallet and hotkey must be named.
#[derive(Debug, Args)]
struct WalletTarget {
    /// Wallet name.
    #[arg(long = "wallet.name")]
    wallet_name: String,
    /// Hotkey name.
    #[arg(long = "wallet.hotkey")]
    hotkey: String,
    /// Wallets directory [default: ~/.bittensor/wallets].
    #[arg(long = "wallet.path")]
    wallet_path: Option<PathBuf>,
}

impl WalletTarget {
    fn wallet(&self) -> anyhow::Result<Wallet> {
        let path = self.wallet_path.clone().unwrap_or_else(Wallet::default_path);
        Ok(Wallet::new(path, self.wallet_name.clone())?)
    }
}

#[derive(Debug, Subcommand)]
enum WalletCommand {
    /// Create a hotkey; prints its ss58 address and public key (never the secret).
    Create {
        #[command(flatten)]
        target: WalletTarget,
        /// Replace an existing hotkey of that name (its key is lost).
        #[arg(long)]
        overwrite: bool,
    },
    /// Sign, with the miner hotkey --wallet.hotkey, a delegation to the worker key
    /// --worker.hotkey (created if missing), stored in <wallet>/delegations/.
    Delegate {
        #[command(flatten)]
        target: WalletTarget,
        /// The worker's hotkey name, in the same wallet.
        #[arg(long = "worker.hotkey")]
        worker_hotkey: String,
        /// Validity in days.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
    /// Show a hotkey and its delegation.
    Show {
        #[command(flatten)]
        target: WalletTarget,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match parse_cli().command {
        Command::Bench { backend, mode, shape, n, samples, json, tune, warmup } => {
            let shape = shape.or(n.map(Shape::square));
            if let Some(shape) = shape {
                shape.validate(MAX_DIM).context("--shape")?;
            }
            let samples = samples.unwrap_or_else(|| default_sampled_rows(mode));
            if tune {
                let n = shape.map_or(2048, |s| s.n);
                if backend != BackendChoice::Wgpu {
                    bail!("--tune sweeps the wgpu GEMM's tile sizes: use it with --backend wgpu");
                }
                let report = run_tune(mode, n).context("tile sweep failed")?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", report.table());
                }
                return Ok(());
            }
            let outcome = if backend == BackendChoice::Cuda {
                let shape = shape.unwrap_or(DEFAULT_GPU_SHAPE);
                run_cuda_bench(mode, shape, samples, warmup).context("CUDA bench failed")?
            } else {
                let backend = open_backend(backend).context("cannot open the compute backend")?;
                let shape = shape.unwrap_or(match backend.kind() {
                    BackendKind::Cpu => DEFAULT_CPU_SHAPE,
                    BackendKind::Cuda | BackendKind::Wgpu => DEFAULT_GPU_SHAPE,
                });
                run_bench(backend.as_ref(), mode, shape, samples, warmup).context("bench failed")?
            };
            if json {
                println!("{}", serde_json::to_string(&outcome.report)?);
            } else {
                println!("{}", outcome.table());
            }
            if !outcome.report.verified {
                bail!("the verifier rejected the bench run: {:?}", outcome.verdict);
            }
            Ok(())
        }
        Command::Run(args) => run(args),
        Command::Wallet(command) => wallet(command),
        Command::Circuit(args) => circuit(args),
        Command::Market {
            server,
            participant_id,
            cost_cents,
            price_cents,
            deployment,
            once,
            backend,
        } => {
            let backend: std::sync::Arc<dyn veribench_kernels::Backend> =
                open_backend(backend).context("cannot open the backend")?.into();
            let client = veribench_worker::market::MarketClient {
                server,
                participant_id,
                cost_cents,
                price_cents,
                deployment,
                once,
                retry: veribench_support::RetryPolicy::default(),
            };
            let worker = veribench_worker::market::MarketWorker { client, backend };
            let report = tokio::runtime::Runtime::new()?.block_on(worker.run())?;
            println!("accepted {} refused {}", report.accepted, report.refused);
            Ok(())
        }
    }
}

/// `circuit`: the miner's artifact commands, against the chain of `--subtensor.network`.
fn circuit(args: circuit::WorkerCircuitArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let network = args.chain.network().context("--subtensor.network")?;
        let chain = veribench_subtensor::connect(&network)
            .await
            .with_context(|| format!("cannot open the chain {network}"))?;
        let keypair = args.wallet.load_hotkey()?;
        circuit::run_worker_circuit(args.command, chain, &keypair, args.chain.netuid()).await
    })
}

/// `run`: configuration, identity, backend, then the daemon until SIGINT or SIGTERM.
fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    config.apply(ConfigOverrides {
        coordinator: args.coordinator,
        coordinator_hotkey: args.coordinator_hotkey,
        name: args.name,
        heartbeat_secs: args.heartbeat_secs,
        tls_ca: args.tls_ca,
        backend: args.backend.map(|b| b.to_string()),
        wallet_name: args.wallet.wallet_name,
        wallet_hotkey: args.wallet.wallet_hotkey,
        wallet_path: args.wallet.wallet_path,
        network: args.network,
        netuid: args.netuid,
        min_validator_stake: args.min_validator_stake,
        refresh_blocks: args.refresh_blocks,
        state_file: args.state_file,
        allow_private_endpoints: args.allow_private_endpoints.then_some(true),
    });
    config.validate()?;

    let choice = BackendChoice::from_str(&config.backend, true)
        .map_err(|e| anyhow::anyhow!("invalid backend {:?}: {e}", config.backend))?;
    let backend: Arc<dyn veribench_kernels::Backend> =
        Arc::from(open_backend(choice).context("cannot open the compute backend")?);

    let wallet_path = config.wallet.path.clone().unwrap_or_else(Wallet::default_path);
    let wallet = Wallet::new(wallet_path, config.wallet.name.clone())?;
    let ttl = Duration::from_secs(config.self_delegation_hours.saturating_mul(3600));
    let (identity, source) =
        WorkerIdentity::load(&wallet, &config.wallet.hotkey, ttl, UnixMillis::now())
            .context("cannot load the worker identity")?;
    match source {
        DelegationSource::File => tracing::info!(
            worker_key = %identity.keypair.ss58_address(),
            miner_hotkey = %identity.delegation.miner_hotkey,
            expires_at = identity.delegation.expires_at.0,
            "using the miner's delegation to this worker key"
        ),
        DelegationSource::SelfDelegated => tracing::warn!(
            worker_key = %identity.keypair.ss58_address(),
            "no delegation file: this key is taken to be the miner hotkey and delegates to \
             itself; prefer a separate worker key (veribench-worker wallet delegate)"
        ),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run_worker(config, identity, backend, shutdown_signal()));
    // Computations still running on blocking threads are abandoned rather than awaited.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(())
}

/// The command line, with every environment variable of a `run` flag that is set but empty
/// treated as unset (clap would take the empty string as the value).
fn parse_cli() -> Cli {
    let command = Cli::command().mut_subcommand("run", |run| {
        let empty: Vec<clap::Id> = run
            .get_arguments()
            .filter(|a| a.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty()))
            .map(|a| a.get_id().clone())
            .collect();
        empty.into_iter().fold(run, |run, id| run.mut_arg(id, |a| a.env(None::<&str>)))
    });
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// `wallet …`.
fn wallet(command: WalletCommand) -> anyhow::Result<()> {
    match command {
        WalletCommand::Create { target, overwrite } => {
            let report = wallet_cmd::create(&target.wallet()?, &target.hotkey, overwrite)?;
            println!("{report}");
        }
        WalletCommand::Delegate { target, worker_hotkey, days } => {
            let report = wallet_cmd::delegate_to_worker(
                &target.wallet()?,
                &target.hotkey,
                &worker_hotkey,
                days,
                UnixMillis::now(),
            )?;
            println!("{report}");
        }
        WalletCommand::Show { target } => {
            println!("{}", wallet_cmd::show(&target.wallet()?, &target.hotkey, UnixMillis::now())?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
