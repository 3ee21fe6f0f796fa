//! The status pages for validator operators: server-rendered HTML over the same store as the
//! JSON API, usable with JavaScript off (tables sort through query parameters), with their CSS
//! and optional script compiled in. Pages are sent with `Content-Security-Policy: default-src
//! 'self'` (they have no inline script or style) and, when `[http] status_token` is set, need
//! `Authorization: Bearer <token>`.
//!
//! Every page costs a few bounded queries ([`crate::store::Store::miners_since`] and the other
//! reads of `store/status.rs`, each limited by a window, a miner or `LIMIT`).

mod html;
mod plot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use veribench_protocol::{PublicKey, UnixMillis};

use crate::service::Coordinator;
use crate::store::{ChallengeStatus, DbKind, MinerRow, ScoreRunRow, StoreError};
use html::{
    DASH, Nav, Sections, escape, flag, num, opt_num, opt_time, page, short_key, table, time,
};

/// The stylesheet, compiled in.
const CSS: &str = include_str!("assets/status.css");
/// The optional script (local times), compiled in.
const JS: &str = include_str!("assets/status.js");
/// The icon (linked from every page, so browsers do not ask for `/favicon.ico`).
const ICON: &str = include_str!("assets/favicon.svg");
/// The assets' URLs are not versioned, so a week rather than a year.
const ASSET_CACHE: &str = "public, max-age=604800";
/// The pages' policy: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Challenges listed on a miner's page.
pub const MINER_CHALLENGES: u32 = 50;
/// Points of a miner's plot (its newest verified challenges in the scoring window).
const MINER_RATE_POINTS: u32 = 2_000;
/// IP changes and leases listed on a miner's page.
const MINER_EVENTS: u32 = 50;
/// Weight vectors on `/weights`.
const WEIGHT_SETS: u32 = 50;
/// Decisions and evidence on `/consensus`.
const CONSENSUS_ROWS: u32 = 20;
/// Throughput window of the health section.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3600);

/// When the pages were first routed: the process's start, near enough, for the uptime.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// The status routes: `/`, `/miners/{key}`, `/weights`, `/consensus`, `/market` and the two
/// assets, the pages behind the optional bearer token.
pub fn router(coordinator: Arc<Coordinator>) -> Router {
    STARTED.get_or_init(Instant::now);
    let token = coordinator.config().http.status_token.as_deref().map(digest);
    let pages = Router::new()
        .route("/", get(overview))
        .route("/miners/{key}", get(miner))
        .route("/weights", get(weights))
        .route("/consensus", get(consensus))
        .route("/market", get(market))
        .route_layer(middleware::from_fn_with_state(token, require_token))
        .with_state(coordinator);
    Router::new()
        .route("/static/status.css", get(|| asset("text/css; charset=utf-8", CSS)))
        .route("/static/status.js", get(|| asset("text/javascript; charset=utf-8", JS)))
        .route("/static/favicon.svg", get(|| asset("image/svg+xml", ICON)))
        .merge(pages)
}

type Shared = State<Arc<Coordinator>>;

fn digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// With a token configured, 401 unless `Authorization: Bearer <token>`. Digests are compared
/// (in constant time) so neither the token's content nor its length shows in the timing.
async fn require_token(
    State(token): State<Option<[u8; 32]>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(digest);
    match offered {
        Some(d) if crate::leases::constant_time_eq(&d, &expected) => next.run(request).await,
        _ => {
            let mut r = respond(
                StatusCode::UNAUTHORIZED,
                error_page(
                    "Unauthorized",
                    "This page needs the status token: Authorization: Bearer <token>.",
                ),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"veribench status\""),
            );
            r
        }
    }
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    (headers, body).into_response()
}

/// A page with the headers every page carries: the CSP, no caching, no sniffing, no referrer.
fn respond(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn error_page(title: &str, message: &str) -> String {
    let body = format!("<h1>{}</h1>\n<p class=\"error\">{}</p>\n", escape(title), escape(message));
    page(title, Nav::Overview, Sections { consensus: false, market: false }, &body)
}

fn not_found(message: &str) -> Response {
    respond(StatusCode::NOT_FOUND, error_page("Not found", message))
}

/// A failed read: logged in full, shown without detail (a database message is not for
/// whoever can read the page).
fn internal(e: StoreError) -> Response {
    tracing::warn!(error = %e, "status page: store read failed");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_page("Error", "The database could not be read; see the coordinator's log."),
    )
}

