//! Miner side: check the artifact directory, upload every file under `<sha256>/<file>`, then
//! commit the SHA-256 on chain.
//!
//! The order matters: uploads first, commitment last, so the chain never points at an artifact
//! that is not (yet) downloadable. Re-publishing the same artifact re-uploads (uploads are
//! idempotent, same key, same bytes) and skips the extrinsic when the chain already holds the
//! hash. Bodies are streamed from disk with an explicit `Content-Length` (S3 refuses chunked
//! uploads without it), so memory use does not grow with the proving key's size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use veribench_chain::{Chain, ChainError, NetUid, TxReceipt};
use veribench_support::retry::{RetryPolicy, Transient, retry};
use veribench_wallet::Keypair;

use crate::offer::{ArtifactError, LocalArtifact, LocalFile, local_artifact};
use crate::storage::Storage;
use crate::transfer::{
    Progress, TransferConfig, describe, detail, file_progress, http_client, read_bounded, s3_error,
    status_is_transient,
};
use crate::{ArtifactHash, RequiredFiles};
use veribench_support::redact_url;

/// Largest single PUT S3 and R2 accept (5 GiB); larger files would need multipart uploads.
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// Validity of the presigned PUT URL of one upload attempt.
const PUT_URL_EXPIRY: Duration = Duration::from_secs(3600);

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The artifact directory does not check out.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A file is larger than one PUT allows.
    #[error("{file} is {len} bytes, more than the {MAX_SINGLE_PUT} bytes of one upload")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        len: u64,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::transfer::ClientError),
    /// The store answered an upload with an error status.
    #[error("upload of {file} refused: HTTP {status}{}", detail(.code, .message))]
    Status {
        /// The file.
        file: String,
        /// HTTP status.
        status: u16,
        /// S3 error code, if the body had one.
        code: Option<String>,
        /// S3 error message, if the body had one.
        message: Option<String>,
    },
    /// The upload failed on the network after every retry.
    #[error("upload of {file} failed: {message}")]
    Network {
        /// The file.
        file: String,
        /// What happened.
        message: String,
    },
    /// The commitment extrinsic failed.
    #[error("cannot commit the artifact hash on chain: {0}")]
    Chain(#[from] ChainError),
}

impl Transient for PublishError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Status { status, .. } => {
                reqwest::StatusCode::from_u16(*status).map(status_is_transient).unwrap_or(false)
            }
            _ => false,
        }
    }
}

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// SHA-256 of the committed file (now the chain commitment).
    pub hash: ArtifactHash,
    /// `(file, bytes)` uploaded.
    pub uploaded: Vec<(String, u64)>,
    /// The commitment extrinsic, or `None` when the chain already held this hash.
    pub receipt: Option<TxReceipt>,
}

/// Options of [`publish`].
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// Timeouts and retries of the uploads.
    pub transfer: TransferConfig,
    /// Retries of the chain calls.
    pub chain_retry: RetryPolicy,
    /// Where upload progress is reported (none by default).
    pub progress: Option<Arc<dyn Progress>>,
}

/// Checks `dir`, uploads its files to `storage` and commits the hash with `signer` on `netuid`.
pub async fn publish(
    dir: &Path,
    files: &RequiredFiles,
    storage: &Storage,
    chain: &dyn Chain,
    signer: &Keypair,
    netuid: NetUid,
    opts: &PublishOptions,
) -> Result<PublishReport, PublishError> {
    let LocalArtifact { hash, files: local } = local_artifact(dir, files)?;
    if let Some(big) = local.iter().find(|f| f.len > MAX_SINGLE_PUT) {
        return Err(PublishError::TooLarge { file: big.name.clone(), len: big.len });
    }
    tracing::info!(%hash, dir = %dir.display(), bucket = %redact_url(storage.base_url().as_str()), "publishing circuit artifact");
    let client = http_client(&opts.transfer)?;
    let mut uploaded = Vec::with_capacity(local.len());
    for file in &local {
        upload_with_retries(&client, storage, &hash, file, opts).await?;
        uploaded.push((file.name.clone(), file.len));
    }
    let hotkey = signer.public();
    let current =
        retry(&opts.chain_retry, "commitment", || chain.commitment(netuid, &hotkey)).await?;
    if current.is_some_and(|c| c.data == hash.as_bytes()) {
        tracing::info!(%hash, "the chain already holds this commitment");
        return Ok(PublishReport { hash, uploaded, receipt: None });
    }
    let receipt = retry(&opts.chain_retry, "set_commitment", || {
        chain.set_commitment(signer, netuid, hash.as_bytes())
    })
    .await?;
    tracing::info!(%hash, block = receipt.block, "artifact hash committed on chain");
    Ok(PublishReport { hash, uploaded, receipt: Some(receipt) })
}

/// One file's upload, retried by the workspace's retry loop on transient failures; each attempt
/// has the whole-file deadline.
async fn upload_with_retries(
    client: &reqwest::Client,
    storage: &Storage,
    hash: &ArtifactHash,
    file: &LocalFile,
    opts: &PublishOptions,
) -> Result<(), PublishError> {
    let what = format!("upload of {}", file.name);
    retry(&opts.transfer.retry, &what, || async {
        match tokio::time::timeout(
            opts.transfer.file_timeout(),
            upload_once(client, storage, hash, file, opts),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(PublishError::Network {
                file: file.name.clone(),
                message: format!("no completion within {} s", opts.transfer.file_timeout_secs),
            }),
        }
    })
    .await
}

async fn upload_once(
    client: &reqwest::Client,
    storage: &Storage,
    hash: &ArtifactHash,
    file: &LocalFile,
    opts: &PublishOptions,
) -> Result<(), PublishError> {
    let net = |message: String| PublishError::Network { file: file.name.clone(), message };
    let handle = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| net(format!("cannot open {}: {e}", file.path.display())))?;
    let bar = file_progress(opts.progress.as_ref(), "upload", &file.name, Some(file.len));
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(handle, 256 * 1024)
        .inspect_ok(move |chunk| progress.advance(chunk.len() as u64));
    let url = storage.presign_put(hash, &file.name, PUT_URL_EXPIRY);
    let response = client
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, file.len)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| net(describe(&e)));
    bar.finish();
    let response = response?;
    let status = response.status();
    if status.is_success() {
        tracing::info!(file = %file.name, bytes = file.len, "uploaded");
        return Ok(());
    }
    let body = read_bounded(response, 4096).await;
    let (code, message) = s3_error(&body);
    Err(PublishError::Status { file: file.name.clone(), status: status.as_u16(), code, message })
}
