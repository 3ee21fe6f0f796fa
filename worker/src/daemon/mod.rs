//! The worker daemon (`veribench-worker run`): keeps a connection to a validator's coordinator,
//! computes the signed challenges it sends on this machine's devices, commits and opens them.
//!
//! The conversation on one connection (every frame one binary WebSocket message,
//! [`veribench_protocol::wire`]):
//!
//! ```text
//! worker                                   coordinator
//!   Register {delegation, hardware, devices, signature} ─▶
//!                                       ◀─ Welcome {coordinator key, heartbeat}  (or Error)
//!   Heartbeat every interval ─▶            ◀─ WebSocket Ping (answered by the reader task)
//!                                       ◀─ Challenge (signed, for one device)
//!   Commitment {root}  (or Error: refused) ─▶
//!                                       ◀─ OpenRequest {rows}
//!   Openings {rows, multiproof} ─▶
//!                                       ◀─ Verdict  (or Error naming the challenge)
//! ```
//!
//! A worker serves either one coordinator whose key is pinned in its configuration, or every
//! validator of a subnet that announces a coordinator on chain and passes the worker's trust
//! policy ([`discovery`]); then it keeps one connection per trusted validator, all sharing one
//! [`ChallengeGuard`], so a device computing for one validator is busy for every other.
//!
//! Parts: [`config`] (settings), [`clock`] (the wall clock for protocol times), [`identity`]
//! (worker key and delegation — a worker box should not hold the miner hotkey), [`guard`] (which
//! challenges are computed), [`backoff`] (reconnection delays), `connection` (one connection's
//! life), [`tls`] (CA or pinned-certificate TLS), [`discovery`] (which validators are trusted),
//! `follow` (the loop that follows the chain) and [`wallet_cmd`] (the `wallet` subcommands).
//!
//! Entry point: [`run_worker`], which the binary and in-process devnets call alike.

pub mod backoff;
pub mod clock;
pub mod config;
mod connection;
pub mod discovery;
mod follow;
pub mod guard;
pub mod identity;
pub mod tls;
pub mod wallet_cmd;

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use veribench_kernels::{Backend, BackendKind};
use veribench_protocol::{GpuInfo, HardwareInfo, Limits};

pub use backoff::{Backoff, BackoffConfig};
pub use clock::Clock;
pub use config::{
    ConfigError, ConfigOverrides, DiscoveryConfig, WalletConfig, WorkerConfig, WorkerMode,
};
pub use connection::ConnectionError;
pub use discovery::{DiscoveryState, Distrust, StateError, read_state};
pub use guard::{ChallengeGuard, GuardPolicy, Refusal};
pub use identity::{DelegationSource, IdentityError, WorkerIdentity};

use connection::{Ended, Shared, Target};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The backend offers no device.
    #[error("the {0} backend offers no device")]
    NoDevice(BackendKind),
    /// Following the subnet failed for good: the chain cannot be opened, and retrying will not
    /// help.
    #[error("cannot open the chain {network}: {source}")]
    Chain {
        /// The network, as configured (URL redacted).
        network: String,
        /// Why.
        source: veribench_chain::ChainError,
    },
}

/// Runs the worker until `shutdown` completes: connects, serves, reconnects with jittered
/// exponential backoff. On shutdown it stops taking work, closes the connection with a WebSocket
/// Close and returns `Ok(())`. Computations still running on blocking threads are abandoned
/// (the caller's runtime decides whether to wait for them).
pub async fn run_worker(
    config: WorkerConfig,
    identity: WorkerIdentity,
    backend: Arc<dyn Backend>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let token = CancellationToken::new();
    let serve = run_worker_with_token(config, identity, backend, token.clone());
    tokio::pin!(serve);
    tokio::pin!(shutdown);
    let mut signalled = false;
    loop {
        tokio::select! {
            result = &mut serve => return result,
            () = &mut shutdown, if !signalled => {
                signalled = true;
                token.cancel();
            }
        }
    }
}