fn sections(c: &Coordinator) -> Sections {
    Sections { consensus: c.config().consensus.enabled, market: c.config().market.enabled }
}

/// The scoring window: what "verified" and "failed" count over on the miners' table.
fn window(c: &Coordinator) -> Duration {
    Duration::from_millis(c.config().scoring.window_ms())
}

fn since(now: UnixMillis, d: Duration) -> UnixMillis {
    UnixMillis(now.0.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

// ------------------------------------------------------------------------------- overview

/// The miners' table's sort keys (`?sort=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortKey {
    Uid,
    Hotkey,
    Workers,
    Verified,
    Failed,
    Gflops,
    Weight,
    Online,
}

impl SortKey {
    const ALL: [(Self, &'static str, &'static str); 8] = [
        (Self::Uid, "uid", "UID"),
        (Self::Hotkey, "hotkey", "Hotkey"),
        (Self::Workers, "workers", "Workers"),
        (Self::Verified, "verified", "Verified"),
        (Self::Failed, "failed", "Failed"),
        (Self::Gflops, "gflops", "Mean GFLOP/s"),
        (Self::Weight, "weight", "Weight"),
        (Self::Online, "online", "Online"),
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, name, _)| *name == s).map(|(k, _, _)| *k)
    }

    /// What a first click sorts by: names ascending, quantities largest first.
    fn natural_descending(self) -> bool {
        !matches!(self, Self::Uid | Self::Hotkey)
    }
}

#[derive(Debug, Default, Deserialize)]
struct SortQuery {
    sort: Option<String>,
    dir: Option<String>,
}

/// A row of the miners' table.
#[derive(Debug)]
struct MinerLine {
    row: MinerRow,
    uid: Option<u16>,
    challenge: Option<f64>,
    lease: Option<f64>,
    total: Option<f64>,
    weight: Option<u16>,
}

impl MinerLine {
    fn online(&self) -> bool {
        self.row.online_workers > 0
    }
}

fn sort_lines(lines: &mut [MinerLine], key: SortKey, descending: bool) {
    lines.sort_by(|a, b| {
        let order = match key {
            SortKey::Uid => a
                .uid
                .map(u32::from)
                .unwrap_or(u32::MAX)
                .cmp(&b.uid.map(u32::from).unwrap_or(u32::MAX)),
            SortKey::Hotkey => a.row.hotkey.cmp(&b.row.hotkey),
            SortKey::Workers => a.row.workers.cmp(&b.row.workers),
            SortKey::Verified => a.row.verified.cmp(&b.row.verified),
            SortKey::Failed => a.row.failed.cmp(&b.row.failed),
            SortKey::Gflops => a.row.mean_gflops.total_cmp(&b.row.mean_gflops),
            SortKey::Weight => a.weight.unwrap_or(0).cmp(&b.weight.unwrap_or(0)),
            SortKey::Online => a.row.online_workers.cmp(&b.row.online_workers),
        };
        // Ties in hotkey order whatever the direction, so the page is stable.
        let order = if descending { order.reverse() } else { order };
        order.then_with(|| a.row.hotkey.cmp(&b.row.hotkey))
    });
}

/// `/`: health and the miners' table.
async fn overview(State(c): Shared, Query(q): Query<SortQuery>) -> Response {
    let now = UnixMillis::now();
    let store = c.store();
    let window = window(&c);
    let (throughput, miners, runs) = match (
        store.throughput_since(since(now, THROUGHPUT_WINDOW)).await,
        store.miners_since(since(now, window)).await,
        store.score_runs(1).await,
    ) {
        (Ok(t), Ok(m), Ok(r)) => (t, m, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return internal(e),
    };
    let key = q.sort.as_deref().and_then(SortKey::parse).unwrap_or(SortKey::Uid);
    let descending = match q.dir.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        _ => key.natural_descending(),
    };
    let mut lines = miner_lines(&c, miners, runs.first());
    sort_lines(&mut lines, key, descending);

    let mut body = String::from("<h1>Coordinator status</h1>\n");
    body.push_str(&health_section(&c, throughput));
    body.push_str(&format!(
        "<section id=\"miners-section\">\n<h2>Miners</h2>\n<p class=\"note\">Verified, failed \
         and mean GFLOP/s over the scoring window ({} min); score components and weight from \
         the newest score run{}.</p>\n",
        window.as_secs() / 60,
        runs.first().map_or_else(
            || " (none yet)".to_owned(),
            |r| format!(" (#{}, {})", r.id, time(r.run.at))
        ),
    ));
    body.push_str(&miners_table(&lines, key, descending));
    body.push_str("</section>\n");
    respond(StatusCode::OK, page("Overview", Nav::Overview, sections(&c), &body))
}

