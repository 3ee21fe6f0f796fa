//! `veribench devnet` as a user runs it: the real binary on its embedded defaults (SQLite, CPU
//! backend, local chain), with one slow worker and one cheating worker, until its rounds are
//! done; the weights it sets on the local chain must rank fast over slow over cheater.

use std::process::Command;

#[test]
fn devnet_sets_weights_that_favour_faster_verified_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_veribench"))
        .args(["devnet", "--workers", "2", "--slow", "1", "--cheaters", "1", "--rounds", "3"])
        .args(["--interval-secs", "1", "--n", "128", "--json", "--dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run veribench devnet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "devnet failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");

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
