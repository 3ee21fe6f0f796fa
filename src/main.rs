//! `veribench`: the umbrella binary. `devnet` runs coordinators and local workers on the embedded
//! defaults; `collisions` simulates validators sharing devices; `load` measures a coordinator
//! under thousands of simulated workers; `coordinator` is the whole command line of
//! `veribench-coordinator` (what the end-to-end tests run as a process).

use clap::{Parser, Subcommand};

mod collisions;
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
    /// How often validators' challenges find a device busy with another's (a simulation).
    Collisions(collisions::CollisionArgs),
    /// Many simulated workers sending heartbeats to one coordinator; prints latency and RSS.
    Load(load::LoadArgs),
    /// The coordinator, as `veribench-coordinator`: `run`, `lease`, `local-chain`, `circuit`.
    #[command(subcommand)]
    Coordinator(veribench_coordinator::cli::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Devnet(a) if a.json => init_tracing("warn"),
        Command::Devnet(_) => init_tracing("info"),
        Command::Load(_) | Command::Collisions(_) => init_tracing("warn"),
        Command::Coordinator(_) => veribench_coordinator::cli::init_tracing(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Devnet(args) => runtime.block_on(devnet::run(args)),
        Command::Load(args) => runtime.block_on(load::run(args)),
        Command::Collisions(args) => collisions::run(&args),
        Command::Coordinator(command) => runtime.block_on(veribench_coordinator::cli::run(command)),
    }
}

/// Logs to stderr, filtered by `RUST_LOG`, else by `default`.
fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    fn coordinator_subcommands_parse_as_in_veribench_coordinator() {
        let cli = Cli::try_parse_from(["veribench", "coordinator", "run", "--config", "c.toml"])
            .expect("parses");
        assert!(
            matches!(
                &cli.command,
                Command::Coordinator(veribench_coordinator::cli::Command::Run(_))
            ),
            "{cli:?}"
        );
        let cli = Cli::try_parse_from([
            "veribench",
            "coordinator",
            "local-chain",
            "show",
            "--netuid",
            "3",
        ])
        .expect("parses");
        assert!(
            matches!(
                &cli.command,
                Command::Coordinator(veribench_coordinator::cli::Command::LocalChain(_))
            ),
            "{cli:?}"
        );
    }
}
