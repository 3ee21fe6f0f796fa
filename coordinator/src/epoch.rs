//! Epochs: the coordinator's side of the chain. Reads the metagraph (who may register workers,
//! which uid each miner has), turns the stored evidence into scores and a weight vector every
//! `weights.interval_secs`, and brings pending vectors on chain.
//!
//! Every score run is persisted with all its components before anything is submitted, and a
//! vector leaves `pending` only when the chain has accepted it (or refused it for good): a node
//! that is down, a rate limit or a crash between computing and submitting loses nothing, the
//! next attempt picks the vector up from the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use veribench_chain::{ChainError, Metagraph, NetUid, WeightReveal, WeightVector, commit_hash};
use veribench_protocol::{PublicKey, UnixMillis};
use veribench_support::retry;

use crate::config::secs;
use crate::scoring::{
    MinerInputs, RejectCode, WorkerInputs, miner_scores, penalised_rejections, to_weights,
    worker_performance,
};
use crate::service::Coordinator;
use crate::store::{
    BUCKET_MS, MinerScoreRecord, ScoreRun, StoreError, WeightEntry, WeightSetRow, WeightSetStatus,
    WeightSetUpdate, WorkerScoreRecord, bucket_of,
};

/// Most leases read per score run.
const MAX_LEASES: u32 = 1_000_000;

/// Why an epoch step failed.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The chain could not be read or refused a call.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored commit-reveal state that does not parse.
    #[error("stored reveal of weight set {0} is corrupt: {1}")]
    CorruptReveal(i64, String),
    /// Offering the epoch's vector to consensus failed: no validator set, or the node stopped.
    #[error(transparent)]
    Consensus(#[from] veribench_consensus::ConsensusError),
}

/// What a score run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreOutcome {
    /// The stored run.
    pub run_id: i64,
    /// The stored weight vector.
    pub set_id: i64,
    /// The run itself.
    pub run: ScoreRun,
    /// BLAKE3 root of the evidence the run came from: the verified challenges of its window
    /// (what a consensus score vector commits to).
    pub evidence_root: [u8; 32],
}

/// What a submission attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// `weights.submit = false`.
    Disabled,
    /// No vector is pending or committed.
    NothingPending,
    /// The rate limit (ours or the chain's) has `blocks_left` blocks to go.
    Waiting {
        /// Blocks until the next update is allowed.
        blocks_left: u64,
    },
    /// Commit-reveal: the hash of weight set `set_id` is on chain at `block`.
    Committed {
        /// The weight set.
        set_id: i64,
        /// Inclusion block.
        block: u64,
    },
    /// Weight set `set_id` is on chain.
    Submitted {
        /// The weight set.
        set_id: i64,
        /// Inclusion block.
        block: u64,
    },
}

impl Coordinator {
    fn netuid(&self) -> NetUid {
        NetUid(self.config().chain.netuid)
    }

    /// Reads the metagraph (with retries) and makes it the one registrations are checked
    /// against.
    pub async fn refresh_metagraph(&self) -> Result<Arc<Metagraph>, ChainError> {
        let netuid = self.netuid();
        let chain = self.chain();
        let mg = retry(&self.config().chain.retry, "metagraph", || chain.metagraph(netuid)).await?;
        let mg = Arc::new(mg);
        self.set_metagraph(mg.clone());
        tracing::debug!(netuid = %netuid, block = mg.block, neurons = mg.neurons.len(), "metagraph refreshed");
        Ok(mg)
    }

    /// Scores every registered miner from the stored evidence at `now`, persists the run with
    /// its components and weight vector, and updates which workers are leased (and so not
    /// challenged).
    pub async fn score_epoch(&self, now: UnixMillis) -> Result<ScoreOutcome, EpochError> {
        self.score_epoch_as(now, WeightSetStatus::Pending).await
    }

