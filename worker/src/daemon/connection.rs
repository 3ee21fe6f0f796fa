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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
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
    OpenRequest, OpeningsMsg, ProtocolError, PublicKey, Register, Shape, SignedChallenge, Verdict,
    VerdictMsg, Welcome,
};

use veribench_chain::{CertFingerprint, UrlError, UrlHost, WssUrl};

use super::config::WorkerConfig;
use super::guard::ChallengeGuard;
use super::identity::WorkerIdentity;
use super::tls::PinnedCertVerifier;

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
    #[error("the coordinator refused the registration ({code}): {message}")]
    Refused {
        /// Its error code, which decides what to do about it ([`ErrorCode::class`]).
        code: ErrorCode,
        /// Its explanation, for the operator only.
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
    /// The announced name resolves to an address that is not on the public internet (and
    /// private endpoints are not allowed): nothing is dialled.
    #[error("{host} resolves to {addr}, which is not a public address; not dialled")]
    PrivateAddress {
        /// The host as announced.
        host: String,
        /// The address it resolved to.
        addr: std::net::IpAddr,
    },
    /// The coordinator's TLS certificate is not the one its announcement pins.
    #[error(
        "the coordinator served a certificate with fingerprint {served}, but {announced} is \
         announced; disconnecting"
    )]
    FingerprintMismatch {
        /// The fingerprint announced on chain.
        announced: CertFingerprint,
        /// The fingerprint of the certificate served.
        served: CertFingerprint,
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

/// What a connection needs from its worker; shared by every connection of one daemon (one
/// guard, so a device computing for one validator is busy for all of them).
pub(crate) struct Shared {
    pub config: WorkerConfig,
    /// Locked only to build a Register (a self-delegation may be renewed then).
    pub identity: Mutex<WorkerIdentity>,
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

/// One coordinator to serve: where it is, which key it must present and how its TLS
/// certificate is checked.
pub(crate) struct Target {
    /// `ws://…` or `wss://…`.
    pub url: String,
    /// The key its Welcome and every challenge signature must carry.
    pub pinned: PublicKey,
    /// The TLS connector for `wss://`; `None` for `ws://`.
    pub connector: Option<Connector>,
    /// The certificate pin inside `connector`, when the certificate is pinned.
    pub pin: Option<Arc<PinnedCertVerifier>>,
    /// Dial only public addresses: the host is resolved first, every address it resolves to
    /// must be public, and the connection goes to those addresses (so a name cannot resolve to
    /// one address when checked and another when dialled). Set for announced endpoints unless
    /// private ones are allowed; an operator's own `--coordinator` is dialled as given.
    pub public_only: bool,
}

/// Opens the WebSocket to `target` (TCP, TLS, upgrade). A certificate refused by the pin is a
/// [`ConnectionError::FingerprintMismatch`].
pub(crate) async fn connect(target: &Target, limits: &Limits) -> Result<Ws, ConnectionError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes));
    if let Some(pin) = &target.pin {
        pin.take_mismatch();
    }
    let connected = if target.public_only {
        let stream = dial_public(&target.url).await?;
        tokio_tungstenite::client_async_tls_with_config(
            target.url.as_str(),
            stream,
            Some(ws_config),
            target.connector.clone(),
        )
        .await
    } else {
        tokio_tungstenite::connect_async_tls_with_config(
            target.url.as_str(),
            Some(ws_config),
            true,
            target.connector.clone(),
        )
        .await
    };
    match connected {
        Ok((ws, _response)) => Ok(ws),
        Err(e) => match target.pin.as_ref().and_then(|pin| Some((pin, pin.take_mismatch()?))) {
            Some((pin, served)) => {
                Err(ConnectionError::FingerprintMismatch { announced: pin.fingerprint(), served })
            }
            None => Err(ConnectionError::Connect(Box::new(e))),
        },
    }
}

/// Connects, registers and serves until the connection ends or `shutdown` fires. `welcomed` is
/// called once the coordinator has accepted the registration.
pub(crate) async fn serve_connection(
    shared: &Shared,
    target: &Target,
    shutdown: &CancellationToken,
    welcomed: impl FnOnce(),
) -> Result<Ended, ConnectionError> {
    let timeout = Duration::from_secs(shared.config.connect_timeout_secs);
    let ws = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
        r = tokio::time::timeout(timeout, connect(target, &shared.limits)) => match r {
            Err(_) => return Err(ConnectionError::Timeout("the WebSocket handshake")),
            Ok(r) => r?,
        },
    };
    let (mut sink, mut stream) = ws.split();

    let register = make_register(shared);
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
    // Every coordinator's key is pinned (configured, or the hotkey that announced it on chain):
    // a Welcome with another key is a man in the middle or a misconfigured coordinator.
    let trusted = target.pinned;
    if welcome.coordinator != trusted {
        let err = ConnectionError::WrongCoordinator { got: welcome.coordinator, pinned: trusted };
        let reason = "coordinator key is not the pinned one";
        close(&mut sink, Some((CloseCode::Policy, reason))).await;
        return Err(err);
    }
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

