//! Scores, weights and the chain end to end: real workers over loopback WebSockets, a real
//! database, the file-backed local chain. Each test scores explicitly (`score_epoch`) and submits
//! explicitly (`submit_weights`), so nothing depends on the epoch timers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{
    Behaviour, Db, Harness, LocalChain, NETUID, Tamper, WorkerOptions, eventually, http_get,
    http_post, keypair,
};
use veribench_chain::{
    Chain, ChainError, Commitment, Metagraph, NetUid, TxReceipt, WeightReveal, WeightVector,
    WeightsPolicy,
};
use veribench_coordinator::CoordinatorConfig;
use veribench_coordinator::epoch::{EpochError, SubmitOutcome};
use veribench_coordinator::leases::{SIGNATURE_HEADER, SIGNER_HEADER, signed_message};
use veribench_coordinator::store::{ChallengeStatus, WeightSetStatus};
use veribench_protocol::{PublicKey, UnixMillis};
use veribench_support::RetryPolicy;
use veribench_wallet::Keypair;

/// Scoring for short tests: one 5-minute bucket is full availability, 3 verified results full
/// participation; epochs only when the test asks; quick retries.
fn quick_scoring(c: &mut CoordinatorConfig) {
    c.scoring.availability_buckets = 1;
    c.scoring.participation_baseline = 3;
    c.weights.interval_secs = 3600.0;
    c.chain.metagraph_refresh_secs = 3600.0;
    c.chain.retry = RetryPolicy { attempts: 2, initial_delay_ms: 10, max_delay_ms: 20 };
}

/// The weights the coordinator's uid last set, by uid.
fn chain_weights(h: &Harness) -> BTreeMap<u16, u16> {
    let mg = h.coordinator.metagraph().expect("metagraph");
    let me = mg.uid(&h.coordinator_key).expect("coordinator uid");
    h.chain.weights(NETUID).expect("weights").remove(&me).unwrap_or_default().into_iter().collect()
}

fn uid_of(h: &Harness, miner: usize) -> u16 {
    h.coordinator.metagraph().expect("metagraph").uid(&h.miners[miner].public()).expect("uid")
}

