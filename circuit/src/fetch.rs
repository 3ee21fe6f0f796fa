//! Coordinator side: fetch a miner's artifact from the URLs it offered, safely.
//!
//! A [`Fetcher`] treats the offer as hostile. Before any connection: the file list must be
//! exactly the required one, each URL must pass the [`UrlPolicy`] and name the object
//! `<hash>/<file>`, the offer and the presigned URLs must not have expired, and the miner's chain
//! commitment must exist and equal the offered hash (a copycat's claim on another hotkey's hash
//! is refused from the cache index). Then each file is streamed to a private temporary directory
//! with a per-file and a total size cap, connect/read/whole-file timeouts and retries with
//! exponential backoff on transient failures; redirects are followed by hand, each hop checked
//! against the policy, at most `max_redirects` of them. The committed file is fetched first, so a
//! hash mismatch is caught before the large files are downloaded. Only a verified artifact is
//! moved (renamed) into the content-addressed [`Cache`].
//!
//! Every failure path, including the future being dropped (cancellation), removes the temporary
//! directory: it is a [`tempfile::TempDir`] owned by the attempt, and files are written with
//! blocking `std::fs` calls so nothing keeps writing after the drop. Every attempt yields a
//! [`FetchRecord`], handed to the [`FetchLog`] (a cancelled attempt is recorded from a drop
//! guard, which is why the log is synchronous).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;
use veribench_chain::{Chain, ChainError, NetUid};
use veribench_protocol::{PublicKey, UnixMillis};
use veribench_support::retry::{Transient, retry};

use crate::cache::{Cache, CacheError, ClaimCheck};
use crate::offer::CircuitOffer;
use crate::policy::{UrlPolicy, UrlRefusal};
use crate::settings::SettingsError;
use crate::transfer::{
    ClientError, Progress, TransferConfig, describe, detail, file_progress, http_client,
    presigned_expiry_ms, read_bounded, s3_error, status_is_transient,
};
use crate::{ArtifactHash, HashParseError, RequiredFiles};
use veribench_support::redact_url;

const GIB: u64 = 1024 * 1024 * 1024;

/// The coordinator's fetch settings (`[circuit]` of its configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// The content-addressed cache directory.
    pub cache_dir: PathBuf,
    /// Cache size limit; least recently used artifacts are evicted beyond it.
    pub cache_max_bytes: u64,
    /// The required files and the committed one (`[artifact]`: `files`, `committed`).
    #[serde(rename = "artifact")]
    pub files: RequiredFiles,
    /// Which URLs may be fetched.
    pub url_policy: UrlPolicy,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Largest accepted artifact (all files).
    pub max_total_bytes: u64,
    /// Redirect hops followed per request (each checked against the policy).
    pub max_redirects: u32,
    /// Timeouts and retries.
    pub transfer: TransferConfig,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("data/circuits"),
            cache_max_bytes: 50 * GIB,
            files: RequiredFiles::default(),
            url_policy: UrlPolicy::default(),
            max_file_bytes: 4 * GIB,
            max_total_bytes: 8 * GIB,
            max_redirects: 3,
            transfer: TransferConfig::default(),
        }
    }
}

