use super::*;

const NET: NetUid = NetUid(7);

fn key(byte: u8) -> Keypair {
    Keypair::from_seed(&[byte; 32])
}

fn chain() -> (tempfile::TempDir, LocalChain) {
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = LocalChain::open(dir.path().join("chain.json")).expect("open");
    (dir, chain)
}

/// A subnet with a permitted validator (uid 0), an unpermitted one (uid 1) and two miners.
fn populated(chain: &LocalChain) -> (Keypair, Keypair) {
    let (validator, bystander) = (key(1), key(2));
    chain.register(NET, validator.public(), key(9).public(), 1_000, true).expect("register");
    chain.register(NET, bystander.public(), key(9).public(), 10, false).expect("register");
    chain.register(NET, key(3).public(), key(9).public(), 0, false).expect("register");
    chain.register(NET, key(4).public(), key(9).public(), 0, false).expect("register");
    (validator, bystander)
}

fn weights(pairs: &[(u16, u16)]) -> WeightVector {
    WeightVector::new(pairs.iter().copied()).expect("distinct uids")
}

#[tokio::test]
async fn registration_is_persisted_and_idempotent() {
    let (_dir, chain) = chain();
    populated(&chain);
    let again = chain.register(NET, key(3).public(), key(8).public(), 55, true).expect("again");
    assert_eq!(again, 2, "a registered hotkey keeps its uid");

    let reopened = LocalChain::open(chain.path()).expect("reopen");
    let mg = reopened.metagraph(NET).await.expect("metagraph");
    assert_eq!(mg.neurons.len(), 4);
    assert_eq!(mg.uid(&key(3).public()), Some(2));
    let n = mg.neuron(&key(3).public()).expect("neuron");
    assert_eq!((n.stake, n.validator_permit, n.coldkey), (55, true, key(8).public()));
    assert!(matches!(reopened.metagraph(NetUid(99)).await, Err(ChainError::NoSuchSubnet(99))));
}

#[tokio::test]
async fn set_weights_enforces_registration_permit_version_and_rate_limit() {
    let (_dir, chain) = chain();
    let (validator, bystander) = populated(&chain);
    chain.configure_subnet(NET, |s| s.version_key = 3).expect("configure");
    let w = weights(&[(2, 65535), (3, 100)]);

    let stranger = chain.set_weights(&key(50), NET, &w, 3).await;
    assert!(matches!(stranger, Err(ChainError::NotRegistered(_, 7))), "{stranger:?}");
    let no_permit = chain.set_weights(&bystander, NET, &w, 3).await;
    assert!(matches!(no_permit, Err(ChainError::NoValidatorPermit(_, 7))), "{no_permit:?}");
    let old_version = chain.set_weights(&validator, NET, &w, 2).await;
    assert!(matches!(old_version, Err(ChainError::Rejected(ref m)) if m.contains("Version")));
    let bad_uid = chain.set_weights(&validator, NET, &weights(&[(9, 1)]), 3).await;
    assert!(matches!(bad_uid, Err(ChainError::Rejected(ref m)) if m.contains("uid 9")));
    assert!(chain.weights(NET).expect("weights").is_empty(), "refused calls change nothing");

    let receipt = chain.set_weights(&validator, NET, &w, 3).await.expect("first update");
    assert_eq!(chain.weights(NET).expect("weights")[&0], vec![(2, 65535), (3, 100)]);
    let mg = chain.metagraph(NET).await.expect("metagraph");
    assert_eq!(mg.neurons[0].last_update, receipt.block);

    let again = chain.set_weights(&validator, NET, &w, 3).await;
    assert!(matches!(again, Err(ChainError::RateLimited { blocks_left: 100 })), "{again:?}");
    assert!(again.as_ref().err().is_some_and(ChainError::is_transient));
    chain.advance_blocks(100).expect("advance");
    chain.set_weights(&validator, NET, &weights(&[(3, 1)]), 3).await.expect("after the limit");
    assert_eq!(chain.weights(NET).expect("weights")[&0], vec![(3, 1)]);
}

