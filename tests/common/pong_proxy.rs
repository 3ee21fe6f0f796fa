//! A TCP proxy between a worker and the coordinator that tampers with the worker's WebSocket
//! pongs (delays or drops them) and forwards everything else untouched: the fault a worker would
//! inject to inflate the round trip the coordinator subtracts from its compute time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use veribench_protocol::Message;
use veribench_protocol::wire::{self, Limits};

/// What the proxy does to pongs going from the worker to the coordinator.
#[derive(Clone, Copy, Debug)]
pub enum PongPolicy {
    /// Hold every pong this long.
    Delay(Duration),
    /// Hold a pong this long if a challenge is in flight (a `Challenge` went to the worker and
    /// no `Verdict` or `Error` has followed), forward it at once otherwise.
    DelayDuringChallenges(Duration),
    /// Never forward a pong.
    Drop,
}

/// A listening proxy; connect workers to [`PongProxy::url`].
#[derive(Debug)]
pub struct PongProxy {
    /// `ws://` URL of the proxy.
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for PongProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PongProxy {
    /// Listens on loopback and relays every connection to `upstream` with `policy`.
    pub async fn start(upstream: SocketAddr, policy: PongPolicy) -> PongProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("ws://{}", listener.local_addr().expect("proxy address"));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, policy));
            }
        });
        PongProxy { url, task }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, policy: PongPolicy) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let in_flight = Arc::new(AtomicBool::new(false));

    // Coordinator → worker: forwarded as read; frames decoded on the side to see challenges.
    let watching = in_flight.clone();
    let down = tokio::spawn(async move {
        let mut parser = Frames::default();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = server_rx.read(&mut buf).await {
            if n == 0 || client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
            for frame in parser.push(&buf[..n]) {
                if frame.opcode != 0x2 {
                    continue;
                }
                match wire::decode(&frame.payload, &Limits::default()) {
                    Ok(Message::Challenge(_)) => watching.store(true, Ordering::SeqCst),
                    Ok(Message::Verdict(_) | Message::Error(_)) => {
                        watching.store(false, Ordering::SeqCst)
                    }
                    _ => {}
                }
            }
        }
        let _ = client_tx.shutdown().await;
    });

    // Worker → coordinator: whole frames through one writer, pongs held or dropped.
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if server_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    });
    let mut parser = Frames::default();
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = client_rx.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if !parser.upgraded() {
            // The HTTP upgrade request passes as it is.
            let (head, rest) = parser.take_head(&buf[..n]);
            let _ = tx.send(head);
            if let Some(rest) = rest {
                forward(&mut parser, &rest, &tx, policy, &in_flight);
            }
            continue;
        }
        forward(&mut parser, &buf[..n], &tx, policy, &in_flight);
    }
    drop(tx);
    let _ = writer.await;
    down.abort();
}

fn forward(
    parser: &mut Frames,
    bytes: &[u8],
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    policy: PongPolicy,
    in_flight: &AtomicBool,
) {
    for frame in parser.push(bytes) {
        if frame.opcode != 0xA {
            let _ = tx.send(frame.raw);
            continue;
        }
        let hold = match policy {
            PongPolicy::Drop => continue,
            PongPolicy::Delay(d) => d,
            PongPolicy::DelayDuringChallenges(d) if in_flight.load(Ordering::SeqCst) => d,
            PongPolicy::DelayDuringChallenges(_) => Duration::ZERO,
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let _ = tx.send(frame.raw);
        });
    }
}

/// One WebSocket frame: its opcode, unmasked payload and raw bytes.
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
    raw: Vec<u8>,
}

/// Splits a byte stream (after the HTTP upgrade) into WebSocket frames (RFC 6455 §5.2).
#[derive(Default)]
struct Frames {
    head_done: bool,
    head: Vec<u8>,
    pending: Vec<u8>,
}

impl Frames {
    fn upgraded(&self) -> bool {
        self.head_done
    }

    /// Consumes the HTTP head: what belongs to it, and the bytes after it if it ended here.
    fn take_head(&mut self, bytes: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let start = self.head.len();
        self.head.extend_from_slice(bytes);
        match self.head.windows(4).position(|w| w == b"\r\n\r\n") {
            None => (bytes.to_vec(), None),
            Some(at) => {
                self.head_done = true;
                let end = at + 4 - start;
                (bytes[..end].to_vec(), Some(bytes[end..].to_vec()))
            }
        }
    }

    /// Appends `bytes`; returns every frame now complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        if !self.head_done {
            // The coordinator's side: skip its HTTP 101 response.
            let (_, rest) = self.take_head(bytes);
            match rest {
                Some(rest) => self.pending.extend_from_slice(&rest),
                None => return Vec::new(),
            }
        } else {
            self.pending.extend_from_slice(bytes);
        }
        let mut frames = Vec::new();
        while let Some((frame, used)) = parse(&self.pending) {
            self.pending.drain(..used);
            frames.push(frame);
        }
        frames
    }
}

fn parse(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7F {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let m = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let body = b.get(at..at + len)?;
    let payload = match mask {
        Some(m) => body.iter().enumerate().map(|(i, v)| v ^ m[i % 4]).collect(),
        None => body.to_vec(),
    };
    Some((Frame { opcode, payload, raw: b[..at + len].to_vec() }, at + len))
}
