//! One connection to a coordinator, from the TCP connect to its end.
//!
//! 1. connect (`ws://`, or `wss://` through rustls trusting the webpki roots and any extra CA);
//! 2. send `Register`, wait for `Welcome` (or an `Error`, which ends the attempt);
//! 3. check the coordinator key against the pinned one, if any;
//! 4. serve: a dedicated reader task polls the socket all the time (so tungstenite answers the
//!    coordinator's Pings even while a challenge computes) and forwards frames to the main loop,
//!    which sends heartbeats, admits challenges through the [`ChallengeGuard`], runs them on
//!    blocking threads, answers open requests and logs verdicts.
//!
//! Computations outlive their connection: a device stays busy until its challenge ends, and the
//! result of a challenge whose connection is gone is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};
use veribench_kernels::{Backend, BackendError, CommittedRun, run_challenge};
use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    ChallengeId, CommitmentMsg, DeviceKey, ErrorCode, ErrorMsg, HardwareInfo, Heartbeat, Message,
    OpenRequest, OpeningsMsg, PublicKey, Register, SignedChallenge, Verdict, VerdictMsg, Welcome,
};

use super::config::WorkerConfig;
use super::guard::ChallengeGuard;
use super::identity::WorkerIdentity;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a committed run is kept after its deadline when no verdict arrives.
const RUN_RETENTION_MS: u64 = 10 * 60 * 1000;
/// How long to wait for the coordinator's Close after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a connection attempt ended before or at the Welcome.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// TCP, TLS or WebSocket handshake failure.
    #[error("cannot connect: {0}")]
    Connect(#[source] Box<tungstenite::Error>),
    /// The handshake or the Welcome took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The TLS settings could not be built.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The WebSocket failed after the handshake.
    #[error("WebSocket error: {0}")]
    Socket(#[source] Box<tungstenite::Error>),
    /// The coordinator closed before the Welcome.
    #[error("the coordinator closed the connection before welcoming this worker")]
    ClosedEarly,
    /// The coordinator refused the registration.
    #[error("the coordinator refused the registration ({code:?}): {message}")]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The first frame was not a Welcome.
    #[error("expected a Welcome, got {0}")]
    Unexpected(&'static str),
    /// The coordinator's key is not the pinned one.
    #[error("the coordinator presented key {got}, but {pinned} is pinned; disconnecting")]
    WrongCoordinator {
        /// The key it presented.
        got: PublicKey,
        /// The pinned key.
        pinned: PublicKey,
    },
}

/// How a welcomed connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Shutdown was requested; the connection was closed cleanly.
    Shutdown,
    /// The connection broke or the coordinator closed it.
    Lost(String),
}

/// What a connection needs from its worker; shared by every connection of one daemon.
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub pinned: Option<PublicKey>,
    pub connector: Option<Connector>,
    pub backend: Arc<dyn Backend>,
    pub guard: Arc<Mutex<ChallengeGuard>>,
    pub hardware: HardwareInfo,
    pub devices: Vec<DeviceKey>,
    pub limits: Limits,
}

/// Locks the guard, shrugging off poisoning (its state stays consistent across a panic).
pub(crate) fn lock(guard: &Mutex<ChallengeGuard>) -> MutexGuard<'_, ChallengeGuard> {
    guard.lock().unwrap_or_else(|e| e.into_inner())
}

/// The rustls connector for `wss://`: webpki roots plus the PEM certificates in `tls_ca`.
pub(crate) fn tls_connector(config: &WorkerConfig) -> Result<Option<Connector>, ConnectionError> {
    let tls = config.is_tls().map_err(|e| ConnectionError::Tls(e.to_string()))?;
    if !tls {
        if config.tls_ca.is_some() {
            warn!("tls_ca is set but the coordinator URL is ws://; it is ignored");
        }
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &config.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ConnectionError::Tls(format!("cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| ConnectionError::Tls(format!("bad PEM in {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| {
                ConnectionError::Tls(format!("bad CA certificate in {}: {e}", path.display()))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ConnectionError::Tls(format!("no certificate in {}", path.display())));
        }
        info!(path = %path.display(), certificates = added, "trusting extra CA certificates");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(client))))
}

