//! A consensus node: one task owns Malachite's [`State`] and feeds it inputs from the network,
//! the timers and the application through one queue, answering every effect the core yields
//! with our own pieces (gRPC gossip, tokio timers, the write-ahead log, hotkey signatures).
//!
//! Heights are weights epochs. The application hands the node its own score vector for an
//! epoch ([`NodeHandle::propose_epoch`]); the node signs and gossips it, starts that height, and
//! when it is the proposer builds the value from the vectors it holds. A decided height goes to
//! the [`Host`] (the coordinator persists it and submits the agreed weights); a height that
//! stays undecided here while the peers have moved on is fetched with `GetDecided` and checked
//! through the core's sync path.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use malachitebft_core_consensus::{
    ConsensusMsg, Effect, Input, LivenessMsg, LocallyProposedValue, MisbehaviorEvidence, Params,
    PeerId, ProposedValue, Resumable, Resume, SignedConsensusMsg, State, ValuePayload,
    VoteExtensionError, process,
};
use malachitebft_core_types::{
    CommitCertificate, Context, LinearTimeouts, NilOrVal, Round, Timeout, Validity, Value,
    ValueOrigin, ValueResponse, VoteExtensionPolicy,
};
use malachitebft_signing::VerifierExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

use crate::codec::{self, CommitWire, Decision, PolkaWire, RoundWire, Signed, WalEntry};
use crate::context::{Height, Proposal, ValidatorSet, VbContext, Vote};
use crate::error::ConsensusError;
use crate::signing::{Domain, HotkeySigner, HotkeyVerifier};
use crate::status::ConsensusStatus;
use crate::transport::{Envelope, Inbound, MessageKind, Peers, seal};
use crate::value::{self, EpochValue, ScoreVector, SignedScoreVector, ValueId};
use crate::wal::Wal;

/// Inputs queued for the node before it drops new ones (the transport then answers
/// RESOURCE_EXHAUSTED, and rounds or catch-up recover what was lost).
const QUEUE: usize = 4096;
/// Envelopes kept from before the first height starts, or proposals for heights not started.
const EARLY: usize = 1024;
/// Heights of score vectors kept at once: the current one, the one before, and two ahead.
const VECTOR_HEIGHTS: usize = 4;
/// Values kept per height (the core itself caps proposals per round).
const MAX_VALUES: usize = 64;

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The subnet (bound into every signature).
    pub network: u32,
    /// The write-ahead log file.
    pub wal_path: PathBuf,
    /// Round timeouts.
    pub timeouts: LinearTimeouts,
    /// How often the node re-sends its own score vector for the height in progress.
    pub regossip: Duration,
    /// How long a height may stay undecided before the node asks its peers for the decision.
    pub sync_after: Duration,
    /// Misbehaviour, for tests and the devnet only: a validator that breaks the protocol.
    pub byzantine: Byzantine,
}

impl NodeConfig {
    /// Defaults for `network` with the log at `wal_path`: Malachite's default timeouts
    /// (propose 3 s, prevote and precommit 1 s, each +0.5 s per round).
    pub fn new(network: u32, wal_path: PathBuf) -> Self {
        Self {
            network,
            wal_path,
            timeouts: LinearTimeouts::default(),
            regossip: Duration::from_secs(2),
            sync_after: Duration::from_secs(10),
            byzantine: Byzantine::default(),
        }
    }
}

/// Ways to misbehave, so that tests and the devnet can show honest validators cope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct Byzantine {
    /// Sign two different votes in every step: one for what the core decided, one against.
    pub equivocate: bool,
    /// Propose a value whose aggregate does not recompute (one weight off by one).
    pub bad_aggregate: bool,
}

/// One epoch's input from the application: the validators and this validator's own scores.
#[derive(Clone, Debug)]
pub struct Epoch {
    /// The height (`floor(block / epoch_blocks)`).
    pub height: Height,
    /// The validator set of the height, from the metagraph.
    pub validators: ValidatorSet,
    /// This validator's weight per uid.
    pub weights: Vec<u16>,
    /// BLAKE3 root of the evidence behind the weights.
    pub evidence_root: [u8; 32],
}

/// A decided height, as the node hands it to its host.
#[derive(Clone, Debug)]
pub struct DecidedHeight {
    /// The value and its commit certificate.
    pub decision: Decision,
    /// The decided value's id.
    pub value_id: ValueId,
    /// Who proposed it.
    pub proposer: PublicKey,
    /// Milliseconds from the start of the height here to the decision.
    pub decide_ms: u64,
    /// Whether it came by catch-up rather than by voting.
    pub synced: bool,
}

/// Kinds of misbehaviour a node records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// Two different votes by one validator in one round and step.
    DoubleVote,
    /// Two different proposals by one proposer in one round.
    DoubleProposal,
    /// A proposal whose value failed a check (signed by its proposer: attributable).
    BadProposal,
}

