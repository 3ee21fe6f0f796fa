//! `veribench-coordinator circuit …` (also `veribench coordinator circuit …`): the validator's
//! artifact commands. `fetch` opens the chain (the miner's commitment) and the database (each
//! attempt is recorded there, served by `GET /api/v1/circuits`); `check-url` needs neither.
//!
//! Configuration is the fetch configuration file (`--circuit-config`, TOML, see
//! `circuit/README.md`), not the service's: the service never fetches artifacts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veribench_chain::{Chain, ChainFlags, NetUid};
use veribench_circuit::{CircuitOffer, FetchConfig, FetchLog, FetchRecord, Fetcher, MemoryLog};
use veribench_support::redact_url;

/// `circuit [chain flags] <fetch|check-url> …`.
#[derive(Debug, Args)]
pub struct CoordinatorCircuitArgs {
    /// The chain (`fetch` only).
    #[command(flatten)]
    pub chain: ChainFlags,
    /// The command.
    #[command(subcommand)]
    pub command: CoordinatorCircuitCommand,
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
    /// fetched, non-zero with the reason when not. Needs no chain and no database.
    CheckUrl {
        /// The URL.
        url: String,
        /// Fetch configuration (its `[url_policy]` is used).
        #[arg(long = "circuit-config", env = "VERIBENCH_CIRCUIT_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs `circuit …`: `check-url` at once; `fetch` with the chain of the flags and the fetch
/// attempts recorded in the database `db`.
pub(super) async fn run(db: &str, args: CoordinatorCircuitArgs) -> anyhow::Result<()> {
    if let CoordinatorCircuitCommand::CheckUrl { url, config } = &args.command {
        return check_url(url, config.as_deref());
    }
    let network = args.chain.network().context("--subtensor.network")?;
    let chain = super::open_chain(&network).await?;
    let netuid = args.chain.netuid();
    let store = crate::store::Store::connect(db).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<FetchRecord>();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(record) = rx.recv().await {
                if let Err(e) = store.record_fetch(&record).await {
                    tracing::error!(error = %e, "cannot record a fetch attempt");
                }
            }
        })
    };
    let result = run_command(args.command, chain, netuid, Some(Arc::new(tx))).await;
    let _ = writer.await;
    store.close().await?;
    result
}

/// `check-url`: the policy of `config` (or the default one) on `url`; no chain, no database.
pub fn check_url(url: &str, config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let policy = FetchConfig::load(config)?.url_policy;
    policy.validate().map_err(anyhow::Error::msg)?;
    match policy.check_str(url) {
        Ok(u) => {
            println!("ok: {} would be fetched", redact_url(u.as_str()));
            Ok(())
        }
        Err(refusal) => bail!("refused ({}): {refusal}", refusal.code()),
    }
}

