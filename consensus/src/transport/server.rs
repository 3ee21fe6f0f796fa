//! The gRPC server: checks every envelope (size, sender, network, kind, membership, signature),
//! rate-limits per (sender, kind), and hands what passes to the node.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use veribench_protocol::PublicKey;

use super::TransportError;
use super::envelope::{Envelope, EnvelopeError, MessageKind, open};
use super::limits::{RateLimiter, ip_key};
use super::proto::consensus_server::{Consensus, ConsensusServer};
use super::proto::{DecidedRequest, DecidedResponse, GossipAck, SignedEnvelope};

/// How long a TLS handshake may take: a connection that stalls in it holds a connection slot.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings find dead peers, whose connections would otherwise hold slots forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Most remote addresses whose GetDecided buckets are remembered at once.
const MAX_DECIDED_ADDRESSES: usize = 4096;
/// Most (sender, kind) buckets at once. Only members get one, so this is reached only if the
/// validator set turns over a lot between two idle periods.
const MAX_GOSSIP_BUCKETS: usize = 65_536;

/// The node behind the server: who may send, and where accepted messages go.
#[async_trait::async_trait]
pub trait Inbound: Send + Sync + 'static {
    /// The network (netuid) this node is on; envelopes of other networks are refused.
    fn network(&self) -> u32;
    /// Whether `key` is a validator whose messages are accepted now.
    fn is_member(&self, key: &PublicKey) -> bool;
    /// Hands a checked envelope to the node. False when the node's queue is full (the RPC then
    /// fails with RESOURCE_EXHAUSTED, and the sender's retry or Malachite's rounds recover).
    fn deliver(&self, envelope: Envelope) -> bool;
    /// The encoded decision at `height`, when this node has one.
    async fn decided(&self, height: u64) -> Option<Vec<u8>>;
}

/// What a peer may cost the server.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Largest gRPC message accepted (and largest envelope payload).
    pub max_frame_bytes: usize,
    /// Gossip messages a second per (sender, kind).
    pub rate_per_sec: f64,
    /// Gossip burst per (sender, kind).
    pub burst: f64,
    /// GetDecided requests a second per remote address (IPv6: per /64).
    pub decided_rate_per_sec: f64,
    /// GetDecided burst per remote address.
    pub decided_burst: f64,
    /// Requests handled at once over all connections, reading their messages included; more
    /// are refused with RESOURCE_EXHAUSTED. Bounds the memory of requests to this times
    /// `max_frame_bytes`. Also the HTTP/2 stream limit of each connection.
    pub max_concurrent_requests: usize,
    /// Open connections at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long one request (reading it included) may take.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            rate_per_sec: 200.0,
            burst: 400.0,
            decided_rate_per_sec: 20.0,
            decided_burst: 40.0,
            max_concurrent_requests: 256,
            max_connections: 512,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The server's TLS: its certificate and, for mutual TLS, the CA its clients' certificates
/// must chain to.
#[derive(Clone)]
pub struct ServerTls {
    /// PEM certificate chain of the server.
    pub cert_pem: Vec<u8>,
    /// PEM private key of the server.
    pub key_pem: Vec<u8>,
    /// `Some`: mutual TLS, clients must present a certificate signed by this CA (PEM).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters of the server, for metrics. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct TransportStats {
    gossip_accepted: AtomicU64,
    refused_bad_sender: AtomicU64,
    refused_wrong_network: AtomicU64,
    refused_unknown_kind: AtomicU64,
    refused_not_member: AtomicU64,
    refused_too_large: AtomicU64,
    refused_bad_signature: AtomicU64,
    refused_rate_limited: AtomicU64,
    refused_queue_full: AtomicU64,
    refused_overloaded: AtomicU64,
    decided_served: AtomicU64,
    decided_not_found: AtomicU64,
    decided_rate_limited: AtomicU64,
}

