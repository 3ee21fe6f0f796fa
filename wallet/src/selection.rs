//! Which wallet key a binary uses: btcli's `--wallet.name`, `--wallet.hotkey` and
//! `--wallet.path`, as one configuration section shared by the coordinator and the worker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Keypair, Result, Wallet};

/// The `[wallet]` section of a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalletConfig {
    /// The wallet's name (`--wallet.name`).
    pub name: String,
    /// The hotkey's name in that wallet (`--wallet.hotkey`).
    pub hotkey: String,
    /// The wallets directory (`--wallet.path`); unset means btcli's `~/.bittensor/wallets`.
    pub path: Option<PathBuf>,
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self { name: "default".into(), hotkey: "default".into(), path: None }
    }
}

impl WalletConfig {
    /// The wallet this selects.
    pub fn wallet(&self) -> Result<Wallet> {
        Wallet::new(self.path.clone().unwrap_or_else(Wallet::default_path), self.name.clone())
    }

    /// Loads the selected hotkey.
    pub fn load_hotkey(&self) -> Result<Keypair> {
        self.wallet()?.load_hotkey(&self.hotkey)
    }
}
