//! The status pages in a real browser: Debian's headless Chromium (installed by scripts/setup)
//! driven over the DevTools protocol ([`cdp`]) against the coordinator's own router over a
//! seeded SQLite store. Screenshots are kept as CI artifacts in `target/status-page/`.

mod cdp;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use veribench_chain::{LocalChain, NetUid};
use veribench_protocol::{DeviceKey, Mode, PublicKey, Root, Seed, Shape, UnixMillis};
use veribench_wallet::Keypair;

use self::cdp::{Browser, target_dir};
use crate::store::{CommitRecord, Credit, NewChallenge, Store, WorkerRecord};
use crate::{Coordinator, CoordinatorConfig};

/// Serves `router` on an ephemeral loopback port; the server lives as long as the runtime.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

/// PNG's eight-byte signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000 && bytes.starts_with(PNG_SIGNATURE), "{} is no PNG", path.display());
}

/// The client itself sees every kind of error a page can report, so the status page test's
/// "no errors" means something: a console.error, an uncaught exception, a missing stylesheet
/// and an inline script refused by the CSP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_client_reports_page_errors() {
    const CSP: &str = "default-src 'self'";
    let page = r#"<!doctype html><html><head><title>broken</title>
<link rel="stylesheet" href="/static/missing.css"><script src="/app.js"></script></head>
<body><main><p id="p">hello</p><script>console.log("inline ran")</script></main></body></html>"#;
    let script = r#"console.error("boom"); setTimeout(() => { throw new Error("uncaught") }, 0);"#;
    let router = Router::new()
        .route(
            "/",
            get(move || async move {
                ([(header::CONTENT_SECURITY_POLICY, CSP)], axum::response::Html(page))
            }),
        )
        .route(
            "/app.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], script) }),
        );
    let addr = serve(router).await;
    let mut browser = Browser::start().await;
    browser.navigate(&format!("http://{addr}/")).await;
    assert_eq!(browser.eval("document.getElementById('p').textContent").await, "hello");
    browser.wait_until("new Promise(r => setTimeout(() => r(true), 100))").await;
    let errors = browser.errors().await;
    // One entry with all of `needles`.
    let has = |needles: &[&str]| errors.iter().any(|e| needles.iter().all(|n| e.contains(n)));
    assert!(has(&["console.error", "boom"]), "{errors:#?}");
    assert!(has(&["uncaught exception", "Error: uncaught", "app.js"]), "{errors:#?}");
    assert!(has(&["HTTP 404", "/static/missing.css"]), "{errors:#?}");
    assert!(has(&["log (security)", "Content Security Policy", "inline script"]), "{errors:#?}");
}

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn worker(worker_key: PublicKey, miner: PublicKey, name: &str, device: &str) -> WorkerRecord {
    WorkerRecord {
        worker_key,
        miner_hotkey: miner,
        name: name.to_owned(),
        address: "127.0.0.1:41234".to_owned(),
        hardware_json: r#"{"gpus":[{"name":"RTX 4090","vram_mb":24564}]}"#.to_owned(),
        devices: vec![DeviceKey::new(device).expect("device key")],
        clock_skew_ms: Some(3),
    }
}

