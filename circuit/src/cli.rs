//! The `circuit …` subcommands of `veribench-worker` (miner side) and `veribench-coordinator`
//! (validator side), as clap types and one `run_*` function each, so a binary wires them in with
//! one enum variant and one call. This is the only module that uses `anyhow`.
//!
//! Configuration is a TOML file (`--circuit-config`), overridden by `VERIBENCH_STORAGE_*`
//! environment variables for the bucket and its keys; see the crate README for every key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use veribench_chain::{Chain, LocalChain, NetUid, Network, RetryPolicy};
use veribench_wallet::Keypair;

use crate::fetch::{FetchConfig, FetchLog, Fetcher, MemoryLog};
use crate::offer::{CircuitOffer, DEFAULT_URL_EXPIRY, offer_urls};
use crate::publish::{PublishOptions, publish};
use crate::redact::redact_url;
use crate::storage::StorageConfig;
use crate::transfer::TransferConfig;
use crate::{RequiredFiles, UrlPolicy};

/// The miner's circuit configuration file (all keys optional except the bucket, which may also
/// come from the environment).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinerCircuitConfig {
    /// `[artifact]`: required files and the committed one.
    pub artifact: RequiredFiles,
    /// `[storage]`: the bucket.
    pub storage: StorageConfig,
    /// Validity of the GET URLs handed to validators, seconds (default 3600).
    pub url_expiry_secs: Option<u64>,
    /// `[transfer]`: upload timeouts and retries.
    pub transfer: TransferConfig,
    /// `[chain_retry]`: retries of the chain calls.
    pub chain_retry: RetryPolicy,
}

fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl MinerCircuitConfig {
    /// Reads `path` (or the defaults) and applies the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut cfg: Self = read_toml(path)?;
        cfg.storage.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }
}

/// The chain flags of the `circuit` commands, as the binaries spell them (global: they may
/// follow the subcommand).
#[derive(Debug, Args)]
pub struct ChainFlags {
    /// The chain, as btcli's flag: finney, test, local, ws://…, wss://…, or file:PATH for the
    /// embedded local chain.
    #[arg(
        long = "subtensor.network",
        env = "VERIBENCH_SUBTENSOR_NETWORK",
        default_value = "file:data/chain.json",
        global = true
    )]
    pub network: String,
    /// The subnet.
    #[arg(long, env = "VERIBENCH_NETUID", default_value_t = 1, global = true)]
    pub netuid: u16,
}

impl ChainFlags {
    /// The parsed `--subtensor.network`.
    pub fn network(&self) -> anyhow::Result<Network> {
        self.network.parse().with_context(|| format!("--subtensor.network {:?}", self.network))
    }

    /// The `--netuid`.
    pub fn netuid(&self) -> NetUid {
        NetUid(self.netuid)
    }

    /// The file-backed local chain when `--subtensor.network` is `file:PATH`, else `None`
    /// (the binary opens its node client).
    pub fn open_local(&self) -> anyhow::Result<Option<Arc<dyn Chain>>> {
        match self.network()? {
            Network::File(path) => Ok(Some(Arc::new(LocalChain::open(path)?))),
            _ => Ok(None),
        }
    }
}

/// btcli's wallet flags selecting the miner hotkey (global).
#[derive(Debug, Args)]
pub struct MinerWalletFlags {
    /// Wallet name.
    #[arg(
        long = "wallet.name",
        env = "VERIBENCH_WALLET_NAME",
        default_value = "default",
        global = true
    )]
    pub wallet_name: String,
    /// The miner hotkey's name (it signs the commitment).
    #[arg(
        long = "wallet.hotkey",
        env = "VERIBENCH_WALLET_HOTKEY",
        default_value = "default",
        global = true
    )]
    pub wallet_hotkey: String,
    /// Wallets directory [default: ~/.bittensor/wallets].
    #[arg(long = "wallet.path", env = "VERIBENCH_WALLET_PATH", global = true)]
    pub wallet_path: Option<PathBuf>,
}

