//! `veribench`: the umbrella binary. `devnet` runs a coordinator and local workers on the embedded
//! defaults; `load` measures a coordinator under thousands of simulated workers.

use clap::{Parser, Subcommand};

mod devnet;
mod load;

#[derive(Debug, Parser)]
#[command(name = "veribench", version, about = "veribench: verifiable compute benchmark network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A coordinator (SQLite, CPU backend) and local workers over loopback WebSockets.
    Devnet(devnet::DevnetArgs),
    /// Many simulated workers sending heartbeats to one coordinator; prints latency and RSS.
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let quiet = matches!(&cli.command, Command::Devnet(a) if a.json)
        || matches!(&cli.command, Command::Load(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if quiet { "warn".into() } else { "info".into() }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Devnet(args) => runtime.block_on(devnet::run(args)),
        Command::Load(args) => runtime.block_on(load::run(args)),
    }
}
