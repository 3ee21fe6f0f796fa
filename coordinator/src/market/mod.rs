//! The prover-market job API (`[market] enabled = true`): participants pull one batch at a
//! time (`GET /get_batch/`), prove it, and submit the proof with what proving cost them
//! (`POST /submit_proof/`). Every proof is checked exactly (built-in matmul batches: the whole
//! product by Freivalds' check, SPEC §7.4) and every submission against a batch is recorded,
//! accepted or not, for the market's design.
//!
//! The status codes and bodies are the original experiment's, byte for byte, so that its
//! clients keep working; fields a client adds are kept with the submission, not refused.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::{Deserialize, Serialize};
use veribench_protocol::market::{MatmulBatch, check_product};
use veribench_protocol::{DeviceKey, Mode, Seed, Shape, UnixMillis};

pub mod external;

pub use external::ExternalSystem;

use crate::config::ConfigError;
use crate::service::Coordinator;
use crate::store::{NewBatch, StoreError, SubmissionRecord, Verdict};

/// The built-in proof system's name.
pub const MATMUL: &str = "matmul";

/// `[market]`: the prover-market API on the HTTP listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarketConfig {
    /// Serve `/get_batch/`, `/submit_proof/` and the batch files (off by default).
    pub enabled: bool,
    /// Largest `submit_proof` body; larger ones get 413. A proof itself is capped by its
    /// batch's shape (`m·n·4` bytes, base64).
    pub max_body_bytes: usize,
    /// Longest `deployment_version` string.
    pub max_deployment_version_len: usize,
    /// Keep at least this many batches queued, topping up every `refill_secs` (0: off;
    /// `market add-batches` fills the queue by hand).
    pub keep_queued: u64,
    /// Seconds between two checks of the queue.
    pub refill_secs: f64,
    /// What the top-up queues.
    pub refill: BatchSpec,
    /// External proof systems, each with its verifier command (`[[market.systems]]`).
    pub systems: Vec<ExternalSystem>,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_body_bytes: 96 << 20,
            max_deployment_version_len: 128,
            keep_queued: 0,
            refill_secs: 10.0,
            refill: BatchSpec::default(),
            systems: Vec::new(),
        }
    }
}

impl MarketConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.max_body_bytes == 0 || self.max_deployment_version_len == 0 {
            return bad(
                "market.max_body_bytes and market.max_deployment_version_len must be positive",
            );
        }
        if self.refill_secs.is_nan() || self.refill_secs <= 0.0 {
            return bad("market.refill_secs must be positive");
        }
        let mut names = std::collections::BTreeSet::new();
        for system in &self.systems {
            system.validate()?;
            if !names.insert(&system.name) {
                return bad("market.systems names must be unique");
            }
        }
        if self.keep_queued > 0 {
            self.refill
                .batch(Seed([0; 32]), 0)
                .map_err(|e| ConfigError::Invalid(format!("market.refill: {e}")))?;
        }
        Ok(())
    }
}

/// The shape and mode of queued matmul batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSpec {
    /// int8, fp16 or bf16 (exact modes only).
    pub mode: Mode,
    /// Rows of A and of the product.
    pub m: u32,
    /// Columns of A, rows of B.
    pub k: u32,
    /// Columns of B and of the product.
    pub n: u32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self { mode: Mode::Int8, m: 1024, k: 1024, n: 1024 }
    }
}

impl BatchSpec {
    /// The batch file of request `request_id` with `seed`.
    fn batch(
        &self,
        seed: Seed,
        request_id: u64,
    ) -> Result<MatmulBatch, veribench_protocol::market::BatchError> {
        // One device key per request: a product computed for one batch answers no other.
        let device = DeviceKey::new(format!("market:{request_id}"))
            .ok_or(veribench_protocol::market::BatchError::BadDeviceKey)?;
        MatmulBatch::new(seed, self.mode, Shape { m: self.m, k: self.k, n: self.n }, device)
    }