fn miner_lines(
    c: &Coordinator,
    miners: Vec<MinerRow>,
    run: Option<&ScoreRunRow>,
) -> Vec<MinerLine> {
    let metagraph = c.metagraph();
    let scores: HashMap<PublicKey, _> =
        run.map(|r| r.run.miners.iter().map(|m| (m.hotkey, m)).collect()).unwrap_or_default();
    let weights: HashMap<PublicKey, u16> = run
        .map(|r| r.run.weights.iter().map(|w| (w.hotkey, w.weight)).collect())
        .unwrap_or_default();
    miners
        .into_iter()
        .map(|row| {
            let score = scores.get(&row.hotkey);
            let uid = metagraph
                .as_ref()
                .and_then(|m| m.neuron(&row.hotkey).map(|n| n.uid))
                .or_else(|| score.and_then(|s| s.uid));
            MinerLine {
                uid,
                challenge: score.map(|s| s.challenge),
                lease: score.map(|s| s.lease),
                total: score.map(|s| s.total),
                weight: weights.get(&row.hotkey).copied(),
                row,
            }
        })
        .collect()
}

fn health_section(c: &Coordinator, throughput: crate::store::Throughput) -> String {
    let db = c.store().health().report();
    let (workers, in_flight) = c.load();
    let status = if c.is_shutting_down() {
        "<span class=\"bad\">stopping</span>"
    } else if db.ok {
        "<span class=\"ok\">ok</span>"
    } else {
        "<span class=\"bad\">degraded</span>"
    };
    let chain = match c.metagraph() {
        Some(m) => format!(
            "<span class=\"ok\">connected</span>, block {} (netuid {}, {} neurons)",
            m.block,
            m.netuid.0,
            m.neurons.len()
        ),
        None => "<span class=\"bad\">metagraph not read yet</span>".to_owned(),
    };
    let kind = match c.store().kind() {
        DbKind::Sqlite => "SQLite",
        DbKind::Postgres => "PostgreSQL",
    };
    let database = if db.ok {
        format!(
            "<span class=\"ok\">ok</span>{}",
            db.last_ok_ago
                .map_or_else(String::new, |d| format!(", last write {} ago", html::duration(d)))
        )
    } else {
        format!(
            "<span class=\"bad\">failing</span>{}: {}",
            db.failing_for.map_or_else(String::new, |d| format!(" for {}", html::duration(d))),
            escape(db.error.as_deref().unwrap_or("unknown error"))
        )
    };
    let uptime = STARTED.get().map_or_else(|| DASH.to_owned(), |t| html::duration(t.elapsed()));
    let rows = [
        ("Status", status.to_owned()),
        (
            "Chain",
            format!(
                "{chain} <span class=\"muted\">{}</span>",
                escape(&veribench_support::redact::redact_url(&c.chain().endpoint()))
            ),
        ),
        (
            "Database",
            format!(
                "{database} <span class=\"muted\">{kind} {}</span>",
                escape(&veribench_support::redact::redact_url(&c.config().db))
            ),
        ),
        ("Uptime", uptime),
        ("Version", env!("CARGO_PKG_VERSION").to_owned()),
        (
            "Workers connected",
            format!(
                "<span id=\"workers-connected\">{workers}</span> ({in_flight} challenges in flight)"
            ),
        ),
        (
            "Last hour",
            format!(
                "<span id=\"verified-hour\">{}</span> verified, <span id=\"failed-hour\">{}</span> failed",
                throughput.verified, throughput.failed
            ),
        ),
    ];
    let dl: String =
        rows.iter().map(|(k, v)| format!("<div><dt>{k}</dt><dd>{v}</dd></div>\n")).collect();
    format!(
        "<section id=\"health\">\n<h2>Health</h2>\n<dl class=\"facts\">\n{dl}</dl>\n</section>\n"
    )
}

