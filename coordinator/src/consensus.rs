//! Validator consensus in the coordinator (`[consensus] enabled = true`).
//!
//! At every weights epoch (`floor(block / epoch_blocks)`, the same for every validator) the
//! coordinator scores the miners as it always does, but keeps its own vector as `proposed`
//! instead of submitting it: it hands the vector to its consensus node (`veribench-consensus`),
//! which agrees with the other validators' nodes on the stake-weighted median of their vectors.
//! The decision and its commit certificate go to the `decisions` table; the agreed vector
//! becomes a pending weight set, and the usual submission path (rate limits, commit-reveal,
//! retries) brings it on chain. Without `[consensus]`, nothing here runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use veribench_consensus::codec::{self, CommitWire, Decision};
pub use veribench_consensus::node::Byzantine;
use veribench_consensus::node::{DecidedHeight, Epoch, Evidence, Host, NodeClient};
use veribench_consensus::transport::{ClientTls, PeerAddr, ServerTls};
use veribench_consensus::{
    Height, LinearTimeouts, NodeConfig, ServiceConfig, Stake, validator_set,
};
use veribench_protocol::{PublicKey, UnixMillis};

use crate::config::{ConfigError, secs};
use crate::epoch::EpochError;
use crate::service::Coordinator;
use crate::store::{DecisionRecord, EvidenceKind, EvidenceRecord, WeightEntry, WeightSetStatus};

/// `[consensus]`: agreeing with the other validators on each epoch's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Off by default: a single validator submits its own vector.
    pub enabled: bool,
    /// The gRPC listener other validators' nodes connect to.
    pub listen: SocketAddr,
    /// The other validators: `{ hotkey = "5F…", url = "http://host:7801" }` (`https://` with
    /// `tls_ca`).
    pub peers: Vec<PeerConfig>,
    /// Blocks per weights epoch (one consensus height); the subnet's tempo is the natural value.
    pub epoch_blocks: u64,
    /// Seconds between two reads of the chain's block number.
    pub poll_secs: f64,
    /// The write-ahead log of the height in progress.
    pub wal: PathBuf,
    /// Round 0 timeouts in milliseconds; every later round adds `timeout_delta_ms`.
    pub timeout_propose_ms: u64,
    /// Prevote timeout.
    pub timeout_prevote_ms: u64,
    /// Precommit timeout.
    pub timeout_precommit_ms: u64,
    /// Added per round.
    pub timeout_delta_ms: u64,
    /// Seconds a height may stay undecided here before the node asks its peers for it.
    pub sync_after_secs: f64,
    /// PEM certificate of the gRPC server (with `tls_key`: peers must use `https://`).
    pub tls_cert: Option<PathBuf>,
    /// PEM key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA that peers' server certificates (and, with `require_client_cert`, their client
    /// certificates) must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: refuse peers without a certificate from `tls_ca`; present `tls_cert` to them.
    pub require_client_cert: bool,
    /// Misbehave, to show that honest validators cope (devnet and tests only).
    pub byzantine: Byzantine,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 7801)),
            peers: Vec::new(),
            epoch_blocks: 360,
            poll_secs: 6.0,
            wal: PathBuf::from("data/consensus.wal"),
            timeout_propose_ms: 3000,
            timeout_prevote_ms: 1000,
            timeout_precommit_ms: 1000,
            timeout_delta_ms: 500,
            sync_after_secs: 30.0,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            require_client_cert: false,
            byzantine: Byzantine::default(),
        }
    }
}

/// Another validator's consensus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its hotkey (SS58 or hex): the key its messages must be signed with.
    pub hotkey: String,
    /// Its gRPC endpoint.
    pub url: String,
}

impl ConsensusConfig {
    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !self.enabled {
            return Ok(());
        }
        if self.epoch_blocks == 0 {
            return bad("consensus.epoch_blocks must be positive".into());
        }
        if !(self.poll_secs > 0.0 && self.sync_after_secs > 0.0) {
            return bad("consensus.poll_secs and consensus.sync_after_secs must be positive".into());
        }
        if [self.timeout_propose_ms, self.timeout_prevote_ms, self.timeout_precommit_ms]
            .contains(&0)
        {
            return bad("consensus timeouts must be positive".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("consensus.tls_cert and consensus.tls_key go together".into());
        }
        if self.require_client_cert && (self.tls_ca.is_none() || self.tls_cert.is_none()) {
            return bad("consensus.require_client_cert needs tls_ca, tls_cert and tls_key".into());
        }
        for p in &self.peers {
            if let Err(e) = veribench_wallet::parse_public_key(&p.hotkey) {
                return bad(format!("consensus.peers: hotkey {:?}: {e}", p.hotkey));
            }
            let https = p.url.starts_with("https://");
            if !(https || p.url.starts_with("http://")) {
                return bad(format!(
                    "consensus.peers: {:?} is neither http:// nor https://",
                    p.url
                ));
            }
            if https != self.tls_ca.is_some() {
                return bad(format!(
                    "consensus.peers: {:?}: https:// peers need consensus.tls_ca, and with it every \
                     peer must be https://",
                    p.url
                ));
            }
        }
        Ok(())
    }

