//! A small Chrome DevTools Protocol client for the browser tests: it starts Debian's headless
//! Chromium, opens one page and speaks CDP's JSON-RPC over tokio-tungstenite, collecting every
//! error the page reports (console errors, uncaught exceptions, failed or >= 400 loads, CSP
//! violations). Test-only; every failure panics with what went wrong.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to start, and one command or wait to finish.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of Chromium's stderr kept for failure messages.
const STDERR_LINES: usize = 50;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Chromium binary: `$CHROMIUM`, else `chromium` on `PATH`.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the status page's browser test needs Debian's headless Chromium, and `chromium` \
                 is not on PATH (nor set as CHROMIUM=path): run scripts/setup, which installs it"
            )
        })
}

/// A headless Chromium with one page open; killed (its whole process group) on drop.
pub(crate) struct Browser {
    child: Child,
    /// The browser-level connection, kept open for the page's lifetime.
    _browser: Ws,
    page: Ws,
    next_id: u64,
    /// Events read while waiting for a response, oldest first.
    events: VecDeque<Value>,
    /// Everything the page reported as an error, in order.
    errors: Vec<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page with the Page, Runtime, Log
    /// and Network domains enabled. Panics, saying to run `scripts/setup`, when it is missing.
    pub(crate) async fn start() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so drop kills the renderers and helpers with it.
            .process_group(0);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): run scripts/setup, which installs Debian's chromium",
                binary.display()
            )
        });

        // Chromium prints `DevTools listening on ws://…` on stderr; the rest is drained and kept.
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let kept = stderr.clone();
        tokio::spawn(async move {
            let mut url_tx = Some(url_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ")
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut kept = kept.lock().expect("stderr lines");
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let url = match tokio::time::timeout(TIMEOUT, url_rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "{} printed no DevTools URL (exit status {status:?}); its stderr:\n{}",
                    binary.display(),
                    stderr
                        .lock()
                        .expect("stderr lines")
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        };
        let port = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|host| host.rsplit(':').next())
            .unwrap_or_else(|| panic!("unexpected DevTools URL {url}"))
            .to_owned();

        let (mut browser_ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Chromium at {url}: {e}"));
        send(&mut browser_ws, 1, "Target.createTarget", &json!({"url": "about:blank"})).await;
        let target = loop {
            let message = receive(&mut browser_ws, "Target.createTarget").await;
            if message["id"] == 1 {
                break message;
            }
        };
        let target_id = target["result"]["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createTarget answered {target}"));
        let page_url = format!("ws://127.0.0.1:{port}/devtools/page/{target_id}");
        let (page, _) = tokio_tungstenite::connect_async(page_url.as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the page at {page_url}: {e}"));
        let mut browser = Browser {
            child,
            _browser: browser_ws,
            page,
            next_id: 0,
            events: VecDeque::new(),
            errors: Vec::new(),
            stderr,
            _profile: profile,
        };
        for domain in ["Page", "Runtime", "Log", "Network"] {
            browser.call(&format!("{domain}.enable"), json!({})).await;
        }
        browser
    }

    /// Sends one command to the page and returns its result, collecting the events that arrive
    /// meanwhile. Panics on a protocol error.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method} failed: {error}"),
        }
    }

    /// [`Browser::call`] that returns a protocol error instead of panicking.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        send(&mut self.page, id, method, &params).await;
        loop {
            let message = receive(&mut self.page, method).await;
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(message["result"].clone()),
                };
            }
            self.record(message);
        }
    }

    /// Keeps an event, noting it first if it reports an error.
    fn record(&mut self, event: Value) {
        if let Some(error) = error_in(&event) {
            self.errors.push(error);
        }
        self.events.push_back(event);
    }

    /// Navigates to `url` and waits for its load event.
    pub(crate) async fn navigate(&mut self, url: &str) {
        self.events.retain(|e| e["method"] != "Page.loadEventFired");
        let result = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = result.get("errorText") {
            panic!("navigating to {url} failed: {error}");
        }
        self.event("Page.loadEventFired").await;
    }

    /// Waits for the next event named `method`.
    pub(crate) async fn event(&mut self, method: &str) -> Value {
        let wait = async {
            loop {
                if let Some(at) = self.events.iter().position(|e| e["method"] == method) {
                    return self.events.remove(at).expect("present");
                }
                let message = receive(&mut self.page, method).await;
                self.record(message);
            }
        };
        tokio::time::timeout(TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| panic!("no {method} within {TIMEOUT:?}"))
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    /// Panics if it throws.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(value) => value,
            Err(e) => panic!("evaluating `{expression}` failed: {e}"),
        }
    }

    async fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let params = json!({
            "expression": expression,
            "returnByValue": true,
            "awaitPromise": true,
        });
        let result = self.try_call("Runtime.evaluate", params).await.map_err(|e| e.to_string())?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Polls `condition` (a JavaScript expression) until it is `true`: across navigations,
    /// where an evaluation can meet a document being replaced.
    pub(crate) async fn wait_until(&mut self, condition: &str) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if self.try_eval(condition).await == Ok(Value::Bool(true)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{condition}` did not hold within {TIMEOUT:?}; page at {}",
                self.eval("location.href").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a PNG screenshot of the viewport to `path` (creating its directory).
    pub(crate) async fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let data = shot["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Every error the page has reported so far: a round trip first, so the events Chromium
    /// sent before it are read.
    pub(crate) async fn errors(&mut self) -> Vec<String> {
        self.eval("1").await;
        self.errors.clone()
    }

    /// Chromium's last stderr lines, for failure messages.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lines").iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The group leader is our child, so the group is ours alone.
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }
}

async fn send(ws: &mut Ws, id: u64, method: &str, params: &Value) {
    let text = json!({ "id": id, "method": method, "params": params }).to_string();
    ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("sending {method}: {e}"));
}

/// The next JSON message from Chromium (while waiting on `what`).
async fn receive(ws: &mut Ws, what: &str) -> Value {
    let next = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str::<Value>(text.as_str()).expect("CDP JSON");
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("the DevTools connection failed waiting on {what}: {e}"),
                None => panic!("Chromium closed the DevTools connection waiting on {what}"),
            }
        }
    });
    next.await.unwrap_or_else(|_| panic!("no answer to {what} within {TIMEOUT:?}"))
}

/// What an event says went wrong, if it reports an error: `console.error`, an uncaught
/// exception, a browser log entry at level error (failed resource loads, CSP violations), a
/// load that failed or answered >= 400.
fn error_in(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" if params["type"] == "error" || params["type"] == "assert" => {
            Some(format!("console.{}: {}", params["type"].as_str()?, params["args"]))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let description = details["exception"]["description"].as_str();
            Some(format!(
                "uncaught exception: {}",
                description.or(details["text"].as_str()).unwrap_or("?")
            ))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            let entry = &params["entry"];
            Some(format!(
                "log ({}): {} {}",
                entry["source"].as_str().unwrap_or("?"),
                entry["text"].as_str().unwrap_or("?"),
                entry["url"].as_str().unwrap_or("")
            ))
        }
        "Network.loadingFailed" if params["canceled"] != true => Some(format!(
            "load failed: {} ({})",
            params["errorText"].as_str().unwrap_or("?"),
            params["blockedReason"].as_str().unwrap_or("not blocked")
        )),
        "Network.responseReceived" if params["response"]["status"].as_u64()? >= 400 => {
            let response = &params["response"];
            Some(format!("HTTP {} for {}", response["status"], response["url"].as_str()?))
        }
        _ => None,
    }
}

/// Where the test's artifacts go: `$CARGO_TARGET_DIR`, else the `target/` beside the
/// workspace's `Cargo.lock`.
pub(crate) fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest)
        .join("target")
}