impl MinerWalletFlags {
    /// Loads the selected hotkey.
    pub fn load_hotkey(&self) -> anyhow::Result<Keypair> {
        let cfg = veribench_wallet::WalletConfig {
            name: self.wallet_name.clone(),
            hotkey: self.wallet_hotkey.clone(),
            path: self.wallet_path.clone(),
        };
        cfg.load_hotkey().with_context(|| {
            format!("cannot load the miner hotkey {}/{}", self.wallet_name, self.wallet_hotkey)
        })
    }
}

/// `veribench-worker circuit [chain and wallet flags] <publish|offer> …`.
#[derive(Debug, Args)]
pub struct WorkerCircuitArgs {
    /// The chain.
    #[command(flatten)]
    pub chain: ChainFlags,
    /// The miner hotkey.
    #[command(flatten)]
    pub wallet: MinerWalletFlags,
    /// The command.
    #[command(subcommand)]
    pub command: WorkerCircuitCommand,
}

/// `veribench-coordinator circuit [chain flags] <fetch|check-url> …`.
#[derive(Debug, Args)]
pub struct CoordinatorCircuitArgs {
    /// The chain.
    #[command(flatten)]
    pub chain: ChainFlags,
    /// The command.
    #[command(subcommand)]
    pub command: CoordinatorCircuitCommand,
}

/// Options shared by the miner's commands.
#[derive(Debug, Args)]
pub struct MinerArtifactArgs {
    /// The artifact directory (vk.key, pk.key, settings.json, model.compiled by default).
    #[arg(long)]
    pub dir: PathBuf,
    /// Circuit configuration (TOML: `[artifact]`, `[storage]`, url_expiry_secs, `[transfer]`).
    #[arg(long = "circuit-config", env = "VERIBENCH_CIRCUIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Required files, comma-separated (overrides `[artifact].files`).
    #[arg(long, value_delimiter = ',')]
    pub files: Option<Vec<String>>,
    /// The committed file (overrides `[artifact].committed`).
    #[arg(long)]
    pub committed: Option<String>,
}

impl MinerArtifactArgs {
    fn load(&self) -> anyhow::Result<MinerCircuitConfig> {
        let mut cfg = MinerCircuitConfig::load(self.config.as_deref())?;
        if self.files.is_some() || self.committed.is_some() {
            let files = self.files.clone().unwrap_or_else(|| cfg.artifact.files().to_vec());
            let committed =
                self.committed.clone().unwrap_or_else(|| cfg.artifact.committed().to_owned());
            cfg.artifact = RequiredFiles::new(files, committed)?;
        }
        Ok(cfg)
    }
}

