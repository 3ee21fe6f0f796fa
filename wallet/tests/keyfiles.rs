//! Hotkey and delegation files on a real file system, in a temporary wallet directory.

use std::fs;
use std::path::Path;

use serde_json::Value;
use veribench_protocol::UnixMillis;
use veribench_wallet::{
    Keypair, Wallet, WalletError, delegate, ss58_decode, verify, verify_delegation,
};

/// Substrate's development phrase and the keys subkey derives from it.
const DEV_PHRASE: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
const DEV_SEED: &str = "0xfac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e";
const DEV_PUBLIC: &str = "0x46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a";
const DEV_SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

fn wallet(dir: &tempfile::TempDir) -> Wallet {
    Wallet::new(dir.path(), "miner").expect("valid wallet name")
}

/// Writes `contents` as the hotkey `name`, as btcli (or a hand edit) would.
fn write_hotkey(wallet: &Wallet, name: &str, contents: &[u8]) {
    let path = wallet.hotkey_path(name).expect("valid hotkey name");
    fs::create_dir_all(path.parent().expect("has a parent")).expect("create hotkeys dir");
    fs::write(path, contents).expect("write hotkey");
}

fn dev_keyfile() -> Value {
    serde_json::json!({
        "accountId": DEV_PUBLIC,
        "publicKey": DEV_PUBLIC,
        "privateKey": "0x00",
        "secretPhrase": DEV_PHRASE,
        "secretSeed": DEV_SEED,
        "ss58Address": DEV_SS58,
    })
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn created_hotkey_loads_back_and_is_a_btcli_keyfile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let created = wallet.create_hotkey("default", false).expect("create");
    let phrase = created.phrase().expect("a created key has a mnemonic").to_owned();

    let loaded = wallet.load_hotkey("default").expect("load");
    assert_eq!(loaded.public(), created.public());
    assert_eq!(loaded.phrase(), None);
    let sig = loaded.sign(b"m");
    assert!(verify(&created.public(), b"m", &sig));

    let path = dir.path().join("miner/hotkeys/default");
    let json: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("JSON");
    let public = format!("0x{}", created.public());
    assert_eq!(json["accountId"], public.as_str());
    assert_eq!(json["publicKey"], public.as_str());
    assert_eq!(json["ss58Address"], created.ss58_address().as_str());
    assert_eq!(json["secretPhrase"], phrase.as_str());
    let seed = json["secretSeed"].as_str().expect("secretSeed is a string");
    assert_eq!(seed.len(), 2 + 64);
    let private = json["privateKey"].as_str().expect("privateKey is a string");
    assert!(private.starts_with("0x") && private.len() == 2 + 128, "{private}");
    assert_eq!(ss58_decode(&created.ss58_address()).expect("valid").0, created.public());
    // The phrase restores the same key, as `btcli wallet regen_hotkey` would.
    assert_eq!(Keypair::from_phrase(&phrase).expect("phrase").public(), created.public());

    assert_eq!(entries(&dir.path().join("miner/hotkeys")), ["default"], "no temp file left");
}

#[test]
fn loads_the_substrate_dev_key_from_a_btcli_keyfile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    write_hotkey(&wallet, "dev", dev_keyfile().to_string().as_bytes());
    let keypair = wallet.load_hotkey("dev").expect("load");
    assert_eq!(format!("0x{}", keypair.public()), DEV_PUBLIC);
    assert_eq!(keypair.ss58_address(), DEV_SS58);
}

#[test]
fn saved_phrase_key_matches_the_substrate_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let keypair = Keypair::from_phrase(DEV_PHRASE).expect("phrase");
    wallet.save_hotkey("dev", &keypair, false).expect("save");
    let json: Value =
        serde_json::from_slice(&fs::read(wallet.hotkey_path("dev").expect("valid")).expect("read"))
            .expect("JSON");
    assert_eq!(json["secretSeed"], DEV_SEED);
    assert_eq!(json["publicKey"], DEV_PUBLIC);
    assert_eq!(json["ss58Address"], DEV_SS58);
    assert_eq!(json["secretPhrase"], DEV_PHRASE);
}

