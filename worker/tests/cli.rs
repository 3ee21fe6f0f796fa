//! The real `veribench-worker` binary: wallet subcommands in a temporary wallet directory,
//! `run` until SIGTERM, `bench` unchanged, and the miner's `circuit` commands against a real
//! S3-compatible server.

mod common;
/// The circuit crate's harness: s3s-fs on loopback, a local chain, an artifact directory.
#[path = "../../circuit/tests/common/mod.rs"]
mod s3;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{accept, key};
use veribench_protocol::UnixMillis;
use veribench_wallet::{Wallet, verify_delegation};

const BIN: &str = env!("CARGO_BIN_EXE_veribench-worker");

fn worker(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wallet_args<'a>(dir: &'a str, hotkey: &'a str) -> Vec<&'a str> {
    vec!["--wallet.name", "miner", "--wallet.hotkey", hotkey, "--wallet.path", dir]
}

#[test]
fn wallet_create_delegate_show() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf-8 path");

    // create: prints the address and public key, never the secret.
    let mut args = vec!["wallet", "create"];
    args.extend(wallet_args(dir, "default"));
    let out = worker(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let wallet = Wallet::new(tmp.path(), "miner").expect("wallet");
    let miner = wallet.load_hotkey("default").expect("the hotkey was written");
    assert!(text.contains(&miner.ss58_address()), "{text}");
    assert!(text.contains(&format!("0x{}", miner.public())), "{text}");
    let keyfile =
        std::fs::read_to_string(wallet.hotkey_path("default").expect("path")).expect("read");
    let seed = keyfile.split("\"secretSeed\":\"").nth(1).expect("seed field");
    assert!(!text.contains(&seed[..66]), "the secret seed is not printed");
    let both = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!both.to_lowercase().contains("secret"), "{both}");

    // Refuses to overwrite unless asked.
    assert!(!worker(&args).status.success());
    let mut again = args.clone();
    again.push("--overwrite");
    assert!(worker(&again).status.success());
    let miner = wallet.load_hotkey("default").expect("replaced hotkey");

    // delegate: creates the worker key and writes a valid delegation for it.
    let mut args = vec!["wallet", "delegate", "--worker.hotkey", "rig-7", "--days", "3"];
    args.extend(wallet_args(dir, "default"));
    let out = worker(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rig = wallet.load_hotkey("rig-7").expect("the worker key was created");
    let delegation = wallet.load_delegation("rig-7").expect("the delegation was written");
    assert!(tmp.path().join("miner/delegations/rig-7.json").is_file());
    assert_eq!(delegation.miner_hotkey, miner.public());
    assert_eq!(delegation.worker_key, rig.public());
    verify_delegation(&delegation, UnixMillis::now()).expect("valid now");
    let in_three_days = UnixMillis::now().0 + 3 * 86_400_000;
    assert!(delegation.expires_at.0 <= in_three_days);
    assert!(delegation.expires_at.0 > in_three_days - 60_000);
    assert!(stdout(&out).contains(&rig.ss58_address()));

    // Delegating again keeps the existing worker key.
    assert!(worker(&args).status.success());
    assert_eq!(wallet.load_hotkey("rig-7").expect("still there").public(), rig.public());

    // show: the key and its delegation status.
    let mut args = vec!["wallet", "show"];
    args.extend(wallet_args(dir, "rig-7"));
    let out = worker(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains(&rig.ss58_address()) && text.contains("valid"), "{text}");
    assert!(text.contains(&miner.ss58_address()), "{text}");

    // A missing miner hotkey is a clear error.
    let mut args = vec!["wallet", "delegate", "--worker.hotkey", "rig-8"];
    args.extend(wallet_args(dir, "nope"));
    let out = worker(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hotkey file"));
}

#[test]
fn bench_still_works() {
    let out = worker(&["bench", "--backend", "cpu", "--n", "16", "--samples", "4", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(report["verified"], true);
}

#[test]
fn run_refuses_a_bad_url() {
    let out = worker(&["run", "--coordinator", "http://127.0.0.1:1", "--backend", "cpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ws://"));
}

/// `run` with `env` set; its stderr, after checking it failed.
fn run_failing_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out =
        Command::new(BIN).arg("run").args(args).envs(env.iter().copied()).output().expect("runs");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_reads_its_flags_from_the_environment() {
    // The variable is read: the file-less configuration gets its coordinator from it.
    let bad_url = [("VERIBENCH_COORDINATOR", "http://127.0.0.1:1"), ("VERIBENCH_BACKEND", "cpu")];
    assert!(run_failing_with(&[], &bad_url).contains("ws://"));
    // A flag beats its variable: the URL is fine now, the missing pinned key is what fails.
    let err = run_failing_with(&["--coordinator", "ws://127.0.0.1:1"], &bad_url);
    assert!(
        !err.contains("must start with ws://") && err.contains("--coordinator.hotkey"),
        "{err}"
    );
    // Empty variables count as unset, even for numbers.
    let mut empty = bad_url.to_vec();
    empty.extend([
        ("VERIBENCH_HEARTBEAT_SECS", ""),
        ("VERIBENCH_NETUID", ""),
        ("VERIBENCH_WORKER_NAME", ""),
    ]);
    assert!(run_failing_with(&[], &empty).contains("ws://"));
    // A bad value is refused, naming the flag it stands for.
    let err = run_failing_with(&[], &[("VERIBENCH_HEARTBEAT_SECS", "soon")]);
    assert!(err.contains("--heartbeat-secs") && err.contains("soon"), "{err}");
}

fn sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_registers_self_delegated_and_exits_zero_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let wallet = Wallet::new(tmp.path(), "solo").expect("wallet");
    let own = wallet.create_hotkey("default", false).expect("hotkey");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let config = tmp.path().join("worker.toml");
    let pinned = key(9).public();
    let toml = format!(
        "coordinator = \"{url}\"\ncoordinator_hotkey = \"{pinned}\"\nname = \"from-toml\"\n"
    );
    std::fs::write(&config, toml).expect("config");

    let mut child = Command::new(BIN)
        .args(["run", "--backend", "cpu", "--config"])
        .arg(&config)
        .args(["--wallet.name", "solo", "--wallet.path"])
        .arg(tmp.path())
        .env("VERIBENCH_WORKER_NAME", "from-env")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    let mut peer = accept(&listener).await;
    let register = peer.handshake(&key(9), 1_000).await;
    assert_eq!(register.name, "from-env", "the environment overrides the file");
    assert_eq!(register.delegation.miner_hotkey, own.public(), "no delegation file: self");
    assert_eq!(register.delegation.worker_key, own.public());
    verify_delegation(&register.delegation, UnixMillis::now()).expect("valid self-delegation");

    sigterm(child.id());
    // The worker says goodbye with a WebSocket Close.
    assert!(peer.recv().await.is_none());
    let pid = child.id();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut log = String::new();
                use std::io::Read;
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut log));
                return (status, log);
            }
            assert!(std::time::Instant::now() < deadline, "worker {pid} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    let (status, log) = status;
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert!(log.contains("delegates to itself"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

/// `circuit publish` and `circuit offer --out` as a miner runs them (TOML configuration, wallet
/// flags, a file chain), then the offer fetched by a validator from its own TOML configuration,
/// a cache hit, and the same offer claimed by a hotkey without a commitment refused with its code.
#[tokio::test]
async fn circuit_publish_and_offer_through_the_binary_then_fetched() {
    use std::sync::Arc;

    use veribench_chain::{Chain, LocalChain};
    use veribench_circuit::{CircuitOffer, FetchConfig, Fetcher};

    let tmp = tempfile::tempdir().expect("tempdir");
    let s3 = s3::S3Server::start();
    let wallets = tmp.path().join("wallets");
    let miner = Wallet::new(&wallets, "miner")
        .and_then(|w| w.create_hotkey("rig", false))
        .expect("the miner hotkey");
    let chain_file = tmp.path().join("chain.json");
    let local = LocalChain::open(&chain_file).expect("local chain");
    local.register(s3::NET, miner.public(), s3::key(100).public(), 0, false).expect("register");
    let dir = s3::artifact(tmp.path(), 20);
    let miner_toml = tmp.path().join("miner.toml");
    std::fs::write(
        &miner_toml,
        format!(
            r#"url_expiry_secs = 900

[artifact]
files = ["vk.key", "pk.key", "settings.json", "model.compiled"]
committed = "vk.key"

[storage]
provider = "s3"
endpoint = "http://127.0.0.1:{port}"
bucket = "{bucket}"
region = "us-east-1"
access_key_id = "veribench-test-access"
secret_access_key = "veribench-test-secret-key-0123456789"

[transfer]
connect_timeout_secs = 2
read_timeout_secs = 5
retry = {{ attempts = 2, initial_delay_ms = 10, max_delay_ms = 20 }}
"#,
            port = s3.port,
            bucket = s3::BUCKET,
        ),
    )
    .expect("miner.toml");
    let offer_file = tmp.path().join("offer.json");
    let network = format!("file:{}", chain_file.display());
    let circuit = |command: &[&str]| {
        let mut args = vec!["circuit"];
        args.extend_from_slice(command);
        args.extend(["--dir", dir.to_str().expect("utf-8 path")]);
        args.extend(["--circuit-config", miner_toml.to_str().expect("utf-8 path")]);
        args.extend(["--subtensor.network", &network, "--netuid", "1"]);
        args.extend(wallet_args(wallets.to_str().expect("utf-8 path"), "rig"));
        let out = worker(&args);
        assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    circuit(&["publish", "--no-progress"]);
    let committed = local.commitment(s3::NET, &miner.public()).await.expect("the chain reads");
    assert!(committed.is_some(), "publish committed the artifact's hash");
    circuit(&["offer", "--out", offer_file.to_str().expect("utf-8 path")]);
    let offer: CircuitOffer =
        serde_json::from_str(&std::fs::read_to_string(&offer_file).expect("offer written"))
            .expect("an offer");
    let left = offer.expires_at.0 - UnixMillis::now().0;
    assert!((800_000..=900_000).contains(&left), "url_expiry_secs = 900 gives {left} ms");

    let cache = tmp.path().join("cache");
    let validator_toml = tmp.path().join("validator.toml");
    std::fs::write(
        &validator_toml,
        format!(
            r#"cache_dir = "{}"
max_redirects = 2

[artifact]
committed = "vk.key"

[url_policy]
allowed_hosts = ["127.0.0.1"]
http_hosts = ["127.0.0.1"]
"#,
            cache.display()
        ),
    )
    .expect("validator.toml");
    let config = FetchConfig::load(Some(&validator_toml)).expect("the validator's configuration");
    let chain: Arc<dyn Chain> = Arc::new(local);
    let fetcher = Fetcher::new(config, chain, s3::NET).expect("fetcher");
    let first = fetcher.fetch(&miner.public(), &offer).await;
    assert_eq!(first.record.outcome, "fetched", "{:?}", first.result);
    assert!(cache.join(offer.hash.to_hex()).join("pk.key").is_file());
    let again = fetcher.fetch(&miner.public(), &offer).await;
    assert!(again.result.expect("fetched from the cache").cache_hit);
    let stranger = fetcher.fetch(&s3::key(3).public(), &offer).await;
    assert_eq!(stranger.record.outcome, "no_commitment");
}
