//! Circuit artifacts: publish to S3/R2 with an on-chain hash, fetch them safely.
//!
//! Besides raw GEMM capacity, miners compete with artifacts (verification key, proving key,
//! settings, compiled model) too large for the worker connection. The flow:
//!
//! 1. **Miner, [`publish::publish`]**: checks the artifact directory (every
//!    [`RequiredFiles`] entry present, `settings.json` valid per [`settings`]), uploads each file
//!    to its bucket as `<sha256>/<file>` through presigned PUT URLs, then commits the SHA-256 of
//!    the committed file (default `vk.key`) with `Chain::set_commitment`, so it cannot swap the
//!    artifact later without a new, visible commitment.
//! 2. **Miner, [`offer::offer_urls`]**: on a coordinator's request, answers with a
//!    [`CircuitOffer`] of presigned GET URLs (1 h by default), but only when the local file still
//!    hashes to the chain commitment.
//! 3. **Coordinator, [`Fetcher`]**: checks every URL against the [`UrlPolicy`] (exact host or
//!    `.suffix` match, https, no user info, no IP literals, no odd ports, every redirect hop too),
//!    checks the offer's hash against the miner's chain commitment, streams the files into a
//!    temporary directory with size caps, timeouts and retries, verifies the SHA-256, and moves
//!    the artifact into a content-addressed, size-limited LRU [`Cache`]. Each attempt yields a
//!    [`FetchRecord`] for the [`FetchLog`].
//!
//! The command lines (`veribench-worker circuit …`, `veribench-coordinator circuit …`) live in
//! those binaries; this crate holds the library they call and the configuration files they read
//! ([`config`]). Every function returns a `thiserror` error; [`Error`] gathers them.

pub mod cache;
pub mod config;
mod error;
pub mod fetch;
pub mod files;
mod hash;
pub mod offer;
pub mod policy;
#[cfg(feature = "progress-bars")]
pub mod progress;
pub mod publish;
pub mod settings;
pub mod storage;
pub mod transfer;

pub use cache::{Cache, CacheEntry, CacheError, Claim};
pub use config::MinerCircuitConfig;
pub use error::Error;
pub use fetch::{
    FetchAttempt, FetchConfig, FetchError, FetchLog, FetchRecord, Fetched, Fetcher, MemoryLog,
};
pub use files::{FilesError, RequiredFiles};
pub use hash::{ArtifactHash, HashParseError};
pub use offer::{CircuitOffer, OfferError, offer_urls};
pub use policy::{UrlPolicy, UrlRefusal};
pub use publish::{PublishError, PublishOptions, PublishReport, publish};
pub use storage::{Provider, Secret, Storage, StorageConfig, StorageError};
pub use transfer::{FileProgress, Progress, TransferConfig};

/// Compile-time checks: the futures can be spawned on a multi-threaded runtime, and the
/// fetcher shared between tasks.
#[allow(dead_code)]
fn _futures_are_send(
    f: &Fetcher,
    miner: &veribench_protocol::PublicKey,
    offer: &CircuitOffer,
    storage: &Storage,
    chain: &dyn veribench_chain::Chain,
    signer: &veribench_wallet::Keypair,
) {
    fn send<T: Send>(_: T) {}
    fn sync<T: Send + Sync>() {}
    sync::<Fetcher>();
    send(f.fetch(miner, offer));
    let files = RequiredFiles::default();
    let opts = PublishOptions::default();
    let (dir, net) = (std::path::Path::new("."), veribench_chain::NetUid(0));
    send(publish(dir, &files, storage, chain, signer, net, &opts));
    send(offer_urls(dir, &files, storage, chain, net, miner, std::time::Duration::from_secs(1)));
}
