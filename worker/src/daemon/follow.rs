//! Following a subnet: read the chain, decide which validators to trust ([`assess`]), keep
//! exactly one connection task per trusted validator, persist the decisions.
//!
//! The best block is read every `poll_secs`; the metagraph and commitments are re-read once it
//! advanced `refresh_blocks` since the last read (and at start). A failed read keeps the
//! connections as they are: an unreachable node must not disconnect every validator. A
//! connection ends when its validator loses its permit or stake, its announcement expires or
//! changes; a re-announcement of the same endpoint keeps it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::Connector;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use veribench_chain::{Chain, ChainError, Commitment, Endpoint, Metagraph, NetUid, Network};
use veribench_protocol::PublicKey;
use veribench_protocol::wire::PROTOCOL_VERSION;
use veribench_support::{RetryPolicy, retry};

use super::connection::{Shared, Target};
use super::discovery::{
    Assessment, Distrust, TrustPolicy, Trusted, assess, plan, ss58, state_of, write_state,
};
use super::{DaemonError, Report, serve_target, tls};

/// How chain reads within one refresh are retried; a refresh that still fails is skipped.
const READ_RETRY: RetryPolicy =
    RetryPolicy { attempts: 3, initial_delay_ms: 500, max_delay_ms: 2_000 };

/// Connection-level refusals reported by the connection tasks (at most one per running task).
#[derive(Debug, Default)]
struct Verdicts {
    refused: Mutex<HashMap<PublicKey, Distrust>>,
    changed: Notify,
}

impl Verdicts {
    fn lock(&self) -> MutexGuard<'_, HashMap<PublicKey, Distrust>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a task reported; wakes the follow loop when it changes a decision.
    fn report(&self, hotkey: PublicKey, report: Report) {
        let changed = match report {
            Report::Welcomed => self.lock().remove(&hotkey).is_some(),
            Report::Refused(reason) => {
                self.lock().insert(hotkey, reason.clone()).as_ref() != Some(&reason)
            }
        };
        if changed {
            self.changed.notify_one();
        }
    }
}

/// One running connection task.
struct Connection {
    endpoint: Endpoint,
    token: CancellationToken,
    task: JoinHandle<()>,
}

/// Follows subnet `netuid` of `network` until `shutdown`, then closes every connection and waits
/// for them. `ca` is the connector for endpoints that pin no certificate.
pub(crate) async fn follow_subnet(
    shared: Arc<Shared>,
    network: Network,
    netuid: NetUid,
    state_file: PathBuf,
    ca: Connector,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let settings = shared.config.discovery.clone();
    let shown = super::config::redact_if_url(&network.to_string());
    let poll = settings.poll_interval();
    info!(
        network = %shown,
        %netuid,
        min_validator_stake = settings.min_validator_stake,
        refresh_blocks = settings.refresh_blocks,
        state_file = %state_file.display(),
        "following the subnet's validators"
    );
    let Some(chain) = open_chain(&network, &shown, poll, &shutdown).await? else {
        return Ok(());
    };
    let policy = TrustPolicy {
        min_stake: settings.min_validator_stake,
        protocol_version: PROTOCOL_VERSION,
        allow_private_endpoints: settings.allow_private_endpoints,
    };
    let verdicts = Arc::new(Verdicts::default());
    let mut running: BTreeMap<PublicKey, Connection> = BTreeMap::new();
    let mut retiring: Vec<JoinHandle<()>> = Vec::new();
    let mut last: Option<(u64, Assessment)> = None;
    let mut logged: HashMap<PublicKey, &'static str> = HashMap::new();
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = verdicts.changed.notified() => {
                if let Some((_, assessment)) = &last {
                    persist(&state_file, netuid, assessment, &verdicts);
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        retiring.retain(|task| !task.is_finished());
        let block = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = retry(&READ_RETRY, "current_block", || chain.current_block()) => r,
        };
        let block = match block {
            Ok(block) => block,
            Err(e) => {
                warn!(error = %e, "cannot read the best block; keeping the current validators");
                continue;
            }
        };
        if let Some((read_at, _)) = &last
            && block.saturating_sub(*read_at) < settings.refresh_blocks
        {
            continue;
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = read_subnet(chain.as_ref(), netuid) => r,
        };
        let (metagraph, commitments) = match read {
            Ok(read) => read,
            Err(e) => {
                warn!(error = %e, block, "cannot read the subnet; keeping the current validators");
                continue;
            }
        };
        let now = block.max(metagraph.block);
        let next = assess(&metagraph, &commitments, now, &policy);
        debug!(
            block = now,
            trusted = next.trusted.len(),
            refused = next.refused.len(),
            "assessed the subnet's validators"
        );

        let current = running.iter().map(|(k, c)| (*k, c.endpoint.clone())).collect();
        let changes = plan(&current, &next);
        for hotkey in &changes.stop {
            let Some(connection) = running.remove(hotkey) else { continue };
            let why = match (next.trusted.get(hotkey), next.refused.get(hotkey)) {
                (Some(_), _) => "its endpoint changed",
                (None, Some(refused)) => refused.reason.as_str(),
                (None, None) => "it no longer announces an endpoint",
            };
            info!(hotkey = %ss58(hotkey), url = %connection.endpoint.url, why, "leaving validator");
            connection.token.cancel();
            retiring.push(connection.task);
            verdicts.lock().remove(hotkey);
        }
        for hotkey in &changes.start {
            let trusted = &next.trusted[hotkey];
            match start(&shared, *hotkey, trusted, &ca, &verdicts, &shutdown) {
                Ok(connection) => {
                    running.insert(*hotkey, connection);
                }
                Err(e) => error!(hotkey = %ss58(hotkey), error = %e, "cannot set up TLS"),
            }
        }
        verdicts.lock().retain(|hotkey, _| running.contains_key(hotkey));
        for (hotkey, refused) in &next.refused {
            let code = refused.reason.as_str();
            if logged.get(hotkey) != Some(&code) {
                warn!(
                    hotkey = %ss58(hotkey),
                    uid = refused.uid,
                    url = refused.url.as_deref().unwrap_or("-"),
                    reason = code,
                    detail = %refused.reason,
                    "not serving this validator"
                );
            }
        }
        logged = next.refused.iter().map(|(k, r)| (*k, r.reason.as_str())).collect();
        persist(&state_file, netuid, &next, &verdicts);
        last = Some((block, next));
    }

    info!(connections = running.len(), "closing every validator connection");
    for connection in running.values() {
        connection.token.cancel();
    }
    for task in running.into_values().map(|c| c.task).chain(retiring) {
        if let Err(e) = task.await {
            error!(error = %e, "a connection task failed");
        }
    }
    Ok(())
}

