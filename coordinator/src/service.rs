//! The coordinator's state machine, independent of the transport: registrations, challenge
//! rounds, commitments timed by our own clock, sampling, verification and persistence.
//!
//! Connections ([`crate::session`]) feed it decoded frames; it answers through each worker's
//! outbox. Shared state sits behind one short-held mutex that is never held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use veribench_chain::{Chain, Metagraph};
use veribench_protocol::wire::{
    CommitmentMsg, ErrorCode, ErrorMsg, Message, OpenRequest, OpeningsMsg, Register,
    SignedChallenge, VerdictMsg, Welcome,
};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, DeviceSeed, PublicKey, Root, Seed, Shape, UnixMillis,
    Verdict, sample_rows, verify_openings,
};
use veribench_wallet::Keypair;

use crate::config::{CoordinatorConfig, secs};
use crate::metrics::Metrics;
use crate::store::{NewChallenge, Rejection, Store, StoreError, WorkerRecord};

/// Frames queued per connection before the coordinator treats the peer as too slow.
pub const OUTBOX_DEPTH: usize = 64;
/// RTT samples kept per connection; the median is subtracted from commitment times.
const RTT_SAMPLES: usize = 5;
/// How often heartbeats are persisted. One write per heartbeat would cap SQLite near 1,700
/// heartbeats/s (each a synchronous commit); batching makes liveness cost one transaction a second.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What a session's writer sends.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded frame.
    Frame(Vec<u8>),
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
    busy: Option<ChallengeId>,
}

#[derive(Debug)]
struct Connected {
    conn: u64,
    miner: PublicKey,
    devices: Vec<DeviceSlot>,
    outbox: mpsc::Sender<Outbound>,
    rtts: VecDeque<Duration>,
    last_seen: Instant,
}

#[derive(Debug)]
enum Phase {
    Sent,
    Committed { root: Root, rows: Vec<u32>, compute: Duration, asked: Instant },
    Verifying,
}

#[derive(Debug)]
struct Pending {
    worker: PublicKey,
    device: DeviceKey,
    challenge: Challenge,
    seed: DeviceSeed,
    sent: Instant,
    deadline: Instant,
    phase: Phase,
}

#[derive(Debug, Default)]
struct State {
    workers: HashMap<PublicKey, Connected>,
    pending: HashMap<ChallengeId, Pending>,
    nonces: HashMap<(PublicKey, u64), UnixMillis>,
    next_round: HashMap<PublicKey, Instant>,
    finished: HashMap<PublicKey, u64>,
    next_conn: u64,
    /// Liveness not yet written to the store (flushed in one transaction per [`FLUSH_EVERY`]).
    unflushed: HashMap<PublicKey, UnixMillis>,
    last_flush: Option<Instant>,
    /// The last metagraph read: only its hotkeys may register workers. `None` until the chain
    /// has answered once.
    metagraph: Option<Arc<Metagraph>>,
    /// Workers under a lease at the last score run: not challenged.
    leased: HashSet<PublicKey>,
}