    /// `count` fresh batches: random seeds, request ids and unguessable file paths.
    pub fn new_batches(
        &self,
        count: u64,
    ) -> Result<Vec<NewBatch>, veribench_protocol::market::BatchError> {
        (0..count)
            .map(|_| {
                let request_id = rand::random::<u64>() >> 1;
                let batch = self.batch(Seed(rand::random()), request_id)?;
                Ok(NewBatch {
                    request_id,
                    token: new_token(),
                    system: MATMUL.to_owned(),
                    descriptor: batch.to_json(),
                    ops: batch.operations(),
                })
            })
            .collect()
    }
}

/// A fresh batch file path (after `static/`): two 128-bit random names.
pub fn new_token() -> String {
    format!(
        "{}/{}.json",
        hex::encode(rand::random::<[u8; 16]>()),
        hex::encode(rand::random::<[u8; 16]>())
    )
}

/// A fresh participant id: 128 random bits, hex.
pub fn new_participant_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The market's routes (merged into the API router when `[market] enabled`).
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    let limit = coordinator.config().market.max_body_bytes;
    Router::new()
        .route("/get_batch/", get(get_batch).post(submit_proof))
        .route("/get_batch", get(get_batch).post(submit_proof))
        .route("/submit_proof/", axum::routing::post(submit_proof))
        .route("/submit_proof", axum::routing::post(submit_proof))
        .route("/static/{dir}/{file}", get(batch_file))
        .route("/api/v1/market/submissions", get(submissions))
        .route("/api/v1/market/summary", get(summary))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(coordinator)
}

type Shared = State<Arc<Coordinator>>;

