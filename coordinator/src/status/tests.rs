//! The status pages served on a loopback socket over a seeded store: every scenario runs on a
//! fresh SQLite file and on a fresh PostgreSQL database ([`crate::store::test_db`]), as the
//! store's tests do.

use std::sync::Arc;

use veribench_chain::{LocalChain, NetUid};
use veribench_protocol::{DeviceKey, Mode, PublicKey, Root, Seed, Shape, UnixMillis};
use veribench_wallet::Keypair;

use crate::CoordinatorConfig;
use crate::service::Coordinator;
use crate::store::test_db::{Backend, TestDb, on_both_databases};
use crate::store::{
    CommitRecord, Credit, MinerScoreRecord, NewChallenge, NewLease, ScoreRun, Store, WeightEntry,
    WeightSetStatus, WeightSetUpdate, WorkerRecord,
};

/// The name a hostile worker registers with.
const HOSTILE: &str = "<script>alert(1)</script>";
/// A reject detail a hostile worker provokes.
const HOSTILE_DETAIL: &str = "root mismatch <img src=x onerror=alert(2)>";

/// A coordinator over a fresh database, its HTTP router served on loopback.
#[derive(Debug)]
struct Served {
    base: String,
    coordinator: Arc<Coordinator>,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl Served {
    async fn start(backend: Backend, configure: impl FnOnce(&mut CoordinatorConfig)) -> Served {
        let db = TestDb::new(backend).await;
        let store = db.open().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let chain = LocalChain::open(dir.path().join("chain.json")).expect("local chain");
        // The miners get uids 0 and 1 (miner(2) first, so the uid order differs from the keys').
        chain.register(NetUid(1), miner(2), miner(2), 0, false).expect("register");
        chain.register(NetUid(1), miner(1), miner(1), 0, false).expect("register");
        let mut config = CoordinatorConfig { db: db.url.clone(), ..Default::default() };
        config.chain.network = format!("file:{}", chain.path().display());
        configure(&mut config);
        let coordinator =
            Coordinator::new(config, Keypair::from_seed(&[5; 32]), store, Arc::new(chain))
                .await
                .expect("coordinator");
        coordinator.refresh_metagraph().await.expect("metagraph");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = crate::http::router(coordinator.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Served { base, coordinator, _dir: dir, _db: db }
    }

    fn store(&self) -> &Store {
        self.coordinator.store()
    }

    async fn get(&self, path: &str) -> Reply {
        self.get_with(path, None).await
    }

    async fn get_with(&self, path: &str, bearer: Option<&str>) -> Reply {
        veribench_support::tls::install_crypto_provider();
        let mut request = reqwest::Client::new().get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Reply {
            status: response.status().as_u16(),
            content_type: header("content-type"),
            csp: header("content-security-policy"),
            cache: header("cache-control"),
            body: response.text().await.expect("body"),
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    csp: String,
    cache: String,
    body: String,
}

impl Reply {
    /// A 200 HTML page with the CSP.
    fn page(self) -> String {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.content_type, "text/html; charset=utf-8");
        assert!(self.csp.starts_with("default-src 'self'"), "{}", self.csp);
        assert!(self.body.contains("<main>") && self.body.contains("href=\"/static/status.css\""));
        assert!(!self.body.contains("<script>"), "no inline script");
        self.body
    }
}

fn miner(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn worker_key(n: u8) -> PublicKey {
    PublicKey([0x40 + n; 32])
}

fn record(key: PublicKey, miner: PublicKey, name: &str, address: &str) -> WorkerRecord {
    WorkerRecord {
        worker_key: key,
        miner_hotkey: miner,
        name: name.to_owned(),
        address: address.to_owned(),
        hardware_json: "{}".to_owned(),
        devices: vec![DeviceKey::new(format!("GPU-{}", key.0[0])).expect("device")],
        clock_skew_ms: Some(3),
    }
}

fn new_challenge(
    miner: PublicKey,
    worker: PublicKey,
    issued: UnixMillis,
    seed: u8,
) -> NewChallenge {
    NewChallenge {
        miner_hotkey: miner,
        worker_key: worker,
        device: DeviceKey::new(format!("GPU-{}", worker.0[0])).expect("device"),
        mode: Mode::Int8,
        shape: Shape { m: 256, k: 256, n: 256 },
        seed: Seed([seed; 32]),
        issued_at: issued,
        deadline: UnixMillis(issued.0 + 60_000),
    }
}

/// Seeds two miners: miner 1 with the hostile worker (verified at 100 and 200 GFLOP/s, an IP
/// change, a lease), miner 2 with `rig-b` (verified at 500, one rejection with a hostile
/// detail) and a second worker that never verified; a score run whose vector favours miner 2.
async fn seed(s: &Served) {
    let store = s.store();
    let now = UnixMillis::now();
    let ago = |ms: u64| UnixMillis(now.0 - ms);
    let (w1, w2, w3) = (worker_key(1), worker_key(2), worker_key(3));
    store
        .upsert_worker(&record(w1, miner(1), HOSTILE, "10.0.0.1:4000"), ago(600_000))
        .await
        .expect("w1");
    store
        .upsert_worker(&record(w1, miner(1), HOSTILE, "10.0.0.9:4000"), ago(500_000))
        .await
        .expect("w1 moves");
    store
        .upsert_worker(&record(w2, miner(2), "rig-b", "10.0.0.2:4000"), ago(500_000))
        .await
        .expect("w2");
    store
        .upsert_worker(&record(w3, miner(2), "rig-idle", "10.0.0.3:4000"), ago(500_000))
        .await
        .expect("w3");
    let verified = [(miner(1), w1, 100.0), (miner(1), w1, 200.0), (miner(2), w2, 500.0)];
    for (i, (m, w, gflops)) in verified.into_iter().enumerate() {
        let at = ago(300_000 - 60_000 * i as u64);
        let id =
            store.insert_challenge(&new_challenge(m, w, at, i as u8), at).await.expect("insert");
        assert!(store.mark_sent(id, at).await.expect("sent"));
        let commit = CommitRecord {
            at: UnixMillis(at.0 + 10),
            root: Root([1; 32]),
            compute_ms: 5.0,
            rtt_ms: 1.0,
        };
        assert!(
            store
                .mark_verified(id, UnixMillis(at.0 + 20), gflops, Credit::Credited, &commit)
                .await
                .expect("verified")
        );
    }
    let at = ago(30_000);
    let id = store.insert_challenge(&new_challenge(miner(2), w2, at, 9), at).await.expect("insert");
    assert!(store.mark_sent(id, at).await.expect("sent"));
    assert!(
        store
            .mark_failed(id, UnixMillis(at.0 + 5), "wrong_root", HOSTILE_DETAIL)
            .await
            .expect("failed")
    );
    let lease = NewLease {
        request_id: "secret-request-id".into(),
        worker_key: w1,
        score: 0.75,
        starts_at: ago(60_000),
        ends_at: UnixMillis(now.0 + 3_600_000),
        submitted_by: "token".into(),
    };
    store.insert_lease(&lease, ago(60_000)).await.expect("lease");
    let line = |hotkey, uid, total| MinerScoreRecord {
        hotkey,
        uid: Some(uid),
        online: true,
        workers: 1,
        challenge: total,
        lease: 0.0,
        total,
    };
    let run = ScoreRun {
        at: ago(10_000),
        block: Some(77),
        config_json: "{}".into(),
        miners: vec![line(miner(2), 0, 0.8125), line(miner(1), 1, 0.1875)],
        workers: Vec::new(),
        weights: vec![
            WeightEntry { uid: 0, hotkey: miner(2), weight: 53_248 },
            WeightEntry { uid: 1, hotkey: miner(1), weight: 12_287 },
        ],
    };
    let (_, set) = store.record_score_run(&run).await.expect("score run");
    let included = Some((ago(5_000), 4_321, "0xfeedbeef".to_owned()));
    let update =
        WeightSetUpdate { status: WeightSetStatus::Submitted, error: None, commit: None, included };
    store.update_weight_set(set, &update).await.expect("submitted");
}

/// The hotkeys of the miners' table, in row order.
fn row_order(body: &str) -> Vec<String> {
    body.split("<tr class=\"miner\" data-hotkey=\"")
        .skip(1)
        .map(|rest| rest[..64].to_owned())
        .collect()
}

/// The overview: health facts, every miner with its window's counts and its weight, sorting by
/// each direction, and escaping.
async fn overview_lists_and_sorts_miners(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    let empty = s.get("/").await.page();
    assert!(empty.contains("No miner has registered a worker yet."));
    seed(&s).await;
    let body = s.get("/").await.page();
    assert!(body.contains("<section id=\"health\">"));
    assert!(body.contains(env!("CARGO_PKG_VERSION")));
    assert!(body.contains("<span id=\"verified-hour\">3</span>"), "{body}");
    assert!(body.contains("<span id=\"failed-hour\">1</span>"));
    assert!(body.contains("block "), "the metagraph's block");
    for key in ["uid", "hotkey", "workers", "verified", "failed", "gflops", "weight", "online"] {
        assert!(
            body.contains(&format!("<a data-sort=\"{key}\" href=\"/?sort={key}&amp;dir=")),
            "{key}"
        );
    }
    let (m1, m2) = (miner(1).to_string(), miner(2).to_string());
    // Default: by uid, miner 2 holds uid 0.
    assert_eq!(row_order(&body), [m2.clone(), m1.clone()]);
    assert!(body.contains(&format!("<a class=\"miner-link\" href=\"/miners/{m1}\">")));
    assert!(body.contains("<td class=\"gflops\">150.0</td>"), "mean of 100 and 200");
    assert!(body.contains("<td class=\"gflops\">500.0</td>"));
    assert!(body.contains("<td class=\"weight\">53248</td>"));
    assert!(body.contains("<td class=\"total\">0.8125</td>"));

    let desc = s.get("/?sort=gflops&dir=desc").await.page();
    assert_eq!(row_order(&desc), [m2.clone(), m1.clone()]);
    let asc = s.get("/?sort=gflops&dir=asc").await.page();
    assert_eq!(row_order(&asc), [m1.clone(), m2.clone()]);
    // The active column's link reverses the direction.
    assert!(asc.contains("href=\"/?sort=gflops&amp;dir=desc\""));
    assert_eq!(row_order(&s.get("/?sort=hotkey&dir=asc").await.page()), [m1.clone(), m2.clone()]);
    assert_eq!(row_order(&s.get("/?sort=workers&dir=desc").await.page()), [m2.clone(), m1.clone()]);
    assert_eq!(row_order(&s.get("/?sort=failed&dir=asc").await.page()), [m1.clone(), m2.clone()]);
    // Unknown keys and directions fall back, never fail.
    assert_eq!(s.get("/?sort=%3Cx%3E&dir=sideways").await.status, 200);
    assert!(!body.contains("secret-request-id"));
}

/// A miner's page: workers with devices, one polyline per worker that verified, the hostile
/// worker name and reject detail escaped, IP changes, leases without request ids; 404s.
async fn miner_page_shows_workers_plot_and_challenges(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    seed(&s).await;
    let m1 = miner(1);
    let body = s.get(&format!("/miners/{m1}")).await.page();
    assert!(body.contains("<svg class=\"gflops-plot\""));
    assert_eq!(body.matches("<polyline class=\"series\"").count(), 1);
    assert!(body.contains(&format!("data-worker=\"{}\"", worker_key(1))));
    assert!(body.contains("<table id=\"workers\">") && body.contains("GPU-65"));
    assert_eq!(body.matches("<tr class=\"challenge\"").count(), 2);
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!body.contains(HOSTILE));
    assert!(body.contains("<section id=\"ip-changes\">") && body.contains("10.0.0.9"), "{body}");
    assert!(body.contains("<section id=\"leases\">") && body.contains("0.750"));
    assert!(!body.contains("secret-request-id"));
    // By SS58 too.
    let ss58 =
        veribench_wallet::ss58_encode(&m1, veribench_wallet::BITTENSOR_SS58_PREFIX).expect("ss58");
    let by_ss58 = s.get(&format!("/miners/{ss58}")).await.page();
    assert!(
        by_ss58.contains(&format!("<code>{m1}</code>"))
            && by_ss58.contains("<table id=\"challenges\">")
    );

    let body2 = s.get(&format!("/miners/{}", miner(2))).await.page();
    assert_eq!(body2.matches("<polyline class=\"series\"").count(), 1, "rig-idle never verified");
    assert!(body2.contains("wrong_root"));
    assert!(body2.contains("root mismatch &lt;img src=x onerror=alert(2)&gt;"));
    assert!(!body2.contains("<img src=x"));

    // At most 50 challenges.
    let now = UnixMillis::now();
    let many: Vec<NewChallenge> =
        (0..60u8).map(|i| new_challenge(miner(2), worker_key(2), now, 100 + i)).collect();
    s.store().insert_sent_challenges(&many, now).await.expect("round");
    let body2 = s.get(&format!("/miners/{}", miner(2))).await.page();
    assert_eq!(body2.matches("<tr class=\"challenge\"").count(), 50);

    let unknown = s.get(&format!("/miners/{}", miner(9))).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.content_type.starts_with("text/html"));
    assert_eq!(s.get("/miners/not-a-key").await.status, 404);
    assert_eq!(s.get("/miners/%3Cscript%3E").await.status, 404);
}

/// `/weights` lists vectors with status, attempts, block and extrinsic; consensus and market
/// pages exist only when enabled.
async fn weights_and_optional_pages(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    let empty = s.get("/weights").await.page();
    assert!(empty.contains("No weight vector yet."));
    seed(&s).await;
    let body = s.get("/weights").await.page();
    assert!(body.contains("<table id=\"weights\">"));
    assert!(body.contains("<td class=\"status\">submitted</td>"));
    assert!(body.contains("4321") && body.contains("0xfeedbeef"));
    assert!(body.contains("0:53248 1:12287"));
    assert!(!body.contains("href=\"/consensus\""));
    assert_eq!(s.get("/consensus").await.status, 404);
    assert_eq!(s.get("/market").await.status, 404);

    let s = Served::start(backend, |c| {
        c.consensus.enabled = true;
        c.market.enabled = true;
    })
    .await;
    let body = s.get("/").await.page();
    assert!(body.contains("href=\"/consensus\"") && body.contains("href=\"/market\""));
    let consensus = s.get("/consensus").await.page();
    assert!(consensus.contains("not running yet") && consensus.contains("No decision yet."));
    let market = s.get("/market").await.page();
    assert!(market.contains("0 batches queued") && market.contains("No submission yet."));
}

/// With `[http] status_token`, pages need exactly `Authorization: Bearer <token>`; the assets
/// and the JSON API stay open.
async fn the_status_token_is_enforced(backend: Backend) {
    let s = Served::start(backend, |c| c.http.status_token = Some("st4tus".into())).await;
    seed(&s).await;
    for path in ["/", "/weights", &format!("/miners/{}", miner(1))] {
        let refused = s.get(path).await;
        assert_eq!(refused.status, 401, "{path}");
        assert!(!refused.body.contains("miner-link"));
        assert_eq!(s.get_with(path, Some("wrong")).await.status, 401);
        assert_eq!(s.get_with(path, Some("st4tus")).await.status, 200, "{path}");
    }
    assert_eq!(s.get("/?token=st4tus").await.status, 401, "no token in the URL");
    assert_eq!(s.get("/static/status.css").await.status, 200);
    assert_eq!(s.get("/api/v1/miners").await.status, 200);
    assert!(!s.coordinator.config().redacted().contains("st4tus"));
}

/// The assets: right types, long cache, compiled in.
async fn assets_are_served_with_types_and_cache(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    let css = s.get("/static/status.css").await;
    assert_eq!((css.status, css.content_type.as_str()), (200, "text/css; charset=utf-8"));
    assert!(css.cache.contains("max-age=604800"), "{}", css.cache);
    assert!(css.body.contains("svg.gflops-plot"));
    let js = s.get("/static/status.js").await;
    assert_eq!((js.status, js.content_type.as_str()), (200, "text/javascript; charset=utf-8"));
    assert!(js.cache.contains("max-age="));
    let icon = s.get("/static/favicon.svg").await;
    assert_eq!((icon.status, icon.content_type.as_str()), (200, "image/svg+xml"));
    let page = s.get("/").await;
    assert_eq!(page.cache, "no-store");
    assert!(page.body.contains("href=\"/static/favicon.svg\""));
}

on_both_databases!(
    ();
    overview_lists_and_sorts_miners,
    miner_page_shows_workers_plot_and_challenges,
    weights_and_optional_pages,
    the_status_token_is_enforced,
    assets_are_served_with_types_and_cache,
);
