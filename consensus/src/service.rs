//! A node and its gRPC server together: what a coordinator runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use veribench_wallet::Keypair;

use crate::error::ConsensusError;
use crate::node::{self, Host, NodeConfig, NodeHandle};
use crate::transport::{
    ClientTls, PeerAddr, Peers, ServerLimits, ServerTls, TransportError, TransportStats,
    TransportStatsSnapshot, serve,
};

/// How to run a node and its server.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The node.
    pub node: NodeConfig,
    /// The other validators' gRPC endpoints.
    pub peers: Vec<PeerAddr>,
    /// TLS towards the peers (`https://` URLs).
    pub client_tls: Option<ClientTls>,
    /// TLS of the server (mutual when it names a client CA).
    pub server_tls: Option<ServerTls>,
    /// What a peer may cost the server.
    pub limits: ServerLimits,
    /// Bound on one RPC to a peer, connecting included.
    pub rpc_timeout: Duration,
}

impl ServiceConfig {
    /// Plaintext, default limits, 2 s RPCs.
    pub fn new(node: NodeConfig, peers: Vec<PeerAddr>) -> Self {
        Self {
            node,
            peers,
            client_tls: None,
            server_tls: None,
            limits: ServerLimits::default(),
            rpc_timeout: Duration::from_secs(2),
        }
    }
}

/// A running node and server.
#[derive(Debug)]
pub struct Service {
    /// The node.
    pub node: NodeHandle,
    stats: Arc<TransportStats>,
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), TransportError>>,
}

impl Service {
    /// Starts the node for `keypair` and serves it on `listener`.
    pub async fn start(
        config: ServiceConfig,
        listener: TcpListener,
        keypair: Keypair,
        host: Arc<dyn Host>,
    ) -> Result<Self, ConsensusError> {
        let local_addr = listener.local_addr().map_err(ConsensusError::Listener)?;
        let peers = Peers::new(config.peers, config.client_tls, config.rpc_timeout)?;
        let node = node::spawn(config.node, keypair, peers, host).await?;
        let stats = Arc::new(TransportStats::default());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            node.inbound(),
            config.limits,
            config.server_tls,
            stats.clone(),
            shutdown.clone(),
        ));
        Ok(Self { node, stats, local_addr, shutdown, server })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn transport_stats(&self) -> TransportStatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the server, then the node.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.node.stop().await;
    }
}