/// Resolves the host of `url` (a `wss://` URL), refuses it if any address it resolves to is
/// not public, and opens a TCP connection to one of those addresses.
async fn dial_public(url: &str) -> Result<TcpStream, ConnectionError> {
    let io = |e: std::io::Error| ConnectionError::Connect(Box::new(tungstenite::Error::Io(e)));
    let url: WssUrl = url.parse().map_err(|e: UrlError| {
        io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
    })?;
    let host = url.host();
    let addrs: Vec<SocketAddr> = match host {
        UrlHost::Ip(ip) => vec![SocketAddr::new(ip, url.port())],
        UrlHost::Name(name) => {
            tokio::net::lookup_host((name, url.port())).await.map_err(io)?.collect()
        }
    };
    check_public(&host.to_string(), &addrs)?;
    let stream = TcpStream::connect(&addrs[..]).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    Ok(stream)
}

/// Refuses `addrs` (what `host` resolved to) unless every one is public; an empty list is a
/// connection failure.
fn check_public(host: &str, addrs: &[SocketAddr]) -> Result<(), ConnectionError> {
    if let Some(private) = addrs.iter().find(|a| UrlHost::Ip(a.ip()).is_non_public()) {
        return Err(ConnectionError::PrivateAddress { host: host.to_owned(), addr: private.ip() });
    }
    if addrs.is_empty() {
        let none = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"));
        return Err(ConnectionError::Connect(Box::new(tungstenite::Error::Io(none))));
    }
    Ok(())
}

/// Builds and signs the registration.
fn make_register(shared: &Shared) -> Register {
    let now = shared.config.clock.now();
    let mut identity = shared.identity.lock().unwrap_or_else(|e| e.into_inner());
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
                Message::Error(ErrorMsg { code, message, .. }) => {
                    return Err(ConnectionError::Refused { code, message });
                }
                Message::Heartbeat(_) => {}
                other => return Err(ConnectionError::Unexpected(other.kind())),
            },
            Inbound::Control => {}
            Inbound::Bad(e) => {
                warn!(code = e.code().as_str(), error = %e, "bad frame from the coordinator");
                send_frame(sink, wire::decode_refusal(&e, limits)).await?;
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
    Bad(ProtocolError),
    /// Ping or pong: handled by tungstenite.
    Control,
    /// The connection ended, and how.
    Closed(String),
}

