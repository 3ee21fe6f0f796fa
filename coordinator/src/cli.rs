//! The command line of `veribench-coordinator`, also served as `veribench coordinator` by the
//! umbrella binary (so end-to-end tests run the real process from the binary cargo builds for
//! them anyway). The binaries' `main` only sets up logging, parses and calls [`run`]; `anyhow`
//! stays in this front end, the rest of the crate reports typed errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use veribench_chain::{Chain, LocalChain, NetUid, Network};
use veribench_protocol::UnixMillis;
use veribench_wallet::{Keypair, WalletConfig};

pub mod circuit;

use crate::CoordinatorConfig;
use crate::leases::{LeaseRequest, SIGNATURE_HEADER, SIGNER_HEADER, signed_message};

#[derive(Debug, Parser)]
#[command(
    name = "veribench-coordinator",
    version,
    about = "veribench coordinator: challenges workers and verifies their work"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `veribench-coordinator` (and of `veribench coordinator`).
/// `--db` of the one-shot commands that read or write the coordinator's database: the same
/// flag, variable and default as `run --db`.
#[derive(Debug, Args)]
pub struct DbFlag {
    /// `sqlite://path` or `postgres://…`.
    #[arg(
        long,
        env = "VERIBENCH_DB",
        default_value = "sqlite://data/coordinator.db",
        global = true
    )]
    pub db: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve workers and the HTTP API until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Report a lease to a running coordinator (`POST /api/v1/leases`).
    Lease(LeaseArgs),
    /// Publish this coordinator's endpoint on chain (`Commitments.set_commitment`, signed by its
    /// hotkey): `announce.url`, the certificate fingerprint and the wire version. Takes `run`'s
    /// configuration and flags.
    Announce {
        /// Print what would be written, as JSON, and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validator consensus (`[consensus]`).
    #[command(subcommand)]
    Consensus(ConsensusCommand),
    /// Administer the embedded file-backed chain (`--subtensor.network file:PATH`).
    #[command(subcommand)]
    LocalChain(LocalChainCommand),
    /// The prover market: participants and the batch queue (the API is `[market] enabled`).
    Market {
        /// The coordinator's database.
        #[command(flatten)]
        db: DbFlag,
        #[command(subcommand)]
        command: MarketCommand,
    },
    /// Circuit artifacts: fetch a miner's artifact into the cache (each attempt recorded in the
    /// database, served by `GET /api/v1/circuits`), or check a URL against the policy.
    Circuit {
        /// Database the fetch attempts are recorded in.
        #[command(flatten)]
        db: DbFlag,
        #[command(flatten)]
        args: circuit::CoordinatorCircuitArgs,
    },
}

/// `market …`.
#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Register a participant; prints its fresh, unguessable id (give it to the participant).
    AddParticipant {
        /// A name for the operator's records.
        name: String,
    },
    /// List participants.
    List,
    /// Queue matmul batches (`--count --m --k --n`), or every file of an external proof
    /// system's directory (`--system NAME --dir DIR`).
    AddBatches {
        /// How many matmul batches.
        #[arg(long, required_unless_present = "system")]
        count: Option<u64>,
        /// int8, fp16 or bf16.
        #[arg(long, default_value = "int8")]
        mode: veribench_protocol::Mode,
        /// Rows of the product.
        #[arg(long, required_unless_present = "system")]
        m: Option<u32>,
        /// The inner dimension.
        #[arg(long, required_unless_present = "system")]
        k: Option<u32>,
        /// Columns of the product.
        #[arg(long, required_unless_present = "system")]
        n: Option<u32>,
        /// An external proof system of `[[market.systems]]`: its batch files are queued.
        #[arg(long, requires = "dir", conflicts_with_all = ["count", "m", "k", "n"])]
        system: Option<String>,
        /// The directory of the system's batch files (UTF-8 files of at most 1 MiB).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Operations one of the system's batches stands for.
        #[arg(long, default_value_t = 0.0)]
        ops: f64,
    },
}

