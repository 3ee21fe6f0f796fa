//! `veribench-worker market`: a participant of the prover market. Pulls one batch at a time
//! (`GET /get_batch/`), downloads it, computes the product, and submits it (`POST
//! /submit_proof/`) with what proving cost, until the server has no batch left (429).

use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use veribench_kernels::{Backend, BackendError};
use veribench_protocol::challenge::derive_device_seed;
use veribench_protocol::market::MatmulBatch;
use veribench_protocol::{Challenge, ChallengeId, UnixMillis};
use veribench_support::{RetryPolicy, Transient, retry};

/// What the participant reports with each proof.
#[derive(Clone, Debug)]
pub struct MarketClient {
    /// The server, e.g. `http://host:7800` (batch URLs are `server + "/" + batch_file`).
    pub server: String,
    /// The id the operator gave this participant.
    pub participant_id: String,
    /// What proving a batch costs, in US cents.
    pub cost_cents: u64,
    /// The lowest price accepted, in US cents.
    pub price_cents: u64,
    /// The deployment's name or version.
    pub deployment: String,
    /// Stop after one batch.
    pub once: bool,
    /// Retries of transient failures (server down, 5xx).
    pub retry: RetryPolicy,
}

/// A participant with its backend.
pub struct MarketWorker {
    /// What it reports and where.
    pub client: MarketClient,
    /// Where products are computed (CPU, CUDA or wgpu).
    pub backend: std::sync::Arc<dyn Backend>,
}

impl std::fmt::Debug for MarketWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketWorker").field("client", &self.client).finish_non_exhaustive()
    }
}

/// Why the client stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The server could not be reached, or timed out.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered an unexpected status.
    #[error("{url}: {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// Its body (truncated).
        body: String,
    },
    /// The batch file is not one this client can prove.
    #[error("batch {url}: {reason}")]
    BadBatch {
        /// The batch URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Transient for MarketError {
    fn is_transient(&self) -> bool {
        match self {
            MarketError::Unreachable { .. } => true,
            MarketError::Status { status, .. } => *status >= 500,
            MarketError::BadBatch { .. } | MarketError::Backend(_) => false,
        }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarketReport {
    /// Proofs accepted.
    pub accepted: u64,
    /// Proofs the server refused (`invalid proof`, unknown request).
    pub refused: u64,
}

#[derive(Debug, Deserialize)]
struct Assignment {
    batch_file: String,
    request_id: u64,
}

impl MarketWorker {
    /// Proves batches until the queue is empty (429), or one with `once`.
    pub async fn run(&self) -> Result<MarketReport, MarketError> {
        let this = &self.client;
        // reqwest brings no TLS provider of its own here (for an https:// server): ring, the
        // workspace's. An error means one is installed already.
        veribench_support::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|source| MarketError::Unreachable { url: this.server.clone(), source })?;
        let server = this.server.trim_end_matches('/');
        let mut report = MarketReport::default();
        loop {
            let url = format!("{server}/get_batch/?participant_id={}", this.participant_id);
            let got = retry(&this.retry, "get_batch", || fetch(&http, &url)).await?;
            let (status, body) = got;
            if status == 429 {
                tracing::info!(accepted = report.accepted, "no batch left to prove");
                return Ok(report);
            }
            if status != 200 {
                return Err(MarketError::Status { url, status, body: lossy(&body) });
            }
            let assignment: Assignment = serde_json::from_slice(&body)
                .map_err(|e| MarketError::BadBatch { url: url.clone(), reason: e.to_string() })?;
            let batch_url = format!("{server}/{}", assignment.batch_file);
            let (status, file) =
                retry(&this.retry, "download batch", || fetch(&http, &batch_url)).await?;
            if status != 200 {
                return Err(MarketError::Status { url: batch_url, status, body: lossy(&file) });
            }
            let batch = MatmulBatch::parse(&file).map_err(|e| MarketError::BadBatch {
                url: batch_url.clone(),
                reason: e.to_string(),
            })?;
            // The proving time: allocation and compute, not the download.
            let started = Instant::now();
            let backend = self.backend.clone();
            let proof = tokio::task::spawn_blocking(move || {
                prove(backend.as_ref(), &batch, assignment.request_id)
            })
            .await
            .map_err(|e| MarketError::BadBatch {
                url: batch_url.clone(),
                reason: e.to_string(),
            })??;
            let proving_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let body = serde_json::json!({
                "request_id": assignment.request_id,
                "proof_data": base64::engine::general_purpose::STANDARD.encode(&proof),
                "proving_time": proving_ms,
                "cost": this.cost_cents,
                "price": this.price_cents,
                "deployment_version": this.deployment,
            })
            .to_string();
            let url = format!("{server}/submit_proof/?participant_id={}", this.participant_id);
            let (status, answer) =
                retry(&this.retry, "submit_proof", || post(&http, &url, body.clone())).await?;
            match status {
                200 => {
                    report.accepted += 1;
                    tracing::info!(request = assignment.request_id, proving_ms, "proof accepted");
                }
                422 => {
                    report.refused += 1;
                    tracing::warn!(request = assignment.request_id, answer = %lossy(&answer), "proof refused");
                }
                _ => return Err(MarketError::Status { url, status, body: lossy(&answer) }),
            }
            if this.once {
                return Ok(report);
            }
        }
    }
}

/// The product's canonical rows, concatenated: computed on the backend's first device with the
/// matrices of the batch's own device key (SPEC §7.4), which no device here has.
fn prove(
    backend: &dyn Backend,
    batch: &MatmulBatch,
    request_id: u64,
) -> Result<Vec<u8>, MarketError> {
    let device = backend
        .devices()
        .first()
        .map(|d| d.key.clone())
        .ok_or_else(|| BackendError::Unavailable("the backend has no device".into()))?;
    let now = UnixMillis::now();
    let challenge = Challenge {
        id: ChallengeId(request_id),
        seed: batch.seed,
        mode: batch.mode,
        shape: batch.shape(),
        issued_at: now,
        deadline: UnixMillis(now.0.saturating_add(3_600_000)),
    };
    let seed = derive_device_seed(&batch.seed, &batch.device_key);
    let execution = backend.execute_seeded(&device, &challenge, seed)?;
    let mut proof = Vec::with_capacity(batch.proof_len());
    for row in 0..batch.m {
        proof.extend_from_slice(&execution.product.row_bytes(row)?);
    }
    Ok(proof)
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), MarketError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| MarketError::Unreachable { url: url.to_owned(), source })?;
    answer(url, response).await
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<(u16, Vec<u8>), MarketError> {
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| MarketError::Unreachable { url: url.to_owned(), source })?;
    answer(url, response).await
}

/// The status and body; a 5xx is an error (transient, so retried).
async fn answer(url: &str, response: reqwest::Response) -> Result<(u16, Vec<u8>), MarketError> {
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|source| MarketError::Unreachable { url: url.to_owned(), source })?
        .to_vec();
    if status >= 500 {
        return Err(MarketError::Status { url: url.to_owned(), status, body: lossy(&body) });
    }
    Ok((status, body))
}

fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
}
