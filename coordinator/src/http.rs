//! The HTTP API: health, Prometheus metrics, read-only JSON views of miners, workers,
//! challenges, scores, weights and leases, and the one write: authenticated lease reports.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;

use crate::leases::{LeaseError, SIGNATURE_HEADER, SIGNER_HEADER, authorize, parse_request};
use crate::refusal_kind::RefusalKind;
use crate::service::Coordinator;
use crate::store::{
    ChallengeRow, ChallengeStatus, LeaseRow, MinerRow, ScoreRunRow, WeightEntry, WeightSetRow,
    WorkerRow,
};

/// Most rows one listing returns.
const MAX_LIMIT: u32 = 1000;
/// Largest lease report body.
const MAX_LEASE_BODY: usize = 16 << 10;

/// The API's routes (with the prover market's when `[market] enabled`).
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    let market =
        coordinator.config().market.enabled.then(|| crate::market::router(coordinator.clone()));
    let coordinator_for_status = coordinator.clone();
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/miners", get(miners))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/challenges", get(challenges))
        .route("/api/v1/scores", get(scores))
        .route("/api/v1/circuits", get(circuits))
        .route("/api/v1/weights", get(weights))
        .route("/api/v1/consensus", get(consensus))
        .route(
            "/api/v1/leases",
            get(leases).post(post_lease).layer(DefaultBodyLimit::max(MAX_LEASE_BODY)),
        )
        .with_state(coordinator);
    // The status pages for operators (HTML at `/`), see [`crate::status`].
    let api = api.merge(crate::status::router(coordinator_for_status));
    match market {
        Some(market) => api.merge(market),
        None => api,
    }
}

type Shared = State<Arc<Coordinator>>;

fn error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<u32>,
}

impl LimitQuery {
    fn limit(&self, default: u32) -> u32 {
        self.limit.unwrap_or(default).min(MAX_LIMIT)
    }
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

/// What `/healthz` and `/readyz` report. Built from what the coordinator last observed (the
/// database is probed with a write every second), never by waiting on the database, so it
/// answers at once during an outage.
#[derive(Debug, Serialize)]
struct Health {
    /// `ok`, `degraded` (the database is failing) or `stopping`.
    status: &'static str,
    database: DatabaseHealth,
    chain: ChainHealth,
    workers_connected: usize,
    challenges_in_flight: usize,
}

#[derive(Debug, Serialize)]
struct DatabaseHealth {
    ok: bool,
    /// Why it is failing.
    error: Option<String>,
    failing_for_ms: Option<u64>,
    last_write_ago_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ChainHealth {
    /// Whether the metagraph has been read (registrations wait for it).
    metagraph: bool,
    block: Option<u64>,
}

fn health(c: &Coordinator) -> Health {
    let db = c.store().health().report();
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mg = c.metagraph();
    let (workers_connected, challenges_in_flight) = c.load();
    let status = if c.is_shutting_down() {
        "stopping"
    } else if db.ok {
        "ok"
    } else {
        "degraded"
    };
    Health {
        status,
        database: DatabaseHealth {
            ok: db.ok,
            error: db.error,
            failing_for_ms: db.failing_for.map(millis),
            last_write_ago_ms: db.last_ok_ago.map(millis),
        },
        chain: ChainHealth { metagraph: mg.is_some(), block: mg.map(|m| m.block) },
        workers_connected,
        challenges_in_flight,
    }
}

/// 200 when healthy, 503 when the database is failing or the coordinator is stopping; the
/// body says which and why.
async fn healthz(State(c): Shared) -> Response {
    let h = health(&c);
    let code = if h.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(h)).into_response()
}

/// Liveness, for orchestrators: the process answers. A failing database does not make it
/// unlive (a restart would not bring the database back, and would drop every worker).
async fn livez() -> Response {
    Json(serde_json::json!({ "status": "alive" })).into_response()
}

/// Readiness, for orchestrators and load balancers: 200 only when the coordinator can serve
/// workers: the database takes writes, the metagraph has been read, and it is not stopping.
async fn readyz(State(c): Shared) -> Response {
    let h = health(&c);
    let ready = h.status == "ok" && h.chain.metagraph;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(h)).into_response()
}

async fn metrics(State(c): Shared) -> Response {
    let (workers, pending) = c.load();
    let mut text = c.metrics().render(workers, pending);
    if let Some(node) = c.consensus() {
        text.push_str(&node.status().render_prometheus());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Debug, Serialize)]
