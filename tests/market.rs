//! The prover-market API over real HTTP, on SQLite and PostgreSQL: every status code and body
//! of the original experiment byte for byte, one batch at a time per participant, exact checks
//! of every proof, and `veribench-worker market` as a participant.

mod common;

use base64::Engine;
use common::{Db, Harness, http_get, http_post};
use veribench_coordinator::CoordinatorConfig;
use veribench_coordinator::market::BatchSpec;
use veribench_protocol::market::MatmulBatch;
use veribench_protocol::{Mode, UnixMillis};
use veribench_support::RetryPolicy;
use veribench_worker::market::{MarketClient, MarketWorker};

const SPEC: BatchSpec = BatchSpec { mode: Mode::Int8, m: 16, k: 24, n: 8 };

fn market_on(c: &mut CoordinatorConfig) {
    c.market.enabled = true;
    c.market.max_body_bytes = 64 << 10;
    c.market.max_deployment_version_len = 32;
}

async fn participant(h: &Harness, name: &str) -> String {
    let id = veribench_coordinator::market::new_participant_id();
    h.coordinator.store().add_participant(&id, name, UnixMillis::now()).await.expect("add");
    id
}

async fn queue(h: &Harness, count: u64) {
    let batches = SPEC.new_batches(count).expect("batches");
    h.coordinator.store().add_batches(&batches, UnixMillis::now()).await.expect("queue");
}

/// `(request_id, batch)` of a 200 `get_batch`.
async fn get_batch(h: &Harness, id: &str) -> (u64, MatmulBatch, String) {
    let r = http_get(h.http_addr, &format!("/get_batch/?participant_id={id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let file = v["batch_file"].as_str().expect("batch_file").to_owned();
    assert!(file.starts_with("static/") && !file.starts_with('/'), "{file}");
    let request = v["request_id"].as_u64().expect("request_id");
    let batch = http_get(h.http_addr, &format!("/{file}")).await;
    assert_eq!(batch.status, 200);
    (request, MatmulBatch::parse(batch.body.as_bytes()).expect("a batch"), file)
}

fn body(request: u64, proof: &[u8], deployment: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "request_id": request,
        "proof_data": base64::engine::general_purpose::STANDARD.encode(proof),
        "proving_time": 1234,
        "cost": 5,
        "price": 9,
        "deployment_version": deployment,
        "accelerator": "cpu-test",
    })
    .to_string()
    .into_bytes()
}

async fn submit(h: &Harness, path: &str, id: &str, body: &[u8]) -> (u16, String) {
    let headers = [("content-type", "application/json")];
    let r = http_post(h.http_addr, &format!("{path}?participant_id={id}"), &headers, body).await;
    (r.status, r.body)
}

