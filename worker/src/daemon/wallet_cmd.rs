//! `veribench-worker wallet …`: create worker keys, delegate to them from a miner hotkey, show
//! them. Every function returns what the command prints; nothing here prints a secret (the new
//! key's mnemonic included: the hotkey file is the backup, keep a copy of it).
//!
//! The intended flow keeps the miner hotkey off worker boxes:
//!
//! ```text
//! # on the machine holding the miner hotkey
//! veribench-worker wallet delegate --wallet.name miner --wallet.hotkey default \
//!     --worker.hotkey rig-7 --days 30
//! # copy hotkeys/rig-7 and delegations/rig-7.json to the rig, then there:
//! veribench-worker run --wallet.name miner --wallet.hotkey rig-7 --coordinator wss://…
//! ```

use std::fmt;
use std::path::PathBuf;

use veribench_protocol::{Delegation, UnixMillis};
use veribench_wallet::{
    BITTENSOR_SS58_PREFIX, Keypair, Wallet, WalletError, delegate, verify_delegation,
};

/// A key as the wallet commands print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReport {
    /// Wallet-relative name.
    pub hotkey: String,
    /// SS58 address (prefix 42).
    pub ss58: String,
    /// Public key, hex.
    pub public_key: String,
    /// The keyfile.
    pub path: PathBuf,
}

impl KeyReport {
    fn new(wallet: &Wallet, hotkey: &str, keypair: &Keypair) -> Result<Self, WalletError> {
        Ok(Self {
            hotkey: hotkey.into(),
            ss58: keypair.ss58_address(),
            public_key: format!("0x{}", keypair.public()),
            path: wallet.hotkey_path(hotkey)?,
        })
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "hotkey:     {}", self.hotkey)?;
        writeln!(f, "ss58:       {}", self.ss58)?;
        writeln!(f, "public key: {}", self.public_key)?;
        write!(f, "keyfile:    {}", self.path.display())
    }
}

/// `wallet create`: a new hotkey `hotkey` (refused if it exists, unless `overwrite`).
pub fn create(wallet: &Wallet, hotkey: &str, overwrite: bool) -> Result<KeyReport, WalletError> {
    let keypair = wallet.create_hotkey(hotkey, overwrite)?;
    KeyReport::new(wallet, hotkey, &keypair)
}

/// What `wallet delegate` did.
#[derive(Clone, Debug)]
pub struct DelegateReport {
    /// The miner hotkey that signed.
    pub miner: KeyReport,
    /// The worker key delegated to.
    pub worker: KeyReport,
    /// Whether the worker key was created now.
    pub worker_created: bool,
    /// The delegation written.
    pub delegation: Delegation,
    /// Where it was written.
    pub path: PathBuf,
}

impl fmt::Display for DelegateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let created = if self.worker_created { " (created)" } else { "" };
        writeln!(f, "miner hotkey: {} ({})", self.miner.ss58, self.miner.hotkey)?;
        writeln!(f, "worker key:   {} ({}){created}", self.worker.ss58, self.worker.hotkey)?;
        writeln!(f, "expires at:   {} ms since the epoch", self.delegation.expires_at.0)?;
        writeln!(f, "delegation:   {}", self.path.display())?;
        write!(
            f,
            "copy {} and {} to the worker machine; keep the miner hotkey off it",
            self.worker.path.display(),
            self.path.display()
        )
    }
}

/// `wallet delegate`: the miner hotkey `miner_hotkey` signs a delegation to the worker hotkey
/// `worker_hotkey` (created if missing) valid for `days` days from `now`, stored at
/// `delegations/<worker_hotkey>.json` of the same wallet.
pub fn delegate_to_worker(
    wallet: &Wallet,
    miner_hotkey: &str,
    worker_hotkey: &str,
    days: u32,
    now: UnixMillis,
) -> Result<DelegateReport, WalletError> {
    let miner = wallet.load_hotkey(miner_hotkey)?;
    let (worker, worker_created) = match wallet.load_hotkey(worker_hotkey) {
        Ok(worker) => (worker, false),
        Err(WalletError::NotFound { .. }) => (wallet.create_hotkey(worker_hotkey, false)?, true),
        Err(e) => return Err(e),
    };
    let expires_at = UnixMillis(now.0.saturating_add(u64::from(days) * 86_400_000));
    let delegation = delegate(&miner, worker.public(), expires_at);
    wallet.save_delegation(worker_hotkey, &delegation)?;
    Ok(DelegateReport {
        miner: KeyReport::new(wallet, miner_hotkey, &miner)?,
        worker: KeyReport::new(wallet, worker_hotkey, &worker)?,
        worker_created,
        delegation,
        path: wallet.delegation_path(worker_hotkey)?,
    })
}

/// What `wallet show` prints.
#[derive(Clone, Debug)]
pub struct ShowReport {
    /// The key.
    pub key: KeyReport,
    /// Its delegation, if a file exists, and whether it is valid now (or why not).
    pub delegation: Option<(Delegation, Result<(), String>)>,
}

impl fmt::Display for ShowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        match &self.delegation {
            None => write!(
                f,
                "\ndelegation: none (as a worker, this key registers as its own miner hotkey)"
            ),
            Some((d, status)) => {
                let miner = veribench_wallet::ss58_encode(&d.miner_hotkey, BITTENSOR_SS58_PREFIX)
                    .unwrap_or_else(|_| d.miner_hotkey.to_string());
                write!(
                    f,
                    "\ndelegated by: {miner}\nexpires at:   {} ms since the epoch",
                    d.expires_at.0
                )?;
                match status {
                    Ok(()) => write!(f, "\nstatus:       valid"),
                    Err(why) => write!(f, "\nstatus:       INVALID: {why}"),
                }
            }
        }
    }
}

/// `wallet show`: the hotkey and its delegation.
pub fn show(wallet: &Wallet, hotkey: &str, now: UnixMillis) -> Result<ShowReport, WalletError> {
    let keypair = wallet.load_hotkey(hotkey)?;
    let delegation = match wallet.load_delegation(hotkey) {
        Ok(d) => {
            let mut status = verify_delegation(&d, now).map_err(|e| e.to_string());
            if status.is_ok() && d.worker_key != keypair.public() {
                status = Err(format!("it delegates to {}, not to this key", d.worker_key));
            }
            Some((d, status))
        }
        Err(WalletError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(ShowReport { key: KeyReport::new(wallet, hotkey, &keypair)?, delegation })
}
