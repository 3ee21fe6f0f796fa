//! Helpers shared by the worker's integration tests: keys, signed challenges and a minimal
//! in-test coordinator speaking the wire protocol over a real loopback WebSocket.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, ErrorCode, ErrorMsg, Message, Mode, Register, Seed, Shape,
    Signature, SignedChallenge, UnixMillis, Welcome,
};
use veribench_wallet::{Keypair, verify};

/// Deterministic test keys.
pub fn key(byte: u8) -> Keypair {
    Keypair::from_seed(&[byte; 32])
}

/// A 16×16×16 int8 challenge for `device`, issued now and due in a minute, signed by `signer`
/// and naming `issuer` as its coordinator.
pub fn challenge_by(
    id: u64,
    device: &DeviceKey,
    issuer: &Keypair,
    signer: &Keypair,
    now: UnixMillis,
) -> SignedChallenge {
    let challenge = Challenge {
        id: ChallengeId(id),
        seed: Seed([id as u8; 32]),
        mode: Mode::Int8,
        shape: Shape::square(16),
        issued_at: now,
        deadline: UnixMillis(now.0 + 60_000),
    };
    let mut signed = SignedChallenge {
        challenge,
        device: device.clone(),
        coordinator: issuer.public(),
        signature: Signature([0; 64]),
    };
    signed.signature = signer.sign(&signed.signed_bytes());
    signed
}

/// A properly signed challenge from `coordinator`.
pub fn challenge(id: u64, device: &DeviceKey, coordinator: &Keypair) -> SignedChallenge {
    challenge_by(id, device, coordinator, coordinator, UnixMillis::now())
}

/// [`challenge`] of another shape, signed again.
pub fn challenge_shaped(
    id: u64,
    device: &DeviceKey,
    coordinator: &Keypair,
    shape: Shape,
) -> SignedChallenge {
    let mut signed = challenge(id, device, coordinator);
    signed.challenge.shape = shape;
    signed.signature = coordinator.sign(&signed.signed_bytes());
    signed
}

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One side of the in-test coordinator, over plain TCP or TLS.
pub struct Peer<S = TcpStream> {
    pub ws: WebSocketStream<S>,
    pub heartbeats: u64,
}

/// Accepts the next WebSocket connection.
pub async fn accept(listener: &TcpListener) -> Peer {
    let (tcp, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("worker connects in time")
        .expect("accept");
    let ws = tokio_tungstenite::accept_async(tcp).await.expect("WebSocket handshake");
    Peer { ws, heartbeats: 0 }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub async fn send(&mut self, msg: &Message) {
        self.ws.send(WsMessage::binary(wire::encode(msg))).await.expect("send");
    }

    /// Sends raw bytes as one binary message (for malformed frames).
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::binary(bytes)).await.expect("send");
    }

    /// The next protocol message that is not a heartbeat; `None` when the connection ended
    /// (Close frame, EOF or error).
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame arrives in time");
            match frame {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return None,
                Some(Ok(WsMessage::Binary(bytes))) => {
                    match wire::decode(&bytes, &Limits::default()).expect("worker frames decode") {
                        Message::Heartbeat(_) => self.heartbeats += 1,
                        msg => return Some(msg),
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next binary frame that is not a current heartbeat, undecoded (for frames of another
    /// version).
    pub async fn recv_raw(&mut self) -> Vec<u8> {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a frame arrives in time")
                .expect("connection open")
                .expect("frame");
            if let WsMessage::Binary(bytes) = frame {
                if let Ok(Message::Heartbeat(_)) = wire::decode(&bytes, &Limits::default()) {
                    self.heartbeats += 1;
                } else {
                    return bytes.to_vec();
                }
            }
        }
    }

    /// Waits for the next heartbeat, failing on any other message; returns its sequence number.
    pub async fn expect_heartbeat(&mut self) -> u64 {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("a heartbeat arrives in time")
                .expect("connection open")
                .expect("frame");
            if let WsMessage::Binary(bytes) = frame {
                match wire::decode(&bytes, &Limits::default()).expect("worker frames decode") {
                    Message::Heartbeat(h) => {
                        self.heartbeats += 1;
                        return h.seq;
                    }
                    other => panic!("expected a heartbeat, got {other:?}"),
                }
            }
        }
    }

    /// The next message, which must exist.
    pub async fn expect(&mut self) -> Message {
        self.recv().await.expect("connection still open")
    }

    /// Receives the Register, checks its signature and welcomes the worker as `coordinator`.
    pub async fn handshake(&mut self, coordinator: &Keypair, heartbeat_ms: u64) -> Register {
        let Message::Register(register) = self.expect().await else {
            panic!("the first frame is a Register");
        };
        assert!(
            verify(
                &register.delegation.worker_key,
                &register.signing_payload(),
                &register.signature
            ),
            "the Register is signed by the worker key"
        );
        self.send(&Message::Welcome(Welcome {
            coordinator: coordinator.public(),
            heartbeat_interval_ms: heartbeat_ms,
            server_time: UnixMillis::now(),
        }))
        .await;
        register
    }

    /// Expects an Error frame with `code` about `challenge` (SPEC §8.5); returns it.
    pub async fn expect_error(&mut self, code: ErrorCode, challenge: Option<u64>) -> ErrorMsg {
        match self.expect().await {
            Message::Error(e) => {
                assert_eq!(e.code, code, "{}", e.message);
                assert_eq!(e.challenge_id, challenge.map(ChallengeId), "{}", e.message);
                e
            }
            other => panic!("expected an Error {code} about {challenge:?}, got {other:?}"),
        }
    }

    /// Expects an Error frame with `code` refusing or giving up challenge `id`; returns its
    /// text, which is for people only.
    pub async fn expect_refusal(&mut self, code: ErrorCode, id: u64) -> String {
        self.expect_error(code, Some(id)).await.message
    }
}
