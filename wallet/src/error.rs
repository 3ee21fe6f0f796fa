//! The one error type of this crate. Every message names the file or value at fault and, where
//! there is one, what the operator can do about it.

use std::io;
use std::path::PathBuf;

use veribench_protocol::UnixMillis;

/// Why a wallet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// A mnemonic that is not a valid English BIP-39 phrase.
    #[error("invalid mnemonic phrase: {0} (expected 12 to 24 English BIP-39 words)")]
    InvalidPhrase(String),

    /// A string that is not a valid SS58 address, or a prefix this crate cannot encode.
    #[error("invalid SS58 address {address:?}: {reason}")]
    InvalidSs58 {
        /// The address as given (or the prefix, when encoding).
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A wallet or hotkey name that cannot be used as a single path component.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "wallet" or "hotkey".
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A file that should exist does not.
    #[error("no {what} at {}: check the wallet path, wallet name and hotkey name", path.display())]
    NotFound {
        /// "hotkey file" or "delegation file".
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },

    /// Any other I/O failure, e.g. "cannot read hotkey file /path: Permission denied".
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read hotkey file".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Refused to replace an existing hotkey file.
    #[error(
        "hotkey file {} already exists; refusing to overwrite it (the key in it would be lost); \
         choose another hotkey name or ask for overwrite explicitly",
        path.display()
    )]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A keyfile btcli encrypted with a password.
    #[error(
        "{} is encrypted; encrypted keyfiles are not supported; export an unencrypted hotkey \
         (e.g. regenerate it from its mnemonic with btcli, without a password)",
        path.display()
    )]
    Encrypted {
        /// The encrypted keyfile.
        path: PathBuf,
    },

    /// A file that starts like JSON but does not parse as the expected JSON object.
    #[error("{what} {} is not valid JSON: {source}", path.display())]
    BadJson {
        /// "hotkey file" or "delegation file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error, with its line and column.
        source: serde_json::Error,
    },

    /// A JSON file whose fields are missing or malformed.
    #[error("{what} {} is malformed: {reason}", path.display())]
    Malformed {
        /// "hotkey file" or "delegation file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Which field is wrong and how.
        reason: String,
    },

    /// A hotkey file whose stored public key is not the one its secret seed derives.
    #[error(
        "hotkey file {} is inconsistent: its publicKey 0x{stored} is not the key its secretSeed \
         derives (0x{derived}); the file is corrupt or was edited by hand, restore it from its \
         mnemonic",
        path.display()
    )]
    PublicKeyMismatch {
        /// The file.
        path: PathBuf,
        /// The `publicKey` field, hex.
        stored: String,
        /// The key `secretSeed` derives, hex.
        derived: String,
    },

    /// A delegation whose signature is not the miner hotkey's over its fields.
    #[error(
        "delegation to worker key {worker} has no valid signature by miner hotkey {miner}: it was \
         forged, altered, or signed by another key; ask the miner for a new delegation"
    )]
    BadDelegationSignature {
        /// SS58 address of the claimed miner hotkey.
        miner: String,
        /// SS58 address of the worker key.
        worker: String,
    },

    /// A correctly signed delegation past its expiry.
    #[error(
        "delegation to worker key {worker} expired at {} ms since the epoch (now {} ms); ask the \
         miner for a new delegation",
        expires_at.0,
        now.0
    )]
    DelegationExpired {
        /// SS58 address of the worker key.
        worker: String,
        /// When it expired.
        expires_at: UnixMillis,
        /// The time it was checked at.
        now: UnixMillis,
    },
}

/// This crate's `Result`.
pub type Result<T, E = WalletError> = std::result::Result<T, E>;
