//! The coordinator's state machine, independent of the transport: registrations, challenge
//! rounds, commitments timed by our own clock, sampling, verification and persistence.
//!
//! Connections ([`crate::session`]) feed it decoded frames; it answers through each worker's
//! outbox. Shared state sits behind one short-held mutex that is never held across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veribench_chain::{Chain, Metagraph};
use veribench_protocol::wire::{
    CommitmentMsg, ErrorMsg, Limits, Message, OpenRequest, OpeningsMsg, Register, SignedChallenge,
    Welcome,
};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, DeviceSeed, Mode, PublicKey, Seed, Shape, UnixMillis,
    Verdict, sample_rows, verify_openings,
};
use veribench_wallet::Keypair;

use crate::config::{CoordinatorConfig, secs};
use crate::failure::Failure;
use crate::metrics::Metrics;
use crate::refusal_kind::RefusalKind;
use crate::refusals::RefusalBuffer;
use crate::store::{CommitRecord, NewChallenge, Store, StoreError, WorkerRecord};
use crate::timing::{ModeRates, RttSample, RttSamples, compute_time};

mod housekeeping;
mod record;
mod skew;

use record::Outcome;
pub use skew::Arrival;

/// Frames queued per connection before the coordinator treats the peer as too slow.
pub const OUTBOX_DEPTH: usize = 64;

/// When a challenge's frame was taken from the outbox to be written, set by the session's
/// writer: the instant the challenge's clock starts. A frame queued behind others (late in a
/// large synchronized round) is not charged its wait, and the worker cannot receive it earlier.
pub type WrittenAt = Arc<std::sync::OnceLock<Instant>>;

/// What a session's writer sends.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// An encoded challenge frame; the writer records when it starts writing it.
    Challenge(Vec<u8>, WrittenAt),
    /// A WebSocket ping carrying this payload.
    Ping(Vec<u8>),
    /// Close the connection, telling the peer why.
    Close(String),
}

/// Device families, for sizing challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceClass {
    /// A host CPU (`cpu:` key).
    Cpu,
    /// A GPU, with its memory when known.
    Gpu {
        /// Device memory in bytes, 0 when unknown.
        memory: u64,
    },
}

#[derive(Debug)]
struct DeviceSlot {
    key: DeviceKey,
    class: DeviceClass,
    /// What the device can plausibly reach, from the worker's hardware report.
    peak: ModeRates,
    busy: Option<ChallengeId>,
}

#[derive(Debug)]
struct Connected {
    conn: u64,
    miner: PublicKey,
    devices: Vec<DeviceSlot>,
    outbox: mpsc::Sender<Outbound>,
    rtts: RttSamples,
    last_seen: Instant,
}

#[derive(Debug)]
enum Phase {
    Sent,
    Committed {
        commitment: CommitRecord,
        rows: Vec<u32>,
        compute: Duration,
        /// The device's plausible peak in the challenge's mode, GOP/s.
        peak_gops: f64,
        asked: Instant,
    },
    Verifying,
    /// Decided: its verdict or failure is being written. Only the write ends it (no deadline,
    /// no disconnection), and the worker hears of it once it is stored.
    Recording,
}

impl Phase {
    /// Whether the worker still owes the next step (a commitment or openings): only then can a
    /// timeout or a disconnection fail the challenge.
    fn awaits_worker(&self) -> bool {
        matches!(self, Phase::Sent | Phase::Committed { .. })
    }
}

#[derive(Debug)]
struct Pending {
    worker: PublicKey,
    /// The connection it was sent on: its open request and verdict go there or nowhere.
    conn: u64,
    device: DeviceKey,
    challenge: Challenge,
    seed: DeviceSeed,
    /// When the frame was queued; the deadline runs from here.
    sent: Instant,
    /// When the writer took the frame: the clock starts here (the queue time until then).
    written: WrittenAt,
    deadline: Instant,
    phase: Phase,
    /// Which retry of a busy device it is (0: a round's challenge). Refused busy again, it is
    /// retried only while this is below `schedule.busy_retries`, so a worker answering `busy` to
    /// everything adds at most that many challenges a round per device.
    busy_retry: u32,
}

impl Pending {
    /// The instant the challenge's clock started.
    fn started(&self) -> Instant {
        self.written.get().copied().unwrap_or(self.sent)
    }
}

/// One device to challenge.
#[derive(Debug)]
struct Target {
    worker: PublicKey,
    miner: PublicKey,
    device: DeviceKey,
    class: DeviceClass,
    /// Which retry of a busy device this is (0: a round's challenge).
    busy_retry: u32,
}

/// Whose devices one round challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Round {
    /// One miner's workers: each miner has a round timer of its own.
    Miner(PublicKey),
    /// Every connected worker, on one timer (`schedule.synchronized`).
    Everyone,
}