/// Runs a validator command against `chain`, sending fetch records to `log` (kept in memory
/// without one).
pub async fn run_command(
    cmd: CoordinatorCircuitCommand,
    chain: Arc<dyn Chain>,
    netuid: NetUid,
    log: Option<Arc<dyn FetchLog>>,
) -> anyhow::Result<()> {
    let (miner, offer, path, cache_dir, json, no_progress) = match cmd {
        CoordinatorCircuitCommand::CheckUrl { url, config } => {
            return check_url(&url, config.as_deref());
        }
        CoordinatorCircuitCommand::Fetch { miner, offer, config, cache_dir, json, no_progress } => {
            (miner, offer, config, cache_dir, json, no_progress)
        }
    };
    let mut cfg = FetchConfig::load(path.as_deref())?;
    if let Some(dir) = cache_dir {
        cfg.cache_dir = dir;
    }
    let miner = veribench_wallet::parse_public_key(&miner)?;
    let text =
        std::fs::read_to_string(&offer).with_context(|| format!("reading {}", offer.display()))?;
    let offer: CircuitOffer = serde_json::from_str(&text)
        .with_context(|| format!("parsing the offer {}", offer.display()))?;
    let log = log.unwrap_or_else(|| Arc::new(MemoryLog::default()));
    let mut fetcher = Fetcher::new(cfg, chain, netuid)?.with_log(log);
    if !no_progress {
        fetcher = fetcher.with_progress(Arc::new(veribench_circuit::progress::TerminalBars));
    }
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use veribench_chain::{LocalChain, Network};

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> CoordinatorCircuitArgs {
        let cli = Cli::try_parse_from(args).expect("parses");
        let Command::Circuit { args, .. } = cli.command else { panic!("not `circuit`") };
        args
    }

    /// The global chain flags parse before or after the subcommand.
    #[test]
    fn circuit_subcommands_parse() {
        let c = parse(&[
            "veribench-coordinator",
            "circuit",
            "--netuid",
            "3",
            "check-url",
            "https://x.r2.dev/a",
            "--subtensor.network",
            "file:/tmp/c.json",
        ]);
        assert_eq!(c.chain.netuid(), NetUid(3));
        assert!(
            matches!(c.chain.network(), Ok(Network::File(p)) if p == std::path::Path::new("/tmp/c.json"))
        );
        assert!(
            matches!(c.command, CoordinatorCircuitCommand::CheckUrl { ref url, .. } if url == "https://x.r2.dev/a")
        );
    }

    /// `check-url` as the binary runs it, in a directory without a chain file or a database
    /// (the default `--subtensor.network file:data/chain.json` and `--db` do not exist there):
    /// allowed URLs pass, refused ones fail with the policy's reason, and nothing is created.
    #[tokio::test]
    async fn check_url_needs_no_chain_and_no_database() {
        let dir = tempfile::tempdir().expect("tmp");
        let chain_file = dir.path().join("data/chain.json");
        let db = format!("sqlite://{}", dir.path().join("data/coordinator.db").display());
        let network = format!("file:{}", chain_file.display());
        let check = |url: &str| {
            let args = parse(&[
                "veribench-coordinator",
                "circuit",
                "--subtensor.network",
                &network,
                "check-url",
                url,
            ]);
            let db = db.clone();
            async move { run(&db, args).await }
        };
        check("https://acc.r2.cloudflarestorage.com/b/h/vk.key?X-Amz-Signature=1")
            .await
            .expect("allowed");
        let err = check("http://acc.r2.cloudflarestorage.com/b/h/vk.key").await.expect_err("http");
        assert!(err.to_string().starts_with("refused (plain_http):"), "{err}");
        let err = check("https://10.0.0.1/h/vk.key").await.expect_err("private IP");
        assert!(err.to_string().starts_with("refused (ip_literal):"), "{err}");
        let err =
            check("https://r2.cloudflarestorage.com.evil.com/").await.expect_err("suffix trick");
        assert_eq!(
            err.to_string(),
            "refused (host_not_allowed): host r2.cloudflarestorage.com.evil.com is not in the allowlist"
        );
        let err = check("https://r2.cloudflarestorage.com@evil.com/").await.expect_err("userinfo");
        assert!(err.to_string().contains("userinfo"), "{err}");
        assert!(!dir.path().join("data").exists(), "check-url created a chain or a database");
    }

    /// `check-url --circuit-config` uses that file's `[url_policy]`.
    #[tokio::test]
    async fn check_url_reads_the_policy_of_its_config_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("fetch.toml");
        std::fs::write(
            &cfg,
            "[url_policy]\nallowed_hosts = [\"files.example.org\"]\nallowed_suffixes = []\n",
        )
        .expect("write");
        assert!(check_url("https://files.example.org/h/vk.key", Some(&cfg)).is_ok());
        let err = check_url("https://acc.r2.dev/h/vk.key", Some(&cfg)).expect_err("not listed");
        assert!(err.to_string().starts_with("refused (host_not_allowed)"), "{err}");
        let missing = dir.path().join("absent.toml");
        assert!(check_url("https://acc.r2.dev/h/vk.key", Some(&missing)).is_err());
    }

    /// `fetch` of a hotkey without a chain commitment exits with the fetch outcome code, before
    /// any download, and the attempt is logged.
    #[tokio::test]
    async fn fetch_without_commitment_fails_with_its_code() {
        let dir = tempfile::tempdir().expect("tmp");
        let chain = LocalChain::open(dir.path().join("chain.json")).expect("chain");
        let miner = veribench_wallet::Keypair::from_seed(&[3; 32]).public();
        chain.register(NetUid(1), miner, miner, 0, false).expect("register");
        let hash = veribench_circuit::ArtifactHash::of_bytes(b"vk");
        let urls = veribench_circuit::files::DEFAULT_FILES
            .iter()
            .map(|f| {
                ((*f).to_owned(), format!("https://acc.r2.cloudflarestorage.com/b/{hash}/{f}"))
            })
            .collect();
        let expires_at =
            veribench_protocol::UnixMillis(veribench_protocol::UnixMillis::now().0 + 600_000);
        let offer = CircuitOffer { hash, urls, expires_at };
        let offer_file = dir.path().join("offer.json");
        std::fs::write(&offer_file, serde_json::to_string(&offer).expect("json")).expect("write");
        let log = Arc::new(MemoryLog::default());
        let cmd = CoordinatorCircuitCommand::Fetch {
            miner: miner.to_string(),
            offer: offer_file,
            config: None,
            cache_dir: Some(dir.path().join("cache")),
            json: true,
            no_progress: true,
        };
        let err = run_command(cmd, Arc::new(chain), NetUid(1), Some(log.clone()))
            .await
            .expect_err("no commitment");
        assert!(err.to_string().starts_with("fetch failed (no_commitment)"), "{err}");
        let records = log.records();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].outcome.as_str(), records[0].bytes), ("no_commitment", 0));
    }
}
