//! `veribench-coordinator`: parses the command line and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use veribench_coordinator::CoordinatorConfig;

#[derive(Debug, Parser)]
#[command(
    name = "veribench-coordinator",
    version,
    about = "veribench coordinator: challenges workers and verifies their work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve workers and the HTTP API until SIGINT/SIGTERM.
    Run(RunArgs),
}

/// Flags override the config file; environment variables (`VERIBENCH_…`) override it too.
#[derive(Debug, Args)]
struct RunArgs {
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
    /// A miner hotkey (SS58 or hex) allowed to register workers; repeatable, adds to the file's list.
    #[arg(long = "allow-miner", env = "VERIBENCH_ALLOW_MINERS", value_delimiter = ',')]
    allow_miners: Vec<String>,
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
        c.allowed_miners.extend(self.allow_miners.iter().cloned());
        c.validate()?;
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let config = args.config()?;
    tracing::info!("configuration:\n{}", config.redacted());
    let keypair = config.wallet.load_hotkey().with_context(|| {
        format!(
            "cannot load the coordinator hotkey; create one with `veribench-worker wallet create --wallet.name {} --wallet.hotkey {}`",
            config.wallet.name, config.wallet.hotkey
        )
    })?;
    if config.allowed_miners.is_empty() {
        tracing::warn!(
            "no miner hotkeys are allowed (allowed_miners / --allow-miner): every registration will be refused"
        );
    }
    let running = veribench_coordinator::start(config, keypair)
        .await
        .context("cannot start the coordinator")?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
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
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
        let raised = unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
                let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                limit.rlim_cur >= limit.rlim_max
                    || libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
            }
        };
        if !raised {
            tracing::warn!("cannot raise the open-file limit; large worker counts may be refused");
        }
    }
}
