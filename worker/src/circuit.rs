//! `veribench-worker circuit …`: the miner's artifact commands (`publish`, `offer`).
//!
//! Configuration is a TOML file (`--circuit-config`, [`MinerCircuitConfig`]), overridden by
//! `VERIBENCH_STORAGE_*` environment variables for the bucket and its keys; see
//! `circuit/README.md` for every key. Part of the binary (its errors are `anyhow`); the tests
//! run the real binary (`worker/tests/cli.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use veribench_chain::{Chain, ChainFlags, NetUid};
use veribench_circuit::offer::DEFAULT_URL_EXPIRY;
use veribench_circuit::{
    MinerCircuitConfig, Progress, PublishOptions, RequiredFiles, offer_urls, publish,
};
use veribench_wallet::Keypair;

/// `circuit [chain and wallet flags] <publish|offer> …`.
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
            let progress: Option<Arc<dyn Progress>> = if no_progress {
                None
            } else {
                Some(Arc::new(veribench_circuit::progress::TerminalBars))
            };
            let opts =
                PublishOptions { transfer: cfg.transfer, chain_retry: cfg.chain_retry, progress };
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;
    use veribench_chain::Network;

    use super::*;

    #[derive(Debug, Parser)]
    struct Bin {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Circuit(WorkerCircuitArgs),
    }

    /// `circuit` with global chain and wallet flags after the subcommand.
    #[test]
    fn circuit_subcommands_parse() {
        use clap::CommandFactory;
        Bin::command().debug_assert();
        let Cmd::Circuit(w) = Bin::try_parse_from([
            "bin",
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
        .expect("parses")
        .command;
        assert_eq!((w.chain.netuid(), w.wallet.wallet_hotkey.as_str()), (NetUid(7), "miner"));
        assert!(matches!(w.chain.network(), Ok(Network::File(p)) if p == Path::new("/tmp/c.json")));
        assert!(
            matches!(w.command, WorkerCircuitCommand::Publish { ref artifact, .. } if artifact.dir == Path::new("art"))
        );
    }
}
