//! Starting and stopping the whole service: store, coordinator, WebSocket and HTTP listeners and
//! the scheduler, all on the current tokio runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use veribench_chain::Chain;
use veribench_wallet::Keypair;

use crate::config::CoordinatorConfig;
use crate::service::Coordinator;
use crate::store::{Store, StoreError};

/// How often the scheduler looks for due rounds and expired challenges.
const TICK: Duration = Duration::from_millis(200);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// A running coordinator.
#[derive(Debug)]
pub struct Running {
    /// Where workers connect.
    pub ws_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The coordinator, for in-process inspection (devnet, tests).
    pub coordinator: Arc<Coordinator>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes connections and waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Refusals are written once a second; write the last second's before the store closes.
        self.coordinator.flush_refusals().await;
        if let Err(e) = self.coordinator.store().close().await {
            tracing::warn!(error = %e, "closing the database failed");
        }
    }
}

/// Opens the store, reads the metagraph, binds the listeners and starts serving.
///
/// A chain that cannot be read at start-up is not fatal: registrations are refused with
/// `chain_unavailable` until the epoch loop's next metagraph refresh succeeds.
pub async fn start(
    config: CoordinatorConfig,
    keypair: Keypair,
    chain: Arc<dyn Chain>,
) -> Result<Running, ServeError> {
    config.validate()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let store = Store::connect(&config.db).await?;
    let ws = bind(config.ws_listen).await?;
    let http = bind(config.http_listen).await?;
    let ws_addr =
        ws.local_addr().map_err(|source| ServeError::Bind { addr: config.ws_listen, source })?;
    let http_addr = http
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: config.http_listen, source })?;
    let coordinator = Coordinator::new(config, keypair, store, chain).await?;
    if let Err(e) = coordinator.refresh_metagraph().await {
        tracing::warn!(error = %e, chain = %coordinator.chain().endpoint(), "cannot read the metagraph at start-up; registrations wait for it");
    }
    let shutdown = CancellationToken::new();

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::session::accept_loop(
        coordinator.clone(),
        ws,
        tls,
        shutdown.clone(),
    )));
    let router = crate::http::router(coordinator.clone());
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        // With each client's address, which refused lease reports are counted against.
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let serve =
            axum::serve(http, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    }));
    let (c, stop) = (coordinator.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => c.tick().await,
            }
        }
    }));
    tasks.push(tokio::spawn(crate::epoch::run_epochs(coordinator.clone(), shutdown.clone())));
    tracing::info!(%ws_addr, %http_addr, coordinator = %coordinator.public_key(), "coordinator listening");
    Ok(Running { ws_addr, http_addr, coordinator, shutdown, tasks })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// A rustls acceptor (ring provider) from PEM files.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("cannot read certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("bad certificate", cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| err("cannot read key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