    fn timeouts(&self) -> LinearTimeouts {
        let ms = Duration::from_millis;
        let delta = ms(self.timeout_delta_ms);
        let propose = ms(self.timeout_propose_ms);
        let prevote = ms(self.timeout_prevote_ms);
        let precommit = ms(self.timeout_precommit_ms);
        LinearTimeouts {
            propose,
            propose_delta: delta,
            prevote,
            prevote_delta: delta,
            precommit,
            precommit_delta: delta,
            rebroadcast: propose + prevote + precommit,
            max_timeout: Duration::from_secs(60),
        }
    }

    /// The node and transport configuration (reads the TLS files).
    pub fn service_config(&self, network: u32) -> Result<ServiceConfig, ConfigError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ConfigError::Invalid(format!("{}: {e}", p.display())))
        };
        let mut node = NodeConfig::new(network, self.wal.clone());
        node.timeouts = self.timeouts();
        node.sync_after = secs(self.sync_after_secs);
        node.byzantine = self.byzantine;
        let peers = self
            .peers
            .iter()
            .map(|p| {
                let key = veribench_wallet::parse_public_key(&p.hotkey)
                    .map_err(|e| ConfigError::Invalid(format!("consensus.peers: {e}")))?;
                Ok(PeerAddr { key, url: p.url.clone() })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut config = ServiceConfig::new(node, peers);
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        if let Some((cert_pem, key_pem)) = &identity {
            let client_ca_pem = match (&self.tls_ca, self.require_client_cert) {
                (Some(ca), true) => Some(read(ca)?),
                _ => None,
            };
            config.server_tls = Some(ServerTls {
                cert_pem: cert_pem.clone(),
                key_pem: key_pem.clone(),
                client_ca_pem,
            });
        }
        if let Some(ca) = &self.tls_ca {
            config.client_tls = Some(ClientTls {
                ca_pem: read(ca)?,
                domain: None,
                identity: identity.filter(|_| self.require_client_cert),
            });
        }
        Ok(config)
    }
}

/// The node's host: decisions and evidence go to the coordinator's store.
pub struct StoreHost {
    coordinator: Arc<Coordinator>,
    /// The local score run of each height this coordinator proposed a vector for.
    runs: Mutex<BTreeMap<u64, i64>>,
    /// Wakes the epoch loop to submit an agreed vector at once.
    decided: Arc<Notify>,
}

impl std::fmt::Debug for StoreHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHost").finish_non_exhaustive()
    }
}

impl StoreHost {
    /// A host over `coordinator`'s store; `decided` is notified after each agreed vector.
    pub fn new(coordinator: Arc<Coordinator>, decided: Arc<Notify>) -> Self {
        Self { coordinator, runs: Mutex::new(BTreeMap::new()), decided }
    }

    fn remember_run(&self, height: u64, run_id: i64) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(height, run_id);
            while runs.len() > 16 {
                runs.pop_first();
            }
        }
    }

    fn run_for(&self, height: u64) -> Option<i64> {
        let runs = self.runs.lock().ok()?;
        runs.get(&height).or_else(|| runs.values().next_back()).copied()
    }
}

#[async_trait]
impl Host for StoreHost {
    async fn decided(&self, d: &DecidedHeight) {
        let height = d.decision.certificate.height.0;
        let value = &d.decision.value;
        let record = DecisionRecord {
            height,
            round: d.decision.certificate.round.as_u32().unwrap_or(0),
            value_id: d.value_id.0,
            proposer: d.proposer,
            aggregate: value.aggregate.clone(),
            vectors: u32::try_from(value.vectors.len()).unwrap_or(u32::MAX),
            signers: u32::try_from(d.decision.certificate.signatures.len()).unwrap_or(u32::MAX),
            value: codec::encode(value),
            certificate: codec::encode(&d.decision.certificate),
            decided_at: UnixMillis::now(),
            decide_ms: d.decide_ms,
        };
        let store = self.coordinator.store();
        if let Err(e) = store.record_decision(&record).await {
            tracing::error!(height, error = %e, "cannot store the decision");
            return;
        }
        // The agreed weight of each uid, for the hotkeys registered now.
        let Some(mg) = self.coordinator.metagraph() else {
            tracing::warn!(height, "no metagraph: the agreed vector waits for the next decision");
            return;
        };
        let entries: Vec<WeightEntry> = mg
            .neurons
            .iter()
            .map(|n| WeightEntry {
                uid: n.uid,
                hotkey: n.hotkey,
                weight: value.aggregate.get(usize::from(n.uid)).copied().unwrap_or(0),
            })
            .collect();
        let Some(run_id) = self.run_for(height) else {
            tracing::warn!(height, "no local score run yet: the decision is stored, not submitted");
            return;
        };
        match store.record_agreed_weights(run_id, height, &entries).await {
            Ok(set_id) => {
                tracing::info!(height, set_id, "agreed weights recorded for submission");
                self.decided.notify_one();
            }
            Err(e) => tracing::error!(height, error = %e, "cannot record the agreed weights"),
        }
    }