async fn faster_verified_workers_get_more_weight_and_cheaters_none(db: Db) {
    let h = Harness::start(db, 3, quick_scoring).await;
    let fast = h.honest(0, "fast");
    let slow_options =
        WorkerOptions { commit_delay: Duration::from_millis(150), ..WorkerOptions::default() };
    let slow = h.spawn(h.identity(1, "slow"), Behaviour::Honest, slow_options);
    let cheat = Tamper { zero_odd_rows: true, ..Tamper::default() };
    let cheater =
        h.spawn(h.identity(2, "cheater"), Behaviour::Compute(cheat), WorkerOptions::default());
    h.verified(&fast.key(), 3).await;
    h.verified(&slow.key(), 3).await;
    eventually("three failed cheats", common::PATIENCE, || async {
        let failed = h.challenges_of(&cheater.key()).await;
        (failed.iter().filter(|c| c.status == ChallengeStatus::Failed).count() >= 3).then_some(())
    })
    .await;

    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let miner = |i: usize| {
        out.run.miners.iter().find(|m| m.hotkey == h.miners[i].public()).expect("scored").clone()
    };
    let (f, s, c) = (miner(0), miner(1), miner(2));
    assert_eq!(f.challenge, 1.0, "{f:?}");
    assert!(0.0 < s.challenge && s.challenge < 0.5, "150 ms per commit is slower: {s:?}");
    assert_eq!((c.challenge, c.total), (0.0, 0.0), "no verified work, no score: {c:?}");
    assert!(f.online && s.online && c.online);
    let fast_line = out.run.workers.iter().find(|w| w.worker_key == fast.key()).expect("line");
    assert!(fast_line.verified >= 3 && fast_line.score.participation == 1.0, "{fast_line:?}");

    let submitted = h.coordinator.submit_weights().await.expect("submitted");
    assert!(matches!(submitted, SubmitOutcome::Submitted { .. }), "{submitted:?}");
    let w = chain_weights(&h);
    let (wf, ws, wc) = (w[&uid_of(&h, 0)], w[&uid_of(&h, 1)], w[&uid_of(&h, 2)]);
    assert_eq!(wf, u16::MAX);
    assert!(0 < ws && ws < wf, "slow {ws} < fast {wf}");
    assert_eq!(wc, 0, "the cheater's miner gets nothing");

    let weights = http_get(h.http_addr, "/api/v1/weights").await;
    assert_eq!(weights.status, 200);
    let sets: serde_json::Value = serde_json::from_str(&weights.body).expect("json");
    assert_eq!(sets[0]["status"], "submitted", "{sets}");
    assert_eq!(sets[0]["weights"].as_array().map(Vec::len), Some(4), "every uid: {sets}");
    let scores = http_get(h.http_addr, "/api/v1/scores?limit=1").await;
    let runs: serde_json::Value = serde_json::from_str(&scores.body).expect("json");
    assert_eq!(runs[0]["id"], out.run_id);
    assert_eq!(runs[0]["workers"].as_array().map(Vec::len), Some(3), "{runs}");
    assert!(runs[0]["config"]["window_minutes"].is_number(), "config stored with the run");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faster_verified_workers_get_more_weight_and_cheaters_none_on_sqlite() {
    faster_verified_workers_get_more_weight_and_cheaters_none(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faster_verified_workers_get_more_weight_and_cheaters_none_on_postgres() {
    faster_verified_workers_get_more_weight_and_cheaters_none(Db::Postgres).await;
}

/// SPEC §6: one challenge rejected as wrong costs a worker its whole verified record for the
/// window. This worker answers its first challenge honestly (verified and credited) and replays
/// it afterwards (rejected as `bad_proof`): it scores 0, its miner gets weight 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cheating_on_some_challenges_loses_its_verified_record() {
    let h = Harness::start(Db::Sqlite, 2, quick_scoring).await;
    let honest = h.honest(0, "honest");
    let cheater =
        h.spawn(h.identity(1, "sometimes"), Behaviour::ReplayFirst, WorkerOptions::default());
    h.verified(&cheater.key(), 1).await;
    eventually("a rejected replay", common::PATIENCE, || async {
        let rows = h.challenges_of(&cheater.key()).await;
        rows.into_iter().find(|c| c.reason.as_deref() == Some("bad_proof"))
    })
    .await;
    h.verified(&honest.key(), 1).await;

    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let line = out.run.workers.iter().find(|w| w.worker_key == cheater.key()).expect("line");
    let s = line.score;
    assert!(line.verified >= 1 && line.penalised >= 1, "{line:?}");
    assert!(s.mean_gflops > 0.0 && s.participation > 0.0 && s.availability > 0.0, "{line:?}");
    assert_eq!(s.performance, 0.0, "the rejection voids the verified work: {line:?}");
    let weight_of = |i: usize| {
        let miner = h.miners[i].public();
        out.run.weights.iter().find(|e| e.hotkey == miner).expect("weight").weight
    };
    assert_eq!((weight_of(0), weight_of(1)), (u16::MAX, 0));
    h.shutdown().await;
}

fn lease_body(worker: &PublicKey, score: f64, issued_at: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "worker": worker.to_string(),
        "score": score,
        "ends_at": issued_at + 3_600_000,
        "issued_at": issued_at,
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_workers_are_not_challenged_and_earn_through_the_lease() {
    let signer = keypair();
    let trusted = signer.ss58_address();
    let h = Harness::start(Db::Sqlite, 2, |c| {
        quick_scoring(c);
        c.leases.tokens = vec!["lease-token".into()];
        c.leases.trusted_signers = vec![trusted];
    })
    .await;
    let leased = h.honest(0, "leased");
    let free = h.honest(1, "free");
    h.verified(&leased.key(), 1).await;
    h.verified(&free.key(), 1).await;

    let now = UnixMillis::now().0;
    let body = lease_body(&leased.key(), 0.8, now);
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let addr = h.http_addr;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_post(addr, "/api/v1/leases", &headers, &body).await.status
        }
    };
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];
    assert_eq!(post(bearer("wrong"), body.clone()).await, 401);
    assert_eq!(post(vec![], body.clone()).await, 401);
    assert_eq!(post(bearer("lease-token"), b"{\"worker\":1}".to_vec()).await, 400);
    assert_eq!(post(bearer("lease-token"), body.clone()).await, 201);
    assert_eq!(post(bearer("lease-token"), body.clone()).await, 409, "a replay is refused");
    let signed = |key: &Keypair, body: &[u8]| {
        vec![
            (SIGNER_HEADER, key.ss58_address()),
            (SIGNATURE_HEADER, hex::encode(key.sign(&signed_message(body)).0)),
        ]
    };
    let second = lease_body(&leased.key(), 0.8, now + 1);
    assert_eq!(post(signed(&keypair(), &second), second.clone()).await, 401, "untrusted signer");
    assert_eq!(post(signed(&signer, &second), second.clone()).await, 201);
    // A body over the 16 KiB limit is refused before the handler reads it.
    let oversized = vec![b' '; (16 << 10) + 1];
    assert_eq!(post(bearer("lease-token"), oversized).await, 413);
    // Every refused report is counted, against the client's address.
    for (kind, n) in [("bad_lease", 4), ("lease_replayed", 1), ("lease_too_large", 1)] {
        let groups = h.counted(kind, n).await;
        assert_eq!(common::total(&groups), n, "{kind}: {groups:?}");
        assert!(groups.iter().all(|r| r.peer == "127.0.0.1" && r.worker_key.is_none()));
    }

    // Once its challenges in flight are done, the leased worker gets no new ones.
    let settled = eventually("leased worker idle", common::PATIENCE, || async {
        let rows = h.challenges_of(&leased.key()).await;
        rows.iter().all(|c| c.status.is_terminal()).then_some(rows.len())
    })
    .await;
    let free_before = h.challenges_of(&free.key()).await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.challenges_of(&leased.key()).await.len(), settled, "leased: not challenged");
    assert!(h.challenges_of(&free.key()).await.len() > free_before, "others still are");

    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let line = out.run.workers.iter().find(|w| w.worker_key == leased.key()).expect("line");
    assert!(line.leased && line.lease_score == 0.8 && line.score.performance == 0.0, "{line:?}");
    let m0 = out.run.miners.iter().find(|m| m.hotkey == h.miners[0].public()).expect("m0");
    let m1 = out.run.miners.iter().find(|m| m.hotkey == h.miners[1].public()).expect("m1");
    assert!((m0.lease - 0.8).abs() < 1e-12 && (m0.total - 0.56).abs() < 1e-12, "{m0:?}");
    assert!((m1.total - 0.3).abs() < 1e-12, "challenge part only: {m1:?}");
    let listed = http_get(h.http_addr, "/api/v1/leases?active=true").await;
    let listed: serde_json::Value = serde_json::from_str(&listed.body).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    h.shutdown().await;
}