/// `consensus …`.
#[derive(Debug, Subcommand)]
pub enum ConsensusCommand {
    /// Print a running coordinator's consensus status, last decisions and evidence (`GET
    /// /api/v1/consensus`).
    Status {
        /// The coordinator's HTTP API.
        #[arg(long, env = "VERIBENCH_API", default_value = "http://127.0.0.1:7800")]
        api: String,
        /// Decisions and evidence to list.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print the JSON as served.
        #[arg(long)]
        json: bool,
    },
}

/// `lease`: signs with a trusted hotkey (`--wallet.*`) or authenticates with `--token`.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// The coordinator's HTTP API.
    #[arg(long, env = "VERIBENCH_API", default_value = "http://127.0.0.1:7800")]
    api: String,
    /// The leased worker's key (SS58 or hex).
    #[arg(long)]
    worker: String,
    /// Lease score in [0, 1].
    #[arg(long)]
    score: f64,
    /// Lease duration from now, in hours.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Bearer token from the coordinator's `leases.tokens` (instead of a signature).
    #[arg(long, env = "VERIBENCH_LEASE_TOKEN")]
    token: Option<String>,
    /// Wallet of the signing hotkey (one of the coordinator's `leases.trusted_signers`).
    #[arg(long = "wallet.name", default_value = "default")]
    wallet_name: String,
    /// The signing hotkey.
    #[arg(long = "wallet.hotkey", default_value = "default")]
    wallet_hotkey: String,
    /// Wallets directory (default ~/.bittensor/wallets).
    #[arg(long = "wallet.path")]
    wallet_path: Option<PathBuf>,
}

/// `local-chain`: the embedded file-backed chain.
#[derive(Debug, Subcommand)]
pub enum LocalChainCommand {
    /// Registers a hotkey on a subnet of the local chain (creating both if needed).
    Register {
        /// The chain state file.
        #[arg(long, default_value = "data/chain.json")]
        chain: PathBuf,
        /// The subnet.
        #[arg(long, default_value_t = 1)]
        netuid: u16,
        /// The hotkey (SS58 or hex).
        #[arg(long)]
        hotkey: String,
        /// Its coldkey (default: the hotkey).
        #[arg(long)]
        coldkey: Option<String>,
        /// Stake in rao.
        #[arg(long, default_value_t = 0)]
        stake: u64,
        /// Give it a validator permit (a coordinator needs one to set weights).
        #[arg(long)]
        validator_permit: bool,
    },
    /// Prints a subnet of the local chain as JSON: neurons, hyperparameters, weights, commitments.
    Show {
        /// The chain state file.
        #[arg(long, default_value = "data/chain.json")]
        chain: PathBuf,
        /// The subnet.
        #[arg(long, default_value_t = 1)]
        netuid: u16,
    },
}

/// Flags override the config file; environment variables (`VERIBENCH_…`) override it too.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file (missing keys keep their defaults).
    #[arg(long, env = "VERIBENCH_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://path (created if missing) or postgres://…
    #[arg(long, env = "VERIBENCH_DB")]
    db: Option<String>,
    /// WebSocket listen address for workers.
    #[arg(long, env = "VERIBENCH_WS_LISTEN")]
    ws_listen: Option<SocketAddr>,
    /// HTTP API listen address.
    #[arg(long, env = "VERIBENCH_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// PEM certificate chain for wss://.
    #[arg(long, env = "VERIBENCH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for wss://.
    #[arg(long, env = "VERIBENCH_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Wallet holding the coordinator's hotkey.
    #[arg(long = "wallet.name", env = "VERIBENCH_WALLET_NAME")]
    wallet_name: Option<String>,
    /// The coordinator's hotkey (signs every challenge).
    #[arg(long = "wallet.hotkey", env = "VERIBENCH_WALLET_HOTKEY")]
    wallet_hotkey: Option<String>,
    /// Wallets directory (default ~/.bittensor/wallets).
    #[arg(long = "wallet.path", env = "VERIBENCH_WALLET_PATH")]
    wallet_path: Option<PathBuf>,
    /// The chain, as btcli's flag: finney, test, local, ws://…, wss://…, or file:PATH for the
    /// embedded local chain. Only hotkeys registered on the subnet may register workers.
    #[arg(long = "subtensor.network", env = "VERIBENCH_SUBTENSOR_NETWORK")]
    network: Option<String>,
    /// The subnet.
    #[arg(long, env = "VERIBENCH_NETUID")]
    netuid: Option<u16>,
    /// The public `wss://` address announced on chain (`announce.url`).
    #[arg(long = "announce.url", env = "VERIBENCH_ANNOUNCE_URL")]
    announce_url: Option<String>,
}