/// Records one challenge issued at `at` through every state to verified at `gflops`.
async fn verified(store: &Store, miner: PublicKey, w: &WorkerRecord, at: u64, gflops: f64) {
    let shape = Shape { m: 4096, k: 4096, n: 4096 };
    let c = NewChallenge {
        miner_hotkey: miner,
        worker_key: w.worker_key,
        device: w.devices[0].clone(),
        mode: Mode::Fp16,
        shape,
        seed: Seed(*blake3::hash(&at.to_le_bytes()).as_bytes()),
        issued_at: UnixMillis(at),
        deadline: UnixMillis(at + 30_000),
    };
    let id = store.insert_challenge(&c, UnixMillis(at)).await.expect("insert");
    let compute_ms = 2.0 * 4096f64.powi(3) / (gflops * 1e9) * 1e3;
    let commit = CommitRecord {
        at: UnixMillis(at + 2 + compute_ms as u64),
        root: Root([7; 32]),
        compute_ms,
        rtt_ms: 1.0,
    };
    assert!(store.mark_sent(id, UnixMillis(at + 1)).await.expect("sent"));
    assert!(store.mark_committed(id, &commit).await.expect("committed"));
    assert!(store.mark_verifying(id, commit.at).await.expect("verifying"));
    let done = UnixMillis(commit.at.0 + 50);
    assert!(
        store.mark_verified(id, done, gflops, Credit::Credited, &commit).await.expect("verified")
    );
}

/// A coordinator as the devnet runs it (SQLite file, file chain with the miners registered)
/// with three miners' history of verified challenges: the slowest sorts first by key, so
/// sorting by GFLOP/s must move rows. Returns the fastest miner and its two workers.
async fn seeded_coordinator(dir: &Path) -> (Arc<Coordinator>, PublicKey, [PublicKey; 2]) {
    let chain = LocalChain::open(dir.join("chain.json")).expect("local chain");
    let validator = Keypair::from_seed(&[1; 32]);
    let netuid = NetUid(1);
    chain.register(netuid, validator.public(), validator.public(), 10_000, true).expect("register");
    let (slow, fast, middle) = (key(0x10), key(0x20), key(0x30));
    for miner in [slow, fast, middle] {
        chain.register(netuid, miner, miner, 100, false).expect("register miner");
    }
    let mut config = CoordinatorConfig {
        ws_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        db: format!("sqlite://{}", dir.join("coordinator.db").display()),
        ..Default::default()
    };
    config.chain.network = format!("file:{}", chain.path().display());
    config.chain.netuid = netuid.0;
    let store = Store::connect(&config.db).await.expect("store");
    let coordinator =
        Coordinator::new(config, validator, store, Arc::new(chain)).await.expect("coordinator");
    coordinator.refresh_metagraph().await.expect("metagraph");

    let store = coordinator.store();
    let now = UnixMillis::now().0;
    let hour = 3_600_000;
    let workers = [
        (slow, worker(key(1), slow, "slow-rig", "GPU-slow"), 40_000.0),
        (fast, worker(key(2), fast, "fast-rig-a", "GPU-fast-a"), 160_000.0),
        (fast, worker(key(3), fast, "fast-rig-b", "GPU-fast-b"), 150_000.0),
        (middle, worker(key(4), middle, "middle-rig", "GPU-middle"), 90_000.0),
    ];
    for (miner, w, gflops) in &workers {
        store.upsert_worker(w, UnixMillis(now - 3 * hour)).await.expect("worker");
        for step in 0..6u64 {
            // Rates that wander over two hours (inside the default three-hour scoring window), a
            // challenge every twenty minutes.
            let rate = gflops * (1.0 + 0.05 * ((step % 3) as f64 - 1.0));
            verified(store, *miner, w, now - 2 * hour + step * hour / 3, rate).await;
        }
    }
    let c = &workers[0].1;
    let failed = NewChallenge {
        miner_hotkey: slow,
        worker_key: c.worker_key,
        device: c.devices[0].clone(),
        mode: Mode::Fp16,
        shape: Shape { m: 4096, k: 4096, n: 4096 },
        seed: Seed([9; 32]),
        issued_at: UnixMillis(now - hour),
        deadline: UnixMillis(now - hour + 30_000),
    };
    let id = store.insert_challenge(&failed, UnixMillis(now - hour)).await.expect("insert");
    store
        .mark_failed(id, UnixMillis(now - hour + 30_000), "deadline_missed", "late")
        .await
        .expect("fail");
    coordinator.score_epoch(UnixMillis::now()).await.expect("a scoring epoch");
    (coordinator, fast, [key(2), key(3)])
}