fn miners_table(lines: &[MinerLine], key: SortKey, descending: bool) -> String {
    let head: String = SortKey::ALL
        .iter()
        .map(|&(k, name, label)| {
            let (dir, mark, aria) = if k == key {
                let aria = if descending { "descending" } else { "ascending" };
                (if descending { "asc" } else { "desc" }, if descending { " ▼" } else { " ▲" }, format!(" aria-sort=\"{aria}\""))
            } else {
                (if k.natural_descending() { "desc" } else { "asc" }, "", String::new())
            };
            let cell = format!(
                "<th scope=\"col\"{aria}><a data-sort=\"{name}\" href=\"/?sort={name}&amp;dir={dir}\">{label}</a>{mark}</th>"
            );
            if k == SortKey::Gflops {
                // The score components sit between the rate and the weight, unsortable.
                format!("{cell}<th scope=\"col\">Challenge</th><th scope=\"col\">Lease</th><th scope=\"col\">Total</th>")
            } else {
                cell
            }
        })
        .collect();
    let rows: String = lines
        .iter()
        .map(|l| {
            let hex = l.row.hotkey.to_string();
            format!(
                "<tr class=\"miner\" data-hotkey=\"{hex}\"><td class=\"uid\">{}</td>\
                 <td class=\"hotkey\"><a class=\"miner-link\" href=\"/miners/{hex}\">{}</a></td>\
                 <td class=\"workers\">{}/{}</td><td class=\"verified\">{}</td>\
                 <td class=\"failed\">{}</td><td class=\"gflops\">{}</td>\
                 <td class=\"challenge\">{}</td><td class=\"lease\">{}</td>\
                 <td class=\"total\">{}</td><td class=\"weight\">{}</td>\
                 <td class=\"online\">{}</td></tr>\n",
                l.uid.map_or_else(|| DASH.to_owned(), |u| u.to_string()),
                short_key(&l.row.hotkey),
                l.row.online_workers,
                l.row.workers,
                l.row.verified,
                l.row.failed,
                num(l.row.mean_gflops, 1),
                opt_num(l.challenge, 4),
                opt_num(l.lease, 4),
                opt_num(l.total, 4),
                l.weight.map_or_else(|| DASH.to_owned(), |w| w.to_string()),
                flag(l.online(), "online", "offline"),
            )
        })
        .collect();
    let empty = if lines.is_empty() {
        "<p class=\"empty\">No miner has registered a worker yet.</p>\n"
    } else {
        ""
    };
    format!(
        "<div class=\"scroll\"><table id=\"miners\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table></div>\n{empty}"
    )
}

// ---------------------------------------------------------------------------------- miner