/// Connects, registers and serves until the connection ends or `shutdown` fires. `welcomed` is
/// called once the coordinator has accepted the registration.
pub(crate) async fn serve_connection(
    shared: &Shared,
    identity: &mut WorkerIdentity,
    shutdown: &CancellationToken,
    welcomed: impl FnOnce(),
) -> Result<Ended, ConnectionError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(shared.limits.max_frame_bytes))
        .max_frame_size(Some(shared.limits.max_frame_bytes));
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        shared.config.coordinator.as_str(),
        Some(ws_config),
        true,
        shared.connector.clone(),
    );
    let timeout = Duration::from_secs(shared.config.connect_timeout_secs);
    let ws = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
        r = tokio::time::timeout(timeout, connect) => match r {
            Err(_) => return Err(ConnectionError::Timeout("the WebSocket handshake")),
            Ok(Err(e)) => return Err(ConnectionError::Connect(Box::new(e))),
            Ok(Ok((ws, _response))) => ws,
        },
    };
    let (mut sink, mut stream) = ws.split();

    let register = make_register(shared, identity);
    send(&mut sink, &Message::Register(register), &shared.limits).await?;
    let welcome = tokio::select! {
        _ = shutdown.cancelled() => {
            close(&mut sink, None).await;
            return Ok(Ended::Shutdown);
        }
        r = tokio::time::timeout(
            Duration::from_secs(shared.config.welcome_timeout_secs),
            await_welcome(&mut sink, &mut stream, &shared.limits),
        ) => match r {
            Err(_) => return Err(ConnectionError::Timeout("the Welcome")),
            Ok(r) => r?,
        },
    };
    let trusted = match shared.pinned {
        Some(pinned) if pinned != welcome.coordinator => {
            let err = ConnectionError::WrongCoordinator { got: welcome.coordinator, pinned };
            close(&mut sink, Some("coordinator key is not the pinned one")).await;
            return Err(err);
        }
        Some(pinned) => pinned,
        None => {
            warn!(
                coordinator = %welcome.coordinator,
                "coordinator key is not pinned (set --coordinator.hotkey); trusting the key it \
                 announced for this connection"
            );
            welcome.coordinator
        }
    };
    let now = shared.config.clock.now();
    let skew_ms = i128::from(welcome.server_time.0) - i128::from(now.0);
    if skew_ms.abs() > 30_000 {
        warn!(
            skew_ms,
            "this machine's clock differs from the coordinator's; challenges may be refused as expired"
        );
    }
    let heartbeat = shared.config.heartbeat_interval(welcome.heartbeat_interval_ms);
    info!(
        coordinator = %trusted,
        heartbeat_ms = heartbeat.as_millis() as u64,
        skew_ms = skew_ms as i64,
        "welcomed by the coordinator"
    );
    welcomed();

    let (inbound_tx, inbound_rx) = mpsc::channel(1024);
    let reader = tokio::spawn(read_loop(stream, inbound_tx, shared.limits));
    let mut session = Session {
        shared,
        trusted,
        sink,
        runs: HashMap::new(),
        events: mpsc::channel(64),
        heartbeat_seq: 0,
    };
    let ended = session.serve(inbound_rx, heartbeat, shutdown).await;
    reader.abort();
    Ok(ended)
}

/// Builds and signs the registration.
fn make_register(shared: &Shared, identity: &mut WorkerIdentity) -> Register {
    let now = shared.config.clock.now();
    let delegation = identity.delegation_at(now).clone();
    let mut register = Register {
        name: shared.config.name.clone(),
        delegation,
        hardware: shared.hardware.clone(),
        devices: shared.devices.clone(),
        timestamp: now,
        nonce: rand::random(),
        signature: veribench_protocol::Signature([0; 64]),
    };
    register.signature = identity.keypair.sign(&register.signing_payload());
    register
}

/// Reads frames until the Welcome, answering malformed ones.
async fn await_welcome(
    sink: &mut SplitSink<Ws, WsMessage>,
    stream: &mut SplitStream<Ws>,
    limits: &Limits,
) -> Result<Welcome, ConnectionError> {
    loop {
        let frame = match stream.next().await {
            None => return Err(ConnectionError::ClosedEarly),
            Some(Err(e)) => return Err(ConnectionError::Socket(Box::new(e))),
            Some(Ok(frame)) => frame,
        };
        match classify(frame, limits) {
            Inbound::Frame(msg) => match *msg {
                Message::Welcome(welcome) => return Ok(welcome),
                Message::Error(ErrorMsg { code, message }) => {
                    return Err(ConnectionError::Refused { code, message });
                }
                Message::Heartbeat(_) => {}
                other => return Err(ConnectionError::Unexpected(other.kind())),
            },
            Inbound::Control => {}
            Inbound::Bad(reason) => {
                warn!(%reason, "malformed frame from the coordinator");
                send(sink, &error_msg(ErrorCode::Malformed, &reason, limits), limits).await?;
            }
            Inbound::Closed(_) => return Err(ConnectionError::ClosedEarly),
        }
    }
}