impl RunArgs {
    fn config(&self) -> anyhow::Result<CoordinatorConfig> {
        let mut c = match &self.config {
            Some(path) => CoordinatorConfig::from_file(path)?,
            None => CoordinatorConfig::default(),
        };
        macro_rules! set {
            ($field:expr, $flag:expr) => {
                if let Some(v) = $flag.clone() {
                    $field = v;
                }
            };
        }
        set!(c.db, self.db);
        set!(c.ws_listen, self.ws_listen);
        set!(c.http_listen, self.http_listen);
        set!(c.wallet.name, self.wallet_name);
        set!(c.wallet.hotkey, self.wallet_hotkey);
        c.tls_cert = self.tls_cert.clone().or(c.tls_cert);
        c.tls_key = self.tls_key.clone().or(c.tls_key);
        c.wallet.path = self.wallet_path.clone().or(c.wallet.path);
        set!(c.chain.network, self.network);
        set!(c.chain.netuid, self.netuid);
        c.announce.url = self.announce_url.clone().or(c.announce.url);
        c.validate()?;
        Ok(c)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one subcommand to completion (`run` until SIGINT/SIGTERM).
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => serve(args).await,
        Command::Lease(args) => lease(args).await,
        Command::Announce { dry_run, run } => announce(run, dry_run).await,
        Command::Consensus(ConsensusCommand::Status { api, limit, json }) => {
            consensus_status(&api, limit, json).await
        }
        Command::LocalChain(cmd) => local_chain(cmd),
        Command::Circuit { db, args } => circuit::run(&db.db, args).await,
        Command::Market { db, command } => market(&db.db, command).await,
    }
}

/// `consensus status`: what `GET /api/v1/consensus` says, as a few lines an operator reads.
async fn consensus_status(api: &str, limit: u32, json: bool) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/consensus?limit={limit}", api.trim_end_matches('/'));
    // reqwest brings no TLS provider of its own here (for an https:// API): ring, as `lease`.
    veribench_support::tls::install_crypto_provider();
    let response = reqwest::get(&url).await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await.with_context(|| format!("cannot read {url}"))?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{url}: not JSON"))?;
    anyhow::ensure!(status.is_success(), "{url}: {status}: {body}");
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if body["enabled"] != serde_json::Value::Bool(true) {
        println!("consensus: off ([consensus] enabled = false)");
    }
    let s = &body["status"];
    if !s.is_null() {
        println!(
            "height {} round {} decided {} | validators {} | peers {}/{} connected",
            text(&s["height"]),
            text(&s["round"]),
            text(&s["decided"]),
            text(&s["validators"]),
            text(&s["peers_connected"]),
            text(&s["peers"]),
        );
        println!(
            "decided {} heights ({} by catch-up) | last {} in {} ms, {} round(s) | equivocations {} | bad proposals {} | refused messages {}{}",
            text(&s["heights_decided"]),
            text(&s["heights_synced"]),
            text(&s["last_decided"]),
            text(&s["last_decide_ms"]),
            text(&s["last_rounds"]),
            text(&s["equivocations"]),
            text(&s["bad_proposals"]),
            text(&s["refused_messages"]),
            if s["halted"] == serde_json::Value::Bool(true) {
                " | HALTED (WAL write failed)"
            } else {
                ""
            },
        );
    }
    for d in body["decisions"].as_array().into_iter().flatten() {
        println!(
            "decision height {} round {} value {} proposer {} vectors {} signers {} in {} ms",
            text(&d["height"]),
            text(&d["round"]),
            text(&d["value_id"]).get(..16).unwrap_or_default(),
            text(&d["proposer"]["ss58"]),
            text(&d["vectors"]),
            text(&d["signers"]),
            text(&d["decide_ms"]),
        );
    }
    println!("evidence: {} recorded", text(&body["evidence_total"]));
    for e in body["evidence"].as_array().into_iter().flatten() {
        println!(
            "  {} by {} at height {} round {}: {}",
            text(&e["kind"]),
            text(&e["validator"]["ss58"]),
            text(&e["height"]),
            text(&e["round"]),
            e["detail"],
        );
    }
    Ok(())
}