/// `/miners/{hex or SS58}`: workers, their rates as a plot, the last challenges, IP changes
/// and leases. 404 for a key that does not parse or that the store has nothing about.
async fn miner(State(c): Shared, Path(key): Path<String>) -> Response {
    let Ok(hotkey) = veribench_wallet::parse_public_key(&key) else {
        return not_found("That is not a hotkey (64 hex digits or SS58).");
    };
    let now = UnixMillis::now();
    let window = window(&c);
    let store = c.store();
    let (workers, challenges, rates, ips, leases) = match (
        store.miner_workers(&hotkey).await,
        store.miner_challenges(&hotkey, MINER_CHALLENGES).await,
        store.miner_rates(&hotkey, since(now, window), MINER_RATE_POINTS).await,
        store.miner_ip_changes(&hotkey, MINER_EVENTS).await,
        store.miner_leases(&hotkey, MINER_EVENTS).await,
    ) {
        (Ok(w), Ok(c), Ok(r), Ok(i), Ok(l)) => (w, c, r, i, l),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
            return internal(e);
        }
    };
    if workers.is_empty() && challenges.is_empty() {
        return not_found("The coordinator knows no worker and no challenge of this miner.");
    }
    let names: HashMap<PublicKey, &str> =
        workers.iter().map(|w| (w.record.worker_key, w.record.name.as_str())).collect();
    let worker_cell = |k: &PublicKey| match names.get(k) {
        Some(name) => format!("{} {}", escape(name), short_key(k)),
        None => short_key(k),
    };
    let hex = hotkey.to_string();
    let ss58 = veribench_wallet::ss58_encode(&hotkey, veribench_wallet::BITTENSOR_SS58_PREFIX)
        .unwrap_or_default();
    let uid = c.metagraph().and_then(|m| m.neuron(&hotkey).map(|n| n.uid));
    let mut body = format!(
        "<h1>Miner {}</h1>\n<dl class=\"facts\"><div><dt>Hotkey</dt><dd><code>{hex}</code></dd></div>\
         <div><dt>SS58</dt><dd><code>{}</code></dd></div><div><dt>UID</dt><dd>{}</dd></div></dl>\n",
        uid.map_or_else(|| escape(&ss58), |u| format!("uid {u}")),
        escape(&ss58),
        uid.map_or_else(|| "not registered".to_owned(), |u| u.to_string()),
    );

    // Workers and devices.
    let rows: Vec<String> = workers
        .iter()
        .map(|w| {
            let r = &w.record;
            let devices: Vec<String> =
                r.devices.iter().map(|d| format!("<code>{}</code>", escape(d.as_str()))).collect();
            format!(
                "<tr class=\"worker\" data-worker=\"{}\"><td class=\"name\">{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"devices\">{}</td></tr>\n",
                r.worker_key,
                escape(&r.name),
                short_key(&r.worker_key),
                escape(&r.address),
                flag(w.online, "online", "offline"),
                time(w.last_seen),
                r.clock_skew_ms.map_or_else(|| DASH.to_owned(), |s| format!("{s} ms")),
                if devices.is_empty() { DASH.to_owned() } else { devices.join(" ") },
            )
        })
        .collect();
    body.push_str("<section id=\"workers-section\">\n<h2>Workers</h2>\n");
    body.push_str(&table(
        "workers",
        &["Name", "Key", "Address", "Status", "Last seen", "Clock skew", "Devices"],
        &rows,
        "No registered worker.",
    ));
    body.push_str("</section>\n");

    // Rates over time.
    let mut series: Vec<plot::Series> = Vec::new();
    for s in &rates {
        let key = s.worker_key.to_string();
        let i = match series.iter().position(|x| x.worker == key) {
            Some(i) => i,
            None => {
                let label =
                    names.get(&s.worker_key).map_or_else(|| key.clone(), |n| (*n).to_owned());
                series.push(plot::Series { worker: key, label, points: Vec::new() });
                series.len() - 1
            }
        };
        series[i].points.push((s.at, s.gflops));
    }
    body.push_str(&format!(
        "<section id=\"plot\">\n<h2>GFLOP/s per worker</h2>\n<p class=\"note\">Verified \
         challenges over the scoring window ({} min).</p>\n{}</section>\n",
        window.as_secs() / 60,
        plot::gflops_plot(
            &series,
            since(now, window),
            now,
            "No verified challenges in the scoring window."
        )
    ));

    // Last challenges.
    let rows: Vec<String> = challenges
        .iter()
        .map(|ch| {
            let verdict = match ch.status {
                ChallengeStatus::Verified if ch.credited => "<span class=\"ok\">verified</span>".to_owned(),
                ChallengeStatus::Verified => "<span class=\"warn\">verified, not credited</span>".to_owned(),
                ChallengeStatus::Failed => "<span class=\"bad\">failed</span>".to_owned(),
                s => s.as_str().to_owned(),
            };
            format!(
                "<tr class=\"challenge\" data-status=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td><td>{} {}×{}×{}</td><td class=\"verdict\">{}</td>\
                 <td class=\"gflops\">{}</td><td class=\"reason\">{}</td><td class=\"detail\">{}</td></tr>\n",
                ch.status.as_str(),
                ch.id.0,
                time(ch.issued_at),
                worker_cell(&ch.worker_key),
                escape(ch.device.as_str()),
                escape(&ch.mode.to_string()),
                ch.shape.m,
                ch.shape.k,
                ch.shape.n,
                verdict,
                opt_num(ch.gflops, 1),
                ch.reason.as_deref().map_or_else(|| DASH.to_owned(), escape),
                ch.detail.as_deref().map_or_else(|| DASH.to_owned(), escape),
            )
        })
        .collect();
    body.push_str(&format!(
        "<section id=\"challenges-section\">\n<h2>Last {MINER_CHALLENGES} challenges</h2>\n"
    ));
    body.push_str(&table(
        "challenges",
        &["ID", "Issued", "Worker", "Device", "Shape", "Verdict", "GFLOP/s", "Reason", "Detail"],
        &rows,
        "No challenge yet.",
    ));
    body.push_str("</section>\n");

    // IP changes.
    let rows: Vec<String> = ips
        .iter()
        .map(|ip| {
            format!(
                "<tr class=\"ip-change\"><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                time(ip.at),
                worker_cell(&ip.worker_key),
                escape(&ip.old_ip),
                escape(&ip.new_ip)
            )
        })
        .collect();
    body.push_str("<section id=\"ip-changes\">\n<h2>IP changes</h2>\n");
    body.push_str(&table(
        "ip-changes-table",
        &["When", "Worker", "From", "To"],
        &rows,
        "No IP change recorded.",
    ));
    body.push_str("</section>\n");

    // Leases (never their request ids or the tokens that reported them).
    let rows: Vec<String> = leases
        .iter()
        .map(|l| {
            let active = l.starts_at <= now && now < l.ends_at;
            format!(
                "<tr class=\"lease\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                worker_cell(&l.worker_key),
                num(l.score, 3),
                time(l.starts_at),
                time(l.ends_at),
                flag(active, "active", "inactive"),
                escape(&l.submitted_by),
                time(l.created_at),
            )
        })
        .collect();
    body.push_str("<section id=\"leases\">\n<h2>Leases</h2>\n");
    body.push_str(&table(
        "leases-table",
        &["Worker", "Score", "Starts", "Ends", "Now", "Reported by", "Recorded"],
        &rows,
        "No lease recorded.",
    ));
    body.push_str("</section>\n");
    respond(StatusCode::OK, page(&format!("Miner {hex}"), Nav::Miner, sections(&c), &body))
}