impl Round {
    fn covers(&self, miner: &PublicKey) -> bool {
        match self {
            Round::Miner(m) => m == miner,
            Round::Everyone => true,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    workers: HashMap<PublicKey, Connected>,
    pending: HashMap<ChallengeId, Pending>,
    /// When each round timer fires next: one per miner, or one for everyone when synchronized.
    next_round: HashMap<Round, Instant>,
    /// Devices refused as busy: when to challenge each again on its own, and which retry that
    /// is. At most one entry per device of a connected worker: a disconnection drops the
    /// worker's.
    busy_retries: HashMap<(PublicKey, DeviceKey), (Instant, u32)>,
    finished: HashMap<PublicKey, u64>,
    next_conn: u64,
    /// Liveness not yet written to the store. One write per heartbeat would cap SQLite near
    /// 1,700 heartbeats/s (each a synchronous commit); housekeeping writes them in one
    /// transaction a second.
    unflushed: HashMap<PublicKey, UnixMillis>,
    /// The last metagraph read: only its hotkeys may register workers. `None` until the chain
    /// has answered once.
    metagraph: Option<Arc<Metagraph>>,
    /// Workers under a lease at the last score run: not challenged.
    leased: HashSet<PublicKey>,
    /// Set by [`Coordinator::begin_shutdown`]: no new rounds or registrations.
    shutting_down: bool,
    /// Whether the store was taking writes at the last housekeeping pass (to log changes once).
    store_was_ok: bool,
    /// When stale `online` flags were last cleared.
    last_sweep: Option<Instant>,
}

/// A refused registration or frame: what to persist and tell the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was refused.
    pub kind: RefusalKind,
    /// Details for the operator and the peer.
    pub detail: String,
    /// The challenge the refused frame named, told to the peer with the code.
    pub challenge: Option<ChallengeId>,
}

impl Refusal {
    /// A refusal concerning no challenge.
    pub fn new(kind: RefusalKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), challenge: None }
    }

    /// A refusal of a frame about challenge `id`.
    pub fn about(kind: RefusalKind, id: ChallengeId, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), challenge: Some(id) }
    }
}

/// An accepted registration: the session's handle.
#[derive(Debug)]
pub struct Registered {
    /// Identifies this connection among the worker's reconnects.
    pub conn: u64,
    /// The worker's identity.
    pub worker: PublicKey,
    /// Frames for the session's writer.
    pub outbox: mpsc::Receiver<Outbound>,
}

/// The coordinator.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    chain: Arc<dyn Chain>,
    keypair: Keypair,
    store: Store,
    metrics: Metrics,
    state: Mutex<State>,
    /// Refusals counted since the last write (a lock of their own: refusals come in floods).
    refusals: Mutex<RefusalBuffer>,
    verifiers: Semaphore,
    /// This coordinator, for the tasks it spawns.
    me: Weak<Coordinator>,
    /// The tasks writing challenge outcomes (waited for at shutdown).
    records: TaskTracker,
    /// Cancelled when shutdown stops waiting for the database: outcome writes give up.
    stop_recording: CancellationToken,
    /// The consensus node, when `[consensus]` is on (set once at start).
    consensus: std::sync::OnceLock<veribench_consensus::NodeClient>,
}

