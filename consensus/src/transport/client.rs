//! The gRPC clients of the other validators: one lazy channel and one sender task per peer, so a
//! slow or dead peer delays nobody else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veribench_protocol::PublicKey;

use super::TransportError;
use super::proto::consensus_client::ConsensusClient;
use super::proto::{DecidedRequest, SignedEnvelope};

/// Envelopes queued per peer before new ones are dropped. Consensus tolerates lost messages
/// (rounds time out, GetDecided catches up); an unbounded queue to a dead peer would not be.
pub const PEER_QUEUE_CAPACITY: usize = 1024;

/// A validator to gossip to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// Its hotkey.
    pub key: PublicKey,
    /// Its gRPC endpoint: `http://host:port` (plaintext) or `https://host:port` (TLS).
    pub url: String,
}

/// The clients' TLS.
#[derive(Clone)]
pub struct ClientTls {
    /// PEM CA that peers' server certificates must chain to (the only trust anchor: public
    /// web roots are not trusted).
    pub ca_pem: Vec<u8>,
    /// The name to verify in peers' certificates instead of each URL's host.
    pub domain: Option<String>,
    /// PEM certificate chain and private key presented to peers that require mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain", &self.domain)
            .field("mutual", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the clients, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeersStatsSnapshot {
    /// Envelopes a peer acknowledged.
    pub sent: u64,
    /// Envelopes whose RPC failed (peer down, timeout, or refused by the peer).
    pub failed: u64,
    /// Envelopes dropped because a peer's queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct PeersStats {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Peer {
    key: PublicKey,
    client: ConsensusClient<Channel>,
    queue: mpsc::Sender<Arc<SignedEnvelope>>,
    /// Whether the last RPC to it reached it.
    reachable: Arc<AtomicBool>,
}

/// The other validators, each behind its own sender task.
#[derive(Debug)]
pub struct Peers {
    peers: Vec<Peer>,
    stats: Arc<PeersStats>,
    stop: CancellationToken,
    rpc_timeout: Duration,
}

/// Whether an RPC's outcome shows the peer was reached: any answer of the peer's service,
/// including a refusal, as opposed to a connection failure or a timeout.
fn reached(result: &Result<impl Sized, tonic::Status>) -> bool {
    match result {
        Ok(_) => true,
        Err(status) => !matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ),
    }
}

/// The endpoint of one peer, checked against the TLS configuration.
fn endpoint(
    url: &str,
    tls: Option<&ClientTlsConfig>,
    rpc_timeout: Duration,
) -> Result<Endpoint, TransportError> {
    let bad_url = |source| TransportError::BadUrl { url: url.to_owned(), source };
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(bad_url)?;
    let endpoint = endpoint
        .connect_timeout(rpc_timeout)
        .timeout(rpc_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    match (endpoint.uri().scheme_str(), tls) {
        (Some("http"), None) => Ok(endpoint),
        (Some("https"), Some(tls)) => endpoint.tls_config(tls.clone()).map_err(TransportError::Tls),
        (Some("https"), None) => Err(TransportError::TlsRequired(url.to_owned())),
        // TLS is configured, so a plaintext peer is a mistake rather than a choice.
        (Some("http"), Some(_)) => Err(TransportError::PlaintextWithTls(url.to_owned())),
        _ => Err(TransportError::UnsupportedScheme(url.to_owned())),
    }
}

impl Peers {
    /// Clients of `peers`. Channels are lazy: a peer that is down does not fail construction,
    /// it is connected (and reconnected) when there is something to send. Each peer gets a
    /// sender task with a queue of [`PEER_QUEUE_CAPACITY`] envelopes, sent in order, each RPC
    /// (connecting included) bounded by `rpc_timeout`.
    ///
    /// Must be called inside a Tokio runtime. `https://` URLs need `tls`; with `tls`, every URL
    /// must be `https://`.
    pub fn new(
        peers: Vec<PeerAddr>,
        tls: Option<ClientTls>,
        rpc_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let tls = tls.map(|tls| {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(domain) = tls.domain {
                config = config.domain_name(domain);
            }
            if let Some((cert, key)) = tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            config
        });
        // Check every address before spawning anything.
        let endpoints = peers
            .iter()
            .map(|peer| endpoint(&peer.url, tls.as_ref(), rpc_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = CancellationToken::new();
        let stats = Arc::new(PeersStats::default());
        let peers = peers
            .into_iter()
            .zip(endpoints)
            .map(|(peer, endpoint)| {
                let client = ConsensusClient::new(endpoint.connect_lazy());
                let (queue, rx) = mpsc::channel(PEER_QUEUE_CAPACITY);
                let reachable = Arc::new(AtomicBool::new(false));
                tokio::spawn(send_loop(
                    peer.key,
                    client.clone(),
                    rx,
                    reachable.clone(),
                    stats.clone(),
                    stop.clone(),
                    rpc_timeout,
                ));
                Peer { key: peer.key, client, queue, reachable }
            })
            .collect();
        Ok(Self { peers, stats, stop, rpc_timeout })
    }

    /// Queues `envelope` to every peer; never blocks. A peer whose queue is full loses it
    /// (counted in [`PeersStatsSnapshot::dropped`]).
    pub fn broadcast(&self, envelope: &SignedEnvelope) {
        let envelope = Arc::new(envelope.clone());
        for peer in &self.peers {
            if peer.queue.try_send(envelope.clone()).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.key, "peer queue full, envelope dropped");
            }
        }
    }

    /// Asks every peer at once for the decision at `height`; the first answer wins, with the
    /// peer that gave it. `None` when no peer has one (or none answered in time).
    ///
    /// The bytes are whatever the peer sent: the caller verifies them.
    pub async fn fetch_decided(&self, height: u64) -> Option<(PublicKey, Vec<u8>)> {
        let mut asks: FuturesUnordered<_> = self
            .peers
            .iter()
            .map(|peer| async move {
                let mut client = peer.client.clone();
                let result = tokio::time::timeout(
                    self.rpc_timeout,
                    client.get_decided(DecidedRequest { height }),
                )
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("GetDecided timed out")));
                peer.reachable.store(reached(&result), Ordering::Relaxed);
                match result {
                    Ok(response) => Some((peer.key, response.into_inner().decided)),
                    Err(status) => {
                        tracing::debug!(peer = %peer.key, height, %status, "GetDecided");
                        None
                    }
                }
            })
            .collect();
        while let Some(answer) = asks.next().await {
            if answer.is_some() {
                return answer;
            }
        }
        None
    }