/// A copy of [`TransportStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStatsSnapshot {
    /// Envelopes delivered to the node.
    pub gossip_accepted: u64,
    /// Envelopes whose sender was not 32 bytes.
    pub refused_bad_sender: u64,
    /// Envelopes of another network.
    pub refused_wrong_network: u64,
    /// Envelopes of an unknown kind.
    pub refused_unknown_kind: u64,
    /// Envelopes from a non-validator.
    pub refused_not_member: u64,
    /// Envelopes whose payload was too large (frames over the limit are refused by tonic
    /// before they are counted).
    pub refused_too_large: u64,
    /// Envelopes with a bad signature.
    pub refused_bad_signature: u64,
    /// Envelopes over their (sender, kind) rate.
    pub refused_rate_limited: u64,
    /// Envelopes the node's full queue refused.
    pub refused_queue_full: u64,
    /// Requests refused because too many were in flight.
    pub refused_overloaded: u64,
    /// GetDecided answered with a decision.
    pub decided_served: u64,
    /// GetDecided for a height without a decision.
    pub decided_not_found: u64,
    /// GetDecided over its per-address rate.
    pub decided_rate_limited: u64,
}

impl TransportStats {
    /// The counters now.
    pub fn snapshot(&self) -> TransportStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStatsSnapshot {
            gossip_accepted: get(&self.gossip_accepted),
            refused_bad_sender: get(&self.refused_bad_sender),
            refused_wrong_network: get(&self.refused_wrong_network),
            refused_unknown_kind: get(&self.refused_unknown_kind),
            refused_not_member: get(&self.refused_not_member),
            refused_too_large: get(&self.refused_too_large),
            refused_bad_signature: get(&self.refused_bad_signature),
            refused_rate_limited: get(&self.refused_rate_limited),
            refused_queue_full: get(&self.refused_queue_full),
            refused_overloaded: get(&self.refused_overloaded),
            decided_served: get(&self.decided_served),
            decided_not_found: get(&self.decided_not_found),
            decided_rate_limited: get(&self.decided_rate_limited),
        }
    }

    fn refused(&self, error: &EnvelopeError) {
        let counter = match error {
            EnvelopeError::BadSender(_) => &self.refused_bad_sender,
            EnvelopeError::WrongNetwork { .. } => &self.refused_wrong_network,
            EnvelopeError::UnknownKind(_) => &self.refused_unknown_kind,
            EnvelopeError::NotAMember(_) => &self.refused_not_member,
            EnvelopeError::TooLarge { .. } => &self.refused_too_large,
            EnvelopeError::BadSignature => &self.refused_bad_signature,
        };
        bump(counter);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The gRPC status of a refused envelope.
fn status_of(error: &EnvelopeError) -> Status {
    let message = error.to_string();
    match error {
        EnvelopeError::BadSender(_)
        | EnvelopeError::WrongNetwork { .. }
        | EnvelopeError::UnknownKind(_)
        | EnvelopeError::TooLarge { .. } => Status::invalid_argument(message),
        EnvelopeError::NotAMember(_) => Status::permission_denied(message),
        EnvelopeError::BadSignature => Status::unauthenticated(message),
    }
}

/// The service behind the generated gRPC server.
struct Service {
    inbound: Arc<dyn Inbound>,
    max_payload: usize,
    gossip_limiter: RateLimiter<(PublicKey, MessageKind)>,
    decided_limiter: RateLimiter<IpAddr>,
    stats: Arc<TransportStats>,
}

#[tonic::async_trait]
impl Consensus for Service {
    async fn gossip(
        &self,
        request: Request<SignedEnvelope>,
    ) -> Result<Response<GossipAck>, Status> {
        let inbound = &self.inbound;
        let envelope = open(
            request.into_inner(),
            inbound.network(),
            &|k| inbound.is_member(k),
            self.max_payload,
        )
        .map_err(|e| {
            tracing::debug!(error = %e, code = e.code(), "envelope refused");
            self.stats.refused(&e);
            status_of(&e)
        })?;
        if !self.gossip_limiter.allow(&(envelope.sender, envelope.kind)) {
            bump(&self.stats.refused_rate_limited);
            return Err(Status::resource_exhausted("rate limited"));
        }
        if !inbound.deliver(envelope) {
            bump(&self.stats.refused_queue_full);
            return Err(Status::resource_exhausted("queue full"));
        }
        bump(&self.stats.gossip_accepted);
        Ok(Response::new(GossipAck {}))
    }

    async fn get_decided(
        &self,
        request: Request<DecidedRequest>,
    ) -> Result<Response<DecidedResponse>, Status> {
        // Every accepted connection has an address; the fallback only shares one bucket.
        let ip =
            request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| ip_key(a.ip()));
        if !self.decided_limiter.allow(&ip) {
            bump(&self.stats.decided_rate_limited);
            return Err(Status::resource_exhausted("rate limited"));
        }
        let height = request.into_inner().height;
        match self.inbound.decided(height).await {
            Some(decided) => {
                bump(&self.stats.decided_served);
                Ok(Response::new(DecidedResponse { decided }))
            }
            None => {
                bump(&self.stats.decided_not_found);
                Err(Status::not_found(format!("no decision at height {height}")))
            }
        }
    }
}

