//! [`CircuitOffer`]: the miner's answer to a coordinator asking for its artifact, and the miner's
//! local artifact directory.
//!
//! The offer carries presigned GET URLs, which expire (one hour by default), so a leaked offer
//! is useless soon after. The miner hands one out only when the file it would serve hashes to
//! the commitment it holds on chain: a miner that changed its local files without publishing
//! again would otherwise make every validator download an artifact that fails verification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use veribench_chain::{Chain, ChainError, NetUid};
use veribench_protocol::{PublicKey, UnixMillis};

use crate::settings::{SettingsError, validate_settings_file};
use crate::storage::Storage;
use crate::{ArtifactHash, HashParseError, RequiredFiles};

/// Default validity of presigned GET URLs handed to validators.
pub const DEFAULT_URL_EXPIRY: Duration = Duration::from_secs(3600);

/// The miner→coordinator message: where to download the artifact whose committed file hashes to
/// `hash`. Carried as JSON (over the worker connection, or a file for the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitOffer {
    /// SHA-256 of the committed file, as the miner claims it (the chain has the last word).
    pub hash: ArtifactHash,
    /// `(file name, presigned URL)` for every required file.
    pub urls: Vec<(String, String)>,
    /// When the URLs stop working.
    pub expires_at: UnixMillis,
}

/// One file of a local artifact directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    /// The file name (one of the required files).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

/// A local artifact directory that checked out: every required file is a regular file, the
/// settings match the schema, and `hash` is the committed file's SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalArtifact {
    /// SHA-256 of the committed file.
    pub hash: ArtifactHash,
    /// The required files, in the configured order.
    pub files: Vec<LocalFile>,
}

/// Why the miner's local artifact cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A required file is absent.
    #[error("required file {0} is missing from the artifact directory")]
    MissingFile(String),
    /// A required name is not a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// `settings.json` does not match the schema.
    #[error("invalid settings: {0}")]
    InvalidSettings(#[from] SettingsError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Checks `dir` against `files` and hashes the committed file.
pub fn local_artifact(dir: &Path, files: &RequiredFiles) -> Result<LocalArtifact, ArtifactError> {
    let mut out = Vec::with_capacity(files.files().len());
    for name in files.files() {
        let path = dir.join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArtifactError::MissingFile(name.clone()));
            }
            Err(source) => {
                return Err(ArtifactError::Io { path: path.display().to_string(), source });
            }
        };
        if !meta.is_file() {
            return Err(ArtifactError::NotAFile(path.display().to_string()));
        }
        out.push(LocalFile { name: name.clone(), path, len: meta.len() });
    }
    if files.has_settings() {
        validate_settings_file(&dir.join(crate::files::SETTINGS_FILE))?;
    }
    let committed = dir.join(files.committed());
    let hash = ArtifactHash::of_file(&committed)
        .map_err(|source| ArtifactError::Io { path: committed.display().to_string(), source })?;
    Ok(LocalArtifact { hash, files: out })
}

/// Why the miner refuses to hand out URLs.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The local artifact is incomplete or unreadable.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Nothing is committed on chain for this hotkey.
    #[error("hotkey {0} has no commitment on chain: run `circuit publish` first")]
    NotCommitted(PublicKey),
    /// The chain holds something that is not a SHA-256.
    #[error("the chain commitment is not an artifact hash: {0}")]
    BadCommitment(#[from] HashParseError),
    /// The local committed file differs from the chain commitment.
    #[error(
        "local artifact {local} differs from the chain commitment {chain}: refusing to hand out \
         URLs (publish the local artifact again, or restore the committed one)"
    )]
    LocalDiffersFromChain {
        /// SHA-256 of the local committed file.
        local: ArtifactHash,
        /// The commitment on chain.
        chain: ArtifactHash,
    },
    /// The chain could not be read.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
}

/// Miner side: presigned GET URLs for the artifact in `dir`, if and only if its committed file
/// hashes to `hotkey`'s commitment on chain.
pub async fn offer_urls(
    dir: &Path,
    files: &RequiredFiles,
    storage: &Storage,
    chain: &dyn Chain,
    netuid: NetUid,
    hotkey: &PublicKey,
    expiry: Duration,
) -> Result<CircuitOffer, OfferError> {
    let local = local_artifact(dir, files)?;
    let commitment =
        chain.commitment(netuid, hotkey).await?.ok_or(OfferError::NotCommitted(*hotkey))?;
    let on_chain = ArtifactHash::from_commitment(&commitment.data)?;
    if on_chain != local.hash {
        return Err(OfferError::LocalDiffersFromChain { local: local.hash, chain: on_chain });
    }
    let expiry = expiry.clamp(Duration::from_secs(1), crate::storage::MAX_URL_EXPIRY);
    let now = UnixMillis::now();
    let urls = local
        .files
        .iter()
        .map(|f| (f.name.clone(), storage.presign_get(&local.hash, &f.name, expiry).to_string()))
        .collect();
    let expires_at = UnixMillis(now.0.saturating_add(expiry.as_millis() as u64));
    Ok(CircuitOffer { hash: local.hash, urls, expires_at })
}