/// Misbehaviour seen by this node.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// The height.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The validator at fault.
    pub validator: PublicKey,
    /// What it did.
    pub kind: EvidenceKind,
    /// A JSON description (the conflicting messages or the refusal).
    pub detail: String,
}

/// What the node needs from its host.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Persists a decided height. Called once per height the node decides or syncs.
    async fn decided(&self, decided: &DecidedHeight);
    /// The decision stored at `height`, served to lagging peers.
    async fn decision(&self, height: Height) -> Option<Decision>;
    /// Records misbehaviour.
    async fn evidence(&self, evidence: &Evidence);
}

enum Command {
    Envelope(Envelope),
    Epoch(Box<Epoch>),
    Timeout(Height, Timeout),
    ProposeNow(Height, Round),
    Synced(Height, PublicKey, Vec<u8>),
}

/// The transport's view of a node: who may send, and where messages go.
struct NodeInbound {
    network: u32,
    members: RwLock<BTreeSet<PublicKey>>,
    tx: mpsc::Sender<Command>,
    host: Arc<dyn Host>,
}

#[async_trait]
impl Inbound for NodeInbound {
    fn network(&self) -> u32 {
        self.network
    }

    fn is_member(&self, key: &PublicKey) -> bool {
        self.members.read().map(|m| m.contains(key)).unwrap_or(false)
    }

    fn deliver(&self, envelope: Envelope) -> bool {
        self.tx.try_send(Command::Envelope(envelope)).is_ok()
    }

    async fn decided(&self, height: u64) -> Option<Vec<u8>> {
        self.host.decision(Height(height)).await.map(|d| codec::encode(&d))
    }
}

/// What the application may ask of a running node; cheap to clone, one per task that needs it.
#[derive(Clone)]
pub struct NodeClient {
    tx: mpsc::Sender<Command>,
    inbound: Arc<NodeInbound>,
    status: watch::Receiver<ConsensusStatus>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient").field("status", &*self.status.borrow()).finish_non_exhaustive()
    }
}

impl NodeClient {
    /// Hands the node this validator's scores for an epoch: it signs and gossips them and
    /// starts that height (abandoning an older one still undecided).
    pub async fn propose_epoch(&self, epoch: Epoch) -> Result<(), ConsensusError> {
        self.tx.send(Command::Epoch(Box::new(epoch))).await.map_err(|_| ConsensusError::Stopped)
    }

    /// The hotkeys whose messages the node accepts (the permitted validators).
    pub fn set_members(&self, keys: impl IntoIterator<Item = PublicKey>) {
        if let Ok(mut m) = self.inbound.members.write() {
            *m = keys.into_iter().collect();
        }
    }

    /// What the transport server serves.
    pub fn inbound(&self) -> Arc<dyn Inbound> {
        self.inbound.clone()
    }