/// Admits at most as many requests at once as it has permits, over all connections, and
/// answers the others RESOURCE_EXHAUSTED at once. The permit is taken before the request body is
/// read, so it also bounds the memory of messages being decoded (permits × max frame).
#[derive(Clone)]
struct Admission<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
    stats: Arc<TransportStats>,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tonic::codegen::Service<HttpRequest> for Admission<S>
where
    S: tonic::codegen::Service<HttpRequest, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        match self.in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                bump(&self.stats.refused_overloaded);
                Box::pin(std::future::ready(Ok(
                    Status::resource_exhausted("server overloaded").into_http()
                )))
            }
        }
    }
}

/// An accepted connection holding one of the server's connection slots until it closes.
struct LimitedStream {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts connections while fewer than `max` are open.
fn incoming(
    listener: TcpListener,
    max: usize,
) -> impl futures_util::Stream<Item = io::Result<LimitedStream>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures_util::stream::unfold((listener, slots), |(listener, slots)| async move {
        // The semaphore is never closed, so this only waits for a slot.
        let slot = slots.clone().acquire_owned().await.ok()?;
        let next = match listener.accept().await {
            Ok((io, _)) => {
                // Votes are small and latency-sensitive.
                if let Err(e) = io.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY");
                }
                Ok(LimitedStream { io, _slot: slot })
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                Err(e)
            }
        };
        Some((next, (listener, slots)))
    })
}

/// Serves the consensus service on `listener` until `shutdown` is cancelled, then closes the
/// listener, lets requests in flight finish and returns.
///
/// `stats` is updated as requests are handled. With `tls`, connections are TLS (mutual when
/// [`ServerTls::client_ca_pem`] is set); without, plaintext HTTP/2 (local tests, private
/// networks).
pub async fn serve(
    listener: TcpListener,
    inbound: Arc<dyn Inbound>,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    stats: Arc<TransportStats>,
    shutdown: CancellationToken,
) -> Result<(), TransportError> {
    let mut builder = Server::builder()
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX));
    if let Some(tls) = tls {
        // rustls needs a process-wide crypto provider; ring is the workspace's. An error means
        // one is installed already, which is as good.
        veribench_support::tls::install_crypto_provider();
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &tls.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config).map_err(TransportError::Tls)?;
    }
    let service = Service {
        inbound,
        max_payload: limits.max_frame_bytes,
        gossip_limiter: RateLimiter::new(limits.rate_per_sec, limits.burst, MAX_GOSSIP_BUCKETS),
        decided_limiter: RateLimiter::new(
            limits.decided_rate_per_sec,
            limits.decided_burst,
            MAX_DECIDED_ADDRESSES,
        ),
        stats: stats.clone(),
    };
    let service = Admission {
        inner: ConsensusServer::new(service).max_decoding_message_size(limits.max_frame_bytes),
        in_flight: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
        stats,
    };
    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, "consensus transport serving");
    // The one service is served directly (tonic's router would need its `router` feature, and
    // axum): the generated server answers UNIMPLEMENTED to any other path.
    builder
        .serve_with_incoming_shutdown(
            service,
            incoming(listener, limits.max_connections),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(TransportError::Serve)?;
    tracing::info!(address = ?local, "consensus transport stopped");
    Ok(())
}