    /// [`Self::score_epoch`], storing the weight vector with `status`: `Proposed` under
    /// consensus, where the agreed vector is submitted instead of this one.
    pub async fn score_epoch_as(
        &self,
        now: UnixMillis,
        status: WeightSetStatus,
    ) -> Result<ScoreOutcome, EpochError> {
        let mg = match self.metagraph() {
            Some(mg) => mg,
            None => self.refresh_metagraph().await?,
        };
        let cfg = &self.config().scoring;
        let store = self.store();
        let window_start = UnixMillis(now.0.saturating_sub(cfg.window_ms()));
        let first_bucket = bucket_of(now) - i64::from(cfg.availability_buckets) + 1;
        let horizon_start = UnixMillis(u64::try_from(first_bucket.max(0)).unwrap_or(0) * BUCKET_MS);

        let mut verified: HashMap<(PublicKey, PublicKey), Vec<(UnixMillis, f64)>> = HashMap::new();
        for (worker, miner, at, gflops) in store.verified_since(window_start).await? {
            verified.entry((worker, miner)).or_default().push((at, gflops));
        }
        let evidence_root = evidence_root(&verified);
        // By worker alone: moving a rig to another of one's hotkeys does not shed its rejections.
        let mut rejected: HashMap<PublicKey, Vec<(UnixMillis, RejectCode)>> = HashMap::new();
        for (worker, at, code) in store.rejected_since(window_start).await? {
            rejected.entry(worker).or_default().push((at, code));
        }
        let buckets = store.online_bucket_counts(first_bucket).await?;
        let ip_changes = store.ip_change_counts(horizon_start).await?;
        let mut lease_of: HashMap<PublicKey, f64> = HashMap::new();
        for l in store.leases(Some(now), MAX_LEASES).await? {
            // Newest first: the latest report for a worker wins.
            lease_of.entry(l.lease.worker_key).or_insert(l.lease.score);
        }
        let offline_after = secs(self.config().liveness.offline_after_secs).as_millis() as u64;
        let mut workers_of: HashMap<PublicKey, Vec<crate::store::WorkerRow>> = HashMap::new();
        for w in store.workers().await? {
            workers_of.entry(w.record.miner_hotkey).or_default().push(w);
        }

        let mut uids = Vec::with_capacity(mg.neurons.len());
        let mut miners: Vec<MinerInputs<PublicKey>> = Vec::with_capacity(mg.neurons.len());
        let mut worker_lines = Vec::new();
        for neuron in &mg.neurons {
            let workers = workers_of.remove(&neuron.hotkey).unwrap_or_default();
            let mut online = false;
            let mut scores = Vec::with_capacity(workers.len());
            let mut lease_scores = Vec::new();
            for w in &workers {
                let key = w.record.worker_key;
                online |= w.online && now.0.saturating_sub(w.last_seen.0) <= offline_after;
                let lease = lease_of.get(&key).copied();
                let wi = WorkerInputs {
                    verified: verified.remove(&(key, neuron.hotkey)).unwrap_or_default(),
                    rejected: rejected.remove(&key).unwrap_or_default(),
                    online_buckets: buckets.get(&key).copied().unwrap_or(0),
                    ip_changes: ip_changes.get(&key).copied().unwrap_or(0),
                    leased: lease.is_some(),
                };
                let score = worker_performance(&wi, now, cfg);
                let penalised = penalised_rejections(&wi.rejected, now, cfg);
                if penalised > 0 && !wi.leased {
                    tracing::warn!(
                        worker = %key,
                        miner = %neuron.hotkey,
                        rejections = penalised,
                        mean_gflops = score.mean_gflops,
                        "worker penalised: a challenge rejected as wrong is in the scoring window"
                    );
                }
                lease_scores.extend(lease);
                scores.push(score);
                let counted = wi.verified.iter().filter(|(at, _)| *at <= now).count();
                worker_lines.push(WorkerScoreRecord {
                    worker_key: key,
                    miner_hotkey: neuron.hotkey,
                    leased: wi.leased,
                    lease_score: lease.unwrap_or(0.0),
                    verified: u32::try_from(counted).unwrap_or(u32::MAX),
                    online_buckets: wi.online_buckets,
                    ip_changes: wi.ip_changes,
                    penalised: if wi.leased {
                        0
                    } else {
                        u32::try_from(penalised).unwrap_or(u32::MAX)
                    },
                    score,
                });
            }
            uids.push(neuron.uid);
            miners.push(MinerInputs {
                hotkey: neuron.hotkey,
                workers: scores,
                lease_scores,
                online,
            });
        }
        let scored = miner_scores(&miners, cfg);
        let totals: Vec<(u16, f64)> =
            uids.iter().zip(&scored).map(|(uid, s)| (*uid, s.total)).collect();
        let weights = to_weights(&totals)
            .into_iter()
            .zip(&scored)
            .map(|((uid, weight), s)| WeightEntry { uid, hotkey: s.hotkey, weight })
            .collect();
        let miner_lines = uids
            .iter()
            .zip(&miners)
            .zip(&scored)
            .map(|((uid, m), s)| MinerScoreRecord {
                hotkey: s.hotkey,
                uid: Some(*uid),
                online: m.online,
                workers: u32::try_from(m.workers.len()).unwrap_or(u32::MAX),
                challenge: s.challenge,
                lease: s.lease,
                total: s.total,
            })
            .collect();
        let run = ScoreRun {
            at: now,
            block: Some(mg.block),
            config_json: serde_json::to_string(cfg).unwrap_or_default(),
            miners: miner_lines,
            workers: worker_lines,
            weights,
        };
        let (run_id, set_id) = store.record_score_run_as(&run, status).await?;
        self.set_leased(lease_of.into_keys().collect::<HashSet<_>>());
        tracing::info!(
            run_id,
            set_id,
            miners = run.miners.len(),
            workers = run.workers.len(),
            block = mg.block,
            "scores computed"
        );
        Ok(ScoreOutcome { run_id, set_id, run, evidence_root })
    }