/// A frame as the main loop sees it.
#[derive(Debug)]
enum Inbound {
    /// A decoded, validated message.
    Frame(Box<Message>),
    /// A frame that did not decode, and why.
    Bad(String),
    /// Ping or pong: handled by tungstenite.
    Control,
    /// The connection ended, and how.
    Closed(String),
}

fn classify(frame: WsMessage, limits: &Limits) -> Inbound {
    match frame {
        WsMessage::Binary(bytes) => match wire::decode(&bytes, limits) {
            Ok(msg) => Inbound::Frame(Box::new(msg)),
            Err(e) => Inbound::Bad(e.to_string()),
        },
        WsMessage::Text(_) => Inbound::Bad("text frame; frames are binary".into()),
        WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Inbound::Control,
        WsMessage::Close(frame) => Inbound::Closed(match frame {
            Some(f) => format!("closed by the coordinator ({}: {})", f.code, f.reason),
            None => "closed by the coordinator".into(),
        }),
    }
}

/// Polls the socket continuously and forwards what it reads.
async fn read_loop(mut stream: SplitStream<Ws>, tx: mpsc::Sender<Inbound>, limits: Limits) {
    loop {
        let inbound = match stream.next().await {
            None => Inbound::Closed("connection closed".into()),
            Some(Err(e)) => Inbound::Closed(format!("connection error: {e}")),
            Some(Ok(frame)) => classify(frame, &limits),
        };
        let last = matches!(inbound, Inbound::Closed(_));
        if matches!(inbound, Inbound::Control) {
            trace!("control frame");
            continue;
        }
        if tx.send(inbound).await.is_err() || last {
            return;
        }
    }
}

/// Results of work done off the main loop.
#[derive(Debug)]
enum Event {
    Computed {
        id: ChallengeId,
        device: DeviceKey,
        result: Result<Box<CommittedRun>, String>,
        elapsed: Duration,
    },
    Opened {
        id: ChallengeId,
        result: Result<veribench_protocol::Openings, BackendError>,
    },
}

