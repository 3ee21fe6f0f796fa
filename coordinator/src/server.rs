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
use tokio_util::task::TaskTracker;
use veribench_chain::Chain;
use veribench_wallet::Keypair;

use crate::config::CoordinatorConfig;
use crate::service::Coordinator;
use crate::store::{Store, StoreError};

/// How often the scheduler looks for due rounds and expired challenges.
const TICK: Duration = Duration::from_millis(200);
/// How often the database is probed and buffered heartbeats and refusals are written.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How long shutdown waits for a group of tasks (listeners, then connections) to end.
const TASKS_GRACE: Duration = Duration::from_secs(5);

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
    /// `announce.url` is set but names no endpoint that can be announced.
    #[error("cannot announce this coordinator: {0}")]
    Announce(#[from] crate::announce::AnnounceError),
    /// The consensus node or its server could not start.
    #[error("consensus: {0}")]
    Consensus(#[from] veribench_consensus::ConsensusError),
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
    /// Where the consensus gRPC server listens, when `[consensus]` is on.
    pub consensus_addr: Option<SocketAddr>,
    consensus: Option<veribench_consensus::Service>,
    /// Cancelled first: listeners, scheduler, epochs and housekeeping stop.
    accepting: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Cancelled once the challenges in flight are settled: the connections close.
    closing: CancellationToken,
    sessions: TaskTracker,
}

impl Running {
    /// Stops in an order that loses nothing: stop accepting (connections, HTTP) and scheduling;
    /// fail the challenges still waiting on workers as `coordinator_shutdown` and let every
    /// outcome be written (`storage.shutdown_grace_secs`); close the connections, each marking
    /// its worker offline; write buffered heartbeats and refusals; only then close the pool.
    pub async fn shutdown(self) {
        let started = std::time::Instant::now();
        self.accepting.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(TASKS_GRACE, task).await;
        }
        if let Some(consensus) = self.consensus {
            consensus.stop().await;
        }
        let grace = crate::config::secs(self.coordinator.config().storage.shutdown_grace_secs);
        self.coordinator.drain(grace).await;
        self.closing.cancel();
        self.sessions.close();
        if tokio::time::timeout(TASKS_GRACE, self.sessions.wait()).await.is_err() {
            tracing::warn!(
                "connections still open after {TASKS_GRACE:?}; closing the database anyway"
            );
        }
        self.coordinator.flush_before_close().await;
        if let Err(e) = self.coordinator.store().close().await {
            tracing::warn!(error = %e, "closing the database failed");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "coordinator stopped");
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
    // Refused before anything starts: an endpoint that cannot be announced is a setup error.
    let announcement = match &config.announce.url {
        Some(_) => Some(crate::announce::endpoint(&config.announce, config.tls_cert.as_deref())?),
        None => None,
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let store = Store::connect_with(&config.db, config.storage.store_options()).await?;
    let ws = bind(config.ws_listen).await?;
    let http = bind(config.http_listen).await?;
    let ws_addr =
        ws.local_addr().map_err(|source| ServeError::Bind { addr: config.ws_listen, source })?;
    let http_addr = http
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: config.http_listen, source })?;
    let announcer = announcement.map(|endpoint| {
        crate::announce::Announcer::new(
            chain.clone(),
            keypair.clone(),
            veribench_chain::NetUid(config.chain.netuid),
            endpoint,
            config.announce.clone(),
            config.chain.retry,
        )
    });
    // Bound before anything runs, like the other listeners: a port in use is a setup error.
    let consensus_setup = if config.consensus.enabled {
        let service_config = config.consensus.service_config(u32::from(config.chain.netuid))?;
        Some((service_config, bind(config.consensus.listen).await?))
    } else {
        None
    };
    let coordinator = Coordinator::new(config, keypair, store, chain).await?;
    if let Err(e) = coordinator.refresh_metagraph().await {
        tracing::warn!(error = %e, chain = %coordinator.chain().endpoint(), "cannot read the metagraph at start-up; registrations wait for it");
    }
    let (accepting, closing, sessions) =
        (CancellationToken::new(), CancellationToken::new(), TaskTracker::new());

    let mut tasks = Vec::new();
    let decided = Arc::new(tokio::sync::Notify::new());
    let consensus = if let Some((service_config, listener)) = consensus_setup {
        let cfg = &coordinator.config().consensus;
        let host = Arc::new(crate::consensus::StoreHost::new(coordinator.clone(), decided.clone()));
        let service = veribench_consensus::Service::start(
            service_config,
            listener,
            coordinator.keypair().clone(),
            host.clone(),
        )
        .await?;
        service.node.set_members(crate::consensus::peer_keys(cfg));
        coordinator.set_consensus(service.node.client());
        tasks.push(tokio::spawn(crate::consensus::run_epochs(
            coordinator.clone(),
            service.node.client(),
            host,
            accepting.clone(),
        )));
        tracing::info!(addr = %service.local_addr(), "consensus listening");
        Some(service)
    } else {
        None
    };

    tasks.push(tokio::spawn(crate::session::accept_loop(
        coordinator.clone(),
        ws,
        tls,
        accepting.clone(),
        sessions.clone(),
        closing.clone(),
    )));
    if coordinator.config().market.enabled && coordinator.config().market.keep_queued > 0 {
        tasks
            .push(tokio::spawn(crate::market::keep_queued(coordinator.clone(), accepting.clone())));
    }
    let router = crate::http::router(coordinator.clone());
    let stop = accepting.clone();
    tasks.push(tokio::spawn(async move {
        // With each client's address, which refused lease reports are counted against.
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let serve =
            axum::serve(http, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    }));
    let (c, stop) = (coordinator.clone(), accepting.clone());
    tasks.push(tokio::spawn(async move {
        every(TICK, stop, || c.tick()).await;
    }));
    let (c, stop) = (coordinator.clone(), accepting.clone());
    tasks.push(tokio::spawn(async move {
        every(HOUSEKEEPING, stop, || c.housekeeping()).await;
    }));
    let consensus_addr = consensus.as_ref().map(|s| s.local_addr());
    tasks.push(tokio::spawn(crate::epoch::run_epochs(
        coordinator.clone(),
        decided,
        accepting.clone(),
    )));
    if let Some(announcer) = announcer {
        let (c, stop) = (coordinator.clone(), accepting.clone());
        tasks.push(tokio::spawn(async move { announcer.run(c.metrics(), stop).await }));
    }
    tracing::info!(%ws_addr, %http_addr, coordinator = %coordinator.public_key(), "coordinator listening");
    Ok(Running {
        ws_addr,
        http_addr,
        coordinator,
        consensus_addr,
        consensus,
        accepting,
        tasks,
        closing,
        sessions,
    })
}

/// Runs `step` every `period` until `stop`. A step that overran is not made up for with a burst
/// of steps: the next one waits a whole period.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => step().await,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    /// A scheduler step that stalled (on a slow database, say) is followed by one step a period
    /// later, not by a burst of every step it missed.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_step_is_not_followed_by_a_burst() {
        let period = Duration::from_millis(200);
        let stop = CancellationToken::new();
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (log, until) = (steps.clone(), stop.clone());
        let task = tokio::spawn(every(period, until, move || {
            let log = log.clone();
            async move {
                let first = {
                    let mut log = log.lock().expect("log");
                    log.push(Instant::now());
                    log.len() == 1
                };
                if first {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }));
        tokio::time::sleep(Duration::from_secs(7)).await;
        stop.cancel();
        task.await.expect("the loop ends");
        let steps = steps.lock().expect("log").clone();
        let gaps: Vec<Duration> = steps.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 5, "{gaps:?}");
        assert!(gaps.iter().all(|gap| *gap >= period), "a burst of steps: {gaps:?}");
    }
}