/// The status pages as an operator uses them: open `/`, sort the miners by GFLOP/s, follow the
/// fastest to its page and find its plot and challenges, with no error in the browser's console
/// on the way. Screenshots of both pages go to `target/status-page/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (coordinator, fastest, fast_workers) = seeded_coordinator(dir.path()).await;
    let addr = serve(crate::http::router(coordinator)).await;
    let shots = target_dir().join("status-page");
    let mut browser = Browser::start().await;

    browser.navigate(&format!("http://{addr}/")).await;
    browser.wait_until("document.readyState === 'complete'").await;
    assert_eq!(
        browser
            .eval("[!!document.querySelector('main'), !!document.querySelector('section#health')]")
            .await,
        serde_json::json!([true, true]),
        "every page has <main>, and / the health section"
    );
    assert_eq!(browser.eval("document.querySelectorAll('#miners tr.miner').length").await, 3);

    browser.eval("document.querySelector('#miners a[data-sort=\"gflops\"]').click()").await;
    browser
        .wait_until(
            "new URLSearchParams(location.search).get('sort') === 'gflops' \
             && document.readyState === 'complete'",
        )
        .await;
    let rates = browser
        .eval(
            "[...document.querySelectorAll('#miners tr.miner td.gflops')]\
             .map(td => parseFloat(td.textContent.replace(/[^0-9.eE+-]/g, '')))",
        )
        .await;
    let rates: Vec<f64> = serde_json::from_value(rates.clone())
        .unwrap_or_else(|e| panic!("GFLOP/s cells {rates}: {e}"));
    assert_eq!(rates.len(), 3, "{rates:?}");
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "sorted by GFLOP/s, descending: {rates:?}");
    let first = browser.eval("document.querySelector('#miners tr.miner').dataset.hotkey").await;
    assert_eq!(first, fastest.to_string(), "the fastest miner sorts first");
    browser.screenshot(&shots.join("index.png")).await;

    browser.eval("document.querySelector('#miners tr.miner a.miner-link').click()").await;
    browser
        .wait_until(
            "location.pathname.startsWith('/miners/') && document.readyState === 'complete'",
        )
        .await;
    assert_eq!(browser.eval("location.pathname").await, format!("/miners/{fastest}"));
    // Each series' points as drawn: "x,y" pairs of numbers.
    let plot = browser
        .eval(
            "[...document.querySelectorAll('svg.gflops-plot polyline.series')].map(p => \
             [p.dataset.worker, (p.getAttribute('points') || '').trim().split(/\\s+/)\
             .filter(xy => /^-?[0-9.]+,-?[0-9.]+$/.test(xy)).length])",
        )
        .await;
    let mut plot: Vec<(String, usize)> =
        serde_json::from_value(plot.clone()).unwrap_or_else(|e| panic!("plot {plot}: {e}"));
    plot.sort();
    let series: Vec<String> = plot.iter().map(|(w, _)| w.clone()).collect();
    assert_eq!(
        series,
        [fast_workers[0].to_string(), fast_workers[1].to_string()],
        "one series per worker of the fastest miner"
    );
    assert!(plot.iter().all(|(_, points)| *points == 6), "six points a series: {plot:?}");
    let challenges =
        browser.eval("document.querySelectorAll('#challenges tr.challenge').length").await;
    assert_eq!(challenges, 12, "the fastest miner's two workers verified six challenges each");
    assert_eq!(browser.eval("document.querySelectorAll('#workers tbody tr').length").await, 2);
    browser.screenshot(&shots.join("miner.png")).await;

    let errors = browser.errors().await;
    assert!(
        errors.is_empty(),
        "the browser reported errors: {errors:#?}\nChromium's stderr:\n{}",
        browser.stderr()
    );
    for name in ["index.png", "miner.png"] {
        assert_png(&shots.join(name));
    }
}