/// The welcomed part of a connection.
struct Session<'a> {
    shared: &'a Shared,
    trusted: PublicKey,
    sink: SplitSink<Ws, WsMessage>,
    runs: HashMap<ChallengeId, Arc<CommittedRun>>,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    heartbeat_seq: u64,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        heartbeat: Duration,
        shutdown: &CancellationToken,
    ) -> Ended {
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    info!("shutting down: closing the connection");
                    close(&mut self.sink, Some("worker shutting down")).await;
                    // Let the reader see the coordinator's Close, so the close handshake completes.
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Some(i) = inbound.recv().await {
                            if matches!(i, Inbound::Closed(_)) { break; }
                        }
                    }).await;
                    return Ended::Shutdown;
                }
                frame = inbound.recv() => match frame {
                    None => Err("reader stopped".to_owned()),
                    Some(Inbound::Closed(reason)) => Err(reason),
                    Some(frame) => self.on_inbound(frame).await,
                },
                Some(event) = self.events.1.recv() => self.on_event(event).await,
                _ = ticker.tick() => self.on_tick().await,
            };
            if let Err(reason) = step {
                return Ended::Lost(reason);
            }
        }
    }

    /// Sends `msg`; an error means the connection is gone.
    async fn send(&mut self, msg: &Message) -> Result<(), String> {
        send(&mut self.sink, msg, &self.shared.limits).await.map_err(|e| e.to_string())
    }

    async fn refuse(&mut self, code: ErrorCode, message: &str) -> Result<(), String> {
        let msg = error_msg(code, message, &self.shared.limits);
        self.send(&msg).await
    }

    /// Refuses challenge `id`, or gives it up, with the text of [`challenge_refusal`].
    async fn refuse_challenge(
        &mut self,
        code: ErrorCode,
        id: ChallengeId,
        kind: &str,
        detail: &str,
    ) -> Result<(), String> {
        self.refuse(code, &challenge_refusal(id, kind, detail)).await
    }

    async fn on_tick(&mut self) -> Result<(), String> {
        self.heartbeat_seq += 1;
        let now = self.shared.config.clock.now();
        self.runs.retain(|id, run| {
            let keep = run.challenge.deadline.0.saturating_add(RUN_RETENTION_MS) > now.0;
            if !keep {
                warn!(challenge = %id, "no verdict long after the deadline; dropping the run");
            }
            keep
        });
        let heartbeat = Heartbeat { seq: self.heartbeat_seq, sent_at: now };
        trace!(seq = heartbeat.seq, "heartbeat");
        self.send(&Message::Heartbeat(heartbeat)).await
    }

    async fn on_inbound(&mut self, inbound: Inbound) -> Result<(), String> {
        let msg = match inbound {
            Inbound::Frame(msg) => *msg,
            Inbound::Bad(reason) => {
                warn!(%reason, "malformed frame from the coordinator");
                return self.refuse(ErrorCode::Malformed, &reason).await;
            }
            Inbound::Control | Inbound::Closed(_) => return Ok(()),
        };
        match msg {
            Message::Heartbeat(h) => {
                trace!(seq = h.seq, "coordinator heartbeat");
                Ok(())
            }
            Message::Challenge(signed) => self.on_challenge(signed).await,
            Message::OpenRequest(request) => self.on_open_request(request).await,
            Message::Verdict(verdict) => {
                self.on_verdict(verdict);
                Ok(())
            }
            Message::Error(ErrorMsg { code, message }) => {
                warn!(?code, %message, "the coordinator reported an error");
                if let Some(id) = challenge_named(&message)
                    && self.runs.remove(&id).is_some()
                {
                    info!(challenge = %id, "dropped the run the coordinator gave up on");
                }
                Ok(())
            }
            other @ (Message::Register(_)
            | Message::Welcome(_)
            | Message::Commitment(_)
            | Message::Openings(_)) => {
                warn!(kind = other.kind(), "unexpected message from the coordinator");
                let text = format!("a worker does not accept {} messages", other.kind());
                self.refuse(ErrorCode::Unsupported, &text).await
            }
        }
    }

    async fn on_challenge(&mut self, signed: SignedChallenge) -> Result<(), String> {
        let id = signed.challenge.id;
        let now = self.shared.config.clock.now();
        let admitted = lock(&self.shared.guard).admit(&self.trusted, &signed, now);
        if let Err(refusal) = admitted {
            warn!(
                challenge = %id,
                device = %signed.device,
                refusal = refusal.kind(),
                reason = %refusal,
                "refused a challenge"
            );
            let detail = refusal.to_string();
            return self.refuse_challenge(refusal.code(), id, refusal.kind(), &detail).await;
        }
        let challenge = signed.challenge;
        let device = signed.device;
        info!(
            challenge = %id,
            device = %device,
            mode = %challenge.mode.as_str(),
            shape = %challenge.shape,
            deadline = challenge.deadline.0,
            "computing a challenge"
        );
        let backend = Arc::clone(&self.shared.backend);
        let guard = Arc::clone(&self.shared.guard);
        let tx = self.events.0.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let task_device = device.clone();
            let joined = tokio::task::spawn_blocking(move || {
                run_challenge(backend.as_ref(), &task_device, &challenge)
            })
            .await;
            lock(&guard).release(&device);
            let result = match joined {
                Ok(result) => result.map(Box::new).map_err(|e| e.to_string()),
                Err(e) => Err(format!("the computation panicked: {e}")),
            };
            let event = Event::Computed { id, device, result, elapsed: started.elapsed() };
            if let Err(mpsc::error::SendError(Event::Computed { id, .. })) = tx.send(event).await {
                info!(challenge = %id, "connection gone before the challenge finished; result dropped");
            }
        });
        Ok(())
    }

    async fn on_open_request(&mut self, request: OpenRequest) -> Result<(), String> {
        let id = request.challenge_id;
        let Some(run) = self.runs.get(&id).cloned() else {
            warn!(challenge = %id, "open request for an unknown challenge");
            let detail = format!("challenge {id} is not committed here");
            return self
                .refuse_challenge(ErrorCode::UnknownChallenge, id, UNKNOWN_CHALLENGE, &detail)
                .await;
        };
        debug!(challenge = %id, rows = request.rows.len(), "opening rows");
        let tx = self.events.0.clone();
        tokio::spawn(async move {
            let rows = request.rows;
            let result = tokio::task::spawn_blocking(move || run.open(&rows))
                .await
                .unwrap_or_else(|e| Err(BackendError::Device(format!("opening panicked: {e}"))));
            let _ = tx.send(Event::Opened { id, result }).await;
        });
        Ok(())
    }

    fn on_verdict(&mut self, VerdictMsg { challenge_id, verdict }: VerdictMsg) {
        let known = self.runs.remove(&challenge_id).is_some();
        match verdict {
            Verdict::Accepted => info!(challenge = %challenge_id, known, "challenge accepted"),
            Verdict::Rejected(reason) => {
                warn!(challenge = %challenge_id, known, ?reason, "challenge rejected")
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Computed { id, device, result: Ok(run), elapsed } => {
                let root = run.root();
                let timings = run.execution().timings;
                info!(
                    challenge = %id,
                    device = %device,
                    elapsed_ms = elapsed.as_millis() as u64,
                    generate_ms = timings.generate.as_millis() as u64,
                    gemm_ms = timings.gemm.as_millis() as u64,
                    hash_ms = timings.hash.as_millis() as u64,
                    merkle_ms = run.merkle_time.as_millis() as u64,
                    %root,
                    "committed"
                );
                self.runs.insert(id, Arc::from(run));
                self.send(&Message::Commitment(CommitmentMsg { challenge_id: id, device, root }))
                    .await
            }
            Event::Computed { id, device, result: Err(reason), .. } => {
                error!(challenge = %id, device = %device, %reason, "challenge failed");
                self.refuse_challenge(ErrorCode::Internal, id, COMPUTE_FAILED, &reason).await
            }
            Event::Opened { id, result: Ok(openings) } => {
                debug!(challenge = %id, rows = openings.rows.len(), "sending openings");
                self.send(&Message::Openings(OpeningsMsg { challenge_id: id, openings })).await
            }
            Event::Opened { id, result: Err(e) } => {
                warn!(challenge = %id, error = %e, "cannot open the asked rows");
                let (code, kind) = match e {
                    BackendError::RowOutOfRange { .. } => (ErrorCode::Malformed, ROWS_OUT_OF_RANGE),
                    _ => (ErrorCode::Internal, OPEN_FAILED),
                };
                self.refuse_challenge(code, id, kind, &e.to_string()).await
            }
        }
    }
}