/// `veribench-worker circuit …`: the miner's artifact commands.
#[derive(Debug, Subcommand)]
pub enum WorkerCircuitCommand {
    /// Check the artifact directory, upload it to S3/R2 under `<sha256>/<file>`, and commit the
    /// SHA-256 of the committed file on chain with the miner hotkey.
    Publish {
        /// The artifact and configuration.
        #[command(flatten)]
        artifact: MinerArtifactArgs,
        /// No progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Print a circuit offer (JSON: hash, presigned GET URLs, expiry) for a coordinator,
    /// refused when the local artifact differs from the chain commitment.
    Offer {
        /// The artifact and configuration.
        #[command(flatten)]
        artifact: MinerArtifactArgs,
        /// URL validity in seconds (default: url_expiry_secs, else 3600; at most 7 days).
        #[arg(long)]
        expiry_secs: Option<u64>,
        /// Write the offer to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a miner command with the miner's hotkey `keypair` on `netuid`.
pub async fn run_worker_circuit(
    cmd: WorkerCircuitCommand,
    chain: Arc<dyn Chain>,
    keypair: &Keypair,
    netuid: NetUid,
) -> anyhow::Result<()> {
    match cmd {
        WorkerCircuitCommand::Publish { artifact, no_progress } => {
            let cfg = artifact.load()?;
            let storage = cfg.storage.open()?;
            let opts = PublishOptions {
                transfer: cfg.transfer,
                chain_retry: cfg.chain_retry,
                progress: !no_progress,
            };
            let report = publish(
                &artifact.dir,
                &cfg.artifact,
                &storage,
                chain.as_ref(),
                keypair,
                netuid,
                &opts,
            )
            .await?;
            let bytes: u64 = report.uploaded.iter().map(|(_, n)| n).sum();
            println!("published {} ({} files, {bytes} bytes)", report.hash, report.uploaded.len());
            match report.receipt {
                Some(r) => println!("committed at block {} ({})", r.block, r.hash),
                None => println!("the chain already held this commitment"),
            }
            Ok(())
        }
        WorkerCircuitCommand::Offer { artifact, expiry_secs, out } => {
            let cfg = artifact.load()?;
            let storage = cfg.storage.open()?;
            let expiry =
                expiry_secs.or(cfg.url_expiry_secs).map_or(DEFAULT_URL_EXPIRY, Duration::from_secs);
            let offer = offer_urls(
                &artifact.dir,
                &cfg.artifact,
                &storage,
                chain.as_ref(),
                netuid,
                &keypair.public(),
                expiry,
            )
            .await?;
            let json = serde_json::to_string_pretty(&offer)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("offer for {} written to {}", offer.hash, path.display());
                }
                None => println!("{json}"),
            }
            Ok(())
        }
    }
}

/// `veribench-coordinator circuit …`: the validator's artifact commands.
#[derive(Debug, Subcommand)]
pub enum CoordinatorCircuitCommand {
    /// Fetch a miner's artifact from its offer into the cache: URL policy, chain commitment,
    /// size caps, SHA-256. Exits non-zero with the reason when the fetch fails.
    Fetch {
        /// The miner's hotkey (ss58 or hex).
        #[arg(long)]
        miner: String,
        /// The miner's offer, a JSON file as `veribench-worker circuit offer` prints it.
        #[arg(long)]
        offer: PathBuf,
        /// Fetch configuration (TOML: cache_dir, `[artifact]`, `[url_policy]`, caps, `[transfer]`).
        #[arg(long = "circuit-config", env = "VERIBENCH_CIRCUIT_CONFIG")]
        config: Option<PathBuf>,
        /// Cache directory (overrides cache_dir; use another one while a coordinator runs).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Print the fetch record as JSON.
        #[arg(long)]
        json: bool,
        /// No progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Check one URL against the URL policy without fetching it: exit 0 when it would be
    /// fetched, non-zero with the reason when not.
    CheckUrl {
        /// The URL.
        url: String,
        /// Fetch configuration (its `[url_policy]` is used).
        #[arg(long = "circuit-config", env = "VERIBENCH_CIRCUIT_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs a validator command. `config` is the coordinator's own `[circuit]` section if it has
/// one; otherwise `--circuit-config` (or the defaults) is read.
pub async fn run_coordinator_circuit(
    cmd: CoordinatorCircuitCommand,
    chain: Arc<dyn Chain>,
    netuid: NetUid,
    config: Option<FetchConfig>,
    log: Option<Arc<dyn FetchLog>>,
) -> anyhow::Result<()> {
    let load = |path: Option<&Path>| -> anyhow::Result<FetchConfig> {
        match (path, &config) {
            (Some(p), _) => read_toml(Some(p)),
            (None, Some(c)) => Ok(c.clone()),
            (None, None) => Ok(FetchConfig::default()),
        }
    };
    match cmd {
        CoordinatorCircuitCommand::CheckUrl { url, config: path } => {
            let policy: UrlPolicy = load(path.as_deref())?.url_policy;
            policy.validate().map_err(anyhow::Error::msg)?;
            match policy.check_str(&url) {
                Ok(u) => {
                    println!("ok: {} would be fetched", redact_url(u.as_str()));
                    Ok(())
                }
                Err(refusal) => bail!("refused ({}): {refusal}", refusal.code()),
            }
        }
        CoordinatorCircuitCommand::Fetch {
            miner,
            offer,
            config: path,
            cache_dir,
            json,
            no_progress,
        } => {
            let mut cfg = load(path.as_deref())?;
            if let Some(dir) = cache_dir {
                cfg.cache_dir = dir;
            }
            let miner = veribench_wallet::parse_public_key(&miner)?;
            let text = std::fs::read_to_string(&offer)
                .with_context(|| format!("reading {}", offer.display()))?;
            let offer: CircuitOffer = serde_json::from_str(&text)
                .with_context(|| format!("parsing the offer {}", offer.display()))?;
            let log = log.unwrap_or_else(|| Arc::new(MemoryLog::default()));
            let fetcher =
                Fetcher::new(cfg, chain, netuid)?.with_log(log).with_progress(!no_progress);
            let attempt = fetcher.fetch(&miner, &offer).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&attempt.record)?);
            }
            match attempt.result {
                Ok(f) => {
                    if !json {
                        let how = if f.cache_hit { "cache hit" } else { "fetched" };
                        println!(
                            "{how}: {} in {} ({} bytes, {} ms)",
                            f.hash,
                            f.dir.display(),
                            attempt.record.bytes,
                            attempt.record.duration_ms
                        );
                        for h in f.evicted {
                            println!("evicted {h}");
                        }
                    }
                    Ok(())
                }
                Err(e) => bail!("fetch failed ({}): {e}", e.code()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The argument types as a binary embeds them: `circuit` with global chain and wallet flags
    /// before or after the subcommand.
    #[test]
    fn binaries_parse_the_circuit_subcommands() {
        use clap::{CommandFactory, Parser, Subcommand};
        #[derive(Debug, Parser)]
        struct Bin {
            #[command(subcommand)]
            command: Cmd,
        }
        #[derive(Debug, Subcommand)]
        enum Cmd {
            Worker {
                #[command(subcommand)]
                c: WorkerSide,
            },
            Coordinator {
                #[command(subcommand)]
                c: CoordinatorSide,
            },
        }
        #[derive(Debug, Subcommand)]
        enum WorkerSide {
            Circuit(WorkerCircuitArgs),
        }
        #[derive(Debug, Subcommand)]
        enum CoordinatorSide {
            Circuit(CoordinatorCircuitArgs),
        }
        Bin::command().debug_assert();
        let parse = |args: &[&str]| Bin::try_parse_from(args).expect("parses");
        let Cmd::Worker { c: WorkerSide::Circuit(w) } = parse(&[
            "bin",
            "worker",
            "circuit",
            "publish",
            "--dir",
            "art",
            "--netuid",
            "7",
            "--subtensor.network",
            "file:/tmp/c.json",
            "--wallet.hotkey",
            "miner",
        ])
        .command
        else {
            panic!("worker")
        };
        assert_eq!((w.chain.netuid(), w.wallet.wallet_hotkey.as_str()), (NetUid(7), "miner"));
        assert!(matches!(w.chain.network(), Ok(Network::File(p)) if p == Path::new("/tmp/c.json")));
        assert!(
            matches!(w.command, WorkerCircuitCommand::Publish { ref artifact, .. } if artifact.dir == Path::new("art"))
        );
        let Cmd::Coordinator { c: CoordinatorSide::Circuit(c) } = parse(&[
            "bin",
            "coordinator",
            "circuit",
            "--netuid",
            "3",
            "check-url",
            "https://x.r2.dev/a",
        ])
        .command
        else {
            panic!("coordinator")
        };
        assert_eq!(c.chain.netuid(), NetUid(3));
        assert!(
            matches!(c.command, CoordinatorCircuitCommand::CheckUrl { ref url, .. } if url == "https://x.r2.dev/a")
        );
    }

    /// The TOML examples of the README parse, and their values are the defaults they claim.
    #[test]
    fn readme_configuration_examples_parse() {
        let readme = include_str!("../README.md");
        let blocks: Vec<&str> =
            readme.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
        assert_eq!(blocks.len(), 2, "the README has a miner and a fetch example");
        let miner: MinerCircuitConfig = toml::from_str(blocks[0]).expect("miner example");
        assert_eq!(miner.artifact, RequiredFiles::default());
        assert_eq!(miner.transfer, TransferConfig::default());
        assert_eq!(miner.storage.provider, crate::Provider::R2);
        let fetch: FetchConfig = toml::from_str(blocks[1]).expect("fetch example");
        assert_eq!(fetch, FetchConfig::default(), "the README shows the defaults");
    }
}
