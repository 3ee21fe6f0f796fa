//! Four validators in one process, over real gRPC on loopback, each with its own write-ahead
//! log: agreement, a crashed validator, a Byzantine one, a skewed vector, a partition, and a
//! restart from the log.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use malachitebft_core_types::{LinearTimeouts, NilOrVal, Round, VoteType};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

use crate::codec::{self, Decision, Signed};
use crate::context::{Height, ValidatorSet, Vote};
use crate::node::{Byzantine, DecidedHeight, Epoch, Evidence, EvidenceKind, Host, NodeConfig};
use crate::service::{Service, ServiceConfig};
use crate::signing::HotkeyVerifier;
use crate::stake::{Stake, validator_set};
use crate::transport::{
    Envelope, Inbound, MessageKind, PeerAddr, ServerLimits, TransportStats, serve,
};
use crate::value::{self, ValueId};

const NET: u32 = 7;
const WAIT: Duration = Duration::from_secs(30);

/// The coordinator's database, in memory.
#[derive(Default)]
struct MemHost {
    decisions: Mutex<BTreeMap<u64, DecidedHeight>>,
    evidence: Mutex<Vec<Evidence>>,
}

#[async_trait]
impl Host for MemHost {
    async fn decided(&self, decided: &DecidedHeight) {
        let height = decided.decision.certificate.height.0;
        self.decisions.lock().expect("lock").insert(height, decided.clone());
    }

    async fn decision(&self, height: Height) -> Option<Decision> {
        self.decisions.lock().expect("lock").get(&height.0).map(|d| d.decision.clone())
    }

    async fn evidence(&self, evidence: &Evidence) {
        self.evidence.lock().expect("lock").push(evidence.clone());
    }
}

impl MemHost {
    fn decided(&self, height: u64) -> Option<DecidedHeight> {
        self.decisions.lock().expect("lock").get(&height).cloned()
    }

    fn evidence_against(&self, key: &PublicKey, kind: EvidenceKind) -> Vec<Evidence> {
        let all = self.evidence.lock().expect("lock");
        all.iter().filter(|e| e.validator == *key && e.kind == kind).cloned().collect()
    }
}

/// Records every vote a validator sends it.
struct Observer {
    votes: Mutex<Vec<Vote>>,
}

#[async_trait]
impl Inbound for Observer {
    fn network(&self) -> u32 {
        NET
    }

    fn is_member(&self, _key: &PublicKey) -> bool {
        true
    }

    fn deliver(&self, envelope: Envelope) -> bool {
        if envelope.kind == MessageKind::Vote
            && let Ok(v) = codec::decode::<Signed<Vote>>("vote", &envelope.payload)
        {
            self.votes.lock().expect("lock").push(v.message);
        }
        true
    }

    async fn decided(&self, _height: u64) -> Option<Vec<u8>> {
        None
    }
}

fn timeouts() -> LinearTimeouts {
    LinearTimeouts {
        propose: Duration::from_millis(800),
        propose_delta: Duration::from_millis(200),
        prevote: Duration::from_millis(300),
        prevote_delta: Duration::from_millis(100),
        precommit: Duration::from_millis(300),
        precommit_delta: Duration::from_millis(100),
        rebroadcast: Duration::from_millis(1000),
        max_timeout: Duration::from_secs(3),
    }
}