// -------------------------------------------------------------------------------- weights

/// `/weights`: the newest weight vectors and their way to the chain.
async fn weights(State(c): Shared) -> Response {
    let sets = match c.store().weight_sets(WEIGHT_SETS).await {
        Ok(sets) => sets,
        Err(e) => return internal(e),
    };
    let rows: Vec<String> = sets
        .iter()
        .map(|s| {
            let mut nonzero: Vec<_> = s.entries.iter().filter(|e| e.weight > 0).collect();
            nonzero.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.uid.cmp(&b.uid)));
            let shown: Vec<String> =
                nonzero.iter().take(8).map(|e| format!("{}:{}", e.uid, e.weight)).collect();
            let more = nonzero.len().saturating_sub(shown.len());
            format!(
                "<tr class=\"weight-set\" data-status=\"{status}\"><td>{}</td><td>{}</td>\
                 <td class=\"status\">{status}</td><td>{}</td><td class=\"error\">{}</td>\
                 <td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
                 <td class=\"entries\">{}{}</td></tr>\n",
                s.id,
                time(s.created_at),
                s.attempts,
                s.last_error.as_deref().map_or_else(|| DASH.to_owned(), escape),
                s.commit_block.map_or_else(|| DASH.to_owned(), |b| b.to_string()),
                s.block.map_or_else(|| DASH.to_owned(), |b| b.to_string()),
                s.tx_hash.as_deref().map_or_else(|| DASH.to_owned(), escape),
                opt_time(s.submitted_at),
                s.decision_height.map_or_else(|| DASH.to_owned(), |h| h.to_string()),
                shown.join(" "),
                if more > 0 { format!(" (+{more} more)") } else { String::new() },
                status = s.status.as_str(),
            )
        })
        .collect();
    let mut body = format!(
        "<h1>Weights</h1>\n<p class=\"note\">The newest {WEIGHT_SETS} weight vectors (uid:weight, \
         largest first) and their way to the chain.</p>\n"
    );
    body.push_str(&table(
        "weights",
        &[
            "ID",
            "Computed",
            "Status",
            "Attempts",
            "Last error",
            "Commit block",
            "Block",
            "Extrinsic",
            "Submitted",
            "Decision",
            "Weights",
        ],
        &rows,
        "No weight vector yet.",
    ));
    respond(StatusCode::OK, page("Weights", Nav::Weights, sections(&c), &body))
}

// ------------------------------------------------------------------------------ consensus