/// The challenge id a coordinator's error message names (`… challenge 42 …`), if any.
fn challenge_named(message: &str) -> Option<ChallengeId> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("challenge ")? + "challenge ".len();
    let digits: String = lower[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(ChallengeId)
}

/// The `<kind>` of a refusal to open a challenge this connection has no commitment for.
const UNKNOWN_CHALLENGE: &str = "unknown_challenge";
/// The `<kind>` of a challenge whose computation failed on its device.
const COMPUTE_FAILED: &str = "compute_failed";
/// The `<kind>` of an open request naming rows outside the product.
const ROWS_OUT_OF_RANGE: &str = "rows_out_of_range";
/// The `<kind>` of an opening that failed on the worker's side.
const OPEN_FAILED: &str = "open_failed";

/// The text of an Error by which the worker refuses a challenge or gives it up (SPEC §8.2):
/// `challenge <id> refused: <kind>: <detail>`, where `kind` is a snake_case name (a
/// [`Refusal::kind`](super::guard::Refusal::kind) or one of the constants above) that a coordinator
/// records and `detail` is for people. [`error_msg`] may cut the detail to the wire's text limit;
/// the prefix (at most 60 bytes) always fits.
fn challenge_refusal(id: ChallengeId, kind: &str, detail: &str) -> String {
    format!("challenge {id} refused: {kind}: {detail}")
}

/// An error frame whose text fits the wire limit.
fn error_msg(code: ErrorCode, message: &str, limits: &Limits) -> Message {
    let max = limits.max_text_bytes as usize;
    let mut end = message.len().min(max);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Message::Error(ErrorMsg { code, message: message[..end].to_owned() })
}

/// Encodes and sends one frame. A frame over the size limit is replaced by an `Internal` error.
async fn send(
    sink: &mut SplitSink<Ws, WsMessage>,
    msg: &Message,
    limits: &Limits,
) -> Result<(), ConnectionError> {
    let mut frame = wire::encode(msg);
    if frame.len() > limits.max_frame_bytes {
        error!(kind = msg.kind(), bytes = frame.len(), "frame over the size limit; not sent");
        let text = format!("{} of {} bytes exceeds the frame limit", msg.kind(), frame.len());
        frame = wire::encode(&error_msg(ErrorCode::Internal, &text, limits));
    }
    trace!(kind = msg.kind(), bytes = frame.len(), "send");
    sink.send(WsMessage::binary(frame)).await.map_err(|e| ConnectionError::Socket(Box::new(e)))
}