impl Coordinator {
    /// A coordinator over an opened store and a chain, signing with `keypair`. At start-up
    /// every challenge a previous run left unfinished is failed, so none stays in flight forever.
    pub async fn new(
        config: CoordinatorConfig,
        keypair: Keypair,
        store: Store,
        chain: Arc<dyn Chain>,
    ) -> Result<Arc<Self>, StoreError> {
        let restart = Failure::CoordinatorRestart.as_str();
        let abandoned = store.fail_unfinished(UnixMillis::now(), restart).await?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "failed challenges left unfinished by a previous run");
        }
        // No connection survives a restart: a worker the last run left `online` must not keep its
        // device claims active by that stale flag (the update applies even if a row is corrupt).
        if let Err(e) = store.mark_stale_offline(UnixMillis(u64::MAX)).await {
            tracing::error!(error = %e, "cannot mark the previous run's workers offline");
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let refusals = Mutex::new(RefusalBuffer::new(config.refusals.max_buffered));
        Ok(Arc::new_cyclic(|me| Self {
            config,
            chain,
            keypair,
            store,
            metrics: Metrics::default(),
            state: Mutex::new(State { store_was_ok: true, ..State::default() }),
            refusals,
            verifiers: Semaphore::new(cores),
            me: me.clone(),
            records: TaskTracker::new(),
            stop_recording: CancellationToken::new(),
            consensus: std::sync::OnceLock::new(),
        }))
    }

    /// The consensus node, when `[consensus]` is on.
    pub fn consensus(&self) -> Option<&veribench_consensus::NodeClient> {
        self.consensus.get()
    }

    /// Attaches the consensus node (once; later calls are ignored).
    pub fn set_consensus(&self, node: veribench_consensus::NodeClient) {
        let _ = self.consensus.set(node);
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The key that signs challenges.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The keypair (challenges, weights).
    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The chain.
    pub fn chain(&self) -> &dyn Chain {
        self.chain.as_ref()
    }

    /// The last metagraph read, if any.
    pub fn metagraph(&self) -> Option<Arc<Metagraph>> {
        self.state().metagraph.clone()
    }

    pub(crate) fn set_metagraph(&self, mg: Arc<Metagraph>) {
        self.state().metagraph = Some(mg);
    }

    /// Workers leased at the last score run (they are not challenged).
    pub fn leased(&self) -> HashSet<PublicKey> {
        self.state().leased.clone()
    }

    pub(crate) fn set_leased(&self, leased: HashSet<PublicKey>) {
        self.state().leased = leased;
    }

    /// Stops challenging `worker` right away (a lease in force was just reported); the next
    /// score run recomputes the whole set from the stored leases.
    pub(crate) fn add_leased(&self, worker: PublicKey) {
        self.state().leased.insert(worker);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than stopping would; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an ordered shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.state().shutting_down
    }

    /// Connected workers and challenges in flight, for gauges and the devnet table.
    pub fn load(&self) -> (usize, usize) {
        let s = self.state();
        (s.workers.len(), s.pending.len())
    }

    /// Challenges that reached a terminal status, per worker, since this process started.
    pub fn finished_rounds(&self) -> HashMap<PublicKey, u64> {
        self.state().finished.clone()
    }

    /// Counts a refused input: in the metrics at once, in the store's `rejections` table with
    /// the next write (at most a second later, see [`crate::refusals`]). `worker` is the worker
    /// the input concerns: a registered one, or for a refused registration the key it claims,
    /// which is recorded as a claim only.
    pub async fn reject(
        &self,
        peer: &str,
        worker: Option<PublicKey>,
        kind: RefusalKind,
        detail: String,
    ) {
        self.metrics.rejected(kind.as_str());
        let registered = worker.filter(|w| self.state().workers.contains_key(w));
        let claimed = if registered.is_none() { worker } else { None };
        let now = UnixMillis::now();
        // Cut once, for the store and the log alike.
        let detail = crate::detail::bounded(&detail);
        let opened = self.refusals().add(peer, kind, registered, claimed, &detail, now);
        // One warning per group and write interval; a flood of the same refusal is not a flood
        // of log lines.
        if opened {
            tracing::warn!(peer, kind = kind.as_str(), %detail, "rejected peer input");
        } else {
            tracing::debug!(peer, kind = kind.as_str(), %detail, "rejected peer input");
        }
    }

    fn refusals(&self) -> MutexGuard<'_, RefusalBuffer> {
        self.refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes counted refusals to the store at most once per second (every time when `force`),
    /// and at most once a minute deletes old rejection rows and registration nonces too old to
    /// matter, so both tables stay bounded.
    async fn persist_refusals(&self, force: bool) {
        let now = Instant::now();
        let (batch, prune) = {
            let mut buffer = self.refusals();
            (buffer.take_due(now, force), buffer.prune_due(now))
        };
        if !batch.is_empty()
            && let Err(e) = self.store.record_rejections(&batch).await
        {
            tracing::error!(error = %e, groups = batch.len(), "cannot persist rejections; retrying");
            self.refusals().restore(batch);
        }
        if !prune {
            return;
        }
        let r = &self.config.refusals;
        let at = UnixMillis::now();
        let retention = secs(r.retention_days * 86_400.0).as_millis() as u64;
        let aged = UnixMillis(at.0.saturating_sub(retention));
        match self.store.prune_rejections(aged, r.max_rows).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned old rejection rows"),
            Err(e) => tracing::error!(error = %e, "cannot prune rejections"),
        }
        // A registration signed more than the skew ago is refused as stale: its nonce can go.
        let skew = secs(self.config.liveness.max_clock_skew_secs).as_millis() as u64;
        let used = UnixMillis(at.0.saturating_sub(skew.saturating_mul(2)));
        if let Err(e) = self.store.prune_registration_nonces(used).await {
            tracing::error!(error = %e, "cannot prune registration nonces");
        }
    }

    /// Checks a registration that arrived as `arrival` says and, if it passes, records the
    /// worker and returns its outbox.
    pub async fn register(
        &self,
        reg: Register,
        peer: &str,
        arrival: Arrival,
    ) -> Result<Registered, Refusal> {
        let now = arrival.at;
        if self.state().shutting_down {
            return Err(Refusal::new(
                RefusalKind::ShuttingDown,
                "the coordinator is shutting down; reconnect later",
            ));
        }
        self.check_registration(&reg, now).await?;
        let skew_ms = self.check_clock(&reg, &arrival)?;
        let worker = reg.delegation.worker_key;
        let miner = reg.delegation.miner_hotkey;
        let record = WorkerRecord {
            worker_key: worker,
            miner_hotkey: miner,
            name: reg.name.clone(),
            address: peer.to_owned(),
            hardware_json: serde_json::to_string(&reg.hardware).unwrap_or_default(),
            devices: reg.devices.clone(),
            clock_skew_ms: Some(skew_ms),
        };
        // Claims first: a registration naming a device another identity holds is refused whole,
        // before anything of it is stored.
        let since = self.claims_active_since(now);
        let stored = async {
            let held = self.store.claim_devices(&worker, &miner, &reg.devices, now, since).await?;
            if held.is_empty() {
                self.store.upsert_worker(&record, now).await?;
            }
            Ok::<_, StoreError>(held)
        };
        let held = self.store.health().observe(stored.await).map_err(store_refusal)?;
        if let Some(first) = held.first() {
            let more = match held.len() {
                1 => String::new(),
                n => format!(" (and {} more of its devices)", n - 1),
            };
            return Err(Refusal::new(
                RefusalKind::DeviceConflict,
                format!(
                    "device {} is held by worker {}{more}: the oldest active claim keeps a device \
                     until it has been inactive for {} s",
                    first.device, first.holder, self.config.claims.expiry_secs
                ),
            ));
        }

        let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
        let welcome = Message::Welcome(Welcome {
            coordinator: self.public_key(),
            heartbeat_interval_ms: secs(self.config.liveness.heartbeat_secs).as_millis() as u64,
            server_time: now,
        });
        let _ = tx.try_send(Outbound::Frame(veribench_protocol::wire::encode(&welcome)));
        let devices = reg
            .devices
            .iter()
            .map(|key| DeviceSlot {
                key: key.clone(),
                class: device_class(key, &reg),
                peak: self.config.timing.device_peak(key.as_str(), &reg.hardware),
                busy: None,
            })
            .collect();
        let mut s = self.state();
        s.next_conn += 1;
        let conn = s.next_conn;
        if let Some(old) = s.workers.insert(
            worker,
            Connected {
                conn,
                miner,
                devices,
                outbox: tx,
                rtts: RttSamples::default(),
                last_seen: Instant::now(),
            },
        ) {
            let _ = old.outbox.try_send(Outbound::Close("replaced by a newer connection".into()));
        }
        let first = Instant::now() + self.jitter();
        s.next_round.entry(self.round_of(miner)).or_insert(first);
        self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %worker, miner = %miner, devices = reg.devices.len(), peer, "worker registered");
        Ok(Registered { conn, worker, outbox: rx })
    }

    async fn check_registration(&self, reg: &Register, now: UnixMillis) -> Result<(), Refusal> {
        let refuse = |kind, detail: String| Err(Refusal::new(kind, detail));
        let skew = secs(self.config.liveness.max_clock_skew_secs).as_millis() as u64;
        // Replay protection: a Register signed long ago (or far ahead) is not accepted.
        if reg.timestamp.0.abs_diff(now.0) > skew {
            return refuse(
                RefusalKind::StaleRegistration,
                format!(
                    "registration timestamp {} is more than {skew} ms from our clock {}",
                    reg.timestamp.0, now.0
                ),
            );
        }
        let d = &reg.delegation;
        let registered =
            self.state().metagraph.as_ref().map(|mg| mg.neuron(&d.miner_hotkey).is_some());
        match registered {
            None => {
                return refuse(
                    RefusalKind::ChainUnavailable,
                    "the coordinator has not read the subnet's metagraph yet; retry later".into(),
                );
            }
            Some(false) => {
                return refuse(
                    RefusalKind::UnknownHotkey,
                    format!(
                        "miner hotkey {} is not registered on subnet {}",
                        d.miner_hotkey, self.config.chain.netuid
                    ),
                );
            }
            Some(true) => {}
        }
        if let Err(e) = veribench_wallet::verify_delegation(d, now) {
            return refuse(RefusalKind::BadDelegation, e.to_string());
        }
        if !veribench_wallet::verify(&d.worker_key, &reg.signing_payload(), &reg.signature) {
            return refuse(
                RefusalKind::BadSignature,
                "the registration is not signed by its worker key".into(),
            );
        }
        if reg.devices.is_empty() {
            return refuse(
                RefusalKind::NoDevices,
                "a worker must offer at least one device".into(),
            );
        }
        // Only now, with the signature verified, is the nonce stored: strangers write nothing.
        // Stored, not kept in memory, so a restarted coordinator refuses the replay too.
        let used = self.store.use_registration_nonce(&d.worker_key, reg.nonce, reg.timestamp);
        match self.store.health().observe(used.await) {
            Ok(true) => Ok(()),
            Ok(false) => refuse(
                RefusalKind::ReplayedRegistration,
                format!("nonce {} was already used", reg.nonce),
            ),
            Err(e) => Err(store_refusal(e)),
        }
    }

    /// The round timer a worker of `miner` is challenged by.
    fn round_of(&self, miner: PublicKey) -> Round {
        if self.config.schedule.synchronized { Round::Everyone } else { Round::Miner(miner) }
    }

    /// Claims with activity after this are active (`claims.expiry_secs` before `now`).
    fn claims_active_since(&self, now: UnixMillis) -> UnixMillis {
        let expiry = secs(self.config.claims.expiry_secs).as_millis();
        UnixMillis(now.0.saturating_sub(u64::try_from(expiry).unwrap_or(u64::MAX)))
    }

    /// Whether `worker` holds `device`'s oldest active claim: only that identity is credited for
    /// the device.
    async fn holds(&self, worker: &PublicKey, device: &DeviceKey) -> Result<bool, StoreError> {
        let since = self.claims_active_since(UnixMillis::now());
        Ok(self.store.device_holder(device, since).await?.as_ref() == Some(worker))
    }

    /// Challenges `worker`'s `device` again, alone, after `schedule.busy_retry_secs` times a
    /// random factor in [0.5, 1.5) (so that devices refused by several validators at once do
    /// not all come back at the same instant); the miner's round timer is left as it is.
    fn retry_busy(&self, worker: PublicKey, device: DeviceKey, retry: u32) {
        let factor: f64 = rand::rng().random_range(0.5..1.5);
        let at = Instant::now() + secs(self.config.schedule.busy_retry_secs * factor);
        self.state().busy_retries.insert((worker, device), (at, retry));
    }

    fn jitter(&self) -> Duration {
        let j = self.config.schedule.jitter_secs;
        secs(if j > 0.0 { rand::rng().random_range(0.0..j) } else { 0.0 })
    }

    /// A connection ended: the worker goes offline and the challenges that were waiting on it
    /// fail (`disconnected`, or `coordinator_shutdown` when we are the ones closing). Decided
    /// challenges are left to their writes.
    pub async fn disconnect(&self, worker: &PublicKey, conn: u64) {
        let (waiting, failure) = {
            let mut s = self.state();
            if s.workers.get(worker).is_none_or(|c| c.conn != conn) {
                return; // replaced by a newer connection, which owns the state now
            }
            s.workers.remove(worker);
            s.unflushed.remove(worker);
            s.busy_retries.retain(|(w, _), _| w != worker);
            let waiting: Vec<ChallengeId> = s
                .pending
                .iter()
                .filter(|(_, p)| &p.worker == worker && p.conn == conn && p.phase.awaits_worker())
                .map(|(id, _)| *id)
                .collect();
            let failure =
                if s.shutting_down { Failure::CoordinatorShutdown } else { Failure::Disconnected };
            (waiting, failure)
        };
        for id in waiting {
            self.conclude(id, Outcome::failed(failure.clone(), "the connection ended"));
        }
        let offline = self.store.set_offline(worker, UnixMillis::now()).await;
        if let Err(e) = self.store.health().observe(offline) {
            // The periodic sweep of stale `online` flags catches up once the store is back.
            tracing::error!(error = %e, worker = %worker, "cannot mark a worker offline");
        }
        tracing::info!(worker = %worker, "worker disconnected");
    }

    /// A sender into the worker's outbox (for the session's pings and error replies).
    pub fn outbox_of(&self, worker: &PublicKey) -> Option<mpsc::Sender<Outbound>> {
        self.state().workers.get(worker).map(|c| c.outbox.clone())
    }

    /// Records a WebSocket pong's round trip.
    pub fn record_rtt(&self, worker: &PublicKey, sample: RttSample) {
        if let Some(c) = self.state().workers.get_mut(worker) {
            c.rtts.push(sample);
        }
    }

    /// Handles one decoded frame from a registered worker, received at `arrived` on its
    /// connection `conn`. Returns a refusal to count as a strike against the connection.
    pub async fn on_message(
        &self,
        worker: &PublicKey,
        conn: u64,
        msg: Message,
        arrived: Instant,
    ) -> Result<(), Refusal> {
        if let Some(c) = self.state().workers.get_mut(worker) {
            c.last_seen = arrived;
        }
        match msg {
            Message::Heartbeat(_) => {
                self.metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                self.state().unflushed.insert(*worker, UnixMillis::now());
                self.metrics.heartbeat_latency.observe(arrived.elapsed());
                Ok(())
            }
            Message::Commitment(c) => self.on_commitment(worker, c, arrived),
            Message::Openings(o) => self.on_openings(worker, o),
            Message::Error(e) => {
                self.on_worker_error(worker, conn, &e);
                Ok(())
            }
            other => Err(Refusal::new(
                RefusalKind::UnexpectedMessage,
                format!("a worker may not send {}", other.kind()),
            )),
        }
    }

    fn on_commitment(
        &self,
        worker: &PublicKey,
        c: CommitmentMsg,
        arrived: Instant,
    ) -> Result<(), Refusal> {
        let now = UnixMillis::now();
        let unknown = || {
            Refusal::about(
                RefusalKind::UnknownChallenge,
                c.challenge_id,
                format!(
                    "challenge {} is not awaiting a commitment from this worker",
                    c.challenge_id
                ),
            )
        };
        let cap = self.config.timing.max_rtt_credit();
        let (request, shape, late, compute, credit, conn) = {
            let mut guard = self.state();
            let s = &mut *guard;
            let p = s.pending.get_mut(&c.challenge_id).ok_or_else(unknown)?;
            if &p.worker != worker || p.device != c.device || !matches!(p.phase, Phase::Sent) {
                return Err(unknown());
            }
            let Some(connected) = s.workers.get(worker).filter(|w| w.conn == p.conn) else {
                return Err(unknown());
            };
            // SPEC §8.1: only round trips completed before the challenge was sent count, the
            // smallest of them, bounded by the kernel's TCP round trip and the configured cap.
            let started = p.started();
            let credit = connected.rtts.credit(started, cap);
            if let Some(grown) = connected.rtts.largest_since(started)
                && grown > credit.credited.saturating_mul(2) + Duration::from_millis(5)
            {
                tracing::info!(challenge = %c.challenge_id, worker = %worker, credited_ms = ms(credit.credited), during_ms = ms(grown), "round trip grew during the challenge; not credited");
            }
            let peak_gops = connected
                .devices
                .iter()
                .find(|d| d.key == p.device)
                .map_or(0.0, |d| d.peak.of(p.challenge.mode));
            let late = arrived > p.deadline || now > p.challenge.deadline;
            let elapsed = arrived.saturating_duration_since(started);
            let compute = compute_time(elapsed, credit);
            let rows = sample_rows(
                &mut rand::rng(),
                p.challenge.shape.m,
                self.rows_to_open(p.challenge.mode, p.challenge.shape),
            );
            if !late {
                let commitment = CommitRecord {
                    at: now,
                    root: c.root,
                    compute_ms: ms(compute),
                    rtt_ms: ms(credit.credited),
                };
                p.phase = Phase::Committed {
                    commitment,
                    rows: rows.clone(),
                    compute,
                    peak_gops,
                    asked: Instant::now(),
                };
            }
            (
                OpenRequest { challenge_id: c.challenge_id, rows },
                p.challenge.shape,
                late,
                compute,
                credit,
                p.conn,
            )
        };
        if late {
            let detail = "the commitment arrived after the deadline";
            self.conclude(c.challenge_id, Outcome::failed(Failure::DeadlineMissed, detail));
            return Ok(());
        }
        // The open request goes out now, whatever the database is doing: the intermediate write
        // is best effort, and the verdict's write records the commitment if it was lost.
        self.send_on(worker, conn, &Message::OpenRequest(request));
        self.write_behind_committed(c.challenge_id);
        tracing::debug!(challenge = %c.challenge_id, %shape, compute_ms = ms(compute), rtt_ms = ms(credit.credited), basis = ?credit.basis, "commitment received");
        Ok(())
    }

    fn on_openings(&self, worker: &PublicKey, o: OpeningsMsg) -> Result<(), Refusal> {
        let unknown = || {
            Refusal::about(
                RefusalKind::UnknownChallenge,
                o.challenge_id,
                format!("challenge {} is not awaiting openings from this worker", o.challenge_id),
            )
        };
        let check = {
            let mut s = self.state();
            let connected = s.workers.get(worker).map(|c| c.conn);
            let p = s.pending.get_mut(&o.challenge_id).ok_or_else(unknown)?;
            if &p.worker != worker || connected != Some(p.conn) {
                return Err(unknown());
            }
            let Phase::Committed { commitment, rows, compute, peak_gops, .. } =
                std::mem::replace(&mut p.phase, Phase::Verifying)
            else {
                return Err(unknown());
            };
            record::Check {
                id: o.challenge_id,
                challenge: p.challenge.clone(),
                seed: p.seed,
                commitment,
                rows,
                compute,
                peak_gops,
                worker: *worker,
                device: p.device.clone(),
            }
        };
        // Off the connection's read loop: verification takes a core for a while, and writing its
        // outcome may wait for the database.
        if let Some(me) = self.me.upgrade() {
            self.records.spawn(async move { me.verify(check, o).await });
        }
        Ok(())
    }

    /// Queues a frame for a worker's connection `conn`, if that connection is still the worker's
    /// (a frame about a challenge must not reach a later connection). A full outbox means a peer
    /// that does not read, which is closed rather than buffered without bound.
    fn send_on(&self, worker: &PublicKey, conn: u64, msg: &Message) {
        let frame = veribench_protocol::wire::encode(msg);
        if let Some(c) = self.state().workers.get(worker).filter(|c| c.conn == conn)
            && c.outbox.try_send(Outbound::Frame(frame)).is_err()
        {
            let _ = c.outbox.try_send(Outbound::Close("not reading its frames".into()));
        }
    }

    /// One scheduler step, which never waits on the database for a decision: fail challenges
    /// past their deadline or open timeout, drop silent workers, start due rounds (not while
    /// the store is failing or the coordinator is stopping).
    pub async fn tick(&self) {
        let now = Instant::now();
        let offline_after = secs(self.config.liveness.offline_after_secs);
        let open_timeout = secs(self.config.schedule.open_timeout_secs);
        let (due, retries, expired, timed_out, silent, stopping) = {
            let mut s = self.state();
            let due: Vec<Round> =
                s.next_round.iter().filter(|(_, at)| **at <= now).map(|(r, _)| *r).collect();
            let retries: Vec<(PublicKey, DeviceKey, u32)> = s
                .busy_retries
                .iter()
                .filter(|(_, (at, _))| *at <= now)
                .map(|((worker, device), (_, retry))| (*worker, device.clone(), *retry))
                .collect();
            for (worker, device, _) in &retries {
                s.busy_retries.remove(&(*worker, device.clone()));
            }
            let expired: Vec<ChallengeId> = s
                .pending
                .iter()
                .filter(|(_, p)| matches!(p.phase, Phase::Sent) && now > p.deadline)
                .map(|(id, _)| *id)
                .collect();
            let timed_out: Vec<ChallengeId> = s
                .pending
                .iter()
                .filter(|(_, p)| {
                    matches!(p.phase, Phase::Committed { asked, .. } if now > asked + open_timeout)
                })
                .map(|(id, _)| *id)
                .collect();
            let silent: Vec<PublicKey> = s
                .workers
                .iter()
                .filter(|(_, c)| now.saturating_duration_since(c.last_seen) > offline_after)
                .map(|(k, _)| *k)
                .collect();
            for w in &silent {
                if let Some(c) = s.workers.get(w) {
                    let _ = c.outbox.try_send(Outbound::Close(
                        "no heartbeat within the offline timeout".into(),
                    ));
                }
            }
            (due, retries, expired, timed_out, silent, s.shutting_down)
        };
        for id in expired {
            let detail = "no commitment before the deadline";
            self.conclude(id, Outcome::failed(Failure::DeadlineMissed, detail));
        }
        for id in timed_out {
            let detail = "no openings within the open timeout";
            self.conclude(id, Outcome::failed(Failure::OpenTimeout, detail));
        }
        for w in silent {
            tracing::warn!(worker = %w, "worker silent past the offline timeout; closing");
        }
        if self.config.schedule.enabled && !stopping {
            for round in due {
                self.start_round(round).await;
            }
            if !retries.is_empty() {
                self.retry_devices(retries).await;
            }
        }
    }

    /// Challenges each of `devices` refused as busy, if its worker is still connected and not
    /// leased and the device is idle (otherwise the miner's next round covers it).
    async fn retry_devices(&self, devices: Vec<(PublicKey, DeviceKey, u32)>) {
        let started = Instant::now();
        let targets = {
            let s = self.state();
            if !self.store.health().is_ok() {
                tracing::debug!("the store is failing; busy devices wait for their next round");
                return;
            }
            devices
                .into_iter()
                .filter(|(worker, _, _)| !s.leased.contains(worker))
                .filter_map(|(worker, device, busy_retry)| {
                    let c = s.workers.get(&worker)?;
                    let slot = c.devices.iter().find(|d| d.key == device && d.busy.is_none())?;
                    Some(Target { worker, miner: c.miner, device, class: slot.class, busy_retry })
                })
                .collect::<Vec<_>>()
        };
        self.issue(started, targets, None).await;
    }

    /// Challenges every idle, unleased device of every connected worker `round` covers within one
    /// short window, so one device cannot answer for two identities in turn (of one miner, or of
    /// any miners when synchronized). The whole round is stored in one transaction, signed and
    /// encoded, then its frames are queued back to back.
    async fn start_round(&self, round: Round) {
        let started = Instant::now();
        let interval = secs(self.config.schedule.interval_secs);
        let targets: Vec<Target> = {
            let mut s = self.state();
            let has_workers = s.workers.values().any(|c| round.covers(&c.miner));
            if !has_workers {
                s.next_round.remove(&round);
                return;
            }
            let late_or_early =
                self.jitter().as_secs_f64() - self.config.schedule.jitter_secs / 2.0;
            let next = Instant::now() + secs(interval.as_secs_f64() + late_or_early);
            s.next_round.insert(round, next);
            if !self.store.health().is_ok() {
                // Nothing can be recorded: skip this round rather than queue a burst for later.
                tracing::debug!(?round, "the store is failing; round skipped");
                return;
            }
            let leased = &s.leased;
            s.workers
                .iter()
                .filter(|(w, c)| round.covers(&c.miner) && !leased.contains(*w))
                .flat_map(|(w, c)| {
                    c.devices.iter().filter(|d| d.busy.is_none()).map(|d| Target {
                        worker: *w,
                        miner: c.miner,
                        device: d.key.clone(),
                        class: d.class,
                        busy_retry: 0,
                    })
                })
                .collect()
        };
        self.issue(started, targets, Some(round)).await;
    }

    /// Stores, signs and queues one challenge per target, the frames back to back; `round` is
    /// the round they are, none for busy devices' retries.
    async fn issue(&self, started: Instant, targets: Vec<Target>, round: Option<Round>) {
        if targets.is_empty() {
            return;
        }
        let issued = UnixMillis::now();
        let deadline_span = secs(self.config.schedule.deadline_secs);
        let deadline = UnixMillis(issued.0 + deadline_span.as_millis() as u64);
        let busy_retries: Vec<u32> = targets.iter().map(|t| t.busy_retry).collect();
        let news: Vec<NewChallenge> = targets
            .into_iter()
            .map(|t| NewChallenge {
                miner_hotkey: t.miner,
                worker_key: t.worker,
                device: t.device,
                mode: self.config.schedule.mode,
                shape: self.shape_for(t.class),
                seed: Seed(rand::rng().random()),
                issued_at: issued,
                deadline,
            })
            .collect();
        // Persist the whole round as `sent` before any frame leaves: a fast worker's commitment
        // may arrive before an await after the send would have run, and the state machine only
        // accepts a commitment for a challenge stored as sent.
        let stored = self.store.insert_sent_challenges(&news, issued).await;
        let ids = match self.store.health().observe(stored) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, challenges = news.len(), "cannot persist a round; it is skipped");
                return;
            }
        };
        let stored = started.elapsed();
        // Signed and encoded outside the state lock, which the queueing below holds.
        let frames: Vec<(PublicKey, SignedChallenge, Vec<u8>, u32)> = ids
            .into_iter()
            .zip(&news)
            .zip(busy_retries)
            .map(|((id, new), busy_retry)| {
                let signed = self.sign(id, new);
                let frame = veribench_protocol::wire::encode(&Message::Challenge(signed.clone()));
                (new.worker_key, signed, frame, busy_retry)
            })
            .collect();
        let mut unsent = Vec::new();
        {
            let mut s = self.state();
            for (worker, signed, frame, busy_retry) in frames {
                let id = signed.challenge.id;
                let written = WrittenAt::default();
                let queued = s.workers.get_mut(&worker).and_then(|c| {
                    let slot = c
                        .devices
                        .iter_mut()
                        .find(|d| d.key == signed.device && d.busy.is_none())?;
                    c.outbox.try_send(Outbound::Challenge(frame, written.clone())).ok()?;
                    slot.busy = Some(id);
                    Some(c.conn)
                });
                let Some(conn) = queued else {
                    unsent.push(id);
                    continue;
                };
                // The deadline runs from the queueing; the clock from the writing (`written`), so
                // a device late in a large round is not charged the frames before it.
                let sent = Instant::now();
                let seed = signed.challenge.device_seed(&signed.device);
                let pending = Pending {
                    worker,
                    conn,
                    device: signed.device,
                    challenge: signed.challenge,
                    seed,
                    sent,
                    written,
                    deadline: sent + deadline_span,
                    phase: Phase::Sent,
                    busy_retry,
                };
                s.pending.insert(id, pending);
                self.metrics.challenge("sent");
            }
        }
        let issued_in = started.elapsed();
        if round.is_some() {
            self.metrics.round_issued(news.len(), stored, issued_in);
        }
        tracing::debug!(
            challenges = news.len(),
            store_ms = ms(stored),
            issue_ms = ms(issued_in),
            ?round,
            "round issued"
        );
        // The worker left or its device got busy between storing and sending.
        for id in unsent {
            let detail = "the worker or its device was gone when the round was sent";
            self.record_unsent(id, Outcome::failed(Failure::NotSent, detail));
        }
    }

    /// Rows to ask a challenge of `shape` to open: the configured sample, fewer if their
    /// openings could exceed the frames this coordinator accepts (SPEC §8.4).
    fn rows_to_open(&self, mode: Mode, shape: Shape) -> u32 {
        let sampled = self.config.schedule.sampled_rows_for(mode);
        rows_to_open(sampled, shape, &self.config.wire_limits())
    }

    fn shape_for(&self, class: DeviceClass) -> Shape {
        let s = &self.config.schedule;
        match class {
            DeviceClass::Cpu => Shape { m: s.cpu_n, k: s.cpu_k, n: s.cpu_n },
            DeviceClass::Gpu { memory } => {
                // A, B and C must fit in half the device's memory: with m = n and k, n ≤ fits,
                // 4 · (2·n·k + n²) ≤ 12 · fits² bytes ≤ memory / 2.
                let fits = if memory == 0 {
                    u32::MAX
                } else {
                    (((memory as f64 / 24.0).sqrt() as u32) / 1024 * 1024).max(1024)
                };
                let n = s.gpu_n.min(fits);
                Shape { m: n, k: s.gpu_k.min(fits), n }
            }
        }
    }

    fn sign(&self, id: ChallengeId, new: &NewChallenge) -> SignedChallenge {
        let challenge = Challenge {
            id,
            seed: new.seed,
            mode: new.mode,
            shape: new.shape,
            issued_at: new.issued_at,
            deadline: new.deadline,
        };
        let mut signed = SignedChallenge {
            challenge,
            device: new.device.clone(),
            coordinator: self.public_key(),
            signature: veribench_protocol::Signature([0; 64]),
        };
        signed.signature = self.keypair.sign(&signed.signed_bytes());
        signed
    }
}