#[tokio::test]
async fn commit_reveal_round() {
    let (_dir, chain) = chain();
    let (validator, _) = populated(&chain);
    chain
        .configure_subnet(NET, |s| {
            s.commit_reveal_enabled = true;
            s.tempo = 10;
        })
        .expect("configure");
    let w = weights(&[(2, 40_000), (3, 65535)]);
    let direct = chain.set_weights(&validator, NET, &w, 0).await;
    assert!(matches!(direct, Err(ChainError::Rejected(ref m)) if m.contains("CommitReveal")));

    let reveal = WeightReveal::new(w.clone(), 0);
    let hash = commit_hash(&validator.public(), NET, &reveal);
    chain.commit_weights(&validator, NET, hash).await.expect("commit");

    let early = chain.reveal_weights(&validator, NET, &reveal).await;
    let Err(ChainError::RateLimited { blocks_left }) = early else {
        panic!("a reveal in the commit's epoch must wait, got {early:?}");
    };
    assert!((1..=11).contains(&blocks_left), "{blocks_left}");
    chain.advance_blocks(blocks_left).expect("advance to the reveal epoch");

    let mut forged = reveal.clone();
    forged.salt[0] ^= 1;
    let wrong = chain.reveal_weights(&validator, NET, &forged).await;
    assert!(matches!(wrong, Err(ChainError::Rejected(ref m)) if m.contains("NotMatch")));

    chain.reveal_weights(&validator, NET, &reveal).await.expect("reveal in its epoch");
    assert_eq!(chain.weights(NET).expect("weights")[&0], vec![(2, 40_000), (3, 65535)]);
}

#[tokio::test]
async fn a_commit_revealed_too_late_expires() {
    let (_dir, chain) = chain();
    let (validator, _) = populated(&chain);
    chain
        .configure_subnet(NET, |s| {
            s.commit_reveal_enabled = true;
            s.tempo = 10;
        })
        .expect("configure");
    let reveal = WeightReveal::new(weights(&[(2, 1)]), 0);
    chain
        .commit_weights(&validator, NET, commit_hash(&validator.public(), NET, &reveal))
        .await
        .expect("commit");
    chain.advance_blocks(30).expect("advance past the reveal epoch");
    let late = chain.reveal_weights(&validator, NET, &reveal).await;
    assert!(matches!(late, Err(ChainError::Rejected(ref m)) if m.contains("Expired")));
}

#[tokio::test]
async fn commitments_are_set_by_registered_hotkeys_only() {
    let (_dir, chain) = chain();
    populated(&chain);
    let miner = key(3);
    assert_eq!(chain.commitment(NET, &miner.public()).await.expect("read"), None);
    let stranger = chain.set_commitment(&key(60), NET, b"x").await;
    assert!(matches!(stranger, Err(ChainError::NotRegistered(..))));
    let too_long = chain.set_commitment(&miner, NET, &[0; 129]).await;
    assert!(matches!(too_long, Err(ChainError::Rejected(_))));

    let receipt = chain.set_commitment(&miner, NET, &[0xab; 32]).await.expect("commit");
    let got = chain.commitment(NET, &miner.public()).await.expect("read").expect("some");
    assert_eq!(got, Commitment { block: receipt.block, data: vec![0xab; 32] });
}

#[tokio::test]
async fn commitments_are_rate_limited_per_hotkey() {
    let (_dir, chain) = chain();
    populated(&chain);
    let (miner, other) = (key(3), key(4));
    chain.configure_subnet(NET, |s| s.commitment_rate_limit_blocks = 50).expect("configure");
    let first = chain.set_commitment(&miner, NET, b"one").await.expect("first commitment");

    let again = chain.set_commitment(&miner, NET, b"two").await;
    assert!(matches!(again, Err(ChainError::RateLimited { blocks_left: 50 })), "{again:?}");
    assert!(again.as_ref().err().is_some_and(ChainError::is_transient));
    chain.set_commitment(&other, NET, b"x").await.expect("another hotkey is not limited");
    chain.advance_blocks(30).expect("advance");
    let later = chain.set_commitment(&miner, NET, b"two").await;
    assert!(matches!(later, Err(ChainError::RateLimited { blocks_left: 20 })), "{later:?}");
    let stored = chain.commitment(NET, &miner.public()).await.expect("read").expect("some");
    assert_eq!(stored, Commitment { block: first.block, data: b"one".to_vec() }, "unchanged");

    chain.advance_blocks(20).expect("advance");
    let second = chain.set_commitment(&miner, NET, b"two").await.expect("after the limit");
    let stored = chain.commitment(NET, &miner.public()).await.expect("read").expect("some");
    assert_eq!(stored, Commitment { block: second.block, data: b"two".to_vec() });
}

#[tokio::test]
async fn a_state_file_without_the_commitment_limit_loads_with_the_default() {
    let (_dir, chain) = chain();
    populated(&chain);
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chain.path()).expect("read")).expect("json");
    let subnet = &mut state["subnets"][NET.0.to_string()];
    subnet.as_object_mut().expect("subnet").remove("commitment_rate_limit_blocks");
    std::fs::write(chain.path(), serde_json::to_vec(&state).expect("encode")).expect("write");
    let reopened = LocalChain::open(chain.path()).expect("an older state file loads");
    assert_eq!(reopened.subnet(NET).expect("subnet").commitment_rate_limit_blocks, 100);
    assert_eq!(reopened.metagraph(NET).await.expect("metagraph").neurons.len(), 4);
}