#[test]
fn refuses_to_overwrite_unless_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let first = wallet.create_hotkey("default", false).expect("create");
    let path = wallet.hotkey_path("default").expect("valid");
    let before = fs::read(&path).expect("read");

    let err = wallet.create_hotkey("default", false).expect_err("exists");
    assert!(matches!(err, WalletError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = wallet.save_hotkey("default", &Keypair::from_seed(&[3; 32]), false);
    assert!(matches!(err, Err(WalletError::AlreadyExists { .. })));
    assert_eq!(fs::read(&path).expect("read"), before, "file untouched");

    let second = wallet.create_hotkey("default", true).expect("overwrite");
    assert_ne!(second.public(), first.public());
    assert_eq!(wallet.load_hotkey("default").expect("load").public(), second.public());
    assert_eq!(entries(&dir.path().join("miner/hotkeys")), ["default"], "no temp file left");
}

#[cfg(unix)]
#[test]
fn keyfiles_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;

    wallet.create_hotkey("default", false).expect("create");
    let path = wallet.hotkey_path("default").expect("valid");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("miner/hotkeys")), 0o700);

    // Overwriting a world-readable file leaves a private one.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    wallet.create_hotkey("default", true).expect("overwrite");
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn missing_hotkey_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = wallet(&dir).load_hotkey("nope").expect_err("missing");
    assert!(matches!(err, WalletError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("no hotkey file at") && msg.contains("miner/hotkeys/nope"), "{msg}");
}

