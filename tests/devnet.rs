//! `veribench devnet` as a user runs it: the real binary on its embedded defaults (SQLite, CPU
//! backend, local chain), with one slow worker and one cheating worker, until its rounds are
//! done; the weights it sets on the local chain must rank fast over slow over cheater. With
//! several coordinators and a rogue one, workers find the permitted ones on chain and serve
//! each, and refuse the rogue.

use std::path::Path;
use std::process::Command;

/// `veribench devnet ARGS --interval-secs 1 --n 128 --json --dir DIR`: its one JSON object.
fn devnet(args: &[&str], dir: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_veribench"))
        .arg("devnet")
        .args(args)
        .args(["--interval-secs", "1", "--n", "128", "--json", "--dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run veribench devnet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "devnet failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON object on stdout")
}

#[test]
fn devnet_sets_weights_that_favour_faster_verified_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--workers", "2", "--slow", "1", "--cheaters", "1", "--rounds", "3"];
    let summary = devnet(&args, dir.path());

    let miners = summary["miners"].as_array().expect("miners");
    let hotkey_of = |behaviour: &str| {
        let m = miners.iter().find(|m| m["behaviour"] == behaviour).expect(behaviour);
        m["hotkey"].as_str().expect("hotkey").to_owned()
    };
    let weights = summary["weights"].as_array().expect("weights");
    let weight_of = |hotkey: &str| {
        let w = weights.iter().find(|w| w["hotkey"] == hotkey).expect("a weight for every miner");
        w["weight"].as_u64().expect("u16 weight")
    };
    let fast = weight_of(&hotkey_of("honest"));
    let slow = weight_of(&hotkey_of("slow"));
    let cheater = weight_of(&hotkey_of("cheater"));
    assert_eq!(fast, 65535, "{summary}");
    assert!(0 < slow && slow < fast, "slow {slow} vs fast {fast}: {summary}");
    assert_eq!(cheater, 0, "{summary}");
    let cheat = miners.iter().find(|m| m["behaviour"] == "cheater").expect("cheater");
    assert_eq!(cheat["verified"], 0, "{summary}");
    assert!(cheat["failed"].as_u64().is_some_and(|f| f >= 3), "{summary}");
}

/// Three coordinators with validator permits and one without, announced on the local chain;
/// two workers that are told no coordinator. Every permitted coordinator verifies both workers
/// with results of its own and sets weights; the rogue one never registers a worker, and each
/// worker has persisted why it refused it.
#[test]
fn workers_serve_every_permitted_coordinator_and_refuse_the_rogue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--coordinators", "3", "--rogue", "1", "--workers", "2", "--rounds", "2"];
    let summary = devnet(&args, dir.path());
    let miners: Vec<String> = summary["miners"]
        .as_array()
        .expect("miners")
        .iter()
        .map(|m| m["hotkey"].as_str().expect("hotkey").to_owned())
        .collect();
    assert_eq!(miners.len(), 2, "{summary}");

    let coordinators = summary["coordinators"].as_array().expect("coordinators");
    assert_eq!(coordinators.len(), 4, "{summary}");
    let (permitted, rogue): (Vec<_>, Vec<_>) =
        coordinators.iter().partition(|c| c["permit"] == true);
    assert_eq!((permitted.len(), rogue.len()), (3, 1), "{summary}");
    for c in &permitted {
        for miner in &miners {
            let m = c["miners"].as_array().expect("miners").iter().find(|m| &m["hotkey"] == miner);
            let m = m.unwrap_or_else(|| panic!("{miner} unknown to {}: {summary}", c["hotkey"]));
            assert!(m["verified"].as_u64().is_some_and(|v| v >= 2), "{m}: {summary}");
            assert_eq!(m["failed"], 0, "busy is never a failure: {summary}");
        }
        let weights = c["weights"].as_array().expect("weights");
        for miner in &miners {
            let w = weights.iter().find(|w| &w["hotkey"] == miner).expect("a weight per miner");
            assert!(w["weight"].as_u64().is_some_and(|w| w > 0), "{summary}");
        }
        assert!(c["busy"].is_u64(), "{summary}");
    }
    let rogue = rogue[0];
    assert_eq!((&rogue["verified"], &rogue["failed"]), (&0.into(), &0.into()), "{summary}");
    assert!(rogue["miners"].as_array().expect("miners").is_empty(), "no worker registered");
    assert!(rogue["weights"].as_array().expect("weights").is_empty(), "{summary}");

    // Each worker persisted whom it trusts and why it refused the rogue.
    for i in 0..2 {
        let path = dir.path().join(format!("worker{i}-coordinators.json"));
        let text = std::fs::read_to_string(&path).expect("the worker's decisions");
        let state: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let entries = state["coordinators"].as_array().expect("coordinators");
        let entry = |hotkey: &serde_json::Value| {
            entries.iter().find(|e| &e["hotkey"] == hotkey).expect("an entry per announcer")
        };
        for c in &permitted {
            assert_eq!(entry(&c["hotkey"])["status"], "trusted", "{state}");
        }
        let refused = entry(&rogue["hotkey"]);
        assert_eq!(refused["status"], "refused", "{state}");
        assert_eq!(refused["reason"], "no_validator_permit", "{state}");
    }
}