/// Why a fetch failed. [`FetchError::code`] is the stable outcome code of the fetch record.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The fetch configuration is unusable.
    #[error("circuit fetch configuration: {0}")]
    Config(String),
    /// The offer is malformed (duplicate file, empty, …).
    #[error("invalid offer: {0}")]
    InvalidOffer(String),
    /// The offer names a file that is not required.
    #[error("offer names {0:?}, which is not a required file")]
    UnknownFile(String),
    /// A required file has no URL in the offer (or is missing on the server).
    #[error("required file {0} is missing")]
    MissingFile(String),
    /// A URL failed the policy.
    #[error("URL of {file} refused: {refusal}")]
    UrlRefused {
        /// The file.
        file: String,
        /// Why.
        refusal: UrlRefusal,
    },
    /// A URL does not name the object `<hash>/<file>`.
    #[error("URL of {file} does not name the object {expected}")]
    WrongObject {
        /// The file.
        file: String,
        /// The expected key.
        expected: String,
    },
    /// The offer or a presigned URL has expired.
    #[error("{what} expired at {at_ms} (Unix ms); ask the miner for fresh URLs")]
    Expired {
        /// The offer or a file's URL.
        what: String,
        /// When it expired.
        at_ms: u64,
    },
    /// The hotkey has no chain commitment.
    #[error("hotkey {0} has no artifact commitment on chain")]
    NoCommitment(PublicKey),
    /// The chain commitment is not a SHA-256.
    #[error("chain commitment is not an artifact hash: {0}")]
    BadCommitment(#[from] HashParseError),
    /// The offered hash differs from the chain commitment.
    #[error("offer is for {offered}, but the chain commitment is {chain}")]
    OfferMismatch {
        /// The commitment.
        chain: ArtifactHash,
        /// What the miner offered.
        offered: ArtifactHash,
    },
    /// The downloaded committed file does not hash to the commitment.
    #[error("hash mismatch: {file} downloaded as {downloaded}, the chain commitment is {chain}")]
    HashMismatch {
        /// The committed file.
        file: String,
        /// The commitment.
        chain: ArtifactHash,
        /// SHA-256 of what was downloaded.
        downloaded: ArtifactHash,
    },
    /// Another hotkey claimed the hash first.
    #[error("artifact {hash} is already claimed by hotkey {other}")]
    ClaimedByOther {
        /// The hash.
        hash: ArtifactHash,
        /// The hotkey holding it.
        other: PublicKey,
    },
    /// A redirect led off the allowlist.
    #[error("redirect of {file} to {to} refused: {refusal}")]
    RedirectRefused {
        /// The file.
        file: String,
        /// The target (without query).
        to: String,
        /// Why.
        refusal: UrlRefusal,
    },
    /// A redirect without a usable `Location`.
    #[error("bad redirect for {file}: {reason}")]
    BadRedirect {
        /// The file.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// More redirects than allowed.
    #[error("more than {limit} redirects for {file}")]
    TooManyRedirects {
        /// The file.
        file: String,
        /// The limit.
        limit: u32,
    },
    /// A file or the artifact exceeds its cap.
    #[error("{what} exceeds the {limit}-byte limit")]
    TooLarge {
        /// `file X` or `artifact`.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// The server answered with an error status.
    #[error("GET {file}: HTTP {status}{}", detail(.code, .message))]
    HttpStatus {
        /// The file.
        file: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, `SignatureDoesNotMatch`, …).
        code: Option<String>,
        /// S3 error message.
        message: Option<String>,
    },
    /// The body ended before `Content-Length` bytes (transient).
    #[error("transfer of {file} truncated after {got} of {expected} bytes")]
    Truncated {
        /// The file.
        file: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A connection or read failure (transient).
    #[error("GET {file}: {message}")]
    Network {
        /// The file.
        file: String,
        /// What happened.
        message: String,
    },
    /// `settings.json` does not match the schema.
    #[error("invalid settings: {0}")]
    InvalidSettings(#[from] SettingsError),
    /// The chain could not be read.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// A local file operation failed.
    #[error("{0}")]
    Cache(#[from] CacheError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Transient for FetchError {
    /// Whether another attempt may succeed unchanged.
    fn is_transient(&self) -> bool {
        match self {
            Self::Truncated { .. } | Self::Network { .. } => true,
            Self::HttpStatus { status, .. } => {
                reqwest::StatusCode::from_u16(*status).is_ok_and(status_is_transient)
            }
            _ => false,
        }
    }
}

impl FetchError {
    /// The stable outcome code recorded for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::InvalidOffer(_) => "invalid_offer",
            Self::UnknownFile(_) => "unknown_file",
            Self::MissingFile(_) => "missing_file",
            Self::UrlRefused { .. } | Self::WrongObject { .. } => "url_refused",
            Self::Expired { .. } => "expired",
            Self::NoCommitment(_) | Self::BadCommitment(_) => "no_commitment",
            Self::OfferMismatch { .. } | Self::HashMismatch { .. } => "hash_mismatch",
            Self::ClaimedByOther { .. } => "claimed_by_other",
            Self::RedirectRefused { .. } | Self::BadRedirect { .. } => "redirect_refused",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::TooLarge { .. } => "too_large",
            Self::HttpStatus { .. } => "http_status",
            Self::Truncated { .. } => "truncated",
            Self::Network { .. } => "network",
            Self::InvalidSettings(_) => "invalid_settings",
            Self::Chain(_) => "chain",
            Self::Cache(_) | Self::Client(_) => "local_error",
        }
    }
}

/// One fetch attempt, as persisted (`circuit_fetches`) and served by `GET /api/v1/circuits`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRecord {
    /// The miner's hotkey (hex).
    #[serde(with = "veribench_protocol::ids::hex32")]
    pub miner: PublicKey,
    /// The offered hash.
    pub hash: ArtifactHash,
    /// `fetched`, `cache_hit`, `cancelled`, or a [`FetchError::code`].
    pub outcome: String,
    /// The error message, for failures.
    pub reason: Option<String>,
    /// Bytes downloaded by this attempt (retries included; 0 on a cache hit).
    pub bytes: u64,
    /// Wall time of the attempt.
    pub duration_ms: u64,
    /// When it started.
    pub at: UnixMillis,
}

impl FetchRecord {
    /// Whether the artifact is now in the cache.
    pub fn is_success(&self) -> bool {
        self.outcome == "fetched" || self.outcome == "cache_hit"
    }
}

/// Where fetch records go. Synchronous so that a cancelled attempt can be recorded from a drop
/// guard; an implementation backed by a database should hand the record to a task (the
/// implementation for an unbounded Tokio sender does exactly that).
pub trait FetchLog: Send + Sync + std::fmt::Debug {
    /// Persists one record. Must not block for long.
    fn record(&self, record: &FetchRecord);
}

impl FetchLog for tokio::sync::mpsc::UnboundedSender<FetchRecord> {
    fn record(&self, record: &FetchRecord) {
        if self.send(record.clone()).is_err() {
            tracing::warn!("fetch log receiver is gone; record dropped");
        }
    }
}

/// A [`FetchLog`] keeping records in memory (CLI and tests).
#[derive(Debug, Default)]
pub struct MemoryLog(std::sync::Mutex<Vec<FetchRecord>>);

impl MemoryLog {
    /// The records so far.
    pub fn records(&self) -> Vec<FetchRecord> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl FetchLog for MemoryLog {
    fn record(&self, record: &FetchRecord) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record.clone());
    }
}