fn classify(frame: WsMessage, limits: &Limits) -> Inbound {
    match frame {
        WsMessage::Binary(bytes) => match wire::decode(&bytes, limits) {
            Ok(msg) => Inbound::Frame(Box::new(msg)),
            Err(e) => Inbound::Bad(e),
        },
        WsMessage::Text(_) => {
            Inbound::Bad(ProtocolError::Malformed("text frame; frames are binary".into()))
        }
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
                    info!("closing the connection (shutdown, or this coordinator is no longer served)");
                    close(&mut self.sink, Some((CloseCode::Normal, "worker disconnecting"))).await;
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

    /// Sends an Error: `code` says why, `challenge` which challenge is refused or given up
    /// (SPEC §8.2), `text` is for the coordinator's operator and is cut to the wire's limit.
    async fn refuse(
        &mut self,
        code: ErrorCode,
        challenge: Option<ChallengeId>,
        text: &str,
    ) -> Result<(), String> {
        let msg = ErrorMsg::new(code, challenge, text, self.shared.limits.max_text_bytes);
        self.send(&Message::Error(msg)).await
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
            Inbound::Bad(e) => {
                warn!(code = e.code().as_str(), error = %e, "bad frame from the coordinator");
                let frame = wire::decode_refusal(&e, &self.shared.limits);
                return send_frame(&mut self.sink, frame).await.map_err(|e| e.to_string());
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
            Message::Error(ErrorMsg { code, challenge_id, message }) => {
                warn!(
                    code = code.as_str(),
                    challenge = ?challenge_id.map(|id| id.0),
                    %message,
                    "the coordinator reported an error"
                );
                // An error naming a challenge ends it on the coordinator's side (a missed
                // deadline, an open timeout, a refused commitment): nothing will be opened.
                if let Some(id) = challenge_id
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
                self.refuse(ErrorCode::Unexpected, None, &text).await
            }
        }
    }

    async fn on_challenge(&mut self, signed: SignedChallenge) -> Result<(), String> {
        let id = signed.challenge.id;
        let now = self.shared.config.clock.now();
        let admitted = lock(&self.shared.guard).admit(&self.trusted, &signed, now);
        if let Err(refusal) = admitted {
            let code = refusal.code();
            warn!(
                challenge = %id,
                device = %signed.device,
                refusal = code.as_str(),
                reason = %refusal,
                "refused a challenge"
            );
            return self.refuse(code, Some(id), &refusal.to_string()).await;
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
            let text = format!("challenge {id} is not committed here");
            return self.refuse(ErrorCode::UnknownChallenge, Some(id), &text).await;
        };
        if let Err((code, text)) = check_open(run.challenge.shape, &request.rows) {
            warn!(challenge = %id, code = code.as_str(), %text, "refusing an open request");
            return self.refuse(code, Some(id), &text).await;
        }
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
                self.refuse(ErrorCode::ComputeFailed, Some(id), &reason).await
            }
            Event::Opened { id, result: Ok(openings) } => {
                debug!(challenge = %id, rows = openings.rows.len(), "sending openings");
                self.send(&Message::Openings(OpeningsMsg { challenge_id: id, openings })).await
            }
            Event::Opened { id, result: Err(e) } => {
                warn!(challenge = %id, error = %e, "cannot open the asked rows");
                let code = match e {
                    BackendError::RowOutOfRange { .. } => ErrorCode::RowsOutOfRange,
                    _ => ErrorCode::OpenFailed,
                };
                self.refuse(code, Some(id), &e.to_string()).await
            }
        }
    }
}

/// Refuses an open request for more rows of a product of `shape` than one frame can carry,
/// before any work (SPEC §8.4, §8.7): every receiver accepts frames of
/// [`wire::MAX_FRAME_BYTES`], so openings that may exceed it are refused up front instead of
/// computed and then dropped at the send. Rows outside the product are refused by the opening
/// itself ([`BackendError::RowOutOfRange`]), after this check, in the SPEC's order.
fn check_open(shape: Shape, rows: &[u32]) -> Result<(), (ErrorCode, String)> {
    let count = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let bound = wire::openings_frame_bound(shape, count);
    if bound > wire::MAX_FRAME_BYTES as u64 {
        let text = format!(
            "{count} rows of a {shape} product may take {bound} bytes, over the {} byte frame \
             limit",
            wire::MAX_FRAME_BYTES
        );
        return Err((ErrorCode::OpeningsTooLarge, text));
    }
    Ok(())
}

/// The challenge a message concerns, if any.
fn challenge_of(msg: &Message) -> Option<ChallengeId> {
    match msg {
        Message::Challenge(c) => Some(c.challenge.id),
        Message::Commitment(c) => Some(c.challenge_id),
        Message::OpenRequest(r) => Some(r.challenge_id),
        Message::Openings(o) => Some(o.challenge_id),
        Message::Verdict(v) => Some(v.challenge_id),
        Message::Error(e) => e.challenge_id,
        Message::Register(_) | Message::Welcome(_) | Message::Heartbeat(_) => None,
    }
}

/// The frame of `msg`, or, when it exceeds the frame limit (a bug: open requests are checked by
/// [`check_open`]), an `Internal` error naming the challenge it concerned.
fn frame_of(msg: &Message, limits: &Limits) -> Vec<u8> {
    let frame = wire::encode(msg);
    if frame.len() <= limits.max_frame_bytes {
        return frame;
    }
    error!(kind = msg.kind(), bytes = frame.len(), "frame over the size limit; not sent");
    let text = format!("{} of {} bytes exceeds the frame limit", msg.kind(), frame.len());
    let error = ErrorMsg::new(ErrorCode::Internal, challenge_of(msg), &text, limits.max_text_bytes);
    wire::encode(&Message::Error(error))
}

/// Encodes and sends one message, through [`frame_of`].
async fn send(
    sink: &mut SplitSink<Ws, WsMessage>,
    msg: &Message,
    limits: &Limits,
) -> Result<(), ConnectionError> {
    let frame = frame_of(msg, limits);
    trace!(kind = msg.kind(), bytes = frame.len(), "send");
    send_frame(sink, frame).await
}

/// Sends one encoded frame.
async fn send_frame(
    sink: &mut SplitSink<Ws, WsMessage>,
    frame: Vec<u8>,
) -> Result<(), ConnectionError> {
    sink.send(WsMessage::binary(frame)).await.map_err(|e| ConnectionError::Socket(Box::new(e)))
}