async fn the_job_api_answers_exactly(db: Db) {
    let h = Harness::start(db, 0, market_on).await;
    let alice = participant(&h, "alice").await;
    let bob = participant(&h, "bob").await;

    // Unknown participant, empty queue.
    let r = http_get(h.http_addr, "/get_batch/?participant_id=nobody").await;
    assert_eq!((r.status, r.body.as_str()), (422, "participant `nobody` does not exist"));
    let r = http_get(h.http_addr, &format!("/get_batch/?participant_id={alice}")).await;
    assert_eq!((r.status, r.body.as_str()), (429, "no more batches left to prove"));

    queue(&h, 4).await;
    let (request, batch, file) = get_batch(&h, &alice).await;
    // One batch at a time: asking again gives the same one.
    let (again, _, file_again) = get_batch(&h, &alice).await;
    assert_eq!((again, &file_again), (request, &file));
    let honest = batch.reference_product();

    // Each wrong proof: 422 invalid proof, and the batch stays assigned.
    let mut changed = honest.clone();
    changed[4 * 17] ^= 1;
    let truncated = &honest[..honest.len() - 4];
    let (_, other, _) = get_batch(&h, &bob).await;
    let others = other.reference_product();
    for wrong in [&changed[..], truncated, &others[..]] {
        let (status, text) =
            submit(&h, "/submit_proof/", &alice, &body(request, wrong, 1.into())).await;
        assert_eq!((status, text.as_str()), (422, "invalid proof"));
    }
    // Someone else's request.
    let (status, text) =
        submit(&h, "/submit_proof/", &bob, &body(request, &honest, 1.into())).await;
    assert_eq!((status, text), (422, format!("request `{request}` does not exist")));
    // Malformed bodies: 400 with the reason; too large: 413.
    for bad in [
        &b"{not json"[..],
        br#"{"request_id": 1}"#,
        br#"{"request_id": 1, "proof_data": "", "proving_time": -1, "cost": 0, "price": 0, "deployment_version": "x"}"#,
        br#"{"request_id": 1, "proof_data": "", "proving_time": 1, "cost": 0, "price": 0, "deployment_version": "a-very-long-deployment-version-string-beyond-32"}"#,
    ] {
        let (status, text) = submit(&h, "/submit_proof/", &alice, bad).await;
        assert_eq!(status, 400, "{text}");
        assert!(!text.is_empty());
    }
    let (status, _) = submit(&h, "/submit_proof/", &alice, &vec![b' '; 65 << 10]).await;
    assert_eq!(status, 413);

    // The honest proof, through the original text's path; then a replay.
    let (status, text) =
        submit(&h, "/get_batch/", &alice, &body(request, &honest, "v1.2".into())).await;
    assert_eq!((status, text.as_str()), (200, "proof submitted successfully"));
    let (status, text) =
        submit(&h, "/submit_proof/", &alice, &body(request, &honest, 1.into())).await;
    assert_eq!((status, text), (422, format!("request `{request}` does not exist")));
    // The next batch is another.
    let (next, _, _) = get_batch(&h, &alice).await;
    assert_ne!(next, request);
    let (status, text) =
        submit(&h, "/submit_proof/", &bob, &body(other_request(&h, &bob).await, &others, 7.into()))
            .await;
    assert_eq!((status, text.as_str()), (200, "proof submitted successfully"));

    // Recorded: verdicts, reasons, the four fields as sent, unknown fields, the server's time.
    let r =
        http_get(h.http_addr, &format!("/api/v1/market/submissions?participant_id={alice}")).await;
    let rows: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 4, "3 invalid proofs and 1 accepted: {rows:?}");
    assert_eq!(rows[0]["verdict"], "accepted");
    assert_eq!(rows[0]["deployment_version"], "v1.2");
    assert_eq!(rows[0]["extra"]["accelerator"], "cpu-test");
    assert_eq!(
        (&rows[0]["proving_time"], &rows[0]["cost"], &rows[0]["price"]),
        (&1234.into(), &5.into(), &9.into())
    );
    assert!(rows[0]["server_ms"].is_u64());
    assert!(rows[1..].iter().all(|r| r["verdict"] == "rejected" && r["deployment_version"] == 1));
    let r = http_get(h.http_addr, "/api/v1/market/summary").await;
    let summary: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let alice_v12 = summary
        .as_array()
        .expect("rows")
        .iter()
        .find(|s| s["participant_id"] == alice.as_str() && s["deployment_version"] == "v1.2")
        .expect("alice's v1.2 row");
    assert_eq!(alice_v12["accepted"], 1);
    assert_eq!(alice_v12["median_proving_time_ms"], 1234.0);
    h.shutdown().await;
}

/// Bob's outstanding request.
async fn other_request(h: &Harness, id: &str) -> u64 {
    get_batch(h, id).await.0
}