/// A verified artifact in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Its hash.
    pub hash: ArtifactHash,
    /// `<cache>/<hash>`.
    pub dir: PathBuf,
    /// Whether it was already cached.
    pub cache_hit: bool,
    /// Hashes evicted to make room.
    pub evicted: Vec<ArtifactHash>,
}

/// The result of [`Fetcher::fetch`]: the record (also sent to the log) and the outcome.
#[derive(Debug)]
pub struct FetchAttempt {
    /// What is persisted.
    pub record: FetchRecord,
    /// The artifact, or why not.
    pub result: Result<Fetched, FetchError>,
}

/// Records the attempt when dropped without [`AttemptGuard::finish`]: cancellation.
struct AttemptGuard {
    log: Option<Arc<dyn FetchLog>>,
    miner: PublicKey,
    hash: ArtifactHash,
    at: UnixMillis,
    started: Instant,
    bytes: Arc<AtomicU64>,
    done: bool,
}

impl AttemptGuard {
    fn record(&self, outcome: &str, reason: Option<String>) -> FetchRecord {
        FetchRecord {
            miner: self.miner,
            hash: self.hash,
            outcome: outcome.to_owned(),
            reason,
            bytes: self.bytes.load(Ordering::Relaxed),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            at: self.at,
        }
    }