/// Opens the chain, retrying transient failures every `poll` until `shutdown` (then `None`).
async fn open_chain(
    network: &Network,
    shown: &str,
    poll: std::time::Duration,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Chain>>, DaemonError> {
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = veribench_subtensor::connect(network) => r,
        };
        match opened {
            Ok(chain) => return Ok(Some(chain)),
            Err(e) if e.is_transient() => {
                warn!(network = %shown, error = %e, "cannot open the chain; retrying");
            }
            Err(source) => return Err(DaemonError::Chain { network: shown.to_owned(), source }),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// The metagraph and every commitment of `netuid`.
async fn read_subnet(
    chain: &dyn Chain,
    netuid: NetUid,
) -> Result<(Metagraph, Vec<(PublicKey, Commitment)>), ChainError> {
    let metagraph = retry(&READ_RETRY, "metagraph", || chain.metagraph(netuid)).await?;
    let commitments = retry(&READ_RETRY, "commitments", || chain.commitments(netuid)).await?;
    Ok((metagraph, commitments))
}

/// Starts the connection task of a trusted validator: its hotkey pinned, its certificate pinned
/// if announced, else the CA connector.
fn start(
    shared: &Arc<Shared>,
    hotkey: PublicKey,
    trusted: &Trusted,
    ca: &Connector,
    verdicts: &Arc<Verdicts>,
    shutdown: &CancellationToken,
) -> Result<Connection, super::ConnectionError> {
    let endpoint = trusted.endpoint.clone();
    let (connector, pin) = match endpoint.fingerprint {
        Some(fingerprint) => {
            let (connector, pin) = tls::pinned_connector(fingerprint)?;
            (connector, Some(pin))
        }
        None => (ca.clone(), None),
    };
    let target = Target {
        url: endpoint.url.to_string(),
        pinned: hotkey,
        connector: Some(connector),
        pin,
        public_only: !shared.config.discovery.allow_private_endpoints,
    };
    let hotkey_text = ss58(&hotkey);
    info!(
        hotkey = %hotkey_text,
        uid = trusted.uid,
        url = %endpoint.url,
        fingerprint = ?endpoint.fingerprint.map(|f| f.to_string()),
        committed_at = trusted.committed_at,
        "serving validator"
    );
    let token = shutdown.child_token();
    let span = info_span!("validator", uid = trusted.uid, hotkey = %hotkey_text);
    let (shared, task_token, verdicts) = (Arc::clone(shared), token.clone(), Arc::clone(verdicts));
    let task = tokio::spawn(
        async move {
            // A task being stopped reports nothing more: its hotkey may be served anew.
            let report = |r: Report| {
                if !task_token.is_cancelled() {
                    verdicts.report(hotkey, r);
                }
            };
            serve_target(&shared, &target, &task_token, &report).await;
        }
        .instrument(span),
    );
    Ok(Connection { endpoint, token, task })
}

/// Writes the decisions to the state file; a failure is logged, not fatal.
fn persist(path: &std::path::Path, netuid: NetUid, assessment: &Assessment, verdicts: &Verdicts) {
    let state = state_of(netuid, assessment, &verdicts.lock());
    if let Err(e) = write_state(path, &state) {
        warn!(error = %e, "cannot write the state file");
    }
}
