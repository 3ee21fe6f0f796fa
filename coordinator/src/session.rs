//! One worker connection: TLS (optional), WebSocket upgrade, registration, then a read loop that
//! rate-limits, decodes and dispatches frames, measures round trips with pings, and hands the
//! worker's outbox to a writer task.
//!
//! Nothing a peer sends can stall the coordinator: every wait has a timeout (TLS and WebSocket
//! handshakes, registration, idle reads), frames are size-capped by the WebSocket layer before
//! they are buffered, floods are dropped by a token bucket, and repeated bad frames close the
//! connection. Every refusal is logged and persisted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veribench_protocol::wire::{self, ErrorCode, ErrorMsg, Limits, Message};
use veribench_protocol::{ChallengeId, ProtocolError, PublicKey};

use crate::admission::{Admission, Budget, BudgetSpent, Budgeted, Pass};
use crate::config::secs;
use crate::ratelimit::TokenBucket;
use crate::refusal_kind::RefusalKind;
use crate::service::{Arrival, Coordinator, Outbound, Refusal, Registered};
use crate::timing::{KernelRtt, RTT_SAMPLES, RttSample};

/// Accepts worker connections until `accepting` is cancelled. Each connection runs in a task of
/// `sessions` and ends when `closing` is cancelled (after `accepting`, once the challenges in
/// flight are settled: see [`crate::server::Running::shutdown`]).
pub async fn accept_loop(
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    accepting: CancellationToken,
    sessions: TaskTracker,
    closing: CancellationToken,
) {
    let limits = &coordinator.config().limits;
    let admission = Admission::new(limits.max_unregistered, limits.max_unregistered_per_address);
    loop {
        let accepted = tokio::select! {
            _ = accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let pass = match admission.admit(peer.ip()) {
                    Ok(pass) => pass,
                    Err(crowded) => {
                        // Closed at once: an anonymous peer gets no buffer and no timer.
                        drop(tcp);
                        let coordinator = coordinator.clone();
                        tokio::spawn(async move {
                            let peer = peer.to_string();
                            let detail = crowded.to_string();
                            coordinator
                                .reject(&peer, None, RefusalKind::TooManyConnections, detail)
                                .await;
                        });
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                sessions.spawn(connection(
                    coordinator.clone(),
                    tcp,
                    peer,
                    pass,
                    tls.clone(),
                    closing.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a session knows of its connection besides the stream.
struct Link {
    peer: String,
    /// Held until the peer registers: it counts against the unregistered caps.
    pass: Option<Pass>,
    kernel_rtt: KernelRtt,
}

async fn connection(
    coordinator: Arc<Coordinator>,
    tcp: TcpStream,
    peer: SocketAddr,
    pass: Pass,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    coordinator.metrics().connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = peer.to_string();
    let handshake = secs(coordinator.config().liveness.handshake_timeout_secs);
    let link = Link { peer: peer.clone(), pass: Some(pass), kernel_rtt: KernelRtt::of(&tcp) };
    match tls {
        None => session(coordinator, tcp, link, shutdown).await,
        Some(acceptor) => match timeout(handshake, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => session(coordinator, stream, link, shutdown).await,
            Ok(Err(e)) => {
                coordinator.reject(&peer, None, RefusalKind::TlsHandshake, e.to_string()).await
            }
            Err(_) => {
                coordinator
                    .reject(
                        &peer,
                        None,
                        RefusalKind::HandshakeTimeout,
                        "TLS handshake timed out".into(),
                    )
                    .await
            }
        },
    }
}

/// The rejection kind of a frame that failed to decode, from the code it is answered with, so
/// the stored kind and what the peer is told agree.
fn decode_kind(e: &ProtocolError) -> RefusalKind {
    match e.code() {
        ErrorCode::TooLarge => RefusalKind::FrameTooLarge,
        ErrorCode::UnsupportedVersion => RefusalKind::UnsupportedVersion,
        ErrorCode::Invalid => RefusalKind::InvalidFrame,
        _ => RefusalKind::MalformedFrame,
    }
}

/// A frame that failed to decode: the refusal to count, and the frame answering it. A frame of
/// another protocol version is answered in that version where this build can (a version-1 peer
/// reads a version-1 `Error`); anything else with the decode error's code.
fn undecodable(e: &ProtocolError, limits: &Limits) -> (Refusal, Vec<u8>) {
    let refusal = Refusal::new(decode_kind(e), e.to_string());
    (refusal, wire::decode_refusal(e, limits))
}

/// The `Error` frame telling a peer of `refusal`.
fn refusal_frame(refusal: &Refusal, limits: &Limits) -> Vec<u8> {
    // Every kind a session refuses has a wire code; only the HTTP API's lease kinds have none,
    // and one reaching a session would be our bug.
    let code = refusal.kind.error_code().unwrap_or(ErrorCode::Internal);
    error_frame(code, refusal.challenge, &refusal.detail, limits)
}

/// The rejection kind of a WebSocket-level read error.
fn ws_error_kind(e: &tungstenite::Error) -> RefusalKind {
    match e {
        tungstenite::Error::Capacity(_) => RefusalKind::FrameTooLarge,
        tungstenite::Error::Io(e) if BudgetSpent::is(e) => RefusalKind::RegisterTooLarge,
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
            RefusalKind::MalformedFrame
        }
        _ => RefusalKind::ConnectionError,
    }
}

/// An `Error` frame; its text is cut to the wire's bound by [`ErrorMsg::new`].
fn error_frame(
    code: ErrorCode,
    challenge: Option<ChallengeId>,
    message: &str,
    limits: &Limits,
) -> Vec<u8> {
    wire::encode(&Message::Error(ErrorMsg::new(code, challenge, message, limits.max_text_bytes)))
}

/// How a non-binary first frame is described: its kind and size, never its content.
fn describe(frame: &WsMessage) -> String {
    let kind = match frame {
        WsMessage::Text(_) => "text",
        WsMessage::Ping(_) => "ping",
        WsMessage::Pong(_) => "pong",
        WsMessage::Close(_) => "close",
        WsMessage::Binary(_) | WsMessage::Frame(_) => "raw",
    };
    format!("expected a binary Register frame, got a {kind} frame of {} bytes", frame.len())
}

async fn session<S>(
    coordinator: Arc<Coordinator>,
    stream: S,
    mut link: Link,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = link.peer.clone();
    let config = coordinator.config().clone();
    // Until `Register` is accepted, the upgrade request and the first frame share a small budget.
    let (stream, budget): (_, Budget) = Budgeted::new(stream, config.limits.max_register_bytes);
    let handshake = secs(config.liveness.handshake_timeout_secs);
    let max = config.limits.max_frame_bytes;
    // A small read buffer: tungstenite keeps (and zeroes) the whole buffer per connection, and
    // its 128 KiB default costs ~150 KB of RSS per idle worker. Large frames still reassemble.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = match timeout(
        handshake,
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            return coordinator.reject(&peer, None, RefusalKind::WsHandshake, e.to_string()).await;
        }
        Err(_) => {
            return coordinator
                .reject(
                    &peer,
                    None,
                    RefusalKind::HandshakeTimeout,
                    "WebSocket upgrade timed out".into(),
                )
                .await;
        }
    };
    let (mut sink, mut frames) = ws.split();
    let limits = config.wire_limits();

    // Registration: the first frame, within the handshake timeout.
    let first = timeout(handshake, frames.next()).await;
    // Read off the clock at once: the worker's clock is measured against it.
    let arrival = Arrival::now(link.kernel_rtt.min_rtt());
    let answered = |refusal: Refusal| {
        let answer = refusal_frame(&refusal, &limits);
        (refusal, answer)
    };
    let first = match first {
        Ok(Some(Ok(WsMessage::Binary(bytes)))) => {
            wire::decode(&bytes, &limits).map_err(|e| undecodable(&e, &limits))
        }
        Ok(Some(Ok(other))) => {
            Err(answered(Refusal::new(RefusalKind::MalformedFrame, describe(&other))))
        }
        Ok(Some(Err(e))) => Err(answered(Refusal::new(ws_error_kind(&e), e.to_string()))),
        Ok(None) => return,
        Err(_) => {
            return coordinator
                .reject(
                    &peer,
                    None,
                    RefusalKind::HandshakeTimeout,
                    "no registration within the handshake timeout".into(),
                )
                .await;
        }
    };
    let registered = match first {
        Ok(Message::Register(reg)) => {
            let worker = reg.delegation.worker_key;
            coordinator.register(reg, &peer, arrival).await.map_err(|r| (Some(worker), answered(r)))
        }
        Ok(other) => Err((
            None,
            answered(Refusal::new(
                RefusalKind::UnexpectedMessage,
                format!("the first frame must be a Register, got {}", other.kind()),
            )),
        )),
        Err(refused) => Err((None, refused)),
    };
    let Registered { conn, worker, outbox } = match registered {
        Ok(r) => r,
        Err((worker, (refusal, answer))) => {
            coordinator.reject(&peer, worker, refusal.kind, refusal.detail).await;
            let _ = sink.send(WsMessage::binary(answer)).await;
            let _ = sink.close().await;
            return;
        }
    };
    // Registered: frames up to the configured limit, and no longer counted as anonymous.
    budget.lift();
    link.pass = None;

    let pinger = coordinator.outbox_of(&worker);
    let writer = tokio::spawn(write_loop(sink, outbox));
    let from = Origin { worker, conn };
    read_loop(&coordinator, &mut frames, &from, &link, &limits, pinger, &shutdown).await;
    coordinator.disconnect(&worker, conn).await;
    // The writer ends once every sender of the outbox is gone; give it a moment to flush a close.
    let _ = timeout(Duration::from_secs(2), writer).await;
}

async fn write_loop<W>(mut sink: W, mut outbox: tokio::sync::mpsc::Receiver<Outbound>)
where
    W: futures_util::Sink<WsMessage, Error = tungstenite::Error> + Unpin,
{
    while let Some(out) = outbox.recv().await {
        let result = match out {
            Outbound::Frame(frame) => sink.send(WsMessage::binary(frame)).await,
            Outbound::Challenge(frame, written) => {
                // Before the write: the worker cannot have the frame any earlier (SPEC §8.1).
                let _ = written.set(Instant::now());
                sink.send(WsMessage::binary(frame)).await
            }
            Outbound::Ping(payload) => sink.send(WsMessage::Ping(payload.into())).await,
            Outbound::Close(reason) => {
                let frame = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
                break;
            }
        };
        if result.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Who a registered session reads for.
struct Origin {
    worker: PublicKey,
    /// The connection, among the worker's reconnects.
    conn: u64,
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<R>(
    coordinator: &Coordinator,
    frames: &mut R,
    from: &Origin,
    link: &Link,
    limits: &Limits,
    pinger: Option<tokio::sync::mpsc::Sender<Outbound>>,
    shutdown: &CancellationToken,
) where
    R: futures_util::Stream<Item = Result<WsMessage, tungstenite::Error>> + Unpin,
{
    let peer = link.peer.as_str();
    let worker = &from.worker;
    let config = coordinator.config();
    let idle = secs(config.liveness.offline_after_secs);
    let mut bucket = TokenBucket::new(config.limits.frames_per_sec, config.limits.frame_burst);
    let mut ticker = tokio::time::interval(secs(config.liveness.ping_secs));
    // Ping payloads are random, so a worker cannot answer a ping before it has received it.
    let mut pings: HashMap<u64, (u64, Instant)> = HashMap::new();
    let mut ping_seq = 0u64;
    let mut strikes = 0u32;
    let mut dropped = 0u32;
    let mut last_flood_report: Option<Instant> = None;
    let reply = |frame: Vec<u8>| {
        if let Some(p) = &pinger {
            let _ = p.try_send(Outbound::Frame(frame));
        }
    };

    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(p) = &pinger {
                    let _ = p.try_send(Outbound::Close("the coordinator is shutting down".into()));
                }
                break;
            }
            _ = ticker.tick() => {
                ping_seq += 1;
                let payload: u64 = rand::random();
                pings.insert(payload, (ping_seq, Instant::now()));
                pings.retain(|_, (seq, _)| *seq + RTT_SAMPLES as u64 > ping_seq);
                if let Some(p) = &pinger {
                    let _ = p.try_send(Outbound::Ping(payload.to_le_bytes().to_vec()));
                }
                continue;
            }
            item = timeout(idle, frames.next()) => item,
        };
        let arrived = Instant::now();
        let msg = match item {
            Err(_) => {
                coordinator
                    .reject(
                        peer,
                        Some(*worker),
                        RefusalKind::IdleTimeout,
                        format!("nothing received for {idle:?}"),
                    )
                    .await;
                break;
            }
            Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => break,
            Ok(Some(Err(e))) => {
                let kind = ws_error_kind(&e);
                coordinator.reject(peer, Some(*worker), kind, e.to_string()).await;
                break;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        if let WsMessage::Close(_) = msg {
            break;
        }
        // Every frame, control frames included, pays into the same bucket.
        coordinator.metrics().frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !bucket.allow(arrived) {
            dropped += 1;
            if dropped >= config.limits.max_dropped_frames {
                let detail = format!("{dropped} frames over the rate limit; closed");
                coordinator.reject(peer, Some(*worker), RefusalKind::Flood, detail).await;
                if let Some(p) = &pinger {
                    let _ = p.try_send(Outbound::Close("flooding".into()));
                }
                break;
            }
            // Dropped. Report (and persist) at most once a second per connection.
            if last_flood_report.is_none_or(|t| arrived.duration_since(t) >= Duration::from_secs(1))
            {
                last_flood_report = Some(arrived);
                coordinator
                    .reject(
                        peer,
                        Some(*worker),
                        RefusalKind::RateLimited,
                        format!("more than {} frames/s", config.limits.frames_per_sec),
                    )
                    .await;
                let text = "slow down: frames are being dropped";
                reply(error_frame(ErrorCode::RateLimited, None, text, limits));
            } else {
                coordinator.metrics().rejected(RefusalKind::RateLimited.as_str());
            }
            continue;
        }
        let bytes = match msg {
            WsMessage::Binary(bytes) => bytes,
            WsMessage::Pong(payload) => {
                if let Ok(payload) = <[u8; 8]>::try_from(payload.as_ref())
                    && let Some((_, sent)) = pings.remove(&u64::from_le_bytes(payload))
                {
                    let sample = RttSample {
                        received: arrived,
                        rtt: arrived.saturating_duration_since(sent),
                        kernel_min: link.kernel_rtt.min_rtt(),
                    };
                    coordinator.record_rtt(worker, sample);
                }
                continue;
            }
            WsMessage::Ping(_) | WsMessage::Frame(_) | WsMessage::Close(_) => continue,
            WsMessage::Text(_) => {
                strikes += 1;
                let detail = "text frames are not part of the protocol";
                coordinator
                    .reject(peer, Some(*worker), RefusalKind::MalformedFrame, detail.into())
                    .await;
                reply(error_frame(ErrorCode::Malformed, None, detail, limits));
                if strikes >= config.limits.max_strikes {
                    break;
                }
                continue;
            }
        };
        let outcome = match wire::decode(&bytes, limits) {
            Ok(msg) => coordinator.on_message(worker, from.conn, msg, arrived).await.map_err(|r| {
                let answer = refusal_frame(&r, limits);
                (r, answer)
            }),
            Err(e) => Err(undecodable(&e, limits)),
        };
        if let Err((refusal, answer)) = outcome {
            strikes += 1;
            reply(answer);
            coordinator.reject(peer, Some(*worker), refusal.kind, refusal.detail).await;
            if strikes >= config.limits.max_strikes {
                if let Some(p) = &pinger {
                    let _ = p.try_send(Outbound::Close("too many refused frames".into()));
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::WrittenAt;
    use veribench_protocol::{Heartbeat, OpenRequest, UnixMillis};

    fn decoded_error(frame: &[u8]) -> ErrorMsg {
        match wire::decode(frame, &Limits::default()) {
            Ok(Message::Error(e)) => e,
            other => panic!("not an Error frame: {other:?}"),
        }
    }

    /// Every decode failure is stored under the kind and answered with the code of the same
    /// failure; a frame of version 1 is answered in version 1, which its sender reads.
    #[test]
    fn undecodable_frames_are_answered_with_their_code() {
        let limits = Limits::default();
        let heartbeat = Message::Heartbeat(Heartbeat { seq: 1, sent_at: UnixMillis(1) });
        let mut v1 = wire::encode(&heartbeat);
        v1[2..4].copy_from_slice(&1u16.to_le_bytes());
        let e = wire::decode(&v1, &limits).expect_err("version 1");
        let (refusal, answer) = undecodable(&e, &limits);
        assert_eq!(refusal.kind, RefusalKind::UnsupportedVersion);
        assert_eq!(&answer[..6], b"VB\x01\x00\x08\x02");

        let mut v3 = v1.clone();
        v3[2..4].copy_from_slice(&3u16.to_le_bytes());
        let e = wire::decode(&v3, &limits).expect_err("version 3");
        let told = decoded_error(&undecodable(&e, &limits).1);
        assert_eq!((told.code, told.challenge_id), (ErrorCode::UnsupportedVersion, None));

        let empty = wire::encode(&Message::OpenRequest(OpenRequest {
            challenge_id: ChallengeId(7),
            rows: vec![],
        }));
        let cases = [
            (b"junk".to_vec(), RefusalKind::MalformedFrame, ErrorCode::Malformed),
            (empty, RefusalKind::InvalidFrame, ErrorCode::Invalid),
        ];
        for (frame, kind, code) in cases {
            let e = wire::decode(&frame, &limits).expect_err("undecodable");
            let (refusal, answer) = undecodable(&e, &limits);
            assert_eq!(refusal.kind, kind, "{e}");
            assert_eq!(decoded_error(&answer).code, code, "{e}");
            assert_eq!(kind.error_code(), Some(code));
        }
    }

    /// A refusal's text is cut to the wire's bound, so the frame always decodes.
    #[test]
    fn long_refusals_still_decode() {
        let limits = Limits::default();
        let refusal = Refusal::new(RefusalKind::BadDelegation, "é".repeat(1000));
        let told = decoded_error(&refusal_frame(&refusal, &limits));
        assert_eq!(told.code, ErrorCode::BadDelegation);
        assert!(told.message.len() <= limits.max_text_bytes as usize);
    }

    /// A challenge queued behind a slow write starts its clock when the writer takes it, not
    /// when it was queued (SPEC §8.1).
    #[tokio::test]
    async fn a_challenge_clock_starts_when_the_writer_takes_the_frame() {
        const SLOW: Duration = Duration::from_millis(60);
        let sink = futures_util::sink::unfold((), |(), _: WsMessage| async move {
            tokio::time::sleep(SLOW).await;
            Ok::<(), tungstenite::Error>(())
        });
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let written = WrittenAt::default();
        let queued = Instant::now();
        tx.send(Outbound::Frame(vec![1; 16])).await.expect("queue");
        tx.send(Outbound::Challenge(vec![2; 16], written.clone())).await.expect("queue");
        drop(tx);
        write_loop(Box::pin(sink), rx).await;
        let started = *written.get().expect("the writer stamps a challenge frame");
        assert!(started.duration_since(queued) >= SLOW, "{:?}", started.duration_since(queued));
    }
}
