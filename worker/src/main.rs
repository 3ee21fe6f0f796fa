//! `veribench-worker`: parses the command line and calls into the library.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use veribench_protocol::{DEFAULT_SAMPLED_ROWS, MAX_DIM, Mode};
use veribench_worker::bench::run_bench;
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
        /// Matrix size (n × n × n).
        #[arg(long, default_value_t = 2048)]
        n: u32,
        /// Rows sampled and verified after the commitment.
        #[arg(long, default_value_t = DEFAULT_SAMPLED_ROWS)]
        samples: u32,
        /// Print exactly one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench { backend, mode, n, samples, json } => {
            if n == 0 || n > MAX_DIM {
                bail!("--n must be in 1..={MAX_DIM}, got {n}");
            }
            let backend = open_backend(backend).context("cannot open the compute backend")?;
            let outcome = run_bench(backend.as_ref(), mode, n, samples).context("bench failed")?;
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
    }
}