    fn finish(mut self, result: &Result<Fetched, FetchError>) -> FetchRecord {
        self.done = true;
        let record = match result {
            Ok(f) if f.cache_hit => self.record("cache_hit", None),
            Ok(_) => self.record("fetched", None),
            Err(e) => self.record(e.code(), Some(e.to_string())),
        };
        if let Some(log) = &self.log {
            log.record(&record);
        }
        record
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.done {
            let record = self.record("cancelled", Some("the fetch was cancelled".into()));
            tracing::info!(miner = %record.miner, hash = %record.hash, "circuit fetch cancelled");
            if let Some(log) = &self.log {
                log.record(&record);
            }
        }
    }
}

/// The coordinator's artifact fetcher: policy, HTTP client, chain and cache.
#[derive(Debug)]
pub struct Fetcher {
    cfg: FetchConfig,
    client: reqwest::Client,
    chain: Arc<dyn Chain>,
    netuid: NetUid,
    cache: Cache,
    log: Option<Arc<dyn FetchLog>>,
    progress: Option<Arc<dyn Progress>>,
}

/// One URL after the offer checks.
struct Planned {
    name: String,
    url: Url,
}

impl Fetcher {
    /// Opens the cache (taking its lock) and builds the HTTP client.
    pub fn new(
        cfg: FetchConfig,
        chain: Arc<dyn Chain>,
        netuid: NetUid,
    ) -> Result<Self, FetchError> {
        cfg.url_policy.validate().map_err(FetchError::Config)?;
        let cache = Cache::open(&cfg.cache_dir, cfg.cache_max_bytes)?;
        let client = http_client(&cfg.transfer)?;
        Ok(Self { cfg, client, chain, netuid, cache, log: None, progress: None })
    }