    /// The node's latest status.
    pub fn status(&self) -> ConsensusStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f` (or the node stops).
    pub async fn wait_for(&self, f: impl Fn(&ConsensusStatus) -> bool) -> ConsensusStatus {
        let mut rx = self.status.clone();
        match rx.wait_for(|s| f(s)).await {
            Ok(s) => s.clone(),
            Err(_) => self.status(),
        }
    }
}

/// A running node: its [`NodeClient`] (through `Deref`) and the means to stop it.
pub struct NodeHandle {
    client: NodeClient,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.client.fmt(f)
    }
}

impl std::ops::Deref for NodeHandle {
    type Target = NodeClient;

    fn deref(&self) -> &NodeClient {
        &self.client
    }
}

impl NodeHandle {
    /// A client of the node for another task.
    pub fn client(&self) -> NodeClient {
        self.client.clone()
    }

    /// Stops the node and waits for its task: timers are dropped and the WAL closed.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts a node for `keypair` that gossips to `peers` and reports to `host`.
///
/// Opens the write-ahead log first: a height logged there and not yet decided according to the
/// host is replayed when the application hands the node that epoch again.
pub async fn spawn(
    config: NodeConfig,
    keypair: Keypair,
    peers: Peers,
    host: Arc<dyn Host>,
) -> Result<NodeHandle, ConsensusError> {
    let mut wal = Wal::open(&config.wal_path)?;
    let logged = wal.entries()?;
    let replay = if logged.is_empty() || host.decision(wal.height()).await.is_some() {
        None
    } else {
        tracing::info!(height = %wal.height(), entries = logged.len(), "consensus WAL holds a height in progress");
        Some((wal.height(), logged))
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let signer = HotkeySigner::new(keypair, config.network);
    let status = ConsensusStatus {
        hotkey: signer.public().to_string(),
        round: -1,
        peers: peers.len(),
        ..ConsensusStatus::default()
    };
    let (status_tx, status_rx) = watch::channel(status.clone());
    let inbound = Arc::new(NodeInbound {
        network: config.network,
        members: RwLock::new(BTreeSet::new()),
        tx: tx.clone(),
        host: host.clone(),
    });
    let stop = CancellationToken::new();
    let io = Io {
        ctx: VbContext { network: config.network },
        verifier: HotkeyVerifier::new(config.network),
        signer,
        config,
        wal,
        peers: Arc::new(peers),
        host,
        tx: tx.clone(),
        timers: HashMap::new(),
        height: None,
        set: None,
        followups: VecDeque::new(),
        events: Vec::new(),
        pending_value: None,
        vectors: BTreeMap::new(),
        values: HashMap::new(),
        synced: false,
        status,
    };
    let node = Node {
        state: None,
        io,
        epochs: BTreeMap::new(),
        replay,
        early: VecDeque::new(),
        decided: BTreeSet::new(),
        height_started: Instant::now(),
        sync_in_flight: false,
        last_sync: None,
        status_tx,
    };
    let task = tokio::spawn(node.run(rx, stop.clone()));
    Ok(NodeHandle { client: NodeClient { tx, inbound, status: status_rx }, stop, task })
}

/// What the core said that needs the state to act on (after `process!` returns).
enum Event {
    Decided(CommitCertificate<VbContext>),
    Finalized(MisbehaviorEvidence<VbContext>),
}

/// Everything the effect handler touches; kept apart from the core's state, which `process!`
/// borrows while effects are handled.
struct Io {
    ctx: VbContext,
    signer: HotkeySigner,
    verifier: HotkeyVerifier,
    config: NodeConfig,
    wal: Wal,
    peers: Arc<Peers>,
    host: Arc<dyn Host>,
    tx: mpsc::Sender<Command>,
    timers: HashMap<Timeout, JoinHandle<()>>,
    height: Option<Height>,
    set: Option<ValidatorSet>,
    /// Inputs an effect produced, fed once the current input is processed.
    followups: VecDeque<Input<VbContext>>,
    events: Vec<Event>,
    /// The core asked for a value at this height and round and has none yet.
    pending_value: Option<(Height, Round)>,
    /// Score vectors held, per height, one per validator.
    vectors: BTreeMap<Height, BTreeMap<PublicKey, SignedScoreVector>>,
    /// Values seen at the height in progress, by id.
    values: HashMap<ValueId, EpochValue>,
    /// The decision in progress came through catch-up.
    synced: bool,
    status: ConsensusStatus,
}

impl Io {
    fn send<T: Serialize>(&self, kind: MessageKind, message: &T) {
        if self.status.halted {
            return;
        }
        let envelope =
            seal(self.signer.keypair(), self.config.network, kind, codec::encode(message));
        self.peers.broadcast(&envelope);
    }

    fn publish_vote(&self, vote: &malachitebft_core_types::SignedVote<VbContext>) {
        self.send(MessageKind::Vote, &Signed::from(vote.clone()));
        if self.config.byzantine.equivocate {
            let mut other = vote.message.clone();
            other.value = match other.value {
                NilOrVal::Nil => NilOrVal::Val(ValueId([0xee; 32])),
                NilOrVal::Val(_) => NilOrVal::Nil,
            };
            self.send(MessageKind::Vote, &Signed::from(self.signer.vote(other)));
        }
    }

    fn schedule(&mut self, timeout: Timeout) {
        let (Some(height), tx) = (self.height, self.tx.clone()) else { return };
        let after = self.config.timeouts.duration_for(timeout);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Command::Timeout(height, timeout)).await;
        });
        if let Some(old) = self.timers.insert(timeout, timer) {
            old.abort();
        }
    }

    fn cancel_all(&mut self) {
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
    }

    /// Proposes the value for the pending request if the vectors allow: at once when every
    /// validator's vector is in, or when `force`d (half the propose timeout passed) with 2/3.
    fn try_propose(&mut self, force: bool) {
        let (Some((height, round)), Some(set)) = (self.pending_value, self.set.as_ref()) else {
            return;
        };
        let Some(held) = self.vectors.get(&height) else { return };
        let Some(mut value) = value::build(height, set, &self.verifier, held.values()) else {
            return;
        };
        if value.vectors.len() < set.validators().len() && !force {
            return;
        }
        if self.config.byzantine.bad_aggregate
            && let Some(w) = value.aggregate.first_mut()
        {
            *w = w.wrapping_add(1);
        }
        tracing::debug!(%height, %round, vectors = value.vectors.len(), "proposing");
        self.values.insert(value.id(), value.clone());
        self.pending_value = None;
        self.followups.push_back(Input::Propose(LocallyProposedValue::new(height, round, value)));
    }

    fn wal_append(&mut self, height: Height, input: Input<VbContext>) {
        if self.wal.height() != height || self.status.halted {
            return;
        }
        let Ok(entry) = WalEntry::try_from(input) else { return };
        if let Err(e) = self.wal.append(&entry) {
            // A vote that is not on disk must not be sent: after a restart we could sign a
            // different one. Stop voting; the operator fixes the disk and restarts.
            tracing::error!(error = %e, "consensus WAL write failed; this node stops voting");
            self.status.halted = true;
        }
    }

    fn on_synced_value(&mut self, response: ValueResponse<VbContext>, proposer: crate::Address) {
        let cert = &response.certificate;
        let Ok(value) = codec::decode::<EpochValue>("synced value", &response.value_bytes) else {
            tracing::warn!(height = %cert.height, "synced value does not decode");
            return;
        };
        if value.id() != cert.value_id {
            tracing::warn!(height = %cert.height, "synced value is not the certified one");
            return;
        }
        let validity = match self.set.as_ref() {
            Some(set) => value::check(&value, cert.height, set, &self.verifier).is_ok(),
            None => false,
        };
        self.values.insert(cert.value_id, value.clone());
        self.synced = true;
        let pv = ProposedValue {
            height: cert.height,
            round: cert.round,
            valid_round: Round::Nil,
            proposer,
            value,
            validity: Validity::from_bool(validity),
        };
        self.followups.push_back(Input::ProposedValue(pv, ValueOrigin::Sync));
    }

    async fn handle(
        &mut self,
        effect: Effect<VbContext>,
    ) -> Result<Resume<VbContext>, ConsensusError> {
        let ctx = self.ctx;
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.cancel_all();
                r.resume_with(())
            }
            Effect::CancelTimeout(timeout, r) => {
                if let Some(timer) = self.timers.remove(&timeout) {
                    timer.abort();
                }
                r.resume_with(())
            }
            Effect::ScheduleTimeout(timeout, r) => {
                self.schedule(timeout);
                r.resume_with(())
            }
            Effect::StartRound(height, round, proposer, _role, r) => {
                tracing::debug!(%height, %round, %proposer, "round starts");
                self.status.round = round.as_i64();
                self.pending_value = None;
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                match &msg {
                    SignedConsensusMsg::Vote(v) => self.publish_vote(v),
                    SignedConsensusMsg::Proposal(p) => {
                        self.send(MessageKind::Proposal, &Signed::from(p.clone()))
                    }
                }
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                match msg {
                    LivenessMsg::Vote(v) => self.send(MessageKind::Vote, &Signed::from(v)),
                    LivenessMsg::PolkaCertificate(c) => {
                        self.send(MessageKind::PolkaCertificate, &PolkaWire::from(c))
                    }
                    LivenessMsg::SkipRoundCertificate(c) => {
                        self.send(MessageKind::RoundCertificate, &RoundWire::from(c))
                    }
                }
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.send(MessageKind::Vote, &Signed::from(v));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.send(MessageKind::RoundCertificate, &RoundWire::from(c));
                r.resume_with(())
            }
            Effect::GetValue(height, round, timeout, r) => {
                self.pending_value = Some((height, round));
                self.try_propose(false);
                if self.pending_value.is_some() {
                    // Wait for the missing vectors for half the propose timeout, then propose
                    // with what holds 2/3 (if anything does).
                    let after = self.config.timeouts.duration_for(timeout) / 2;
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(Command::ProposeNow(height, round)).await;
                    });
                }
                r.resume_with(())
            }
            // The value travels whole in its proposal, which the core re-publishes itself.
            Effect::RestreamProposal(.., r) => r.resume_with(()),
            Effect::CertVerifiedSyncValue(response, proposer, r) => {
                self.on_synced_value(response, proposer);
                r.resume_with(())
            }
            Effect::CertRejectedSyncValue(peer, height, error, r) => {
                tracing::warn!(%peer, %height, %error, "a peer's decision did not verify");
                r.resume_with(())
            }
            Effect::Decide(certificate, _, r) => {
                self.events.push(Event::Decided(certificate));
                r.resume_with(())
            }
            Effect::Finalize(_, _, evidence, r) => {
                self.events.push(Event::Finalized(evidence));
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => r.resume_with(self.signer.vote(vote)),
            Effect::SignProposal(proposal, r) => r.resume_with(self.signer.proposal(proposal)),
            Effect::VerifySignature(msg, key, r) => {
                let valid = match &msg.message {
                    ConsensusMsg::Vote(v) => {
                        self.verifier.verify(Domain::Vote, v, &msg.signature, &key)
                    }
                    ConsensusMsg::Proposal(p) => {
                        self.verifier.verify(Domain::Proposal, p, &msg.signature, &key)
                    }
                };
                r.resume_with(valid)
            }
            Effect::VerifyCommitCertificate(cert, set, thresholds, r) => r.resume_with(
                self.verifier.verify_commit_certificate(&ctx, &cert, &set, thresholds).await,
            ),
            Effect::VerifyExtendedCommitCertificate(cert, set, thresholds, policy, r) => r
                .resume_with(
                    self.verifier
                        .verify_extended_commit_certificate(&ctx, &cert, &set, thresholds, policy)
                        .await,
                ),
            Effect::VerifyPolkaCertificate(cert, set, thresholds, r) => r.resume_with(
                self.verifier.verify_polka_certificate(&ctx, &cert, &set, thresholds).await,
            ),
            Effect::VerifyRoundCertificate(cert, set, thresholds, r) => r.resume_with(
                self.verifier.verify_round_certificate(&ctx, &cert, &set, thresholds).await,
            ),
            Effect::WalAppend(height, input, r) => {
                self.wal_append(height, input);
                r.resume_with(())
            }
            // Vote extensions are disabled at every height.
            Effect::ExtendVote(.., r) => r.resume_with(None),
            Effect::VerifyVoteExtension(.., r) => {
                r.resume_with(Err(VoteExtensionError::InvalidVoteExtension))
            }
        })
    }
}

struct Node {
    state: Option<State<VbContext>>,
    io: Io,
    /// This validator's epochs not started yet.
    epochs: BTreeMap<Height, Epoch>,
    /// The WAL's height in progress, replayed when that epoch starts again.
    replay: Option<(Height, Vec<WalEntry>)>,
    /// Envelopes from before the first height, and proposals for heights not started.
    early: VecDeque<Envelope>,
    /// Heights decided here (the most recent ones).
    decided: BTreeSet<Height>,
    height_started: Instant,
    sync_in_flight: bool,
    last_sync: Option<Instant>,
    status_tx: watch::Sender<ConsensusStatus>,
}

impl Node {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.io.config.regossip.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_regossip = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                command = rx.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if last_regossip.elapsed() >= self.io.config.regossip {
                        self.regossip();
                        last_regossip = Instant::now();
                    }
                    self.maybe_sync();
                }
            }
            self.io.status.peers_connected = self.io.peers.connected();
            self.status_tx.send_replace(self.io.status.clone());
        }
        self.io.cancel_all();
        self.io.peers.close();
    }

    fn current_height(&self) -> Option<Height> {
        self.io.height
    }

    fn is_decided(&self, height: Height) -> bool {
        self.decided.contains(&height)
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Envelope(envelope) => self.on_envelope(envelope).await,
            Command::Epoch(epoch) => self.on_epoch(*epoch).await,
            Command::Timeout(height, timeout) => {
                if Some(height) == self.current_height() {
                    self.io.timers.remove(&timeout);
                    self.feed(Input::TimeoutElapsed(timeout)).await;
                }
            }
            Command::ProposeNow(height, round) => {
                if self.io.pending_value == Some((height, round)) {
                    self.io.try_propose(true);
                    self.drain().await;
                }
            }
            Command::Synced(height, from, bytes) => self.on_synced(height, from, bytes).await,
        }
    }

    fn refuse(&mut self, why: &str, sender: &PublicKey) {
        tracing::debug!(%sender, why, "consensus message refused");
        self.io.status.refused_messages += 1;
    }

    async fn on_envelope(&mut self, envelope: Envelope) {
        if self.state.is_none() {
            if self.early.len() < EARLY {
                self.early.push_back(envelope);
            }
            return;
        }
        let sender = envelope.sender;
        let payload = &envelope.payload;
        match envelope.kind {
            MessageKind::Vote => match codec::decode::<Signed<Vote>>("vote", payload) {
                Ok(v) if v.message.validator.0 == sender => self.feed(Input::Vote(v.into())).await,
                Ok(_) => self.refuse("vote relayed by another validator", &sender),
                Err(_) => self.refuse("undecodable vote", &sender),
            },
            MessageKind::Proposal => match codec::decode::<Signed<Proposal>>("proposal", payload) {
                Ok(p) if p.message.proposer.0 == sender => self.on_proposal(p, envelope).await,
                Ok(_) => self.refuse("proposal relayed by another validator", &sender),
                Err(_) => self.refuse("undecodable proposal", &sender),
            },
            MessageKind::ScoreVector => {
                match codec::decode::<SignedScoreVector>("score vector", payload) {
                    Ok(v) if v.vector.validator == sender => self.on_vector(v).await,
                    Ok(_) => self.refuse("vector relayed by another validator", &sender),
                    Err(_) => self.refuse("undecodable score vector", &sender),
                }
            }
            MessageKind::PolkaCertificate => {
                match codec::decode::<PolkaWire>("polka certificate", payload) {
                    Ok(c) => self.feed(Input::PolkaCertificate(c.into())).await,
                    Err(_) => self.refuse("undecodable polka certificate", &sender),
                }
            }
            MessageKind::RoundCertificate => {
                match codec::decode::<RoundWire>("round certificate", payload) {
                    Ok(c) => self.feed(Input::RoundCertificate(c.into())).await,
                    Err(_) => self.refuse("undecodable round certificate", &sender),
                }
            }
            // Values travel whole in proposals; nobody honest sends parts.
            MessageKind::ProposalPart => self.refuse("proposal part", &sender),
        }
    }

    async fn on_proposal(&mut self, p: Signed<Proposal>, envelope: Envelope) {
        let Some(height) = self.current_height() else { return };
        let proposal = &p.message;
        if proposal.height > height {
            if self.early.len() < EARLY {
                self.early.push_back(envelope);
            }
            return;
        }
        if proposal.height < height || self.is_decided(height) {
            return;
        }
        // Only a proposal its proposer signed is judged (and can be held against it).
        if !self.io.verifier.verify(Domain::Proposal, proposal, &p.signature, &proposal.proposer.0)
        {
            self.refuse("proposal signature", &envelope.sender);
            return;
        }
        let Some(set) = self.io.set.clone() else { return };
        let expected = self.io.ctx.select_proposer(&set, height, proposal.round).address;
        if expected != proposal.proposer {
            self.refuse(
                "proposal from a validator that is not the round's proposer",
                &envelope.sender,
            );
            return;
        }
        let verdict = value::check(&proposal.value, height, &set, &self.io.verifier);
        if let Err(refusal) = &verdict {
            tracing::warn!(%height, round = %proposal.round, proposer = %proposal.proposer, %refusal, "proposal voted nil");
            self.io.status.bad_proposals += 1;
            let evidence = Evidence {
                height: height.0,
                round: proposal.round.as_u32().unwrap_or(0),
                validator: proposal.proposer.0,
                kind: EvidenceKind::BadProposal,
                detail: format!(
                    "{{\"refusal\":\"{}\",\"reason\":{:?},\"value_id\":\"{}\"}}",
                    refusal.code(),
                    refusal.to_string(),
                    proposal.value.id()
                ),
            };
            self.io.host.evidence(&evidence).await;
        }
        // Only the round's proposer gets here, but it may send many values: keep a bounded few.
        if self.io.values.len() < MAX_VALUES {
            self.io.values.insert(proposal.value.id(), proposal.value.clone());
        }
        let pv = ProposedValue {
            height,
            round: proposal.round,
            valid_round: proposal.pol_round,
            proposer: proposal.proposer,
            value: proposal.value.clone(),
            validity: Validity::from_bool(verdict.is_ok()),
        };
        self.feed(Input::Proposal(p.into())).await;
        self.feed(Input::ProposedValue(pv, ValueOrigin::Consensus)).await;
    }

    async fn on_vector(&mut self, v: SignedScoreVector) {
        let h = v.vector.height;
        // Past heights are done; far future ones would only evict the heights that matter.
        let ahead = (VECTOR_HEIGHTS as u64).saturating_sub(2);
        if self.current_height().is_some_and(|c| h < c || h.0 > c.0.saturating_add(ahead)) {
            return;
        }
        if !v.verify(&self.io.verifier) || v.vector.weights.len() > value::MAX_UIDS {
            self.refuse("score vector signature or size", &v.vector.validator);
            return;
        }
        self.keep_vector(v);
        if self.io.pending_value.is_some_and(|(ph, _)| ph == h) {
            self.io.try_propose(false);
            self.drain().await;
        }
    }

    fn keep_vector(&mut self, v: SignedScoreVector) {
        let h = v.vector.height;
        let held = self.io.vectors.entry(h).or_default();
        if held.len() < crate::stake::MAX_VALIDATORS {
            held.entry(v.vector.validator).or_insert(v);
        }
        if let Some(current) = self.current_height() {
            self.io.vectors.retain(|h, _| h.0.saturating_add(1) >= current.0);
        }
        // Over the bound, the furthest future goes: the heights in progress are what matter.
        while self.io.vectors.len() > VECTOR_HEIGHTS {
            self.io.vectors.pop_last();
        }
    }

    async fn on_epoch(&mut self, epoch: Epoch) {
        if self.current_height().is_some_and(|c| epoch.height <= c) && self.state.is_some() {
            tracing::debug!(height = %epoch.height, "epoch already started; ignored");
            return;
        }
        let vector = ScoreVector {
            height: epoch.height,
            validator: self.io.signer.public(),
            weights: epoch.weights.clone(),
            evidence_root: epoch.evidence_root,
        };
        let signed = SignedScoreVector::sign(&self.io.signer, vector);
        self.io.send(MessageKind::ScoreVector, &signed);
        // Heights before the previous one are over: make room for this one.
        self.io.vectors.retain(|h, _| h.0.saturating_add(1) >= epoch.height.0);
        self.keep_vector(signed);
        self.io.status.validators = epoch.validators.validators().len();
        let height = epoch.height;
        self.epochs.insert(height, epoch);
        while self.epochs.len() > VECTOR_HEIGHTS {
            self.epochs.pop_first();
        }
        if let Some(current) = self.current_height()
            && !self.is_decided(current)
        {
            tracing::warn!(abandoned = %current, next = %height, "starting a new epoch before the last one was decided here");
        }
        if let Some(epoch) = self.epochs.remove(&height) {
            self.start_height(epoch).await;
        }
    }

    async fn start_height(&mut self, epoch: Epoch) {
        let height = epoch.height;
        let set = epoch.validators;
        let replay = match self.replay.take() {
            Some((h, entries)) if h == height => Some(entries),
            _ => None,
        };
        if replay.is_none()
            && let Err(e) = self.io.wal.start_height(height)
        {
            tracing::error!(error = %e, "cannot reset the consensus WAL; this node stops voting");
            self.io.status.halted = true;
        }
        self.io.cancel_all();
        self.io.height = Some(height);
        self.io.set = Some(set.clone());
        self.io.pending_value = None;
        self.io.values.clear();
        self.io.synced = false;
        self.height_started = Instant::now();
        self.last_sync = None;
        self.io.status.height = Some(height.0);
        self.io.status.round = -1;
        self.io.status.decided = false;
        if self.state.is_none() {
            let params = Params {
                address: crate::Address(self.io.signer.public()),
                threshold_params: Default::default(),
                value_payload: ValuePayload::ProposalAndParts,
                enabled: true,
            };
            self.state = Some(State::new(self.io.ctx, height, set.clone(), params, QUEUE, 256));
        }
        let restart = replay.is_some();
        self.feed(Input::StartHeight(height, set, restart, None, VoteExtensionPolicy::Disabled))
            .await;
        if let Some(entries) = replay {
            tracing::info!(%height, entries = entries.len(), "replaying the consensus WAL");
            let inputs: Vec<Input<VbContext>> = entries.into_iter().map(Input::from).collect();
            if let Some(state) = self.state.as_mut() {
                state.index_wal_entries(inputs.iter());
            }
            for input in inputs {
                self.feed(input).await;
            }
            if let Some(state) = self.state.as_mut() {
                state.reset_entries_index();
            }
        }
        let early: Vec<Envelope> = self.early.drain(..).collect();
        for envelope in early {
            Box::pin(self.on_envelope(envelope)).await;
        }
    }

    /// Feeds `input` to the core, then whatever the effects queued, then acts on decisions.
    async fn feed(&mut self, input: Input<VbContext>) {
        self.io.followups.push_back(input);
        self.drain().await;
    }

    async fn drain(&mut self) {
        while let Some(input) = self.io.followups.pop_front() {
            let Some(state) = self.state.as_mut() else {
                self.io.followups.clear();
                return;
            };
            let io = &mut self.io;
            let result: Result<(), malachitebft_core_consensus::Error<VbContext>> = process!(
                input: input,
                state: state,
                metrics: &(),
                with: effect => io.handle(effect).await
            );
            if let Err(e) = result {
                tracing::debug!(error = %e, "consensus input refused");
            }
            let events: Vec<Event> = self.io.events.drain(..).collect();
            for event in events {
                match event {
                    Event::Decided(certificate) => self.on_decided(certificate).await,
                    Event::Finalized(evidence) => self.on_finalized(evidence).await,
                }
            }
        }
    }

    async fn on_decided(&mut self, certificate: CommitCertificate<VbContext>) {
        let height = certificate.height;
        if self.is_decided(height) {
            return;
        }
        let decided = self.state.as_ref().and_then(|s| s.decided_value()).map(|(_, v)| v);
        let value = decided
            .filter(|v| v.id() == certificate.value_id)
            .or_else(|| self.io.values.get(&certificate.value_id).cloned());
        let Some(value) = value else {
            tracing::error!(%height, value_id = %certificate.value_id, "decided a value this node never saw");
            return;
        };
        let proposer = match self.io.set.as_ref() {
            Some(set) => self.io.ctx.select_proposer(set, height, certificate.round).address.0,
            None => PublicKey([0; 32]),
        };
        let round = certificate.round.as_u32().unwrap_or(0);
        let decide_ms =
            u64::try_from(self.height_started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let decided = DecidedHeight {
            value_id: certificate.value_id,
            decision: Decision { value, certificate: CommitWire::from(certificate) },
            proposer,
            decide_ms,
            synced: self.io.synced,
        };
        tracing::info!(%height, round, value_id = %decided.value_id, decide_ms, synced = decided.synced, "height decided");
        self.io.host.decided(&decided).await;
        self.decided.insert(height);
        while self.decided.len() > 64 {
            self.decided.pop_first();
        }
        let s = &mut self.io.status;
        s.decided = true;
        s.heights_decided += 1;
        s.heights_synced += u64::from(decided.synced);
        s.last_decided = Some(height.0);
        s.last_decide_ms = Some(decide_ms);
        s.last_rounds = Some(round + 1);
    }

    async fn on_finalized(&mut self, evidence: MisbehaviorEvidence<VbContext>) {
        let Some(height) = self.current_height() else { return };
        let mut found = Vec::new();
        for (address, pairs) in &evidence.votes {
            for (a, b) in pairs {
                found.push(Evidence {
                    height: height.0,
                    round: a.message.round.as_u32().unwrap_or(0),
                    validator: address.0,
                    kind: EvidenceKind::DoubleVote,
                    detail: format!(
                        "{{\"type\":\"{:?}\",\"first\":\"{}\",\"second\":\"{}\"}}",
                        a.message.vote_type,
                        vote_target(&a.message.value),
                        vote_target(&b.message.value)
                    ),
                });
            }
        }
        for (address, pairs) in &evidence.proposals {
            for (a, b) in pairs {
                found.push(Evidence {
                    height: height.0,
                    round: a.message.round.as_u32().unwrap_or(0),
                    validator: address.0,
                    kind: EvidenceKind::DoubleProposal,
                    detail: format!(
                        "{{\"first\":\"{}\",\"second\":\"{}\"}}",
                        a.message.value.id(),
                        b.message.value.id()
                    ),
                });
            }
        }
        for e in &found {
            tracing::warn!(height = e.height, round = e.round, validator = %e.validator, kind = ?e.kind, "equivocation");
            self.io.host.evidence(e).await;
        }
        self.io.status.equivocations += found.len() as u64;
    }

    fn regossip(&self) {
        let Some(height) = self.current_height() else { return };
        if self.is_decided(height) {
            return;
        }
        let me = self.io.signer.public();
        if let Some(own) = self.io.vectors.get(&height).and_then(|h| h.get(&me)) {
            self.io.send(MessageKind::ScoreVector, own);
        }
    }

    /// Asks the peers for the decision of a height that has gone undecided here for
    /// `sync_after`: they may have decided it without us (we were down, or partitioned).
    fn maybe_sync(&mut self) {
        let Some(height) = self.current_height() else { return };
        let sync_after = self.io.config.sync_after;
        if self.is_decided(height)
            || self.sync_in_flight
            || self.height_started.elapsed() < sync_after
            || self.last_sync.is_some_and(|t| t.elapsed() < sync_after / 2)
        {
            return;
        }
        self.sync_in_flight = true;
        self.last_sync = Some(Instant::now());
        let (peers, tx) = (self.io.peers.clone(), self.io.tx.clone());
        tokio::spawn(async move {
            let (from, bytes) = match peers.fetch_decided(height.0).await {
                Some(found) => found,
                None => (PublicKey([0; 32]), Vec::new()),
            };
            let _ = tx.send(Command::Synced(height, from, bytes)).await;
        });
    }

    async fn on_synced(&mut self, height: Height, from: PublicKey, bytes: Vec<u8>) {
        self.sync_in_flight = false;
        if bytes.is_empty() || Some(height) != self.current_height() || self.is_decided(height) {
            return;
        }
        let decision = match codec::decode::<Decision>("decision", &bytes) {
            Ok(d) if d.certificate.height == height && d.value.height == height => d,
            _ => {
                self.refuse("decision that does not decode or is for another height", &from);
                return;
            }
        };
        tracing::info!(%height, peer = %from, "catching up on a height decided by the peers");
        let response = ValueResponse::new(
            peer_id(&from),
            codec::encode(&decision.value).into(),
            decision.certificate.into(),
        );
        self.feed(Input::SyncValueResponse(response)).await;
    }
}

/// A Malachite peer id for a hotkey: the identity multihash of its 32 bytes.
fn peer_id(key: &PublicKey) -> PeerId {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0x00, 0x20]);
    bytes.extend_from_slice(&key.0);
    PeerId::from_bytes(&bytes).expect("an identity multihash of 32 bytes is a valid peer id")
}

fn vote_target(value: &NilOrVal<ValueId>) -> String {
    match value {
        NilOrVal::Nil => "nil".to_owned(),
        NilOrVal::Val(id) => id.to_string(),
    }
}