struct Cluster {
    keys: Vec<Keypair>,
    addrs: Vec<SocketAddr>,
    services: Vec<Option<Service>>,
    hosts: Vec<Arc<MemHost>>,
    byzantine: Vec<Byzantine>,
    /// Extra peers each node gossips to (an observer).
    extra: Vec<Vec<PeerAddr>>,
    set: ValidatorSet,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn new(n: usize, byzantine: impl Fn(usize) -> Byzantine) -> Self {
        let keys: Vec<Keypair> = (0..n).map(|i| Keypair::from_seed(&[i as u8 + 1; 32])).collect();
        let stakes: Vec<Stake> =
            keys.iter().map(|k| Stake { hotkey: k.public(), stake: 1_000_000 }).collect();
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
        let mut cluster = Self {
            keys,
            addrs,
            services: (0..n).map(|_| None).collect(),
            hosts: (0..n).map(|_| Arc::new(MemHost::default())).collect(),
            byzantine: (0..n).map(byzantine).collect(),
            extra: vec![Vec::new(); n],
            set: validator_set(&stakes).expect("set"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            cluster.start(i, listener).await;
        }
        cluster
    }

    fn config(&self, i: usize) -> ServiceConfig {
        let mut node = NodeConfig::new(NET, self.dir.path().join(format!("node{i}.wal")));
        node.timeouts = timeouts();
        node.regossip = Duration::from_millis(300);
        node.sync_after = Duration::from_secs(2);
        node.byzantine = self.byzantine[i];
        let mut peers: Vec<PeerAddr> = (0..self.keys.len())
            .filter(|&j| j != i)
            .map(|j| PeerAddr {
                key: self.keys[j].public(),
                url: format!("http://{}", self.addrs[j]),
            })
            .collect();
        peers.extend(self.extra[i].iter().cloned());
        ServiceConfig::new(node, peers)
    }

    async fn start(&mut self, i: usize, listener: TcpListener) {
        let host: Arc<dyn Host> = self.hosts[i].clone();
        let service = Service::start(self.config(i), listener, self.keys[i].clone(), host)
            .await
            .expect("start");
        service.node.set_members(self.keys.iter().map(Keypair::public));
        self.services[i] = Some(service);
    }

    async fn stop(&mut self, i: usize) {
        if let Some(service) = self.services[i].take() {
            service.stop().await;
        }
    }

    async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        let listener = TcpListener::bind(self.addrs[i]).await.expect("rebind");
        self.start(i, listener).await;
    }

    fn service(&self, i: usize) -> &Service {
        self.services[i].as_ref().expect("running")
    }

    fn key(&self, i: usize) -> PublicKey {
        self.keys[i].public()
    }

    async fn epoch(&self, i: usize, height: u64, weights: Vec<u16>) {
        let epoch = Epoch {
            height: Height(height),
            validators: self.set.clone(),
            weights,
            evidence_root: [height as u8; 32],
        };
        self.service(i).node.propose_epoch(epoch).await.expect("epoch");
    }