/// Four permitted coordinators agree on each epoch's weights, one of them Byzantine (it
/// equivocates and proposes aggregates that do not recompute): every height is decided alike
/// by the honest three, their evidence names the Byzantine one, and all three set identical
/// weights that favour the working miners.
#[test]
fn consensus_with_a_byzantine_validator_agrees_on_the_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--coordinators", "4", "--consensus", "--byzantine", "1", "--workers", "2"];
    let summary = devnet(&[&args[..], &["--rounds", "2"]].concat(), dir.path());
    let consensus = &summary["consensus"];
    assert_eq!(consensus["agreed"], true, "{summary}");
    assert!(consensus["heights"].as_u64().is_some_and(|h| h >= 1), "{summary}");
    assert_eq!(consensus["heights"], consensus["decided"], "{summary}");
    assert!(consensus["evidence"].as_u64().is_some_and(|e| e >= 1), "{summary}");
    let coordinators = summary["coordinators"].as_array().expect("coordinators");
    let honest: Vec<_> = coordinators.iter().filter(|c| c["byzantine"] != true).collect();
    assert_eq!(honest.len(), 3, "{summary}");
    let weights = |c: &serde_json::Value| c["weights"].clone();
    assert!(honest.iter().all(|c| weights(c) == weights(honest[0])), "{summary}");
    for m in summary["miners"].as_array().expect("miners") {
        let w = weights(honest[0]);
        let entry = w.as_array().expect("weights").iter().find(|w| w["hotkey"] == m["hotkey"]);
        assert!(entry.is_some_and(|w| w["weight"].as_u64() > Some(0)), "{summary}");
    }
}

/// `veribench coordinator announce` as an operator runs it on the local chain: `--dry-run`
/// prints the exact bytes and touches no chain; the real run writes them as the hotkey's
/// commitment, which reads back as the same endpoint.
#[tokio::test]
async fn coordinator_announce_prints_then_writes_its_endpoint() {
    use veribench_chain::{Chain, Endpoint, LocalChain, NetUid};

    let dir = tempfile::tempdir().expect("temp dir");
    let wallets = dir.path().join("wallets");
    let keypair = veribench_wallet::Wallet::new(&wallets, "validator")
        .and_then(|w| w.create_hotkey("default", false))
        .expect("a coordinator hotkey");
    let chain_file = dir.path().join("chain.json");
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_veribench"))
            .args(["coordinator", "announce", "--netuid", "1", "--subtensor.network"])
            .arg(format!("file:{}", chain_file.display()))
            .args(["--announce.url", "wss://validator.example:7799"])
            .args(["--wallet.name", "validator", "--wallet.hotkey", "default", "--wallet.path"])
            .arg(&wallets)
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run veribench coordinator announce");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "announce failed: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON on stdout")
    };
    let bytes_of = |report: &serde_json::Value| {
        let text = report["hex"].as_str().expect("hex").trim_start_matches("0x");
        hex::decode(text).expect("hex bytes")
    };

    let dry = run(&["--dry-run"]);
    assert_eq!(dry["written"], false, "{dry}");
    assert_eq!(dry["hotkey"], keypair.ss58_address(), "{dry}");
    let announced = Endpoint::decode(&bytes_of(&dry)).expect("an endpoint encoding");
    assert_eq!(announced.url.as_str(), "wss://validator.example:7799");
    assert_eq!(announced.fingerprint, None, "no tls_cert, fingerprint auto: none");
    assert_eq!(dry["bytes"], bytes_of(&dry).len());
    assert!(!chain_file.exists(), "a dry run opens no chain");

    let chain = LocalChain::open(&chain_file).expect("local chain");
    chain.register(NetUid(1), keypair.public(), keypair.public(), 0, true).expect("register");
    let written = run(&[]);
    assert_eq!(written["written"], true, "{written}");
    assert_eq!(bytes_of(&written), bytes_of(&dry));
    let stored = chain.commitment(NetUid(1), &keypair.public()).await.expect("read").expect("set");
    assert_eq!(Endpoint::decode(&stored.data).expect("an endpoint"), announced);
}