    /// Sends every record to `log`.
    pub fn with_log(mut self, log: Arc<dyn FetchLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Reports download progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The configuration.
    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetches `miner`'s artifact from `offer` into the cache (or finds it there).
    pub async fn fetch(&self, miner: &PublicKey, offer: &CircuitOffer) -> FetchAttempt {
        let guard = AttemptGuard {
            log: self.log.clone(),
            miner: *miner,
            hash: offer.hash,
            at: UnixMillis::now(),
            started: Instant::now(),
            bytes: Arc::new(AtomicU64::new(0)),
            done: false,
        };
        let result = self.fetch_inner(miner, offer, &guard.bytes).await;
        match &result {
            Ok(f) => {
                tracing::info!(miner = %miner, hash = %f.hash, cache_hit = f.cache_hit, "circuit artifact ready")
            }
            Err(e) => {
                tracing::warn!(miner = %miner, hash = %offer.hash, error = %e, "circuit fetch failed")
            }
        }
        let record = guard.finish(&result);
        FetchAttempt { record, result }
    }

    /// Checks the offer's shape and URLs; no network.
    fn plan(&self, offer: &CircuitOffer) -> Result<Vec<Planned>, FetchError> {
        let now = UnixMillis::now().0;
        if offer.expires_at.0 <= now {
            return Err(FetchError::Expired {
                what: "the offer".into(),
                at_ms: offer.expires_at.0,
            });
        }
        if offer.urls.len() > crate::files::MAX_FILES {
            return Err(FetchError::InvalidOffer(format!("{} URLs", offer.urls.len())));
        }
        let mut seen = BTreeSet::new();
        let mut by_name = BTreeMap::new();
        for (name, raw) in &offer.urls {
            if !self.cfg.files.contains(name) {
                let shown: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
                return Err(FetchError::UnknownFile(shown));
            }
            if !seen.insert(name.as_str()) {
                return Err(FetchError::InvalidOffer(format!("{name} is offered twice")));
            }
            by_name.insert(name.as_str(), raw.as_str());
        }
        // Committed file first: a mismatch is caught before the large files are downloaded.
        let committed = self.cfg.files.committed();
        let order = std::iter::once(committed)
            .chain(self.cfg.files.files().iter().map(String::as_str).filter(|f| *f != committed));
        let mut planned = Vec::new();
        for name in order {
            let raw = by_name.get(name).ok_or_else(|| FetchError::MissingFile(name.to_owned()))?;
            let url = self
                .cfg
                .url_policy
                .check_str(raw)
                .map_err(|refusal| FetchError::UrlRefused { file: name.to_owned(), refusal })?;
            let expected = crate::storage::object_key(&offer.hash, name);
            if !url.path().ends_with(&format!("/{expected}")) {
                return Err(FetchError::WrongObject { file: name.to_owned(), expected });
            }
            if let Some(at_ms) = presigned_expiry_ms(&url)
                && at_ms <= now
            {
                return Err(FetchError::Expired { what: format!("the URL of {name}"), at_ms });
            }
            planned.push(Planned { name: name.to_owned(), url });
        }
        Ok(planned)
    }

    async fn fetch_inner(
        &self,
        miner: &PublicKey,
        offer: &CircuitOffer,
        bytes: &AtomicU64,
    ) -> Result<Fetched, FetchError> {
        let planned = self.plan(offer)?;
        let commitment = self
            .chain
            .commitment(self.netuid, miner)
            .await?
            .ok_or(FetchError::NoCommitment(*miner))?;
        let chain_hash = ArtifactHash::from_commitment(&commitment.data)?;
        if chain_hash != offer.hash {
            return Err(FetchError::OfferMismatch { chain: chain_hash, offered: offer.hash });
        }
        if let ClaimCheck::ClaimedBy(other) =
            self.cache.check_claim(&chain_hash, miner, commitment.block)
        {
            return Err(FetchError::ClaimedByOther { hash: chain_hash, other });
        }
        if self.cache.hit(&chain_hash, miner, commitment.block)?.is_some() {
            return Ok(Fetched {
                hash: chain_hash,
                dir: self.cache.artifact_dir(&chain_hash),
                cache_hit: true,
                evicted: Vec::new(),
            });
        }

        // The guard removes the directory and everything in it on every exit, cancellation
        // included, until it is renamed into the cache.
        let staging = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(self.cache.tmp_dir())
            .map_err(|source| CacheError::Io {
                path: self.cache.tmp_dir().display().to_string(),
                source,
            })?;
        let mut sizes = BTreeMap::new();
        let mut total = 0u64;
        for p in &planned {
            let dest = staging.path().join(&p.name);
            let (len, hash) = self.download(p, &dest, total, bytes).await?;
            if p.name == self.cfg.files.committed() && hash != chain_hash {
                return Err(FetchError::HashMismatch {
                    file: p.name.clone(),
                    chain: chain_hash,
                    downloaded: hash,
                });
            }
            total += len;
            sizes.insert(p.name.clone(), len);
        }
        if self.cfg.files.has_settings() {
            crate::settings::validate_settings_file(
                &staging.path().join(crate::files::SETTINGS_FILE),
            )?;
        }
        let evicted =
            self.cache.insert(&chain_hash, staging.path(), miner, commitment.block, sizes)?;
        // Renamed away: nothing left for the guard to remove.
        let _ = staging.keep();
        Ok(Fetched {
            hash: chain_hash,
            dir: self.cache.artifact_dir(&chain_hash),
            cache_hit: false,
            evicted,
        })
    }

    /// Downloads one file with retries; returns its length and SHA-256.
    async fn download(
        &self,
        p: &Planned,
        dest: &Path,
        total_before: u64,
        bytes: &AtomicU64,
    ) -> Result<(u64, ArtifactHash), FetchError> {
        let transfer = &self.cfg.transfer;
        let what = format!("download of {}", p.name);
        retry(&transfer.retry, &what, || async {
            let once = self.download_once(p, dest, total_before, bytes);
            match tokio::time::timeout(transfer.file_timeout(), once).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Network {
                    file: p.name.clone(),
                    message: format!("no completion within {} s", transfer.file_timeout_secs),
                }),
            }
        })
        .await
    }

    /// One GET, following redirects by hand, streaming into `dest` (truncated first).
    async fn download_once(
        &self,
        p: &Planned,
        dest: &Path,
        total_before: u64,
        bytes: &AtomicU64,
    ) -> Result<(u64, ArtifactHash), FetchError> {
        let name = &p.name;
        let net = |message: String| FetchError::Network { file: name.clone(), message };
        let mut url = p.url.clone();
        let mut hops = 0;
        let mut response = loop {
            let response =
                self.client.get(url.clone()).send().await.map_err(|e| net(describe(&e)))?;
            let status = response.status();
            if status.is_redirection() && status != reqwest::StatusCode::NOT_MODIFIED {
                if hops >= self.cfg.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        file: name.clone(),
                        limit: self.cfg.max_redirects,
                    });
                }
                let bad = |reason: &str| FetchError::BadRedirect {
                    file: name.clone(),
                    reason: reason.into(),
                };
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .ok_or_else(|| bad("no Location header"))?
                    .to_str()
                    .map_err(|_| bad("Location is not ASCII"))?;
                let next = url.join(location).map_err(|e| bad(&format!("Location: {e}")))?;
                self.cfg.url_policy.check(&next).map_err(|refusal| {
                    FetchError::RedirectRefused {
                        file: name.clone(),
                        to: redact_url(next.as_str()),
                        refusal,
                    }
                })?;
                tracing::debug!(file = %name, to = %redact_url(next.as_str()), "following redirect");
                url = next;
                hops += 1;
                continue;
            }
            break response;
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::MissingFile(name.clone()));
        }
        if !status.is_success() {
            let body = read_bounded(response, 4096).await;
            let (code, message) = s3_error(&body);
            return Err(FetchError::HttpStatus {
                file: name.clone(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        let file_cap = self.cfg.max_file_bytes;
        let total_cap = self.cfg.max_total_bytes;
        let over = |len: u64| -> Option<FetchError> {
            if len > file_cap {
                Some(FetchError::TooLarge { what: format!("file {name}"), limit: file_cap })
            } else if total_before.saturating_add(len) > total_cap {
                Some(FetchError::TooLarge { what: "the artifact".into(), limit: total_cap })
            } else {
                None
            }
        };
        let announced = response.content_length();
        if let Some(e) = announced.and_then(over) {
            return Err(e);
        }
        let mut file = std::fs::File::create(dest)
            .map_err(|source| CacheError::Io { path: dest.display().to_string(), source })?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let bar = file_progress(self.progress.as_ref(), "fetch", name, announced);
        let outcome = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    got += chunk.len() as u64;
                    bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if let Some(e) = over(got) {
                        break Err(e);
                    }
                    hasher.update(&chunk);
                    if let Err(source) = file.write_all(&chunk) {
                        break Err(
                            CacheError::Io { path: dest.display().to_string(), source }.into()
                        );
                    }
                    bar.advance(chunk.len() as u64);
                }
                Ok(None) => break Ok(()),
                Err(e) => {
                    break Err(match announced {
                        Some(expected) if got < expected => {
                            FetchError::Truncated { file: name.clone(), got, expected }
                        }
                        _ => net(describe(&e)),
                    });
                }
            }
        };
        bar.finish();
        outcome?;
        if let Some(expected) = announced
            && got != expected
        {
            return Err(FetchError::Truncated { file: name.clone(), got, expected });
        }
        file.sync_all()
            .map_err(|source| CacheError::Io { path: dest.display().to_string(), source })?;
        Ok((got, ArtifactHash::from_hasher(hasher)))
    }
}