async fn participants_prove_concurrently_with_the_worker_client(db: Db) {
    let h = Harness::start(db, 0, market_on).await;
    let ids =
        [participant(&h, "p0").await, participant(&h, "p1").await, participant(&h, "p2").await];
    queue(&h, 9).await;
    // Two participants on the CPU, one on wgpu (Mesa's lavapipe here): every backend proves the
    // batch's own matrices.
    let cpu: std::sync::Arc<dyn veribench_kernels::Backend> =
        std::sync::Arc::new(veribench_kernels::CpuBackend::new());
    let wgpu: std::sync::Arc<dyn veribench_kernels::Backend> = std::sync::Arc::new(
        veribench_worker::select::open_wgpu_explicit().expect("lavapipe (scripts/setup)"),
    );
    let backends = [cpu.clone(), cpu, wgpu];
    let clients = ids.iter().zip(backends).map(|(id, backend)| MarketWorker {
        backend,
        client: MarketClient {
            server: format!("http://{}", h.http_addr),
            participant_id: id.clone(),
            cost_cents: 3,
            price_cents: 4,
            deployment: "test".into(),
            once: false,
            retry: RetryPolicy { attempts: 3, initial_delay_ms: 10, max_delay_ms: 50 },
        },
    });
    let runs = futures_util::future::join_all(clients.map(|c| async move { c.run().await })).await;
    let mut accepted = 0;
    for run in runs {
        let report = run.expect("each client stops cleanly at 429");
        assert_eq!(report.refused, 0);
        accepted += report.accepted;
    }
    assert_eq!(accepted, 9, "every batch proved once");
    let all = h.coordinator.store().submissions(None, 100).await.expect("rows");
    let mut requests: Vec<u64> = all.iter().map(|s| s.record.request_id).collect();
    requests.sort_unstable();
    requests.dedup();
    assert_eq!(requests.len(), 9, "no batch went to two participants");
    h.shutdown().await;
}

/// External proof systems: a verifier command decides by its exit status (here `cmp`: the proof
/// must be the batch file itself), and one that hangs is killed at its timeout and the proof
/// recorded as invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_verifiers_decide_by_exit_status_and_are_killed_at_their_timeout() {
    use veribench_coordinator::market::{ExternalSystem, external};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("b1.json"), br#"{"circuit":"toy","input":1}"#).expect("write");
    let system = |name: &str, verifier: &[&str]| ExternalSystem {
        name: name.into(),
        batches_dir: dir.path().to_owned(),
        verifier: verifier.iter().map(|s| s.to_string()).collect(),
        timeout_secs: 0.5,
        max_output_bytes: 1024,
        max_proof_bytes: 1024,
        ops_per_batch: 1e9,
    };
    let systems = vec![
        system("toy", &["cmp", "-s", "{proof}", "{batch}"]),
        system("hangs", &["sleep", "30"]),
    ];
    let h = Harness::start(Db::Sqlite, 0, |c| {
        market_on(c);
        c.market.systems = systems;
    })
    .await;
    let id = participant(&h, "zk").await;
    let store = h.coordinator.store();
    for name in ["toy", "hangs"] {
        let batches = external::queue_dir(name, dir.path(), 1e9).expect("queue");
        store.add_batches(&batches, UnixMillis::now()).await.expect("add");
    }
    // The toy system's batch first: a wrong proof, then the right one.
    let r = http_get(h.http_addr, &format!("/get_batch/?participant_id={id}")).await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    let request = v["request_id"].as_u64().expect("id");
    let file =
        http_get(h.http_addr, &format!("/{}", v["batch_file"].as_str().expect("file"))).await;
    let (status, text) = submit(&h, "/submit_proof/", &id, &body(request, b"nope", 1.into())).await;
    assert_eq!((status, text.as_str()), (422, "invalid proof"));
    let (status, text) =
        submit(&h, "/submit_proof/", &id, &body(request, file.body.as_bytes(), 1.into())).await;
    assert_eq!((status, text.as_str()), (200, "proof submitted successfully"));
    // The hanging verifier: killed after 0.5 s, the proof refused.
    let (request, _) = {
        let r = http_get(h.http_addr, &format!("/get_batch/?participant_id={id}")).await;
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        (v["request_id"].as_u64().expect("id"), ())
    };
    let started = std::time::Instant::now();
    let (status, text) = submit(&h, "/submit_proof/", &id, &body(request, b"x", 1.into())).await;
    assert_eq!((status, text.as_str()), (422, "invalid proof"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the verifier was killed");
    let rows = store.submissions(Some(&id), 10).await.expect("rows");
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.record.reason.as_deref()).collect();
    assert_eq!(reasons, [Some("verifier_timeout"), None, Some("verifier_refused")]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_api_answers_exactly_on_sqlite() {
    the_job_api_answers_exactly(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_api_answers_exactly_on_postgres() {
    the_job_api_answers_exactly(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_prove_concurrently_on_sqlite() {
    participants_prove_concurrently_with_the_worker_client(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_prove_concurrently_on_postgres() {
    participants_prove_concurrently_with_the_worker_client(Db::Postgres).await;
}