/// `/consensus`: the node's height, round and peers, the last decisions and the evidence
/// (404 unless `[consensus] enabled`).
async fn consensus(State(c): Shared) -> Response {
    if !c.config().consensus.enabled {
        return not_found("Consensus is not enabled on this coordinator.");
    }
    let store = c.store();
    let (decisions, evidence, evidence_total) = match (
        store.decisions(None, CONSENSUS_ROWS).await,
        store.evidence(CONSENSUS_ROWS).await,
        store.evidence_count().await,
    ) {
        (Ok(d), Ok(e), Ok(n)) => (d, e, n),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return internal(e),
    };
    let mut body = String::from("<h1>Consensus</h1>\n<section id=\"consensus-status\">\n");
    match c.consensus().map(|n| n.status()) {
        Some(s) => {
            let facts = [
                ("Height", s.height.map_or_else(|| DASH.to_owned(), |h| h.to_string())),
                ("Round", if s.round < 0 { DASH.to_owned() } else { s.round.to_string() }),
                ("Decided", flag(s.decided, "yes", "not yet")),
                ("Validators", s.validators.to_string()),
                ("Peers", format!("{} of {} connected", s.peers_connected, s.peers)),
                ("Last decided", s.last_decided.map_or_else(|| DASH.to_owned(), |h| h.to_string())),
                ("Heights decided", format!("{} ({} synced)", s.heights_decided, s.heights_synced)),
                ("Refused messages", s.refused_messages.to_string()),
                ("Halted", flag(!s.halted, "no", "yes: the write-ahead log failed")),
            ];
            body.push_str("<dl class=\"facts\">\n");
            for (k, v) in facts {
                body.push_str(&format!("<div><dt>{k}</dt><dd>{v}</dd></div>\n"));
            }
            body.push_str("</dl>\n");
        }
        None => body.push_str("<p class=\"empty\">The consensus node is not running yet.</p>\n"),
    }
    body.push_str("</section>\n<section id=\"decisions-section\">\n<h2>Last decisions</h2>\n");
    let rows: Vec<String> = decisions
        .iter()
        .map(|d| {
            format!(
                "<tr class=\"decision\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{} ms</td><td><code>{}</code></td></tr>\n",
                d.height,
                d.round + 1,
                short_key(&d.proposer),
                d.vectors,
                d.signers,
                time(d.decided_at),
                d.decide_ms,
                &hex::encode(d.value_id)[..16],
            )
        })
        .collect();
    body.push_str(&table(
        "decisions",
        &["Height", "Rounds", "Proposer", "Vectors", "Signers", "Decided", "Took", "Value"],
        &rows,
        "No decision yet.",
    ));
    body.push_str(&format!(
        "</section>\n<section id=\"evidence-section\">\n<h2>Evidence ({evidence_total} in all)</h2>\n"
    ));
    let rows: Vec<String> = evidence
        .iter()
        .map(|e| {
            let detail: String = e.detail.chars().take(300).collect();
            format!(
                "<tr class=\"evidence\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"detail\"><code>{}</code></td></tr>\n",
                e.height,
                e.round,
                short_key(&e.validator),
                e.kind.as_str(),
                time(e.recorded_at),
                escape(&detail),
            )
        })
        .collect();
    body.push_str(&table(
        "evidence",
        &["Height", "Round", "Validator", "Kind", "Recorded", "Detail"],
        &rows,
        "No evidence of misbehaviour.",
    ));
    body.push_str("</section>\n");
    respond(StatusCode::OK, page("Consensus", Nav::Consensus, sections(&c), &body))
}

// --------------------------------------------------------------------------------- market

/// `/market`: submissions per participant and deployment (404 unless `[market] enabled`).
async fn market(State(c): Shared) -> Response {
    if !c.config().market.enabled {
        return not_found("The prover market is not enabled on this coordinator.");
    }
    let (summary, queued) =
        match (c.store().market_summary().await, c.store().queued_batches().await) {
            (Ok(s), Ok(q)) => (s, q),
            (Err(e), _) | (_, Err(e)) => return internal(e),
        };
    let rows: Vec<String> = summary
        .iter()
        .map(|s| {
            format!(
                "<tr class=\"market-row\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&s.participant_id),
                escape(&s.deployment_version),
                s.accepted,
                s.rejected,
                opt_num(s.median_proving_time_ms, 1),
                opt_num(s.median_cost_per_tops_cents, 4),
                opt_num(s.median_price_per_tops_cents, 4),
                opt_num(s.price_over_cost, 3),
            )
        })
        .collect();
    let mut body = format!(
        "<h1>Prover market</h1>\n<p class=\"note\">{queued} batches queued. Medians over the \
         accepted submissions.</p>\n"
    );
    body.push_str(&table(
        "market",
        &[
            "Participant",
            "Deployment",
            "Accepted",
            "Rejected",
            "Median proving ms",
            "Median cost ¢/TOP",
            "Median price ¢/TOP",
            "Price / cost",
        ],
        &rows,
        "No submission yet.",
    ));
    respond(StatusCode::OK, page("Market", Nav::Market, sections(&c), &body))
}