/// The local chain behind a switch that makes every call fail as an unreachable node would.
#[derive(Debug)]
struct Switchable {
    inner: LocalChain,
    down: Arc<AtomicBool>,
}

impl Switchable {
    fn check(&self) -> Result<(), ChainError> {
        if self.down.load(Ordering::SeqCst) {
            Err(ChainError::Unreachable("test switched the node off".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Chain for Switchable {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    async fn current_block(&self) -> Result<u64, ChainError> {
        self.check()?;
        self.inner.current_block().await
    }
    async fn metagraph(&self, netuid: NetUid) -> Result<Metagraph, ChainError> {
        self.check()?;
        self.inner.metagraph(netuid).await
    }
    async fn weights_policy(&self, netuid: NetUid) -> Result<WeightsPolicy, ChainError> {
        self.check()?;
        self.inner.weights_policy(netuid).await
    }
    async fn set_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        weights: &WeightVector,
        version_key: u64,
    ) -> Result<TxReceipt, ChainError> {
        self.check()?;
        self.inner.set_weights(signer, netuid, weights, version_key).await
    }
    async fn commit_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        hash: [u8; 32],
    ) -> Result<TxReceipt, ChainError> {
        self.check()?;
        self.inner.commit_weights(signer, netuid, hash).await
    }
    async fn reveal_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        reveal: &WeightReveal,
    ) -> Result<TxReceipt, ChainError> {
        self.check()?;
        self.inner.reveal_weights(signer, netuid, reveal).await
    }
    async fn set_commitment(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        data: &[u8],
    ) -> Result<TxReceipt, ChainError> {
        self.check()?;
        self.inner.set_commitment(signer, netuid, data).await
    }
    async fn commitment(
        &self,
        netuid: NetUid,
        hotkey: &PublicKey,
    ) -> Result<Option<Commitment>, ChainError> {
        self.check()?;
        self.inner.commitment(netuid, hotkey).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_survive_an_unreachable_node_and_wait_for_the_rate_limit() {
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let h = Harness::start_with_chain(Db::Sqlite, 1, quick_scoring, move |inner| {
        Arc::new(Switchable { inner, down: switch })
    })
    .await;
    let worker = h.honest(0, "w");
    h.verified(&worker.key(), 3).await;
    let first = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");

    down.store(true, Ordering::SeqCst);
    let failed = h.coordinator.submit_weights().await;
    assert!(matches!(failed, Err(EpochError::Chain(ChainError::Unreachable(_)))), "{failed:?}");
    let sets = h.store().weight_sets(10).await.expect("sets");
    assert_eq!(
        (sets[0].id, sets[0].status, sets[0].attempts),
        (first.set_id, WeightSetStatus::Pending, 1)
    );
    assert!(sets[0].last_error.as_deref().is_some_and(|e| e.contains("unreachable")), "{sets:?}");
    assert!(chain_weights(&h).is_empty(), "nothing reached the chain");

    down.store(false, Ordering::SeqCst);
    let ok = h.coordinator.submit_weights().await.expect("node back");
    assert!(
        matches!(ok, SubmitOutcome::Submitted { set_id, .. } if set_id == first.set_id),
        "{ok:?}"
    );
    assert_eq!(chain_weights(&h)[&uid_of(&h, 0)], u16::MAX);

    // The next vector waits for 105 blocks since the last update, then goes through.
    let second = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let waiting = h.coordinator.submit_weights().await.expect("no error");
    let SubmitOutcome::Waiting { blocks_left } = waiting else {
        panic!("the rate limit must hold the vector back, got {waiting:?}");
    };
    assert!((100..=105).contains(&blocks_left), "{blocks_left}");
    h.chain.advance_blocks(blocks_left).expect("advance");
    let ok = h.coordinator.submit_weights().await.expect("after the limit");
    assert!(
        matches!(ok, SubmitOutcome::Submitted { set_id, .. } if set_id == second.set_id),
        "{ok:?}"
    );
    h.shutdown().await;
}

/// A local-chain file that does not parse (a process rewriting it without the lock, a hand edit)
/// is transient: the vector stays pending with the error recorded, and once the file is whole
/// again the same vector goes on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_local_chain_file_keeps_the_vector_pending_until_it_is_readable_again() {
    let h = Harness::start(Db::Sqlite, 1, quick_scoring).await;
    let worker = h.honest(0, "w");
    h.verified(&worker.key(), 3).await;
    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");

    let good = std::fs::read(h.chain.path()).expect("read the chain file");
    std::fs::write(h.chain.path(), &good[..good.len() / 2]).expect("half a rewrite");
    let failed = h.coordinator.submit_weights().await;
    let Err(EpochError::Chain(e @ ChainError::CorruptState { .. })) = &failed else {
        panic!("a corrupt chain file must fail the submission, got {failed:?}");
    };
    assert!(e.is_transient(), "{e}");
    let sets = h.store().weight_sets(10).await.expect("sets");
    assert_eq!(
        (sets[0].id, sets[0].status, sets[0].attempts),
        (out.set_id, WeightSetStatus::Pending, 1)
    );
    assert_eq!(sets[0].entries, out.run.weights, "the vector is kept as computed");
    let path = h.chain.path().display().to_string();
    assert!(sets[0].last_error.as_deref().is_some_and(|m| m.contains(&path)), "{sets:?}");

    std::fs::write(h.chain.path(), &good).expect("restore");
    let ok = h.coordinator.submit_weights().await.expect("file readable again");
    assert!(
        matches!(ok, SubmitOutcome::Submitted { set_id, .. } if set_id == out.set_id),
        "{ok:?}"
    );
    let on_chain = chain_weights(&h);
    for e in &out.run.weights {
        assert_eq!(on_chain.get(&e.uid), Some(&e.weight), "the computed vector is on chain");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_reveal_round_on_the_local_chain() {
    let h = Harness::start(Db::Sqlite, 2, quick_scoring).await;
    h.chain
        .configure_subnet(NETUID, |s| {
            s.commit_reveal_enabled = true;
            s.tempo = 10;
        })
        .expect("commit-reveal on");
    let a = h.honest(0, "a");
    let b = h.honest(1, "b");
    h.verified(&a.key(), 3).await;
    h.verified(&b.key(), 3).await;
    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let committed = h.coordinator.submit_weights().await.expect("commit");
    assert!(
        matches!(committed, SubmitOutcome::Committed { set_id, .. } if set_id == out.set_id),
        "{committed:?}"
    );
    assert!(chain_weights(&h).is_empty(), "a commit sets no weights yet");
    let SubmitOutcome::Waiting { blocks_left } =
        h.coordinator.submit_weights().await.expect("wait")
    else {
        panic!("a reveal before its epoch must wait");
    };
    h.chain.advance_blocks(blocks_left).expect("advance");
    let revealed = h.coordinator.submit_weights().await.expect("reveal");
    assert!(
        matches!(revealed, SubmitOutcome::Submitted { set_id, .. } if set_id == out.set_id),
        "{revealed:?}"
    );
    let on_chain = chain_weights(&h);
    for e in &out.run.weights {
        assert_eq!(on_chain.get(&e.uid), Some(&e.weight), "revealed weights are the computed ones");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_without_a_validator_permit_refuses_to_set_weights() {
    let h = Harness::start(Db::Sqlite, 1, quick_scoring).await;
    let worker = h.honest(0, "w");
    h.verified(&worker.key(), 3).await;
    h.chain.register(NETUID, h.coordinator_key, h.coordinator_key, 0, false).expect("no permit");
    let out = h.coordinator.score_epoch(UnixMillis::now()).await.expect("scores");
    let err = h.coordinator.submit_weights().await.expect_err("refused");
    assert!(err.to_string().contains("no validator permit"), "{err}");
    let sets = h.store().weight_sets(1).await.expect("sets");
    assert_eq!((sets[0].id, sets[0].status), (out.set_id, WeightSetStatus::Failed));
    assert!(sets[0].last_error.as_deref().is_some_and(|e| e.contains("validator permit")));
    assert_eq!(sets[0].entries, out.run.weights, "a refused vector is kept as computed");
    assert!(chain_weights(&h).is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hotkeys_registered_on_the_subnet_register_workers() {
    let h = Harness::start(Db::Sqlite, 1, quick_scoring).await;
    let outsider = keypair();
    let identity = common::Identity::new("outsider", &outsider, vec![common::unique_device("o")]);
    let options = WorkerOptions { reconnect: true, ..WorkerOptions::default() };
    let worker = h.spawn(identity, Behaviour::Honest, options);
    let refused = eventually("refusal", common::PATIENCE, || async {
        h.rejections("unknown_hotkey")
            .await
            .into_iter()
            .find(|r| common::concerns(r, &worker.key()))
    })
    .await;
    assert!(refused.detail.contains("not registered on subnet 1"), "{}", refused.detail);
    assert!(h.challenges_of(&worker.key()).await.is_empty());

    h.chain.register(NETUID, outsider.public(), outsider.public(), 0, false).expect("register");
    h.coordinator.refresh_metagraph().await.expect("metagraph");
    h.verified(&worker.key(), 1).await;
    h.shutdown().await;
}