/// A refused registration: what to persist and tell the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable rejection kind.
    pub kind: &'static str,
    /// Details for the operator and the peer.
    pub detail: String,
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
    verifiers: Semaphore,
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
        let abandoned = store.fail_unfinished(UnixMillis::now(), "coordinator_restart").await?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "failed challenges left unfinished by a previous run");
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Arc::new(Self {
            config,
            chain,
            keypair,
            store,
            metrics: Metrics::default(),
            state: Mutex::new(State::default()),
            verifiers: Semaphore::new(cores),
        }))
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

    /// Connected workers and challenges in flight, for gauges and the devnet table.
    pub fn load(&self) -> (usize, usize) {
        let s = self.state();
        (s.workers.len(), s.pending.len())
    }

    /// Challenges that reached a terminal status, per worker, since this process started.
    pub fn finished_rounds(&self) -> HashMap<PublicKey, u64> {
        self.state().finished.clone()
    }

    /// Persists and counts a refused input.
    pub async fn reject(&self, peer: &str, worker: Option<PublicKey>, kind: &str, detail: String) {
        tracing::warn!(peer, kind, %detail, "rejected peer input");
        self.metrics.rejected(kind);
        let rejection = Rejection {
            at: UnixMillis::now(),
            peer: peer.to_owned(),
            worker_key: worker,
            kind: kind.to_owned(),
            detail,
        };
        if let Err(e) = self.store.record_rejection(&rejection).await {
            tracing::error!(error = %e, "cannot persist a rejection");
        }
    }

    /// Checks a registration and, if it passes, records the worker and returns its outbox.
    pub async fn register(&self, reg: Register, peer: &str) -> Result<Registered, Refusal> {
        let now = UnixMillis::now();
        self.check_registration(&reg, now)?;
        let worker = reg.delegation.worker_key;
        let miner = reg.delegation.miner_hotkey;
        let record = WorkerRecord {
            worker_key: worker,
            miner_hotkey: miner,
            name: reg.name.clone(),
            address: peer.to_owned(),
            hardware_json: serde_json::to_string(&reg.hardware).unwrap_or_default(),
            devices: reg.devices.clone(),
        };
        let stored = async {
            self.store.upsert_worker(&record, now).await?;
            self.store.claim_devices(&worker, &miner, &reg.devices, now).await
        };
        let conflicted = stored
            .await
            .map_err(|e| Refusal { kind: "internal", detail: format!("storage: {e}") })?;
        for device in &conflicted {
            self.reject(peer, Some(worker), "device_conflict", format!("device {device} is claimed by more than one worker identity; none is credited for it")).await;
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
            .map(|key| DeviceSlot { key: key.clone(), class: device_class(key, &reg), busy: None })
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
                rtts: VecDeque::new(),
                last_seen: Instant::now(),
            },
        ) {
            let _ = old.outbox.try_send(Outbound::Close("replaced by a newer connection".into()));
        }
        let first = Instant::now() + self.jitter();
        s.next_round.entry(miner).or_insert(first);
        self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(worker = %worker, miner = %miner, devices = reg.devices.len(), peer, "worker registered");
        Ok(Registered { conn, worker, outbox: rx })
    }

    fn check_registration(&self, reg: &Register, now: UnixMillis) -> Result<(), Refusal> {
        let refuse = |kind, detail: String| Err(Refusal { kind, detail });
        let skew = secs(self.config.liveness.max_clock_skew_secs).as_millis() as u64;
        if reg.timestamp.0.abs_diff(now.0) > skew {
            return refuse(
                "stale_registration",
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
                    "chain_unavailable",
                    "the coordinator has not read the subnet's metagraph yet; retry later".into(),
                );
            }
            Some(false) => {
                return refuse(
                    "unknown_hotkey",
                    format!(
                        "miner hotkey {} is not registered on subnet {}",
                        d.miner_hotkey, self.config.chain.netuid
                    ),
                );
            }
            Some(true) => {}
        }
        if let Err(e) = veribench_wallet::verify_delegation(d, now) {
            return refuse("bad_delegation", e.to_string());
        }
        if !veribench_wallet::verify(&d.worker_key, &reg.signing_payload(), &reg.signature) {
            return refuse(
                "bad_signature",
                "the registration is not signed by its worker key".into(),
            );
        }
        if reg.devices.is_empty() {
            return refuse("no_devices", "a worker must offer at least one device".into());
        }
        let mut s = self.state();
        s.nonces.retain(|_, at| at.0.abs_diff(now.0) <= skew);
        if s.nonces.insert((d.worker_key, reg.nonce), reg.timestamp).is_some() {
            return refuse(
                "replayed_registration",
                format!("nonce {} was already used", reg.nonce),
            );
        }
        Ok(())
    }

    fn jitter(&self) -> Duration {
        let j = self.config.schedule.jitter_secs;
        secs(if j > 0.0 { rand::rng().random_range(0.0..j) } else { 0.0 })
    }

    /// A connection ended: the worker goes offline and its challenges in flight fail.
    pub async fn disconnect(&self, worker: &PublicKey, conn: u64) {
        let failed: Vec<ChallengeId> = {
            let mut s = self.state();
            if s.workers.get(worker).is_none_or(|c| c.conn != conn) {
                return; // replaced by a newer connection, which owns the state now
            }
            s.workers.remove(worker);
            let ids: Vec<ChallengeId> =
                s.pending.iter().filter(|(_, p)| &p.worker == worker).map(|(id, _)| *id).collect();
            for id in &ids {
                s.pending.remove(id);
                *s.finished.entry(*worker).or_default() += 1;
            }
            ids
        };
        let now = UnixMillis::now();
        for id in failed {
            self.fail(id, "disconnected", "the worker disconnected").await;
        }
        if let Err(e) = self.store.set_offline(worker, now).await {
            tracing::error!(error = %e, "cannot mark a worker offline");
        }
        tracing::info!(worker = %worker, "worker disconnected");
    }

    /// A sender into the worker's outbox (for the session's pings and error replies).
    pub fn outbox_of(&self, worker: &PublicKey) -> Option<mpsc::Sender<Outbound>> {
        self.state().workers.get(worker).map(|c| c.outbox.clone())
    }

    /// Records a WebSocket pong's round trip.
    pub fn record_rtt(&self, worker: &PublicKey, rtt: Duration) {
        if let Some(c) = self.state().workers.get_mut(worker) {
            if c.rtts.len() == RTT_SAMPLES {
                c.rtts.pop_front();
            }
            c.rtts.push_back(rtt);
        }
    }

    /// Handles one decoded frame from a registered worker, received at `arrived`.
    /// Returns a refusal to count as a strike against the connection.
    pub async fn on_message(
        &self,
        worker: &PublicKey,
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
            Message::Commitment(c) => self.on_commitment(worker, c, arrived).await,
            Message::Openings(o) => self.on_openings(worker, o).await,
            Message::Error(e) => {
                tracing::warn!(worker = %worker, code = ?e.code, message = %e.message, "worker reported an error");
                Ok(())
            }
            other => Err(Refusal {
                kind: "unexpected_message",
                detail: format!("a worker may not send {}", other.kind()),
            }),
        }
    }

    async fn on_commitment(
        &self,
        worker: &PublicKey,
        c: CommitmentMsg,
        arrived: Instant,
    ) -> Result<(), Refusal> {
        let now = UnixMillis::now();
        let unknown = || Refusal {
            kind: "unknown_challenge",
            detail: format!(
                "challenge {} is not awaiting a commitment from this worker",
                c.challenge_id
            ),
        };
        let (request, shape, late, compute, rtt) = {
            let mut guard = self.state();
            let s = &mut *guard;
            let rtt = s.workers.get(worker).map_or(Duration::ZERO, |w| median(&w.rtts));
            let p = s.pending.get_mut(&c.challenge_id).ok_or_else(unknown)?;
            if &p.worker != worker || p.device != c.device || !matches!(p.phase, Phase::Sent) {
                return Err(unknown());
            }
            let late = arrived > p.deadline || now > p.challenge.deadline;
            let elapsed = arrived.saturating_duration_since(p.sent);
            let compute = elapsed.saturating_sub(rtt).max(Duration::from_micros(1));
            let rows = sample_rows(
                &mut rand::rng(),
                p.challenge.shape.m,
                self.config.schedule.sampled_rows,
            );
            if !late {
                p.phase = Phase::Committed {
                    root: c.root,
                    rows: rows.clone(),
                    compute,
                    asked: Instant::now(),
                };
            }
            (
                OpenRequest { challenge_id: c.challenge_id, rows },
                p.challenge.shape,
                late,
                compute,
                rtt,
            )
        };
        if late {
            self.finish_failed(
                c.challenge_id,
                "deadline_missed",
                "the commitment arrived after the deadline",
            )
            .await;
            return Ok(());
        }
        let stored =
            self.store.mark_committed(c.challenge_id, now, c.root, ms(compute), ms(rtt)).await;
        log_transition(c.challenge_id, "committed", stored);
        tracing::debug!(challenge = %c.challenge_id, %shape, compute_ms = ms(compute), rtt_ms = ms(rtt), "commitment received");
        self.send(worker, &Message::OpenRequest(request));
        Ok(())
    }

    async fn on_openings(&self, worker: &PublicKey, o: OpeningsMsg) -> Result<(), Refusal> {
        let unknown = || Refusal {
            kind: "unknown_challenge",
            detail: format!(
                "challenge {} is not awaiting openings from this worker",
                o.challenge_id
            ),
        };
        let (challenge, seed, root, rows, compute, device) = {
            let mut s = self.state();
            let p = s.pending.get_mut(&o.challenge_id).ok_or_else(unknown)?;
            if &p.worker != worker {
                return Err(unknown());
            }
            let Phase::Committed { root, rows, compute, .. } =
                std::mem::replace(&mut p.phase, Phase::Verifying)
            else {
                return Err(unknown());
            };
            (p.challenge.clone(), p.seed, root, rows, compute, p.device.clone())
        };
        let id = challenge.id;
        log_transition(id, "verifying", self.store.mark_verifying(id, UnixMillis::now()).await);
        let started = Instant::now();
        let verdict = {
            let _permit = self.verifiers.acquire().await;
            let (mode, shape) = (challenge.mode, challenge.shape);
            tokio::task::spawn_blocking(move || {
                verify_openings(mode, shape, &seed, &root, &rows, &o.openings)
            })
            .await
        };
        let verdict = match verdict {
            Ok(verdict) => verdict,
            Err(e) => {
                // Our fault, not the worker's: fail without blaming its openings.
                self.finish_failed(id, "verifier_error", &e.to_string()).await;
                return Ok(());
            }
        };
        self.metrics.verify_latency.observe(started.elapsed());
        let now = UnixMillis::now();
        match &verdict {
            Verdict::Accepted => {
                let gflops = challenge.shape.ops() / compute.as_secs_f64() / 1e9;
                let credited = !self.store.is_conflicted(&device).await.unwrap_or(true);
                log_transition(
                    id,
                    "verified",
                    self.store.mark_verified(id, now, gflops, credited).await,
                );
                self.metrics.challenge("verified");
                tracing::info!(challenge = %id, worker = %worker, gflops, credited, "challenge verified");
            }
            Verdict::Rejected(reason) => {
                log_transition(
                    id,
                    "failed",
                    self.store.mark_failed(id, now, reason.code(), &reason.to_string()).await,
                );
                self.metrics.challenge("failed");
                tracing::warn!(challenge = %id, worker = %worker, reason = %reason, "challenge failed verification");
            }
        }
        self.release(id);
        self.send(worker, &Message::Verdict(VerdictMsg { challenge_id: id, verdict }));
        Ok(())
    }

    /// Removes a challenge from flight and frees its device.
    fn release(&self, id: ChallengeId) -> Option<PublicKey> {
        let mut s = self.state();
        let p = s.pending.remove(&id)?;
        if let Some(c) = s.workers.get_mut(&p.worker) {
            for slot in c.devices.iter_mut().filter(|d| d.busy == Some(id)) {
                slot.busy = None;
            }
        }
        *s.finished.entry(p.worker).or_default() += 1;
        Some(p.worker)
    }

    /// Fails a challenge in flight, tells its worker, persists the reason.
    async fn finish_failed(&self, id: ChallengeId, reason: &'static str, detail: &str) {
        if let Some(worker) = self.release(id) {
            let msg = Message::Error(ErrorMsg {
                code: ErrorCode::UnknownChallenge,
                message: format!("challenge {id} failed: {reason}: {detail}"),
            });
            self.send(&worker, &msg);
        }
        self.fail(id, reason, detail).await;
    }

    async fn fail(&self, id: ChallengeId, reason: &'static str, detail: &str) {
        self.metrics.challenge("failed");
        tracing::warn!(challenge = %id, reason, detail, "challenge failed");
        log_transition(
            id,
            "failed",
            self.store.mark_failed(id, UnixMillis::now(), reason, detail).await,
        );
    }

    /// Queues a frame for a worker; a full outbox means a peer that does not read, which is
    /// closed rather than buffered without bound.
    fn send(&self, worker: &PublicKey, msg: &Message) {
        let frame = veribench_protocol::wire::encode(msg);
        if let Some(c) = self.state().workers.get(worker)
            && c.outbox.try_send(Outbound::Frame(frame)).is_err()
        {
            let _ = c.outbox.try_send(Outbound::Close("not reading its frames".into()));
        }
    }

    /// Writes buffered liveness to the store, at most once per [`FLUSH_EVERY`].
    async fn flush_liveness(&self) {
        let batch: Vec<(PublicKey, UnixMillis)> = {
            let mut s = self.state();
            if s.last_flush.is_some_and(|t| t.elapsed() < FLUSH_EVERY) {
                return;
            }
            s.last_flush = Some(Instant::now());
            s.unflushed.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.store.touch_many(&batch).await {
            Ok(_) => self.metrics.liveness_flush.observe(started.elapsed()),
            Err(e) => {
                tracing::error!(error = %e, workers = batch.len(), "cannot persist heartbeats")
            }
        }
    }

    /// One scheduler step: start due rounds, enforce deadlines, drop silent workers.
    pub async fn tick(&self) {
        self.flush_liveness().await;
        let now = Instant::now();
        let offline_after = secs(self.config.liveness.offline_after_secs);
        let open_timeout = secs(self.config.schedule.open_timeout_secs);
        let (due, expired, timed_out, silent) = {
            let s = self.state();
            let due: Vec<PublicKey> =
                s.next_round.iter().filter(|(_, at)| **at <= now).map(|(m, _)| *m).collect();
            let expired: Vec<ChallengeId> = s
                .pending
                .iter()
                .filter(|(_, p)| matches!(p.phase, Phase::Sent) && now > p.deadline)
                .map(|(id, _)| *id)
                .collect();
            let timed_out: Vec<ChallengeId> = s.pending.iter().filter(|(_, p)| matches!(p.phase, Phase::Committed { asked, .. } if now > asked + open_timeout)).map(|(id, _)| *id).collect();
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
            (due, expired, timed_out, silent)
        };
        for id in expired {
            self.finish_failed(id, "deadline_missed", "no commitment before the deadline").await;
        }
        for id in timed_out {
            self.finish_failed(id, "open_timeout", "no openings within the open timeout").await;
        }
        for w in silent {
            tracing::warn!(worker = %w, "worker silent past the offline timeout; closing");
        }
        if self.config.schedule.enabled {
            for miner in due {
                self.start_round(miner).await;
            }
        }
    }

    /// Challenges every idle device of every connected worker of `miner` at the same instant, so
    /// one device cannot answer for two identities in turn.
    async fn start_round(&self, miner: PublicKey) {
        let interval = secs(self.config.schedule.interval_secs);
        let targets: Vec<(PublicKey, DeviceKey, DeviceClass)> = {
            let mut s = self.state();
            let has_workers = s.workers.values().any(|c| c.miner == miner);
            if !has_workers {
                s.next_round.remove(&miner);
                return;
            }
            let late_or_early =
                self.jitter().as_secs_f64() - self.config.schedule.jitter_secs / 2.0;
            let next = Instant::now() + secs(interval.as_secs_f64() + late_or_early);
            s.next_round.insert(miner, next);
            let leased = &s.leased;
            s.workers
                .iter()
                .filter(|(w, c)| c.miner == miner && !leased.contains(*w))
                .flat_map(|(w, c)| {
                    c.devices
                        .iter()
                        .filter(|d| d.busy.is_none())
                        .map(|d| (*w, d.key.clone(), d.class))
                })
                .collect()
        };
        let mut prepared = Vec::with_capacity(targets.len());
        let issued = UnixMillis::now();
        let deadline =
            UnixMillis(issued.0 + secs(self.config.schedule.deadline_secs).as_millis() as u64);
        for (worker, device, class) in targets {
            let new = NewChallenge {
                miner_hotkey: miner,
                worker_key: worker,
                device: device.clone(),
                mode: self.config.schedule.mode,
                shape: Shape::square(self.size_for(class)),
                seed: Seed(rand::rng().random()),
                issued_at: issued,
                deadline,
            };
            match self.store.insert_challenge(&new, issued).await {
                Ok(id) => prepared.push((worker, self.sign(id, &new))),
                Err(e) => tracing::error!(error = %e, "cannot persist a new challenge"),
            }
        }
        // Persist `sent` for the whole round before any frame leaves: a fast worker's commitment
        // may arrive before an await after the send would have run, and the state machine only
        // accepts a commitment for a challenge stored as sent.
        let now = UnixMillis::now();
        let mut ready = Vec::with_capacity(prepared.len());
        for (worker, signed) in prepared {
            let id = signed.challenge.id;
            if log_transition(id, "sent", self.store.mark_sent(id, now).await) {
                ready.push((worker, signed));
            }
        }
        // Everything is stored and signed: send all frames now, back to back.
        let sent_at = Instant::now();
        let deadline_at = sent_at + secs(self.config.schedule.deadline_secs);
        let mut unsent = Vec::new();
        {
            let mut s = self.state();
            for (worker, signed) in ready {
                let id = signed.challenge.id;
                let frame = veribench_protocol::wire::encode(&Message::Challenge(signed.clone()));
                let queued = s.workers.get_mut(&worker).and_then(|c| {
                    let slot = c
                        .devices
                        .iter_mut()
                        .find(|d| d.key == signed.device && d.busy.is_none())?;
                    c.outbox.try_send(Outbound::Frame(frame)).ok()?;
                    slot.busy = Some(id);
                    Some(())
                });
                if queued.is_none() {
                    unsent.push(id);
                    continue;
                }
                let seed = signed.challenge.device_seed(&signed.device);
                let pending = Pending {
                    worker,
                    device: signed.device,
                    challenge: signed.challenge,
                    seed,
                    sent: sent_at,
                    deadline: deadline_at,
                    phase: Phase::Sent,
                };
                s.pending.insert(id, pending);
                self.metrics.challenge("sent");
            }
        }
        // The worker left or its device got busy between storing and sending.
        for id in unsent {
            self.fail(id, "not_sent", "the worker or its device was gone when the round was sent")
                .await;
        }
    }

    fn size_for(&self, class: DeviceClass) -> u32 {
        let s = &self.config.schedule;
        match class {
            DeviceClass::Cpu => s.cpu_n,
            DeviceClass::Gpu { memory } => {
                // A, B and C must fit in half the device's memory: ≤ 3 · 4 · n² bytes.
                let fits = if memory == 0 {
                    u32::MAX
                } else {
                    ((memory as f64 / 24.0).sqrt() as u32) / 1024 * 1024
                };
                s.gpu_n.min(fits.max(1024))
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

/// Logs a transition the store could not write or refused (the stored challenge was not in a
/// state that allows it); returns whether it was applied.
fn log_transition(id: ChallengeId, to: &'static str, result: Result<bool, StoreError>) -> bool {
    match result {
        Ok(true) => true,
        Ok(false) => {
            tracing::error!(challenge = %id, to, "stored challenge was not in a state allowing this transition");
            false
        }
        Err(e) => {
            tracing::error!(challenge = %id, to, error = %e, "cannot persist a challenge transition");
            false
        }
    }
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

fn median(samples: &VecDeque<Duration>) -> Duration {
    let mut v: Vec<Duration> = samples.iter().copied().collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(Duration::ZERO)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