#[test]
fn concurrent_handles_do_not_lose_updates() {
    let (_dir, chain) = chain();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let chain = LocalChain::open(chain.path()).expect("second handle");
            scope.spawn(move || {
                for i in 0..10u8 {
                    let hotkey = key(t * 10 + i + 1).public();
                    chain.register(NET, hotkey, hotkey, 0, false).expect("register");
                }
            });
        }
    });
    let subnet = chain.subnet(NET).expect("subnet");
    assert_eq!(subnet.neurons.len(), 40, "every register under the lock landed");
}

#[test]
fn a_corrupt_state_file_is_an_error_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("chain.json");
    std::fs::write(&path, b"{ not json").expect("write");
    let err = LocalChain::open(&path).expect_err("corrupt state refused");
    assert!(matches!(err, ChainError::CorruptState { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), b"{ not json");
}

#[tokio::test]
async fn a_state_file_overwritten_with_garbage_fails_transiently_until_it_is_valid_again() {
    let (_dir, chain) = chain();
    let (validator, _) = populated(&chain);
    let good = std::fs::read(chain.path()).expect("read");
    // What a reader sees while a process without the lock rewrites the file in place.
    std::fs::write(chain.path(), &good[..good.len() / 2]).expect("truncate");

    let read = chain.metagraph(NET).await.expect_err("half a file does not parse");
    assert!(matches!(read, ChainError::CorruptState { .. }), "{read:?}");
    assert!(read.is_transient(), "{read}");
    let message = read.to_string();
    assert!(message.contains(&chain.path().display().to_string()), "names the file: {message}");
    let write = chain.set_weights(&validator, NET, &weights(&[(2, 1)]), 0).await;
    assert!(write.as_ref().err().is_some_and(ChainError::is_transient), "{write:?}");
    assert_eq!(std::fs::read(chain.path()).expect("read").len(), good.len() / 2, "left alone");

    std::fs::write(chain.path(), &good).expect("restore");
    assert_eq!(chain.metagraph(NET).await.expect("readable again").neurons.len(), 4);
    chain.set_weights(&validator, NET, &weights(&[(2, 1)]), 0).await.expect("set");
    assert_eq!(chain.weights(NET).expect("weights")[&0], vec![(2, 1)]);
}

#[tokio::test]
async fn blocks_advance_with_time_and_on_request() {
    let (_dir, chain) = chain();
    let start = chain.current_block().await.expect("block");
    chain.set_block_ms(5).expect("fast blocks");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let later = chain.current_block().await.expect("block");
    assert!(later >= start + 5, "{start} → {later}");
    assert!(chain.advance_blocks(1000).expect("advance") >= later + 1000);
}

#[tokio::test]
async fn a_state_file_in_missing_directories_creates_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fresh").join("data").join("chain.json");
    let chain = LocalChain::open(&path).expect("open creates the parent directories");
    chain.register(NET, key(1).public(), key(9).public(), 5, true).expect("register");
    assert!(path.is_file(), "state written at {}", path.display());
    let mg = LocalChain::open(&path).expect("reopen").metagraph(NET).await.expect("metagraph");
    assert_eq!(mg.uid(&key(1).public()), Some(0));

    // The async calls create them too (a chain handle made before the directory existed).
    let other = dir.path().join("later").join("chain.json");
    let handle = LocalChain { path: other.clone() };
    assert!(matches!(handle.weights_policy(NET).await, Err(ChainError::NoSuchSubnet(7))));
    assert!(other.parent().expect("parent").is_dir());
}

/// A call waiting for the state lock must not hold the runtime's thread: on this
/// current-thread runtime, the main task still runs (and lets the lock go) while a spawned
/// `current_block` waits for it.
#[tokio::test]
async fn a_call_waiting_for_the_lock_does_not_block_the_runtime() {
    let (_dir, chain) = chain();
    let mut lock_path = chain.path().as_os_str().to_owned();
    lock_path.push(".lock");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let file = OpenOptions::new().write(true).open(&lock_path).expect("lock file");
        file.lock().expect("exclusive lock");
        locked_tx.send(()).expect("signal");
        // Released by the runtime's main task, or after this long if that task never runs.
        let released_by_runtime =
            release_rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok();
        drop(file);
        released_by_runtime
    });
    locked_rx.recv().expect("holder locked");

    let call = tokio::spawn({
        let chain = chain.clone();
        async move { chain.current_block().await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // Fails only if the holder gave up waiting, which the assertion below reports.
    let _ = release_tx.send(());
    call.await.expect("task").expect("block after the lock is free");
    assert!(holder.join().expect("holder"), "the runtime ran while the call waited for the lock");
}