/// [`run_worker`] with a [`CancellationToken`] for shutdown. The configuration's
/// [`WorkerMode`] decides whether one pinned coordinator is served or every trusted validator
/// of a subnet (module `follow`).
pub async fn run_worker_with_token(
    config: WorkerConfig,
    identity: WorkerIdentity,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    config.validate()?;
    let mode = config.mode()?;
    let redacted = serde_json::to_string(&config.redacted()).unwrap_or_default();
    info!(config = %redacted, "configuration");
    let devices: Vec<_> = backend.devices().iter().map(|d| d.key.clone()).collect();
    if devices.is_empty() {
        return Err(DaemonError::NoDevice(backend.kind()));
    }
    info!(
        worker_key = %identity.keypair.ss58_address(),
        miner_hotkey = %identity.delegation.miner_hotkey,
        self_delegated = identity.is_self_delegated(),
        backend = %backend.kind(),
        devices = ?devices.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "worker starting"
    );
    if config.clock != Clock::system() {
        warn!(
            offset_ms = config.clock.offset_ms(),
            "the worker's clock is shifted (a test setting)"
        );
    }
    let shared = Arc::new(Shared {
        identity: Mutex::new(identity),
        guard: Arc::new(Mutex::new(ChallengeGuard::new(devices.clone(), config.guard_policy()))),
        hardware: hardware_info(backend.as_ref()),
        devices,
        backend,
        limits: Limits::default(),
        config,
    });
    match mode {
        WorkerMode::Single { url, pinned } => {
            let connector = if shared.config.is_tls()? {
                Some(tls::ca_connector(shared.config.tls_ca.as_deref())?)
            } else {
                if shared.config.tls_ca.is_some() {
                    warn!("tls_ca is set but the coordinator URL is ws://; it is ignored");
                }
                None
            };
            // The operator named this coordinator: it is dialled as given.
            let target = Target { url, pinned, connector, pin: None, public_only: false };
            serve_target(&shared, &target, &shutdown, &|_| {}).await;
        }
        WorkerMode::Discovery { network, netuid, state_file } => {
            let ca = tls::ca_connector(shared.config.tls_ca.as_deref())?;
            follow::follow_subnet(shared, network, netuid, state_file, ca, shutdown).await?;
        }
    }
    info!("worker stopped");
    Ok(())
}

/// What a connection task tells its owner, as it happens.
#[derive(Debug)]
pub(crate) enum Report {
    /// The coordinator welcomed this worker with the pinned key.
    Welcomed,
    /// The coordinator was refused at the connection: a certificate or key that is not the
    /// announced one.
    Refused(Distrust),
}

/// Serves `target` until `shutdown`: connects, serves, reconnects with jittered exponential
/// backoff; on shutdown closes the connection with a WebSocket Close.
pub(crate) async fn serve_target(
    shared: &Shared,
    target: &Target,
    shutdown: &CancellationToken,
    report: &(dyn Fn(Report) + Send + Sync),
) {
    let mut backoff = Backoff::new(shared.config.backoff);
    let url = veribench_support::redact_url(&target.url);
    let mut attempt: u64 = 0;
    while !shutdown.is_cancelled() {
        attempt += 1;
        let mut was_welcomed = false;
        let span = info_span!("connection", coordinator = %url, attempt);
        let outcome = connection::serve_connection(shared, target, shutdown, || {
            was_welcomed = true;
            report(Report::Welcomed);
        })
        .instrument(span)
        .await;
        if was_welcomed {
            backoff.reset();
        }
        match outcome {
            Ok(Ended::Shutdown) => break,
            Ok(Ended::Lost(reason)) => warn!(%reason, attempt, "connection lost"),
            Err(e @ ConnectionError::WrongCoordinator { got, pinned }) => {
                error!(coordinator = %url, error = %e, attempt, "refusing coordinator");
                report(Report::Refused(Distrust::WrongKey {
                    announced_hotkey: pinned,
                    welcome_key: got,
                }));
            }
            Err(ConnectionError::PrivateAddress { host, addr }) => {
                let host = format!("{host} ({addr})");
                error!(coordinator = %url, %host, attempt, "refusing coordinator: not a public address");
                report(Report::Refused(Distrust::PrivateEndpoint { host }));
            }
            Err(e @ ConnectionError::FingerprintMismatch { announced, served }) => {
                error!(coordinator = %url, error = %e, attempt, "refusing coordinator");
                report(Report::Refused(Distrust::FingerprintMismatch { announced, served }));
            }
            // A transient refusal (rate limited, unavailable) is expected to clear; any other
            // is a decision or a fault an operator must look at. Either way the worker retries
            // with backoff: the coordinator may be reconfigured, the delegation renewed.
            Err(ConnectionError::Refused { code, message }) if code.is_transient() => {
                warn!(code = code.as_str(), %message, attempt, "registration refused for now")
            }
            Err(ConnectionError::Refused { code, message }) => {
                error!(code = code.as_str(), %message, attempt, "registration refused")
            }
            Err(e) => warn!(coordinator = %url, error = %e, attempt, "connection failed"),
        }
        let delay = backoff.next_delay(&mut rand::rng());
        info!(coordinator = %url, delay_ms = delay.as_millis() as u64, "reconnecting after a delay");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What this machine declares: CPU, memory, and the backend's GPUs.
pub fn hardware_info(backend: &dyn Backend) -> HardwareInfo {
    let gpus = backend
        .devices()
        .iter()
        .filter(|d| d.kind != BackendKind::Cpu)
        .map(|d| GpuInfo {
            uuid: d.key.as_str().to_owned(),
            name: truncate(&d.name, 256),
            memory_bytes: d.memory_bytes,
        })
        .collect();
    HardwareInfo {
        cpu_model: truncate(&veribench_kernels::cpu::cpu_model(), 256),
        cpu_cores: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        memory_bytes: veribench_kernels::cpu::total_memory_bytes(),
        gpus,
    }
}

/// `text` cut to at most `max` bytes on a character boundary (wire texts are bounded).
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
