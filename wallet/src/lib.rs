//! sr25519 identities for veribench, in btcli's wallet layout.
//!
//! Miners already hold their Bittensor hotkeys in `~/.bittensor/wallets/<wallet>/hotkeys/`; this
//! crate reads and writes those keyfiles so that a miner can sign [`Delegation`]s to its workers
//! with the hotkey it registered on chain, and workers and coordinators can sign and check
//! protocol messages:
//!
//! - [`Keypair`]: sr25519 keys derived from a mnemonic or a 32-byte seed exactly as substrate,
//!   subkey and btcli derive them, signing in substrate's `"substrate"` context, and [`verify`];
//! - [`ss58_encode`] / [`ss58_decode`]: the addresses Bittensor prints (prefix 42);
//! - [`Wallet`]: btcli's directory layout and unencrypted JSON keyfiles (encrypted ones are
//!   recognised and refused);
//! - [`delegate`] / [`verify_delegation`] and [`Wallet::save_delegation`] /
//!   [`Wallet::load_delegation`]: a miner hotkey's permission for a worker key.
//!
//! Coldkeys are out of scope: veribench never needs one, and they are encrypted on disk.
//!
//! [`Delegation`]: veribench_protocol::Delegation

mod delegation;
mod error;
mod keyfile;
mod keypair;
mod selection;
mod ss58;

pub use delegation::{delegate, verify_delegation};
pub use error::{Result, WalletError};
pub use keyfile::Wallet;
pub use keypair::{Keypair, SIGNING_CONTEXT, verify, verify_in};
pub use selection::WalletConfig;
pub use ss58::{BITTENSOR_SS58_PREFIX, parse_public_key, ss58_decode, ss58_encode};
