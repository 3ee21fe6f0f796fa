//! Test harness: a real S3 server (s3s-fs) on loopback, a scripted HTTP server for the failure
//! modes a real store does not produce on demand (truncation, stalls, redirects, 503s), a local
//! chain with registered miners, and an artifact directory.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use veribench_chain::{LocalChain, NetUid};
use veribench_circuit::settings::EXAMPLE_SETTINGS;
use veribench_circuit::{
    FetchConfig, RequiredFiles, Secret, StorageConfig, TransferConfig, UrlPolicy,
};
use veribench_support::RetryPolicy;
use veribench_wallet::Keypair;

pub const NET: NetUid = NetUid(1);
pub const BUCKET: &str = "circuits";
const ACCESS_KEY: &str = "veribench-test-access";
const SECRET_KEY: &str = "veribench-test-secret-key-0123456789";

pub fn key(n: u8) -> Keypair {
    Keypair::from_seed(&[n; 32])
}

/// The s3s-fs binary: `S3S_FS_BIN`, else `<workspace>/.tools/bin/s3s-fs`. Missing is a failure,
/// not a skip: these tests are the acceptance tests.
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "S3S_FS_BIN={} does not exist", p.display());
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = workspace.join(".tools/bin/s3s-fs");
    assert!(
        p.is_file(),
        "s3s-fs not found at {}: run scripts/s3s-fs (installs s3s-fs 0.14.1 into .tools/) or set \
         S3S_FS_BIN",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// s3s-fs serving a temporary directory on 127.0.0.1; killed on drop.
pub struct S3Server {
    child: Child,
    pub root: tempfile::TempDir,
    pub port: u16,
}

impl S3Server {
    pub fn start() -> Self {
        let bin = s3s_fs_bin();
        for _ in 0..5 {
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir(root.path().join(BUCKET)).unwrap();
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, root, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken in between: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("s3s-fs did not start listening");
    }

    pub fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            bucket: BUCKET.into(),
            region: Some("us-east-1".into()),
            access_key_id: Some(Secret::new(ACCESS_KEY)),
            secret_access_key: Some(Secret::new(SECRET_KEY)),
            ..Default::default()
        }
    }

    /// The object as stored on disk by s3s-fs.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// Every regular file under the bucket, relative paths.
    pub fn objects(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root.path().join(BUCKET), &self.root.path().join(BUCKET), &mut out);
        out.sort();
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().display().to_string());
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const FAST_RETRY: RetryPolicy =
    RetryPolicy { attempts: 3, initial_delay_ms: 10, max_delay_ms: 40 };

pub fn fast_transfer() -> TransferConfig {
    TransferConfig {
        connect_timeout_secs: 2,
        read_timeout_secs: 5,
        file_timeout_secs: 30,
        retry: FAST_RETRY,
    }
}

/// A chain with miners 1, 2 and 3 registered on [`NET`].
pub fn chain(dir: &Path) -> LocalChain {
    let chain = LocalChain::open(dir.join("chain.json")).unwrap();
    for n in 1..=3 {
        chain.register(NET, key(n).public(), key(100).public(), 0, false).unwrap();
    }
    chain
}

/// An artifact directory: a small vk, a 3 MiB proving key, valid settings, a compiled model.
pub fn artifact(dir: &Path, seed: u8) -> PathBuf {
    let a = dir.join(format!("artifact-{seed}"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("vk.key"), [seed; 4096].repeat(2)).unwrap();
    let pk: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8 ^ seed).collect();
    std::fs::write(a.join("pk.key"), pk).unwrap();
    std::fs::write(a.join("settings.json"), EXAMPLE_SETTINGS).unwrap();
    std::fs::write(a.join("model.compiled"), vec![seed.wrapping_add(1); 100_000]).unwrap();
    a
}

/// A fetch configuration allowing plain http to 127.0.0.1 (only), with fast retries.
pub fn fetch_config(cache: &Path) -> FetchConfig {
    FetchConfig {
        cache_dir: cache.to_owned(),
        url_policy: UrlPolicy::with_test_hosts(&["127.0.0.1"]),
        transfer: fast_transfer(),
        files: RequiredFiles::default(),
        ..FetchConfig::default()
    }
}

/// Entries left in the fetcher's staging directory.
pub fn tmp_entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join(".tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What the scripted server does for one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// A status with a small body.
    Status(u16, String),
    /// Announce `announce` bytes, send `body`, close.
    Truncate { announce: usize, body: Vec<u8> },
    /// Announce `announce` bytes, send `body`, then keep the connection open without sending.
    Stall { announce: usize, body: Vec<u8> },
    /// 302 to this location.
    Redirect(String),
    /// These bytes as they are, then close (malformed responses).
    Raw(Vec<u8>),
    /// 200 without Content-Length: `len` bytes until the connection closes.
    Unbounded(usize),
}

type Script = dyn Fn(usize, &str) -> Reply + Send + Sync;

/// A scripted HTTP/1.1 server on 127.0.0.1: `script(request number, path)` decides each reply.
pub struct ScriptServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptServer {
    pub async fn start(
        ip: &str,
        script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let (r, p) = (requests.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let n = r.fetch_add(1, Ordering::SeqCst);
                let (script, paths) = (script.clone(), p.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    paths.lock().unwrap().push(path.clone());
                    let path_only = path.split('?').next().unwrap_or("").to_owned();
                    let reply = script(n, &path_only);
                    let _ = send(&mut sock, reply).await;
                });
            }
        });
        Self { addr, requests, paths, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send(sock: &mut tokio::net::TcpStream, reply: Reply) -> std::io::Result<()> {
    let head = |status: &str, len: usize, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        Reply::Body(b) => {
            sock.write_all(head("200 OK", b.len(), "").as_bytes()).await?;
            sock.write_all(&b).await?;
        }
        Reply::Status(code, body) => {
            sock.write_all(head(&format!("{code} X"), body.len(), "").as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
        }
        Reply::Truncate { announce, body } => {
            sock.write_all(head("200 OK", announce, "").as_bytes()).await?;
            sock.write_all(&body).await?;
        }
        Reply::Stall { announce, body } => {
            sock.write_all(head("200 OK", announce, "").as_bytes()).await?;
            sock.write_all(&body).await?;
            sock.flush().await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Reply::Raw(bytes) => sock.write_all(&bytes).await?,
        Reply::Unbounded(len) => {
            sock.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await?;
            let block = vec![0x55u8; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = block.len().min(len - sent);
                sock.write_all(&block[..n]).await?;
                sent += n;
            }
        }
        Reply::Redirect(to) => {
            sock.write_all(head("302 Found", 0, &format!("Location: {to}\r\n")).as_bytes()).await?;
        }
    }
    sock.shutdown().await
}

/// The files of an artifact directory as a map, for serving them from a script.
pub fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}
