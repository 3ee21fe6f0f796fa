//! `veribench-coordinator`: parses the command line and calls into the library
//! ([`veribench_coordinator::cli`], also served as `veribench coordinator`).

use clap::Parser;
use veribench_coordinator::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    cli::run(Cli::parse().command).await
}
