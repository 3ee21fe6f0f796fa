//! The validators' gRPC transport: signed envelopes gossiped to every peer, decisions fetched
//! by validators that fell behind.
//!
//! - [`envelope`]: what is signed and how a received envelope is checked.
//! - [`server`]: the service, its limits and counters.
//! - [`client`]: one sender task per peer, bounded queues, lazy connections.

pub mod client;
pub mod envelope;
mod limits;
pub mod server;
#[cfg(test)]
mod tests;

/// The code generated from `proto/consensus.proto`.
#[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("veribench.consensus.v1");
}

pub use client::{ClientTls, PEER_QUEUE_CAPACITY, PeerAddr, Peers, PeersStatsSnapshot};
pub use envelope::{ENVELOPE_CONTEXT, Envelope, EnvelopeError, MessageKind, open, seal};
pub use server::{Inbound, ServerLimits, ServerTls, TransportStats, TransportStatsSnapshot, serve};

/// Why the transport could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A peer URL does not parse.
    #[error("peer URL {url:?} is invalid")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why it does not parse.
        #[source]
        source: tonic::transport::Error,
    },
    /// A peer URL is neither `http://` nor `https://`.
    #[error("peer URL {0:?} is neither http:// nor https://")]
    UnsupportedScheme(String),
    /// A peer URL is `https://` but no client TLS was configured.
    #[error("peer URL {0:?} needs TLS, and none is configured")]
    TlsRequired(String),
    /// A peer URL is `http://` while TLS is configured: refused rather than silently plaintext.
    #[error("peer URL {0:?} is plaintext while TLS is configured")]
    PlaintextWithTls(String),
    /// A certificate, key or CA could not be used.
    #[error("TLS configuration")]
    Tls(#[source] tonic::transport::Error),
    /// The server failed.
    #[error("serving")]
    Serve(#[source] tonic::transport::Error),
}
