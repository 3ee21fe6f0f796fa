//! The `circuit` subcommands wired exactly as the worker and coordinator binaries wire them, on
//! a file-backed local chain: a way to try publish / offer / fetch / check-url by hand, and the
//! reference for that wiring.
//!
//! ```text
//! cargo run -p veribench-circuit --example circuit_cli -- --chain /tmp/chain.json --seed 1 \
//!     worker publish --dir ./artifact --circuit-config miner.toml
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use veribench_chain::{LocalChain, NetUid};
use veribench_circuit::cli::{
    CoordinatorCircuitCommand, WorkerCircuitCommand, run_coordinator_circuit, run_worker_circuit,
};
use veribench_wallet::Keypair;

#[derive(Debug, Parser)]
struct Cli {
    /// Local chain state file (created if missing; the miner key is registered on it).
    #[arg(long)]
    chain: PathBuf,
    /// Subnet.
    #[arg(long, default_value_t = 1)]
    netuid: u16,
    /// The miner hotkey is Keypair::from_seed([seed; 32]).
    #[arg(long, default_value_t = 1)]
    seed: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Miner side (`veribench-worker circuit …`).
    #[command(subcommand)]
    Worker(WorkerCircuitCommand),
    /// Validator side (`veribench-coordinator circuit …`).
    #[command(subcommand)]
    Coordinator(CoordinatorCircuitCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let chain = LocalChain::open(&cli.chain)?;
    let keypair = Keypair::from_seed(&[cli.seed; 32]);
    let netuid = NetUid(cli.netuid);
    chain.register(netuid, keypair.public(), keypair.public(), 0, false)?;
    match cli.command {
        Command::Worker(cmd) => run_worker_circuit(cmd, Arc::new(chain), &keypair, netuid).await,
        Command::Coordinator(cmd) => {
            run_coordinator_circuit(cmd, Arc::new(chain), netuid, None).await
        }
    }
}