/// `market …` on the coordinator's database.
async fn market(db: &str, command: MarketCommand) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(db).await?;
    let now = UnixMillis::now();
    match command {
        MarketCommand::AddParticipant { name } => {
            let id = crate::market::new_participant_id();
            store.add_participant(&id, &name, now).await?;
            println!("{id}");
        }
        MarketCommand::List => {
            for p in store.participants().await? {
                println!("{}\t{}\t{}", p.id, p.name, p.created_at.0);
            }
        }
        MarketCommand::AddBatches { system: Some(system), dir: Some(dir), ops, .. } => {
            let batches = crate::market::external::queue_dir(&system, &dir, ops)?;
            let added = store.add_batches(&batches, now).await?;
            println!(
                "queued {added} {system} batches ({} queued in all)",
                store.queued_batches().await?
            );
        }
        MarketCommand::AddBatches { count, mode, m, k, n, .. } => {
            let (Some(count), Some(m), Some(k), Some(n)) = (count, m, k, n) else {
                anyhow::bail!("matmul batches need --count, --m, --k and --n");
            };
            let spec = crate::market::BatchSpec { mode, m, k, n };
            let batches = spec.new_batches(count)?;
            let added = store.add_batches(&batches, now).await?;
            println!("queued {added} batches ({} queued in all)", store.queued_batches().await?);
        }
    }
    store.close().await?;
    Ok(())
}