/// Sends a Close frame, ignoring failures (the connection may already be gone).
async fn close(sink: &mut SplitSink<Ws, WsMessage>, reason: Option<&str>) {
    let frame = reason.map(|r| CloseFrame {
        code: if r.contains("pinned") { CloseCode::Policy } else { CloseCode::Normal },
        reason: r.into(),
    });
    if let Err(e) = sink.send(WsMessage::Close(frame)).await {
        debug!(error = %e, "could not send Close");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veribench_protocol::UnixMillis;

    #[test]
    fn coordinator_errors_name_their_challenge() {
        assert_eq!(challenge_named("Challenge 42 missed its deadline"), Some(ChallengeId(42)));
        assert_eq!(challenge_named("deadline missed for challenge 7"), Some(ChallengeId(7)));
        assert_eq!(challenge_named("rate limited"), None);
    }

    /// `challenge <id> refused: <kind>: <detail>` split back into its parts, as a coordinator
    /// reads it.
    fn parse_refusal(message: &str) -> Option<(ChallengeId, &str, &str)> {
        let rest = message.strip_prefix("challenge ")?;
        let (id, rest) = rest.split_once(" refused: ")?;
        let (kind, detail) = rest.split_once(": ")?;
        Some((ChallengeId(id.parse().ok()?), kind, detail))
    }

    #[test]
    fn refusals_name_their_challenge_and_kind() {
        use super::super::guard::Refusal;
        let id = ChallengeId(u64::MAX);
        let device = DeviceKey::new("GPU-0").expect("key");
        let refusals = [
            Refusal::Foreign { id, signer: PublicKey([1; 32]), trusted: PublicKey([2; 32]) },
            Refusal::BadSignature { id },
            Refusal::Replayed { id },
            Refusal::Expired { id, deadline: UnixMillis(60_000), now: UnixMillis(120_000) },
            Refusal::FromTheFuture { id, issued_at: UnixMillis(9), now: UnixMillis(1) },
            Refusal::UnknownDevice { id, device: device.clone() },
            Refusal::Busy { id, device },
        ];
        let kinds = refusals.iter().map(|r| (r.kind(), r.to_string())).chain(
            [UNKNOWN_CHALLENGE, COMPUTE_FAILED, ROWS_OUT_OF_RANGE, OPEN_FAILED]
                .map(|k| (k, "device error: lost".to_owned())),
        );
        for (kind, detail) in kinds {
            assert!(kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{kind}");
            let text = challenge_refusal(id, kind, &detail);
            assert_eq!(parse_refusal(&text), Some((id, kind, detail.as_str())), "{text}");
        }
        assert_eq!(
            challenge_refusal(ChallengeId(7), "expired", "challenge 7 expired at 1 ms (now 2 ms)"),
            "challenge 7 refused: expired: challenge 7 expired at 1 ms (now 2 ms)"
        );
    }

    #[test]
    fn a_long_refusal_is_cut_in_its_detail_only() {
        let limits = Limits::default();
        let id = ChallengeId(u64::MAX);
        let text = challenge_refusal(id, "from_the_future", &"é".repeat(1000));
        let Message::Error(e) = error_msg(ErrorCode::Internal, &text, &limits) else {
            panic!("an error frame");
        };
        assert_eq!(e.message.len(), limits.max_text_bytes as usize - 1, "cut on a char boundary");
        let (got, kind, detail) = parse_refusal(&e.message).expect("the prefix survives");
        assert_eq!((got, kind), (id, "from_the_future"));
        assert!(detail.chars().all(|c| c == 'é'));
        assert!(Message::Error(e).validate(&limits).is_ok());
    }

    #[test]
    fn error_texts_fit_the_limit() {
        let limits = Limits::default();
        let long = "é".repeat(1000);
        let Message::Error(e) = error_msg(ErrorCode::Internal, &long, &limits) else {
            panic!("an error frame");
        };
        assert!(e.message.len() <= limits.max_text_bytes as usize);
        assert!(Message::Error(e).validate(&limits).is_ok());
    }
}