    async fn decision(&self, height: Height) -> Option<Decision> {
        let record = self.coordinator.store().decision(height.0).await.ok()??;
        let value = codec::decode("stored value", &record.value).ok()?;
        let certificate: CommitWire =
            codec::decode("stored certificate", &record.certificate).ok()?;
        Some(Decision { value, certificate })
    }

    async fn evidence(&self, e: &Evidence) {
        let kind = match e.kind {
            veribench_consensus::EvidenceKind::DoubleVote => EvidenceKind::DoubleVote,
            veribench_consensus::EvidenceKind::DoubleProposal => EvidenceKind::DoubleProposal,
            veribench_consensus::EvidenceKind::BadProposal => EvidenceKind::BadProposal,
        };
        let record = EvidenceRecord {
            height: e.height,
            round: e.round,
            validator: e.validator,
            kind,
            detail: e.detail.clone(),
            recorded_at: UnixMillis::now(),
        };
        if let Err(err) = self.coordinator.store().record_evidence(&record).await {
            tracing::error!(error = %err, "cannot store consensus evidence");
        }
    }
}

/// The epochs under consensus: polls the block every `poll_secs`; at each new epoch, reads the
/// metagraph, scores (keeping the run as `proposed`) and hands the vector to the node.
pub async fn run_epochs(
    coordinator: Arc<Coordinator>,
    node: NodeClient,
    host: Arc<StoreHost>,
    stop: CancellationToken,
) {
    let config = coordinator.config().consensus.clone();
    let mut poll = tokio::time::interval(secs(config.poll_secs));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<u64> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = poll.tick() => {}
        }
        let block = match coordinator.chain().current_block().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the block number; consensus epochs wait");
                continue;
            }
        };
        let height = Height::of_block(block, config.epoch_blocks).0;
        if last.is_some_and(|l| height <= l) {
            continue;
        }
        match propose_epoch(&coordinator, &node, &host, height).await {
            Ok(()) => last = Some(height),
            Err(e) => tracing::warn!(height, error = %e, "cannot offer this epoch's vector"),
        }
    }
}

async fn propose_epoch(
    coordinator: &Coordinator,
    node: &NodeClient,
    host: &StoreHost,
    height: u64,
) -> Result<(), EpochError> {
    let mg = coordinator.refresh_metagraph().await?;
    let stakes: Vec<Stake> = mg
        .neurons
        .iter()
        .filter(|n| n.validator_permit && n.stake > 0)
        .map(|n| Stake { hotkey: n.hotkey, stake: n.stake })
        .collect();
    node.set_members(stakes.iter().map(|s| s.hotkey));
    let validators = validator_set(&stakes)?;
    let outcome = coordinator.score_epoch_as(UnixMillis::now(), WeightSetStatus::Proposed).await?;
    host.remember_run(height, outcome.run_id);
    let uids = mg.neurons.iter().map(|n| usize::from(n.uid) + 1).max().unwrap_or(0);
    let mut weights = vec![0u16; uids];
    for e in &outcome.run.weights {
        if let Some(w) = weights.get_mut(usize::from(e.uid)) {
            *w = e.weight;
        }
    }
    tracing::info!(
        height,
        validators = validators.validators().len(),
        uids,
        "offering this epoch's vector to consensus"
    );
    node.propose_epoch(Epoch {
        height: Height(height),
        validators,
        weights,
        evidence_root: outcome.evidence_root,
    })
    .await?;
    Ok(())
}

/// The hotkeys of `config.peers` (checked by [`ConsensusConfig::validate`]).
pub fn peer_keys(config: &ConsensusConfig) -> Vec<PublicKey> {
    config.peers.iter().filter_map(|p| veribench_wallet::parse_public_key(&p.hotkey).ok()).collect()
}