struct MinerView {
    hotkey: Key,
    workers: u32,
    online_workers: u32,
    verified: u64,
    failed: u64,
    busy: u64,
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
            busy: m.busy,
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
    /// The worker's clock minus ours at its last registration (SPEC §8.2).
    clock_skew_ms: Option<i64>,
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
            clock_skew_ms: r.clock_skew_ms,
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
                let detail = format!("unknown status {s:?}; expected one of {}", known.join(", "));
                return error(StatusCode::BAD_REQUEST, detail);
            }
        },
    };
    match c.store().challenges(status, q.limit.unwrap_or(100).min(MAX_LIMIT)).await {
        Ok(rows) => Json(rows.iter().map(ChallengeView::from).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Serialize)]
struct WeightView {
    uid: u16,
    hotkey: Key,
    weight: u16,
}

impl From<&WeightEntry> for WeightView {
    fn from(e: &WeightEntry) -> Self {
        WeightView { uid: e.uid, hotkey: (&e.hotkey).into(), weight: e.weight }
    }
}

/// One score run with every component: `GET /api/v1/scores?limit=N` (newest first).
fn score_view(r: &ScoreRunRow) -> serde_json::Value {
    let run = &r.run;
    serde_json::json!({
        "id": r.id,
        "at_ms": run.at.0,
        "block": run.block,
        "config": serde_json::from_str::<serde_json::Value>(&run.config_json).unwrap_or_default(),
        "miners": run.miners.iter().map(|m| serde_json::json!({
            "hotkey": Key::from(&m.hotkey),
            "uid": m.uid,
            "online": m.online,
            "workers": m.workers,
            "challenge": m.challenge,
            "lease": m.lease,
            "total": m.total,
        })).collect::<Vec<_>>(),
        "workers": run.workers.iter().map(|w| serde_json::json!({
            "worker_key": Key::from(&w.worker_key),
            "miner_hotkey": Key::from(&w.miner_hotkey),
            "leased": w.leased,
            "lease_score": w.lease_score,
            "verified": w.verified,
            "online_buckets": w.online_buckets,
            "ip_changes": w.ip_changes,
            "penalised": w.penalised,
            "mean_gflops": w.score.mean_gflops,
            "participation": w.score.participation,
            "availability": w.score.availability,
            "performance": w.score.performance,
        })).collect::<Vec<_>>(),
        "weights": run.weights.iter().map(WeightView::from).collect::<Vec<_>>(),
    })
}

async fn scores(State(c): Shared, Query(q): Query<LimitQuery>) -> Response {
    match c.store().score_runs(q.limit(10)).await {
        Ok(rows) => Json(rows.iter().map(score_view).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// One weight vector and its submission: `GET /api/v1/weights?limit=N` (newest first).
fn weight_set_view(s: &WeightSetRow) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "run_id": s.run_id,
        "created_at_ms": s.created_at.0,
        "status": s.status.as_str(),
        "attempts": s.attempts,
        "last_error": s.last_error,
        "commit_block": s.commit_block,
        "submitted_at_ms": s.submitted_at.map(|t| t.0),
        "block": s.block,
        "tx_hash": s.tx_hash,
        "decision_height": s.decision_height,
        "weights": s.entries.iter().map(WeightView::from).collect::<Vec<_>>(),
    })
}

