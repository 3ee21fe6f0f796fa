//! [`Error`]: the crate's error at its public surface, grouped by cause.
//!
//! Each operation still returns the error of its own step ([`FetchError`] with its stable
//! outcome codes, [`OfferError`], [`PublishError`], …), because callers match on those
//! distinctions; [`Error`] gathers them (and the configuration failures) so a binary handles
//! the whole crate through one type.

use crate::cache::CacheError;
use crate::fetch::FetchError;
use crate::files::FilesError;
use crate::hash::HashParseError;
use crate::offer::{ArtifactError, OfferError};
use crate::publish::PublishError;
use crate::settings::SettingsError;
use crate::storage::StorageError;

/// Any failure of the circuit crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A configuration file is not valid TOML for its schema.
    #[error("cannot parse {path}: {message}")]
    ConfigFile {
        /// The file.
        path: String,
        /// The parser's message (it names the key).
        message: String,
    },
    /// The URL policy is unusable (an empty allowlist, a bad suffix, …).
    #[error("URL policy: {0}")]
    Policy(String),
    /// The required-files list is unusable.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The bucket configuration is unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A `settings.json` does not match the schema.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A string or commitment is not a SHA-256.
    #[error(transparent)]
    Hash(#[from] HashParseError),
    /// The artifact cache cannot be opened or updated.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The miner's local artifact directory does not check out.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The miner refuses to hand out URLs.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A fetch failed ([`FetchError::code`] is its outcome code).
    #[error(transparent)]
    Fetch(#[from] FetchError),
}
