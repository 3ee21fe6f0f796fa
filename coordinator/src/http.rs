//! The HTTP API: health, Prometheus metrics and read-only JSON views of miners, workers and
//! challenges.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::service::Coordinator;
use crate::store::{ChallengeRow, ChallengeStatus, MinerRow, WorkerRow};

/// Most rows one listing returns.
const MAX_LIMIT: u32 = 1000;

/// The API's routes.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/miners", get(miners))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/challenges", get(challenges))
        .with_state(coordinator)
}

type Shared = State<Arc<Coordinator>>;

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() })))
        .into_response()
}

/// A key as both forms operators use.
#[derive(Debug, Serialize)]
struct Key {
    hex: String,
    ss58: String,
}

impl From<&PublicKey> for Key {
    fn from(k: &PublicKey) -> Self {
        Key {
            hex: k.to_string(),
            ss58: veribench_wallet::ss58_encode(k, veribench_wallet::BITTENSOR_SS58_PREFIX)
                .unwrap_or_default(),
        }
    }
}

async fn healthz(State(c): Shared) -> Response {
    match c.store().challenges(None, 1).await {
        Ok(_) => Json(serde_json::json!({ "status": "ok", "database": "ok" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "degraded", "database": e.to_string() })),
        )
            .into_response(),
    }
}

async fn metrics(State(c): Shared) -> Response {
    let (workers, pending) = c.load();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], c.metrics().render(workers, pending))
        .into_response()
}

#[derive(Debug, Serialize)]
struct MinerView {
    hotkey: Key,
    workers: u32,
    online_workers: u32,
    verified: u64,
    failed: u64,
    mean_gflops: f64,
}

impl From<&MinerRow> for MinerView {
    fn from(m: &MinerRow) -> Self {
        MinerView {
            hotkey: (&m.hotkey).into(),
            workers: m.workers,
            online_workers: m.online_workers,
            verified: m.verified,
            failed: m.failed,
            mean_gflops: m.mean_gflops,
        }
    }
}

async fn miners(State(c): Shared) -> Response {
    match c.store().miners().await {
        Ok(rows) => Json(rows.iter().map(MinerView::from).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Serialize)]
struct WorkerView {
    worker_key: Key,
    miner_hotkey: Key,
    name: String,
    address: String,
    online: bool,
    connected_at_ms: u64,
    last_seen_ms: u64,
    devices: Vec<String>,
    hardware: serde_json::Value,
}

impl From<&WorkerRow> for WorkerView {
    fn from(w: &WorkerRow) -> Self {
        let r = &w.record;
        WorkerView {
            worker_key: (&r.worker_key).into(),
            miner_hotkey: (&r.miner_hotkey).into(),
            name: r.name.clone(),
            address: r.address.clone(),
            online: w.online,
            connected_at_ms: w.connected_at.0,
            last_seen_ms: w.last_seen.0,
            devices: r.devices.iter().map(ToString::to_string).collect(),
            hardware: serde_json::from_str(&r.hardware_json).unwrap_or(serde_json::Value::Null),
        }
    }
}

async fn workers(State(c): Shared) -> Response {
    match c.store().workers().await {
        Ok(rows) => Json(rows.iter().map(WorkerView::from).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct ChallengeQuery {
    status: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct ChallengeView {
    id: u64,
    miner_hotkey: String,
    worker_key: String,
    device: String,
    mode: String,
    m: u32,
    k: u32,
    n: u32,
    status: &'static str,
    reason: Option<String>,
    detail: Option<String>,
    issued_at_ms: u64,
    deadline_ms: u64,
    sent_at_ms: Option<u64>,
    committed_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
    root: Option<String>,
    compute_ms: Option<f64>,
    rtt_ms: Option<f64>,
    gflops: Option<f64>,
    credited: bool,
}

impl From<&ChallengeRow> for ChallengeView {
    fn from(c: &ChallengeRow) -> Self {
        ChallengeView {
            id: c.id.0,
            miner_hotkey: c.miner_hotkey.to_string(),
            worker_key: c.worker_key.to_string(),
            device: c.device.to_string(),
            mode: c.mode.to_string(),
            m: c.shape.m,
            k: c.shape.k,
            n: c.shape.n,
            status: c.status.as_str(),
            reason: c.reason.clone(),
            detail: c.detail.clone(),
            issued_at_ms: c.issued_at.0,
            deadline_ms: c.deadline.0,
            sent_at_ms: c.sent_at.map(|t| t.0),
            committed_at_ms: c.committed_at.map(|t| t.0),
            finished_at_ms: c.finished_at.map(|t| t.0),
            root: c.root.map(|r| r.to_string()),
            compute_ms: c.compute_ms,
            rtt_ms: c.rtt_ms,
            gflops: c.gflops,
            credited: c.credited,
        }
    }
}

async fn challenges(State(c): Shared, Query(q): Query<ChallengeQuery>) -> Response {
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => match ChallengeStatus::parse(s) {
            Some(status) => Some(status),
            None => {
                let known: Vec<&str> = ChallengeStatus::ALL.iter().map(|s| s.as_str()).collect();
                let error = format!("unknown status {s:?}; expected one of {}", known.join(", "));
                return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": error })))
                    .into_response();
            }
        },
    };
    match c.store().challenges(status, q.limit.unwrap_or(100).min(MAX_LIMIT)).await {
        Ok(rows) => Json(rows.iter().map(ChallengeView::from).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}