/// Sends a Close frame with `code` and reason if given, ignoring failures (the connection may
/// already be gone). [`CloseCode::Policy`] tells the coordinator's operator that the worker left
/// on purpose (a key that is not the pinned one), not because of a fault.
async fn close(sink: &mut SplitSink<Ws, WsMessage>, frame: Option<(CloseCode, &str)>) {
    let frame = frame.map(|(code, reason)| CloseFrame { code, reason: reason.into() });
    if let Err(e) = sink.send(WsMessage::Close(frame)).await {
        debug!(error = %e, "could not send Close");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veribench_protocol::{Bounded, MultiProof, Openings, RowOpening};

    fn error_of(frame: &[u8]) -> ErrorMsg {
        match wire::decode(frame, &Limits::default()) {
            Ok(Message::Error(e)) => e,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_answered_with_the_code_of_their_failure() {
        let limits = Limits::default();
        let cases = [
            (ProtocolError::Malformed("missing VB magic".into()), ErrorCode::Malformed),
            (ProtocolError::FrameTooLarge { len: 9, max: 8 }, ErrorCode::TooLarge),
            (ProtocolError::NoRows(Bounded::RequestedRows), ErrorCode::Invalid),
            (ProtocolError::DeadlineBeforeIssue, ErrorCode::Invalid),
            (
                ProtocolError::UnsupportedVersion { got: 3, supported: 2 },
                ErrorCode::UnsupportedVersion,
            ),
        ];
        for (e, code) in cases {
            let answer = error_of(&wire::decode_refusal(&e, &limits));
            assert_eq!((answer.code, answer.challenge_id), (code, None), "{e}");
        }
        // A version-1 peer is answered in version 1, which it can decode.
        let v1 = wire::decode_refusal(
            &ProtocolError::UnsupportedVersion { got: 1, supported: 2 },
            &limits,
        );
        assert_eq!(&v1[..6], b"VB\x01\x00\x08\x02");
        assert!(wire::decode(&v1, &limits).is_err(), "not a current frame");
    }

    #[test]
    fn only_public_resolved_addresses_are_dialled() {
        let addr = |a: &str| a.parse::<SocketAddr>().expect("socket address");
        assert!(check_public("v.example", &[addr("203.0.114.7:443")]).is_ok());
        let mixed = [addr("203.0.114.7:443"), addr("[fd00::7]:443")];
        assert!(matches!(
            check_public("v.example", &mixed),
            Err(ConnectionError::PrivateAddress { addr, .. }) if addr == mixed[1].ip()
        ));
        assert!(matches!(check_public("v.example", &[]), Err(ConnectionError::Connect(_))));
    }

    /// A name that resolves to loopback is refused before any connection is made.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_not_dialled() {
        let refused = dial_public("wss://localhost:9").await.expect_err("loopback");
        assert!(
            matches!(&refused, ConnectionError::PrivateAddress { host, addr }
                if host == "localhost" && addr.is_loopback()),
            "{refused}"
        );
    }

    #[test]
    fn open_requests_over_a_frame_are_refused_up_front() {
        let small = Shape { m: 16, k: 16, n: 16 };
        assert_eq!(check_open(small, &[0, 5, 15]), Ok(()));

        // 65536 columns of 64 rows: 63 rows fit in the frame every receiver accepts, 64 do not.
        let wide = Shape { m: 64, k: 1, n: 65_536 };
        let rows: Vec<u32> = (0..64).collect();
        assert_eq!(check_open(wide, &rows[..63]), Ok(()));
        let refused = check_open(wide, &rows).map_err(|(code, _)| code);
        assert_eq!(refused, Err(ErrorCode::OpeningsTooLarge));
    }

    #[test]
    fn a_frame_over_the_limit_becomes_an_internal_error_naming_its_challenge() {
        let limits = Limits { max_frame_bytes: 1024, ..Limits::default() };
        let openings = |len| {
            Message::Openings(OpeningsMsg {
                challenge_id: ChallengeId(42),
                openings: Openings {
                    rows: vec![RowOpening { row: 0, bytes: vec![7; len] }],
                    proof: MultiProof(vec![]),
                },
            })
        };
        let small = openings(16);
        assert_eq!(frame_of(&small, &limits), wire::encode(&small));
        let e = error_of(&frame_of(&openings(2048), &limits));
        assert_eq!((e.code, e.challenge_id), (ErrorCode::Internal, Some(ChallengeId(42))));
    }
}