#[test]
fn unreadable_hotkey_names_the_action_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    // A directory where the file should be: reading fails whoever we run as (root included).
    fs::create_dir_all(wallet.hotkey_path("default").expect("valid")).expect("mkdir");
    let err = wallet.load_hotkey("default").expect_err("a directory");
    assert!(matches!(err, WalletError::Io { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot read hotkey file "), "{err}");
}

#[test]
fn bad_json_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    write_hotkey(&wallet, "default", br#"{"publicKey": "0x46eb"#);
    let err = wallet.load_hotkey("default").expect_err("truncated JSON");
    assert!(matches!(err, WalletError::BadJson { .. }), "{err}");
    assert!(err.to_string().contains("is not valid JSON"), "{err}");

    write_hotkey(&wallet, "default", b"");
    let err = wallet.load_hotkey("default").expect_err("empty");
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn encrypted_keyfiles_are_refused_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let mut nacl = b"$NACL".to_vec();
    nacl.extend_from_slice(&[0x9f, 0x00, 0xff, 0x10, 0x80]);
    let files: [&[u8]; 5] = [
        &nacl,
        b"$BTCLI\x01\x02\x03",
        b"$ANSIBLE_VAULT;1.1;AES256\n6162",
        b"gAAAAABkZ2hpamtsbW5vcHFyc3R1dnd4eXo=",
        &[0xde, 0xad, 0xbe, 0xef],
    ];
    for contents in files {
        write_hotkey(&wallet, "default", contents);
        let err = wallet.load_hotkey("default").expect_err("encrypted");
        assert!(matches!(err, WalletError::Encrypted { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("encrypted keyfiles are not supported; export an unencrypted hotkey"),
            "{err}"
        );
    }
}

#[test]
fn mismatched_public_key_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let mut keyfile = dev_keyfile();
    let other = format!("0x{}", Keypair::from_seed(&[9; 32]).public());
    keyfile["publicKey"] = Value::String(other.clone());
    write_hotkey(&wallet, "default", keyfile.to_string().as_bytes());
    let err = wallet.load_hotkey("default").expect_err("mismatch");
    assert!(matches!(err, WalletError::PublicKeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("inconsistent") && msg.contains(&other), "{msg}");
    assert!(msg.contains(DEV_PUBLIC.trim_start_matches("0x")), "{msg}");
}

#[test]
fn keyfiles_without_a_usable_seed_are_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    for (field, value) in [
        ("secretSeed", Value::Null),
        ("secretSeed", Value::String("0x1234".into())),
        ("publicKey", Value::Null),
        ("publicKey", Value::String("not hex".into())),
    ] {
        let mut keyfile = dev_keyfile();
        keyfile[field] = value;
        write_hotkey(&wallet, "default", keyfile.to_string().as_bytes());
        let err = wallet.load_hotkey("default").expect_err(field);
        assert!(matches!(err, WalletError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn bad_names_never_touch_the_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    for bad in ["", "../escape", "a/b", ".."] {
        assert!(matches!(wallet.create_hotkey(bad, true), Err(WalletError::InvalidName { .. })));
        assert!(matches!(wallet.load_hotkey(bad), Err(WalletError::InvalidName { .. })));
        assert!(matches!(wallet.load_delegation(bad), Err(WalletError::InvalidName { .. })));
    }
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn delegations_round_trip_through_their_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let miner = Keypair::from_phrase(DEV_PHRASE).expect("phrase");
    let worker = wallet.create_hotkey("worker-1", false).expect("create");
    let delegation = delegate(&miner, worker.public(), UnixMillis(1_900_000_000_000));

    wallet.save_delegation("worker-1", &delegation).expect("save");
    let path = dir.path().join("miner/delegations/worker-1.json");
    let json: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(json["miner_hotkey"], DEV_PUBLIC);
    assert_eq!(json["expires_at"], 1_900_000_000_000_u64);

    let loaded = wallet.load_delegation("worker-1").expect("load");
    assert_eq!(loaded, delegation);
    verify_delegation(&loaded, UnixMillis(1_800_000_000_000)).expect("valid");
    assert!(matches!(
        verify_delegation(&loaded, UnixMillis(2_000_000_000_000)),
        Err(WalletError::DelegationExpired { .. })
    ));

    // A renewal replaces the file.
    let renewed = delegate(&miner, worker.public(), UnixMillis(2_100_000_000_000));
    wallet.save_delegation("worker-1", &renewed).expect("save again");
    assert_eq!(wallet.load_delegation("worker-1").expect("load"), renewed);
    assert_eq!(entries(&dir.path().join("miner/delegations")), ["worker-1.json"]);
}

#[test]
fn tampered_or_missing_delegation_files_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wallet = wallet(&dir);
    let err = wallet.load_delegation("worker-1").expect_err("missing");
    assert!(matches!(err, WalletError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no delegation file at"), "{err}");

    let miner = Keypair::from_seed(&[1; 32]);
    let delegation = delegate(&miner, Keypair::from_seed(&[2; 32]).public(), UnixMillis(10));
    wallet.save_delegation("worker-1", &delegation).expect("save");
    let path = wallet.delegation_path("worker-1").expect("valid");

    // Expiry pushed back by hand: parses, but no longer verifies.
    let mut json: Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("JSON");
    json["expires_at"] = Value::from(u64::MAX);
    fs::write(&path, json.to_string()).expect("write");
    let tampered = wallet.load_delegation("worker-1").expect("parses");
    assert!(matches!(
        verify_delegation(&tampered, UnixMillis(0)),
        Err(WalletError::BadDelegationSignature { .. })
    ));

    json["signature"] = Value::String("0x1234".into());
    fs::write(&path, json.to_string()).expect("write");
    let err = wallet.load_delegation("worker-1").expect_err("short signature");
    assert!(matches!(err, WalletError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("signature is not 64 bytes of hex"), "{err}");

    fs::write(&path, "{").expect("write");
    assert!(matches!(wallet.load_delegation("worker-1"), Err(WalletError::BadJson { .. })));
}