    /// Brings the next weight vector on chain if the rate limits allow: reveals a committed
    /// vector whose reveal is due, else submits the newest pending one (`set_weights`, or
    /// `commit_weights` when the subnet has commit-reveal on). Transient chain failures are
    /// retried with backoff and leave the vector where it was, for the next pass of the epoch
    /// loop; final ones mark it `failed`. Either way the error is recorded on the vector and
    /// the vector itself (its entries, its reveal) stays stored: a failure changes a status,
    /// it never deletes what was computed.
    pub async fn submit_weights(&self) -> Result<SubmitOutcome, EpochError> {
        if !self.config().weights.submit {
            return Ok(SubmitOutcome::Disabled);
        }
        let Some(set) = self.store().next_weight_set().await? else {
            return Ok(SubmitOutcome::NothingPending);
        };
        let result = self.try_submit(&set).await;
        let (status, error) = match &result {
            Ok(_) => return result,
            Err(EpochError::Chain(e)) if !e.is_transient() => {
                (WeightSetStatus::Failed, e.to_string())
            }
            Err(e) => (set.status, e.to_string()),
        };
        if status == WeightSetStatus::Failed {
            tracing::error!(set = set.id, %error, "weight submission refused for good");
        } else {
            let status = status.as_str();
            tracing::warn!(set = set.id, status, %error, "weight submission failed; will retry");
        }
        let update = WeightSetUpdate { status, error: Some(error), commit: None, included: None };
        self.store().update_weight_set(set.id, &update).await?;
        result
    }

    async fn try_submit(&self, set: &WeightSetRow) -> Result<SubmitOutcome, EpochError> {
        let chain = self.chain();
        let (netuid, retry_policy) = (self.netuid(), self.config().chain.retry);
        let policy =
            retry(&retry_policy, "weights_policy", || chain.weights_policy(netuid)).await?;
        let mg = self.refresh_metagraph().await?;
        let me = self.public_key();
        let neuron = mg.neuron(&me).ok_or(ChainError::NotRegistered(me.to_string(), netuid.0))?;
        if !neuron.validator_permit {
            return Err(ChainError::NoValidatorPermit(me.to_string(), netuid.0).into());
        }
        let keypair = self.keypair();
        if set.status == WeightSetStatus::Committed {
            let json = set.reveal_json.as_deref().unwrap_or_default();
            let reveal: WeightReveal = serde_json::from_str(json)
                .map_err(|e| EpochError::CorruptReveal(set.id, e.to_string()))?;
            return match chain.reveal_weights(keypair, netuid, &reveal).await {
                Ok(receipt) => {
                    self.mark_included(set.id, WeightSetStatus::Submitted, None, &receipt).await?;
                    tracing::info!(set = set.id, block = receipt.block, "weights revealed");
                    Ok(SubmitOutcome::Submitted { set_id: set.id, block: receipt.block })
                }
                // Before the reveal epoch the chain says "not yet": wait, nothing failed.
                Err(ChainError::RateLimited { blocks_left }) => {
                    Ok(SubmitOutcome::Waiting { blocks_left })
                }
                Err(e) => Err(e.into()),
            };
        }
        let needed = self.config().weights.min_blocks_between_updates.max(policy.rate_limit_blocks);
        let since = mg.block.saturating_sub(neuron.last_update);
        if neuron.last_update != 0 && since < needed {
            return Ok(SubmitOutcome::Waiting { blocks_left: needed - since });
        }
        // A uid re-registered since the vector was computed belongs to someone else now.
        let current: HashMap<u16, PublicKey> =
            mg.neurons.iter().map(|n| (n.uid, n.hotkey)).collect();
        let vector = WeightVector::new(
            set.entries
                .iter()
                .filter(|e| current.get(&e.uid) == Some(&e.hotkey))
                .map(|e| (e.uid, e.weight)),
        )?;
        if vector.is_all_zero() {
            let update = WeightSetUpdate {
                status: WeightSetStatus::Skipped,
                error: Some("all weights are zero after dropping re-registered uids".into()),
                commit: None,
                included: None,
            };
            self.store().update_weight_set(set.id, &update).await?;
            return Ok(SubmitOutcome::NothingPending);
        }
        let version_key = self.config().weights.version_key.unwrap_or(policy.version_key);
        if policy.commit_reveal_enabled {
            let reveal = WeightReveal::new(vector, version_key);
            let hash = commit_hash(&me, netuid, &reveal);
            let receipt = retry(&retry_policy, "commit_weights", || {
                chain.commit_weights(keypair, netuid, hash)
            })
            .await?;
            let json = serde_json::to_string(&reveal).unwrap_or_default();
            let commit = Some((json, receipt.block));
            self.mark_included(set.id, WeightSetStatus::Committed, commit, &receipt).await?;
            tracing::info!(set = set.id, block = receipt.block, "weights committed");
            return Ok(SubmitOutcome::Committed { set_id: set.id, block: receipt.block });
        }
        let receipt = retry(&retry_policy, "set_weights", || {
            chain.set_weights(keypair, netuid, &vector, version_key)
        })
        .await?;
        self.mark_included(set.id, WeightSetStatus::Submitted, None, &receipt).await?;
        tracing::info!(set = set.id, block = receipt.block, tx = %receipt.hash, "weights set");
        Ok(SubmitOutcome::Submitted { set_id: set.id, block: receipt.block })
    }