/// `announce`: prints the endpoint and its encoding, then writes it unless `dry_run`.
async fn announce(args: RunArgs, dry_run: bool) -> anyhow::Result<()> {
    let config = args.config()?;
    let endpoint = crate::announce::endpoint(&config.announce, config.tls_cert.as_deref())?;
    let bytes = endpoint.encode()?;
    // A dry run needs no wallet: it shows the hotkey when one can be loaded.
    let keypair = config.wallet.load_hotkey();
    let mut report = serde_json::json!({
        "network": config.chain.network,
        "netuid": config.chain.netuid,
        "hotkey": keypair.as_ref().ok().map(Keypair::ss58_address),
        "url": endpoint.url.as_str(),
        "fingerprint": endpoint.fingerprint.map(|f| f.to_string()),
        "protocol_version": endpoint.protocol_version,
        "bytes": bytes.len(),
        "hex": format!("0x{}", hex::encode(&bytes)),
        "written": false,
    });
    if !dry_run {
        let keypair = keypair.context("cannot load the coordinator hotkey to sign with")?;
        let chain = open_chain(&config.chain.network()?).await?;
        let netuid = NetUid(config.chain.netuid);
        let receipt = crate::announce::publish(chain.as_ref(), &keypair, netuid, &endpoint).await?;
        report["written"] = true.into();
        report["block"] = receipt.block.into();
        report["extrinsic"] = receipt.hash.into();
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The chain of `network`: the file-backed local chain or a subtensor node.
async fn open_chain(network: &Network) -> anyhow::Result<Arc<dyn Chain>> {
    veribench_subtensor::connect(network)
        .await
        .with_context(|| format!("cannot open the chain {network}"))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let config = args.config()?;
    tracing::info!("configuration:\n{}", config.redacted());
    let keypair = config.wallet.load_hotkey().with_context(|| {
        format!(
            "cannot load the coordinator hotkey; create one with `veribench-worker wallet create --wallet.name {} --wallet.hotkey {}`",
            config.wallet.name, config.wallet.hotkey
        )
    })?;
    let chain = open_chain(&config.chain.network()?).await?;
    let running =
        crate::start(config, keypair, chain).await.context("cannot start the coordinator")?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn lease(args: LeaseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.hours > 0.0, "--hours must be positive");
    let now = UnixMillis::now();
    let request = LeaseRequest {
        worker: args.worker.clone(),
        score: args.score,
        starts_at: None,
        ends_at: now.0 + (args.hours * 3_600_000.0) as u64,
        issued_at: now.0,
    };
    let body = serde_json::to_vec(&request)?;
    let url = format!("{}/api/v1/leases", args.api.trim_end_matches('/'));
    veribench_support::tls::install_crypto_provider();
    let mut post =
        reqwest::Client::new().post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
    post = match &args.token {
        Some(token) => post.bearer_auth(token),
        None => {
            let wallet = WalletConfig {
                name: args.wallet_name.clone(),
                hotkey: args.wallet_hotkey.clone(),
                path: args.wallet_path.clone(),
            };
            let keypair = wallet.load_hotkey().context("cannot load the signing hotkey")?;
            let signature = keypair.sign(&signed_message(&body));
            post.header(SIGNER_HEADER, keypair.ss58_address())
                .header(SIGNATURE_HEADER, hex::encode(signature.0))
        }
    };
    let response = post.body(body).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "the coordinator refused the lease ({status}): {text}");
    println!("{text}");
    Ok(())
}

fn local_chain(cmd: LocalChainCommand) -> anyhow::Result<()> {
    let key =
        |s: &str| veribench_wallet::parse_public_key(s).with_context(|| format!("bad key {s}"));
    match cmd {
        LocalChainCommand::Register { chain, netuid, hotkey, coldkey, stake, validator_permit } => {
            let chain = LocalChain::open(&chain)?;
            let hot = key(&hotkey)?;
            let cold = coldkey.as_deref().map(key).transpose()?.unwrap_or(hot);
            let uid = chain.register(NetUid(netuid), hot, cold, stake, validator_permit)?;
            println!(
                "{}",
                serde_json::json!({ "netuid": netuid, "uid": uid, "hotkey": hot.to_string() })
            );
        }
        LocalChainCommand::Show { chain, netuid } => {
            let subnet = LocalChain::open(&chain)?.subnet(NetUid(netuid))?;
            println!("{}", serde_json::to_string_pretty(&subnet)?);
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Lifts the soft open-file limit to the hard limit: every worker is a socket, and the common
/// default soft limit (1024) would cap a coordinator at about a thousand workers.
fn raise_fd_limit() {
    match veribench_support::fd_limit::raise_fd_limit() {
        Ok(limit) if limit.soft < limit.hard => tracing::warn!(
            soft = limit.soft,
            hard = limit.hard,
            "cannot raise the open-file limit; large worker counts may be refused"
        ),
        Ok(limit) => tracing::debug!(soft = limit.soft, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_override_the_config_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, "db = \"sqlite://file.db\"\n\n[chain]\nnetuid = 7\n")?;
        let path = path.to_str().context("a UTF-8 temporary path")?;
        let cli = Cli::try_parse_from([
            "veribench-coordinator",
            "run",
            "--config",
            path,
            "--db",
            "sqlite://flag.db",
            "--netuid",
            "9",
        ])?;
        let Command::Run(args) = cli.command else { anyhow::bail!("not `run`: {cli:?}") };
        let config = args.config()?;
        assert_eq!(config.db, "sqlite://flag.db");
        assert_eq!(config.chain.netuid, 9);
        Ok(())
    }
}
