//! [`ChainFlags`]: the chain flags of the binaries' one-shot commands, spelled as btcli spells
//! them (feature `clap`), so that `veribench-worker circuit …` and `veribench-coordinator
//! circuit …` read the same flags and variables the same way.

use clap::Args;

use crate::{NetUid, Network, NetworkParseError};

/// `--subtensor.network` and `--netuid` (global: they may follow the subcommand).
#[derive(Clone, Debug, Args)]
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
    pub fn network(&self) -> Result<Network, NetworkParseError> {
        self.network.parse()
    }

    /// The `--netuid`.
    pub fn netuid(&self) -> NetUid {
        NetUid(self.netuid)
    }
}
