//! The `circuit` subcommands wired as the worker and coordinator binaries wire them, on the
//! file-backed local chain: a way to try publish / offer / fetch / check-url by hand, and the
//! reference for that wiring. `--seed N` replaces the wallet with `Keypair::from_seed([N; 32])`
//! (registered on the local chain), so no wallet files are needed.
//!
//! ```text
//! cargo run -p veribench-circuit --example circuit_cli -- --seed 1 worker \
//!     --subtensor.network file:/tmp/chain.json publish --dir ./artifact --circuit-config miner.toml
//! ```

use clap::{Parser, Subcommand};
use veribench_chain::LocalChain;
use veribench_circuit::cli::{
    CoordinatorCircuitArgs, WorkerCircuitArgs, run_coordinator_circuit, run_worker_circuit,
};
use veribench_wallet::Keypair;

#[derive(Debug, Parser)]
struct Cli {
    /// Use Keypair::from_seed([seed; 32]) as the miner hotkey instead of the wallet.
    #[arg(long)]
    seed: Option<u8>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Miner side (`veribench-worker circuit …`).
    Worker(WorkerCircuitArgs),
    /// Validator side (`veribench-coordinator circuit …`).
    Coordinator(CoordinatorCircuitArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(args) => {
            let chain =
                args.chain.open_local()?.ok_or_else(|| anyhow::anyhow!("file: chains only"))?;
            let keypair = match cli.seed {
                Some(seed) => {
                    let k = Keypair::from_seed(&[seed; 32]);
                    if let veribench_chain::Network::File(path) = args.chain.network()? {
                        LocalChain::open(path)?.register(
                            args.chain.netuid(),
                            k.public(),
                            k.public(),
                            0,
                            false,
                        )?;
                    }
                    k
                }
                None => args.wallet.load_hotkey()?,
            };
            run_worker_circuit(args.command, chain, &keypair, args.chain.netuid()).await
        }
        Command::Coordinator(args) => {
            let chain =
                args.chain.open_local()?.ok_or_else(|| anyhow::anyhow!("file: chains only"))?;
            run_coordinator_circuit(args.command, chain, args.chain.netuid(), None, None).await
        }
    }
}