async fn weights(State(c): Shared, Query(q): Query<LimitQuery>) -> Response {
    match c.store().weight_sets(q.limit(100)).await {
        Ok(rows) => Json(rows.iter().map(weight_set_view).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/consensus`: the node's status (when `[consensus]` is on), the newest decisions
/// (`limit`, default 20) with their agreed weights, and the newest evidence of misbehaviour.
async fn consensus(State(c): Shared, Query(q): Query<LimitQuery>) -> Response {
    let limit = q.limit(20);
    let store = c.store();
    let (decisions, evidence, evidence_total) = match (
        store.decisions(None, limit).await,
        store.evidence(limit).await,
        store.evidence_count().await,
    ) {
        (Ok(d), Ok(e), Ok(n)) => (d, e, n),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return internal(e),
    };
    let decisions: Vec<_> = decisions
        .iter()
        .map(|d| {
            serde_json::json!({
                "height": d.height,
                "round": d.round,
                "rounds": d.round + 1,
                "value_id": hex::encode(d.value_id),
                "proposer": Key::from(&d.proposer),
                "vectors": d.vectors,
                "signers": d.signers,
                "aggregate": d.aggregate,
                "decided_at_ms": d.decided_at.0,
                "decide_ms": d.decide_ms,
            })
        })
        .collect();
    let evidence: Vec<_> = evidence
        .iter()
        .map(|e| {
            let detail: serde_json::Value =
                serde_json::from_str(&e.detail).unwrap_or_else(|_| e.detail.clone().into());
            serde_json::json!({
                "height": e.height,
                "round": e.round,
                "validator": Key::from(&e.validator),
                "kind": e.kind.as_str(),
                "detail": detail,
                "recorded_at_ms": e.recorded_at.0,
            })
        })
        .collect();
    Json(serde_json::json!({
        "enabled": c.config().consensus.enabled,
        "status": c.consensus().map(|n| n.status()),
        "decisions": decisions,
        "evidence": evidence,
        "evidence_total": evidence_total,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct LeaseQuery {
    /// Only leases in force now.
    active: Option<bool>,
    limit: Option<u32>,
}

fn lease_view(l: &LeaseRow) -> serde_json::Value {
    serde_json::json!({
        "id": l.id,
        "worker_key": Key::from(&l.lease.worker_key),
        "score": l.lease.score,
        "starts_at_ms": l.lease.starts_at.0,
        "ends_at_ms": l.lease.ends_at.0,
        "created_at_ms": l.created_at.0,
        "submitted_by": l.lease.submitted_by,
        "request_id": l.lease.request_id,
    })
}

async fn leases(State(c): Shared, Query(q): Query<LeaseQuery>) -> Response {
    let at = q.active.unwrap_or(false).then(veribench_protocol::UnixMillis::now);
    match c.store().leases(at, q.limit.unwrap_or(100).min(MAX_LIMIT)).await {
        Ok(rows) => Json(rows.iter().map(lease_view).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/leases`: see [`crate::leases`] for the body and the authentication.
///
/// Every refusal is counted like a refused worker input, against the client's address: a body
/// over [`MAX_LEASE_BODY`] (413, `lease_too_large`), a bad or unauthorized report (400 or 401,
/// `bad_lease`) and a replayed one (409, `lease_replayed`).
async fn post_lease(
    State(c): Shared,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Served without connection info (not by `server::start`), the address is unknown.
    let peer =
        client.map_or_else(|| "unknown".to_owned(), |Extension(ConnectInfo(a))| a.to_string());
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            let kind = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => RefusalKind::LeaseTooLarge,
                _ => RefusalKind::BadLease,
            };
            c.reject(&peer, None, kind, e.body_text()).await;
            return e.into_response();
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "));
    let refused = |e: LeaseError| {
        let status = match e {
            LeaseError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            LeaseError::Invalid(_) => StatusCode::BAD_REQUEST,
            LeaseError::Duplicate => StatusCode::CONFLICT,
        };
        error(status, e)
    };
    let config = &c.config().leases;
    let now = veribench_protocol::UnixMillis::now();
    let lease = authorize(config, bearer, header(SIGNER_HEADER), header(SIGNATURE_HEADER), &body)
        .and_then(|who| parse_request(config, &body, who, now));
    let lease = match lease {
        Ok(lease) => lease,
        Err(e) => {
            c.reject(&peer, None, RefusalKind::BadLease, e.to_string()).await;
            return refused(e);
        }
    };
    match c.store().insert_lease(&lease, now).await {
        Ok(Some(id)) => {
            if lease.starts_at <= now && now < lease.ends_at {
                c.add_leased(lease.worker_key);
            }
            tracing::info!(id, worker = %lease.worker_key, score = lease.score, by = %lease.submitted_by, "lease recorded");
            (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response()
        }
        Ok(None) => {
            let detail = format!("request {} was already recorded", lease.request_id);
            c.reject(&peer, None, RefusalKind::LeaseReplayed, detail).await;
            refused(LeaseError::Duplicate)
        }
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
struct CircuitQuery {
    /// Only this miner's attempts (SS58 or hex).
    miner: Option<String>,
    limit: Option<u32>,
}

/// Circuit artifact fetch attempts, newest first: `GET /api/v1/circuits?miner=…&limit=N`.
async fn circuits(State(c): Shared, Query(q): Query<CircuitQuery>) -> Response {
    let miner = match q.miner.as_deref().map(veribench_wallet::parse_public_key).transpose() {
        Ok(miner) => miner,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("miner: {e}")),
    };
    match c.store().fetches(miner.as_ref(), q.limit.unwrap_or(100).min(MAX_LIMIT)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal(e),
    }
}