    /// Waits until every node in `nodes` has decided `height`; the decisions.
    async fn decided(&self, nodes: &[usize], height: u64) -> Vec<DecidedHeight> {
        let start = Instant::now();
        loop {
            let found: Vec<_> =
                nodes.iter().filter_map(|&i| self.hosts[i].decided(height)).collect();
            if found.len() == nodes.len() {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "height {height}: only {} of {nodes:?} decided",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn members(&self, i: usize, of: &[usize]) {
        self.service(i).node.set_members(of.iter().map(|&j| self.key(j)));
    }

    async fn shutdown(mut self) {
        for i in 0..self.keys.len() {
            self.stop(i).await;
        }
    }
}

fn honest(i: usize, height: u64) -> Vec<u16> {
    vec![100 + i as u16, 200 + height as u16, 300, 400]
}

/// Every decision is the same value, and that value passes every validator's checks.
fn agreed(decisions: &[DecidedHeight], set: &ValidatorSet, height: u64) -> ValueId {
    let id = decisions[0].value_id;
    for d in decisions {
        assert_eq!(d.value_id, id, "height {height}: two values decided");
        assert_eq!(d.decision.certificate.value_id, id);
        assert_eq!(
            value::check(&d.decision.value, Height(height), set, &HotkeyVerifier::new(NET)),
            Ok(())
        );
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_decide_alike_three_go_on_without_one_and_it_catches_up() {
    let mut c = Cluster::new(4, |_| Byzantine::default()).await;
    for h in 1..=3 {
        for i in 0..4 {
            c.epoch(i, h, honest(i, h)).await;
        }
        let decisions = c.decided(&[0, 1, 2, 3], h).await;
        agreed(&decisions, &c.set, h);
        let value = &decisions[0].decision.value;
        assert_eq!(value.vectors.len(), 4, "the proposer waits for every vector when all are up");
        // Validators 0..3 sent 100..103 for uid 0: the lower median of four equal stakes.
        assert_eq!(value.aggregate, vec![101, 200 + h as u16, 300, 400]);
    }

    c.stop(3).await;
    for h in 4..=6 {
        for i in 0..3 {
            c.epoch(i, h, honest(i, h)).await;
        }
        let decisions = c.decided(&[0, 1, 2], h).await;
        agreed(&decisions, &c.set, h);
        assert_eq!(decisions[0].decision.value.vectors.len(), 3);
    }

    // Back after its peers moved past height 5: only their stored decision can bring it in.
    let listener = TcpListener::bind(c.addrs[3]).await.expect("rebind");
    c.start(3, listener).await;
    c.epoch(3, 5, honest(3, 5)).await;
    let caught_up = c.decided(&[3], 5).await;
    let theirs = c.hosts[0].decided(5).expect("decided");
    assert_eq!(caught_up[0].value_id, theirs.value_id);
    assert!(caught_up[0].synced, "decided through GetDecided");
    assert_eq!(c.service(3).node.status().heights_synced, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byzantine_equivocation_and_bad_aggregate_are_recorded_and_honest_nodes_decide() {
    let byz = Byzantine { equivocate: true, bad_aggregate: true };
    let c = Cluster::new(4, |i| if i == 0 { byz } else { Byzantine::default() }).await;
    let bad = c.key(0);
    let honest_nodes = [1, 2, 3];
    let mut byzantine_proposed = false;
    // Four heights: the round-0 proposer rotates through all four validators.
    for h in 1..=4 {
        for i in 0..4 {
            c.epoch(i, h, honest(i, h)).await;
        }
        let decisions = c.decided(&honest_nodes, h).await;
        agreed(&decisions, &c.set, h);
        let proposer0 = crate::context::VbContext { network: NET };
        let first = malachitebft_core_types::Context::select_proposer(
            &proposer0,
            &c.set,
            Height(h),
            Round::new(0),
        );
        if first.address.0 == bad {
            byzantine_proposed = true;
            assert!(
                decisions[0].decision.certificate.round.as_i64() >= 1,
                "the Byzantine proposal at round 0 was voted nil"
            );
        }
    }
    assert!(byzantine_proposed);
    for &i in &honest_nodes {
        let bad_proposals = c.hosts[i].evidence_against(&bad, EvidenceKind::BadProposal);
        assert!(!bad_proposals.is_empty(), "node {i} recorded the bad aggregate");
        assert!(bad_proposals.iter().all(|e| e.detail.contains("aggregate_mismatch")));
        assert!(
            !c.hosts[i].evidence_against(&bad, EvidenceKind::DoubleVote).is_empty(),
            "node {i} recorded the equivocation"
        );
        for j in honest_nodes {
            assert!(c.hosts[i].evidence_against(&c.key(j), EvidenceKind::DoubleVote).is_empty());
        }
        assert!(c.service(i).node.status().equivocations > 0);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_vector_leaves_every_weight_within_the_honest_range() {
    let c = Cluster::new(4, |_| Byzantine::default()).await;
    let skewed = vec![u16::MAX, 0, 0, 0];
    c.epoch(0, 1, skewed).await;
    for i in 1..4 {
        c.epoch(i, 1, honest(i, 1)).await;
    }
    let decisions = c.decided(&[0, 1, 2, 3], 1).await;
    agreed(&decisions, &c.set, 1);
    let aggregate = &decisions[0].decision.value.aggregate;
    for (uid, weight) in aggregate.iter().enumerate() {
        let honest_weights: Vec<u16> = (1..4).map(|i| honest(i, 1)[uid]).collect();
        let (lo, hi) = (honest_weights.iter().min(), honest_weights.iter().max());
        assert!(
            Some(weight) >= lo && Some(weight) <= hi,
            "uid {uid}: {weight} outside {lo:?}..{hi:?}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_two_partition_decides_nothing_until_it_heals() {
    let c = Cluster::new(4, |_| Byzantine::default()).await;
    let (left, right) = ([0, 1], [2, 3]);
    for i in left {
        c.members(i, &left);
    }
    for i in right {
        c.members(i, &right);
    }
    for i in 0..4 {
        c.epoch(i, 1, honest(i, 1)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..4 {
        assert!(c.hosts[i].decided(1).is_none(), "node {i} decided with half the stake");
    }
    // Each half waits in round 0 for the prevotes of the other (2/3 of any vote starts the
    // prevote timeout, and half the stake is not 2/3).
    assert!(!c.service(0).node.status().decided && !c.service(2).node.status().decided);
    for i in 0..4 {
        c.members(i, &[0, 1, 2, 3]);
    }
    let decisions = c.decided(&[0, 1, 2, 3], 1).await;
    agreed(&decisions, &c.set, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_restarted_from_its_wal_does_not_sign_twice() {
    // An observer that node 3 also gossips to: it sees every vote node 3 signs.
    let observer = Arc::new(Observer { votes: Mutex::new(Vec::new()) });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let observer_addr = listener.local_addr().expect("addr");
    let stop_observer = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        observer.clone(),
        ServerLimits::default(),
        None,
        Arc::new(TransportStats::default()),
        stop_observer.clone(),
    ));

    let mut c = Cluster::new(4, |_| Byzantine::default()).await;
    c.extra[3] = vec![PeerAddr {
        key: Keypair::from_seed(&[200; 32]).public(),
        url: format!("http://{observer_addr}"),
    }];
    c.restart(3).await;

    // Half the stake has the epoch: round 0 cannot get a proposal through, so nodes 0 and 3
    // prevote nil when the propose timeout fires, and wait there for more prevotes.
    c.epoch(0, 1, honest(0, 1)).await;
    c.epoch(3, 1, honest(3, 1)).await;
    let me = c.key(3);
    let start = Instant::now();
    while !observer.votes.lock().expect("lock").iter().any(|v| {
        v.validator.0 == me && v.vote_type == VoteType::Prevote && v.round == Round::new(0)
    }) {
        assert!(start.elapsed() < WAIT, "node 3 never prevoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Crash mid-height, come back on the same log, and get the same epoch again.
    c.restart(3).await;
    c.epoch(3, 1, honest(3, 1)).await;
    // The other half arrives: now a value can be proposed, possibly still in round 0.
    c.epoch(1, 1, honest(1, 1)).await;
    c.epoch(2, 1, honest(2, 1)).await;
    let decisions = c.decided(&[0, 1, 2, 3], 1).await;
    agreed(&decisions, &c.set, 1);

    let votes = observer.votes.lock().expect("lock").clone();
    let mut seen: BTreeMap<(u64, i64, bool), BTreeSet<String>> = BTreeMap::new();
    for v in votes.iter().filter(|v| v.validator.0 == me) {
        let target = match &v.value {
            NilOrVal::Nil => "nil".to_owned(),
            NilOrVal::Val(id) => id.to_string(),
        };
        let key = (v.height.0, v.round.as_i64(), v.vote_type == VoteType::Prevote);
        seen.entry(key).or_default().insert(target);
    }
    assert!(seen.contains_key(&(1, 0, true)), "the round-0 prevote was seen");
    for (step, targets) in &seen {
        assert_eq!(targets.len(), 1, "node 3 signed two different votes at {step:?}: {targets:?}");
    }
    for i in 0..3 {
        assert!(c.hosts[i].evidence_against(&me, EvidenceKind::DoubleVote).is_empty());
    }
    c.shutdown().await;
    stop_observer.cancel();
    let _ = server.await;
}