#[derive(Debug, Deserialize)]
struct ParticipantQuery {
    participant_id: Option<String>,
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn no_participant(id: &str) -> Response {
    text(StatusCode::UNPROCESSABLE_ENTITY, format!("participant `{id}` does not exist"))
}

fn no_request(id: u64) -> Response {
    text(StatusCode::UNPROCESSABLE_ENTITY, format!("request `{id}` does not exist"))
}

fn store_failed(e: StoreError) -> Response {
    tracing::error!(error = %e, "market: the store failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
}

/// The participant named by the query, or the response refusing it.
async fn participant(c: &Coordinator, q: &ParticipantQuery) -> Result<String, Response> {
    let Some(id) = q.participant_id.as_deref() else {
        return Err(text(StatusCode::BAD_REQUEST, "missing participant_id".to_owned()));
    };
    match c.store().participant(id).await {
        Ok(Some(p)) => Ok(p.id),
        Ok(None) => Err(no_participant(id)),
        Err(e) => Err(store_failed(e)),
    }
}

/// `GET /get_batch/?participant_id=ID`: the participant's outstanding batch, or the next one.
async fn get_batch(State(c): Shared, Query(q): Query<ParticipantQuery>) -> Response {
    let id = match participant(&c, &q).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    match c.store().assign_batch(&id, UnixMillis::now()).await {
        Ok(Some(batch)) => {
            let body = serde_json::json!({
                "batch_file": format!("static/{}", batch.token),
                "request_id": batch.request_id,
            });
            axum::Json(body).into_response()
        }
        Ok(None) => text(StatusCode::TOO_MANY_REQUESTS, "no more batches left to prove".to_owned()),
        Err(e) => store_failed(e),
    }
}

/// `GET /static/DIR/FILE`: a batch file. The path is the unguessable token; unknown paths 404.
async fn batch_file(State(c): Shared, Path((dir, file)): Path<(String, String)>) -> Response {
    match c.store().batch_by_token(&format!("{dir}/{file}")).await {
        Ok(Some(batch)) => {
            ([(header::CONTENT_TYPE, "application/json")], batch.descriptor).into_response()
        }
        Ok(None) => text(StatusCode::NOT_FOUND, "not found".to_owned()),
        Err(e) => store_failed(e),
    }
}

/// A submission's body: the four fields of the original API, plus whatever else a client sends.
#[derive(Debug)]
struct Submission {
    request_id: u64,
    proof_data: String,
    proving_time_ms: u64,
    cost_cents: u64,
    price_cents: u64,
    /// The JSON text of `deployment_version` as sent: a number or a string.
    deployment_version: String,
    /// Unknown fields, as a JSON object.
    extra: String,
}

/// Why a body is not a submission (400, with this text).
fn parse_submission(body: &[u8], max_version: usize) -> Result<Submission, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let serde_json::Value::Object(mut fields) = value else {
        return Err("the body must be a JSON object".to_owned());
    };
    let mut take =
        |name: &str| fields.remove(name).ok_or_else(|| format!("missing field `{name}`"));
    let request_id = take("request_id")?;
    let request_id = request_id
        .as_u64()
        .ok_or_else(|| "`request_id` must be a non-negative integer".to_owned())?;
    let proof_data = match take("proof_data")? {
        serde_json::Value::String(s) => s,
        _ => return Err("`proof_data` must be a base64 string".to_owned()),
    };
    let mut amount = |name: &str| -> Result<u64, String> {
        let v = take(name)?;
        match v.as_f64() {
            Some(x) if x >= 0.0 && x.is_finite() => Ok(x.round() as u64),
            Some(_) => Err(format!("`{name}` must not be negative")),
            None => Err(format!("`{name}` must be a number")),
        }
    };
    let proving_time_ms = amount("proving_time")?;
    let cost_cents = amount("cost")?;
    let price_cents = amount("price")?;
    let deployment_version = match take("deployment_version")? {
        serde_json::Value::String(s) if s.len() > max_version => {
            return Err(format!("`deployment_version` is longer than {max_version} bytes"));
        }
        v @ (serde_json::Value::String(_) | serde_json::Value::Number(_)) => v.to_string(),
        _ => return Err("`deployment_version` must be a number or a string".to_owned()),
    };
    let extra = serde_json::Value::Object(fields).to_string();
    Ok(Submission {
        request_id,
        proof_data,
        proving_time_ms,
        cost_cents,
        price_cents,
        deployment_version,
        extra,
    })
}

/// `POST /submit_proof/?participant_id=ID` (also `POST /get_batch/`).
async fn submit_proof(
    State(c): Shared,
    Query(q): Query<ParticipantQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large".to_owned());
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let id = match participant(&c, &q).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let cfg = &c.config().market;
    let s = match parse_submission(&body, cfg.max_deployment_version_len) {
        Ok(s) => s,
        Err(reason) => return text(StatusCode::BAD_REQUEST, reason),
    };
    let now = UnixMillis::now();
    let batch = match c.store().open_request(&id, s.request_id).await {
        Ok(Some(b)) => b,
        Ok(None) => return no_request(s.request_id),
        Err(e) => return store_failed(e),
    };
    let reason = verify(cfg, &batch.system, &batch.descriptor, &s.proof_data).await.err();
    let record = SubmissionRecord {
        participant_id: id.clone(),
        request_id: s.request_id,
        batch_id: Some(batch.id),
        verdict: if reason.is_none() { Verdict::Accepted } else { Verdict::Rejected },
        reason: reason.map(str::to_owned),
        proving_time_ms: s.proving_time_ms,
        cost_cents: s.cost_cents,
        price_cents: s.price_cents,
        deployment_version: s.deployment_version,
        extra: s.extra,
        server_ms: batch.assigned_at.map(|t| now.0.saturating_sub(t.0)),
        ops: batch.ops,
        submitted_at: now,
    };
    match c.store().record_submission(&record, Some(batch.id)).await {
        // Answered meanwhile (a replay racing the first submission).
        Ok(false) => no_request(s.request_id),
        Ok(true) if reason.is_none() => {
            text(StatusCode::OK, "proof submitted successfully".to_owned())
        }
        Ok(true) => text(StatusCode::UNPROCESSABLE_ENTITY, "invalid proof".to_owned()),
        Err(e @ (StoreError::OutOfRange { .. } | StoreError::InvalidMeasure { .. })) => {
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => store_failed(e),
    }
}

/// Checks a proof; the refusal reason recorded with it.
async fn verify(
    cfg: &MarketConfig,
    system: &str,
    descriptor: &str,
    proof_data: &str,
) -> Result<(), &'static str> {
    if system != MATMUL {
        let Some(external) = cfg.systems.iter().find(|s| s.name == system) else {
            return Err("unknown_proof_system");
        };
        if proof_data.len() / 4 * 3 > external.max_proof_bytes + 3 {
            return Err("proof_too_long");
        }
        let proof = base64::engine::general_purpose::STANDARD
            .decode(proof_data)
            .map_err(|_| "proof_not_base64")?;
        return external.verify(descriptor.as_bytes(), &proof).await;
    }
    let batch = MatmulBatch::parse(descriptor.as_bytes()).map_err(|_| "corrupt_batch")?;
    // The shape caps the proof before anything is decoded.
    if proof_data.len() > batch.max_proof_base64_len() {
        return Err("proof_too_long");
    }
    let proof = base64::engine::general_purpose::STANDARD
        .decode(proof_data)
        .map_err(|_| "proof_not_base64")?;
    // O(m·n + k·n + m·k) work: off the runtime.
    tokio::task::spawn_blocking(move || {
        check_product(&batch, &proof, &mut rand::rng()).map_err(|e| e.code())
    })
    .await
    .map_err(|_| "verifier_failed")?
}

#[derive(Debug, Deserialize)]
struct SubmissionsQuery {
    participant_id: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/market/submissions?participant_id=&limit=`: newest first.
async fn submissions(State(c): Shared, Query(q): Query<SubmissionsQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(1000);
    match c.store().submissions(q.participant_id.as_deref(), limit).await {
        Ok(rows) => {
            let rows: Vec<_> = rows
                .iter()
                .map(|row| {
                    let r = &row.record;
                    let deployment: serde_json::Value =
                        serde_json::from_str(&r.deployment_version).unwrap_or_default();
                    let extra: serde_json::Value =
                        serde_json::from_str(&r.extra).unwrap_or_default();
                    serde_json::json!({
                        "id": row.id,
                        "participant_id": r.participant_id,
                        "request_id": r.request_id,
                        "batch_id": r.batch_id,
                        "verdict": r.verdict.as_str(),
                        "reason": r.reason,
                        "proving_time": r.proving_time_ms,
                        "cost": r.cost_cents,
                        "price": r.price_cents,
                        "deployment_version": deployment,
                        "extra": extra,
                        "server_ms": r.server_ms,
                        "ops": r.ops,
                        "submitted_at_ms": r.submitted_at.0,
                    })
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(e) => store_failed(e),
    }
}

/// `GET /api/v1/market/summary`: per participant and deployment.
async fn summary(State(c): Shared) -> Response {
    match c.store().market_summary().await {
        Ok(rows) => {
            let rows: Vec<_> = rows
                .iter()
                .map(|r| {
                    let deployment: serde_json::Value =
                        serde_json::from_str(&r.deployment_version).unwrap_or_default();
                    serde_json::json!({
                        "participant_id": r.participant_id,
                        "deployment_version": deployment,
                        "accepted": r.accepted,
                        "rejected": r.rejected,
                        "median_proving_time_ms": r.median_proving_time_ms,
                        "median_cost_per_tera_op_cents": r.median_cost_per_tops_cents,
                        "median_price_per_tera_op_cents": r.median_price_per_tops_cents,
                        "price_over_cost": r.price_over_cost,
                    })
                })
                .collect();
            axum::Json(rows).into_response()
        }
        Err(e) => store_failed(e),
    }
}

/// Keeps `[market] keep_queued` batches queued until `stop`.
pub async fn keep_queued(c: Arc<Coordinator>, stop: tokio_util::sync::CancellationToken) {
    let cfg = c.config().market.clone();
    let mut tick = tokio::time::interval(crate::config::secs(cfg.refill_secs));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let queued = match c.store().queued_batches().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "market: cannot count the queue");
                continue;
            }
        };
        let missing = cfg.keep_queued.saturating_sub(queued).min(1000);
        if missing == 0 {
            continue;
        }
        match cfg.refill.new_batches(missing) {
            Ok(batches) => match c.store().add_batches(&batches, UnixMillis::now()).await {
                Ok(n) => tracing::info!(added = n, "market: queue topped up"),
                Err(e) => tracing::warn!(error = %e, "market: cannot queue batches"),
            },
            Err(e) => tracing::error!(error = %e, "market: the refill batch is invalid"),
        }
    }
}