    /// How many peers the last RPC reached.
    pub fn connected(&self) -> usize {
        self.peers.iter().filter(|p| p.reachable.load(Ordering::Relaxed)).count()
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The clients' counters now.
    pub fn stats(&self) -> PeersStatsSnapshot {
        PeersStatsSnapshot {
            sent: self.stats.sent.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the sender tasks; queued envelopes are dropped. Also done on drop.
    pub fn close(&self) {
        self.stop.cancel();
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sends one peer's queue, in order, until stopped.
async fn send_loop(
    key: PublicKey,
    mut client: ConsensusClient<Channel>,
    mut queue: mpsc::Receiver<Arc<SignedEnvelope>>,
    reachable: Arc<AtomicBool>,
    stats: Arc<PeersStats>,
    stop: CancellationToken,
    rpc_timeout: Duration,
) {
    loop {
        let envelope = tokio::select! {
            () = stop.cancelled() => break,
            envelope = queue.recv() => match envelope {
                Some(envelope) => envelope,
                None => break,
            },
        };
        let result = tokio::select! {
            () = stop.cancelled() => break,
            result = tokio::time::timeout(rpc_timeout, client.gossip(SignedEnvelope::clone(&envelope))) => {
                result.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("gossip timed out")))
            }
        };
        reachable.store(reached(&result), Ordering::Relaxed);
        match result {
            Ok(_) => stats.sent.fetch_add(1, Ordering::Relaxed),
            Err(status) => {
                tracing::debug!(peer = %key, %status, "gossip failed");
                stats.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}