    async fn mark_included(
        &self,
        set_id: i64,
        status: WeightSetStatus,
        commit: Option<(String, u64)>,
        receipt: &veribench_chain::TxReceipt,
    ) -> Result<(), StoreError> {
        let included = (status == WeightSetStatus::Submitted)
            .then(|| (UnixMillis::now(), receipt.block, receipt.hash.clone()));
        let update = WeightSetUpdate { status, error: None, commit, included };
        self.store().update_weight_set(set_id, &update).await
    }
}

/// BLAKE3 (key derived from "veribench consensus evidence v1") over the window's verified
/// challenges, sorted: worker key ‖ miner key ‖ finish time (ms, u64 LE) ‖ GFLOP/s (f64 bits, LE).
fn evidence_root(verified: &HashMap<(PublicKey, PublicKey), Vec<(UnixMillis, f64)>>) -> [u8; 32] {
    let mut rows: Vec<([u8; 32], [u8; 32], u64, u64)> = verified
        .iter()
        .flat_map(|((w, m), v)| v.iter().map(move |(at, g)| (w.0, m.0, at.0, g.to_bits())))
        .collect();
    rows.sort_unstable();
    let mut hasher = blake3::Hasher::new_derive_key("veribench consensus evidence v1");
    for (worker, miner, at, gflops) in rows {
        hasher.update(&worker);
        hasher.update(&miner);
        hasher.update(&at.to_le_bytes());
        hasher.update(&gflops.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// The epoch loop: refreshes the metagraph every `chain.metagraph_refresh_secs` (and tries to
/// submit pending weights then), scores every `weights.interval_secs` (and submits right after),
/// until `stop`.
///
/// Under consensus the scoring timer is off (epochs come from the chain's blocks, see
/// [`crate::consensus::run_epochs`]) and `decided` wakes the loop to submit an agreed vector.
pub async fn run_epochs(
    coordinator: Arc<Coordinator>,
    decided: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let consensus = coordinator.config().consensus.enabled;
    let config = coordinator.config().clone();
    let mut refresh = tokio::time::interval(secs(config.chain.metagraph_refresh_secs));
    let mut score = tokio::time::interval_at(
        tokio::time::Instant::now() + secs(config.weights.interval_secs),
        secs(config.weights.interval_secs),
    );
    for timer in [&mut refresh, &mut score] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = refresh.tick() => {
                if let Err(e) = coordinator.refresh_metagraph().await {
                    tracing::warn!(error = %e, "cannot read the metagraph; keeping the last one");
                }
            }
            _ = score.tick(), if !consensus => {
                if let Err(e) = coordinator.score_epoch(UnixMillis::now()).await {
                    tracing::error!(error = %e, "score run failed");
                }
            }
            _ = decided.notified() => {}
        }
        match tokio::select! {
            _ = stop.cancelled() => break,
            r = coordinator.submit_weights() => r,
        } {
            Ok(SubmitOutcome::Waiting { blocks_left }) => {
                tracing::debug!(blocks_left, "weights wait for the rate limit")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "weights not submitted; will retry"),
        }
    }
}