/// `sampled` rows, capped so that their openings fit in one frame of `limits` (at n = 65536
/// and 16 MiB frames: 63). Validated configurations open at least one row.
fn rows_to_open(sampled: u32, shape: Shape, limits: &Limits) -> u32 {
    sampled.min(veribench_protocol::wire::max_open_rows(shape, limits))
}

/// A registration the store could not take: the worker retries later when the database is
/// unavailable (a coordinator-side refusal), anything else is our internal error.
fn store_refusal(e: StoreError) -> Refusal {
    let kind = if crate::store::is_outage(&e) {
        RefusalKind::StoreUnavailable
    } else {
        RefusalKind::Internal
    };
    Refusal::new(kind, format!("storage: {e}"))
}

/// The class of a device from its key and the worker's hardware report.
fn device_class(key: &DeviceKey, reg: &Register) -> DeviceClass {
    if key.as_str().starts_with("cpu:") {
        return DeviceClass::Cpu;
    }
    let memory =
        reg.hardware.gpus.iter().find(|g| g.uuid == key.as_str()).map_or(0, |g| g.memory_bytes);
    DeviceClass::Gpu { memory }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use veribench_protocol::MAX_DIM;
    use veribench_protocol::wire::{MAX_FRAME_BYTES, openings_frame_bound};

    /// No open request asks for openings that could not fit in a frame the coordinator accepts.
    #[test]
    fn rows_asked_are_capped_to_what_one_frame_holds() {
        let limits = CoordinatorConfig::default().wire_limits();
        let widest = Shape::square(MAX_DIM);
        assert_eq!(rows_to_open(256, widest, &limits), 63);
        assert!(openings_frame_bound(widest, 63) <= MAX_FRAME_BYTES as u64);
        assert_eq!(rows_to_open(32, widest, &limits), 32);
        assert_eq!(rows_to_open(460, Shape::square(4096), &limits), 460);
        assert_eq!(rows_to_open(460, Shape::square(16_384), &limits), 254);
        // Never more rows than the product has.
        assert_eq!(rows_to_open(32, Shape { m: 5, k: 8, n: 8 }, &limits), 5);
        // A coordinator accepting smaller frames asks for fewer rows.
        let small = Limits { max_frame_bytes: 1 << 20, ..limits };
        let rows = rows_to_open(256, widest, &small);
        assert_eq!(rows, 3);
        assert!(openings_frame_bound(widest, rows) <= 1 << 20);
        assert!(openings_frame_bound(widest, rows + 1) > 1 << 20);
    }
}
