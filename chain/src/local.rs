//! [`LocalChain`]: a chain state in one JSON file, for single-machine runs, demos and tests.
//!
//! It is not a blockchain, but it enforces what subtensor enforces on the calls veribench makes
//! (registered signer, validator permit, version key, weights rate limit, commit-reveal windows,
//! a commitments rate limit), so the coordinator's code paths meet the same refusals here as on
//! finney. Every change takes
//! an exclusive lock on `<file>.lock`, reads the state, applies the change and replaces the file
//! atomically (write to a temp file, fsync, rename), so a coordinator and a worker can share one
//! state file and a crash mid-write leaves the previous state intact. The [`Chain`] methods do
//! that file work on tokio's blocking pool, so a coordinator's runtime threads never wait on a
//! lock or an fsync. A state file's missing parent directories are created.
//!
//! Blocks advance with wall time (`block_ms` per block, 12 s like subtensor), plus any
//! [`LocalChain::advance_blocks`] a test or demo asks for.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use serde::{Deserialize, Serialize};
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

use crate::{
    Chain, ChainError, Commitment, Metagraph, NetUid, Neuron, TxReceipt, WeightReveal,
    WeightVector, WeightsPolicy, commit_hash,
};

/// Subtensor's limit of a commitment's raw data field.
const MAX_COMMITMENT_BYTES: usize = 128;

/// One neuron of a local subnet; its uid is its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNeuron {
    /// Registered hotkey.
    #[serde(with = "veribench_protocol::ids::hex32")]
    pub hotkey: PublicKey,
    /// Owning coldkey.
    #[serde(with = "veribench_protocol::ids::hex32")]
    pub coldkey: PublicKey,
    /// Stake in rao.
    pub stake: u64,
    /// May set weights.
    pub validator_permit: bool,
    /// Block of the last weights update (0: never).
    #[serde(default)]
    pub last_update: u64,
}

/// A weights commit waiting for its reveal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingCommit {
    uid: u16,
    hash: String,
    block: u64,
}

/// One local subnet: neurons, hyperparameters, weights and commitments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalSubnet {
    /// Neurons by uid.
    pub neurons: Vec<LocalNeuron>,
    /// `CommitRevealWeightsEnabled`.
    pub commit_reveal_enabled: bool,
    /// `WeightsSetRateLimit` in blocks.
    pub rate_limit_blocks: u64,
    /// `Tempo`.
    pub tempo: u16,
    /// `RevealPeriodEpochs`.
    pub reveal_period_epochs: u64,
    /// `WeightsVersionKey`.
    pub version_key: u64,
    /// Last weights set by each validator uid: `(uid, weight)` pairs.
    pub weights: BTreeMap<u16, Vec<(u16, u16)>>,
    /// Commitments by hotkey (hex).
    pub commitments: BTreeMap<String, Commitment>,
    /// Blocks a hotkey must wait after its last commitment before it may commit again. Subtensor
    /// limits commitments too (bytes per hotkey per epoch); a block count makes the same
    /// refusal, [`ChainError::RateLimited`], reachable here.
    pub commitment_rate_limit_blocks: u64,
    commits: Vec<PendingCommit>,
}

impl Default for LocalSubnet {
    /// Subtensor's defaults for a new subnet, commit-reveal off.
    fn default() -> Self {
        Self {
            neurons: Vec::new(),
            commit_reveal_enabled: false,
            rate_limit_blocks: 100,
            tempo: 360,
            reveal_period_epochs: 1,
            version_key: 0,
            weights: BTreeMap::new(),
            commitments: BTreeMap::new(),
            commitment_rate_limit_blocks: 100,
            commits: Vec::new(),
        }
    }
}

impl LocalSubnet {
    fn policy(&self) -> WeightsPolicy {
        WeightsPolicy {
            commit_reveal_enabled: self.commit_reveal_enabled,
            rate_limit_blocks: self.rate_limit_blocks,
            tempo: self.tempo,
            reveal_period_epochs: self.reveal_period_epochs,
            version_key: self.version_key,
        }
    }

    /// Subtensor's `get_epoch_index`.
    fn epoch(&self, netuid: NetUid, block: u64) -> u64 {
        (block + u64::from(netuid.0) + 1) / (u64::from(self.tempo) + 1)
    }

    fn uid_of(&self, hotkey: &PublicKey) -> Option<u16> {
        self.neurons.iter().position(|n| &n.hotkey == hotkey).and_then(|i| u16::try_from(i).ok())
    }

    /// The signer's uid, refused unless registered and (for weights) permitted.
    fn validator_uid(&self, signer: &PublicKey, netuid: NetUid) -> Result<u16, ChainError> {
        let uid =
            self.uid_of(signer).ok_or(ChainError::NotRegistered(signer.to_string(), netuid.0))?;
        if !self.neurons[usize::from(uid)].validator_permit {
            return Err(ChainError::NoValidatorPermit(signer.to_string(), netuid.0));
        }
        Ok(uid)
    }

    /// The checks and the write of `set_weights` (and of a successful reveal).
    fn apply_weights(
        &mut self,
        uid: u16,
        weights: &WeightVector,
        version_key: u64,
        block: u64,
    ) -> Result<(), ChainError> {
        if version_key < self.version_key {
            return Err(ChainError::Rejected(format!(
                "IncorrectWeightVersionKey: {version_key} < the subnet's {}",
                self.version_key
            )));
        }
        let neuron = &self.neurons[usize::from(uid)];
        let since = block.saturating_sub(neuron.last_update);
        if neuron.last_update != 0 && since < self.rate_limit_blocks {
            return Err(ChainError::RateLimited { blocks_left: self.rate_limit_blocks - since });
        }
        if let Some(bad) = weights.uids().iter().find(|&&u| usize::from(u) >= self.neurons.len()) {
            return Err(ChainError::Rejected(format!("UidVecContainInvalidOne: uid {bad}")));
        }
        self.weights.insert(uid, weights.pairs().collect());
        self.neurons[usize::from(uid)].last_update = block;
        Ok(())
    }
}

/// The whole state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    /// Block number at `base_time_ms`.
    base_block: u64,
    /// Wall time (Unix ms) of `base_block`.
    base_time_ms: u64,
    /// Milliseconds per block.
    block_ms: u64,
    /// Extrinsics applied so far (makes receipts' hashes unique).
    extrinsics: u64,
    subnets: BTreeMap<u16, LocalSubnet>,
}

impl State {
    fn new() -> Self {
        Self {
            base_block: 1,
            base_time_ms: now_ms(),
            block_ms: 12_000,
            extrinsics: 0,
            subnets: BTreeMap::new(),
        }
    }

    fn block(&self) -> u64 {
        let elapsed = now_ms().saturating_sub(self.base_time_ms);
        self.base_block.saturating_add(elapsed / self.block_ms.max(1))
    }

    fn subnet(&self, netuid: NetUid) -> Result<&LocalSubnet, ChainError> {
        self.subnets.get(&netuid.0).ok_or(ChainError::NoSuchSubnet(netuid.0))
    }

    fn subnet_mut(&mut self, netuid: NetUid) -> Result<&mut LocalSubnet, ChainError> {
        self.subnets.get_mut(&netuid.0).ok_or(ChainError::NoSuchSubnet(netuid.0))
    }

    fn receipt(&mut self, what: &str, block: u64) -> TxReceipt {
        self.extrinsics += 1;
        let digest = Blake2b::<U32>::digest(format!("{what}/{block}/{}", self.extrinsics));
        TxReceipt { block, hash: format!("0x{}", hex::encode(digest)) }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The file-backed chain. Cheap to clone; every call re-reads the file, so several processes
/// (or handles) see each other's changes.
#[derive(Clone, Debug)]
pub struct LocalChain {
    path: PathBuf,
}

impl LocalChain {
    /// Opens the state at `path`, creating an empty chain there if the file does not exist.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ChainError> {
        let chain = Self { path: path.into() };
        chain.update(|_| Ok(()))?;
        Ok(chain)
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> ChainError {
        ChainError::Io { path: self.path.display().to_string(), source }
    }

    /// Takes the lock file, shared or exclusive; released when the handle drops. The lock file
    /// is the first file a call creates, so a missing parent directory (`data/chain.json` in a
    /// fresh checkout) is created here.
    fn lock(&self, exclusive: bool) -> Result<File, ChainError> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let open = || OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => {
                        std::fs::create_dir_all(parent).map_err(|e| self.io(e))?;
                        open()
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
        .map_err(|e| self.io(e))?;
        if exclusive { file.lock() } else { file.lock_shared() }.map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// Reads the state; a file that does not parse is [`ChainError::CorruptState`], and since
    /// [`Self::update`] stops there, it is never overwritten with a state built from nothing.
    fn load(&self) -> Result<State, ChainError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ChainError::CorruptState {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> Result<T, ChainError>) -> Result<T, ChainError> {
        let _lock = self.lock(false)?;
        f(&self.load()?)
    }

    /// Applies `f` to the state under the exclusive lock and saves it if `f` succeeds; a failed
    /// `f` leaves the file untouched.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ChainError>,
    ) -> Result<T, ChainError> {
        let _lock = self.lock(true)?;
        let mut state = self.load()?;
        let out = f(&mut state)?;
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| ChainError::Decode(format!("cannot encode local chain state: {e}")))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let mut file = File::create(&tmp).map_err(|e| self.io(e))?;
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Runs `f` (file work: lock, read, write, fsync) on tokio's blocking pool, so an async
    /// caller's runtime thread does not block on it. A panic in `f` resumes on the caller.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        let chain = self.clone();
        match tokio::task::spawn_blocking(move || f(&chain)).await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(self.io(std::io::Error::other(e))),
        }
    }

    /// [`Self::read`] on the blocking pool.
    async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        self.blocking(move |c| c.read(f)).await
    }

    /// [`Self::update`] on the blocking pool.
    async fn update_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainError> {
        self.blocking(move |c| c.update(f)).await
    }

    /// Creates subnet `netuid` with `params` (its neurons included) if it does not exist yet;
    /// an existing subnet is left as it is.
    pub fn ensure_subnet(&self, netuid: NetUid, params: LocalSubnet) -> Result<(), ChainError> {
        self.update(|s| {
            s.subnets.entry(netuid.0).or_insert(params);
            Ok(())
        })
    }

    /// Changes a subnet's hyperparameters (neurons, weights and commitments are kept).
    pub fn configure_subnet(
        &self,
        netuid: NetUid,
        f: impl FnOnce(&mut LocalSubnet),
    ) -> Result<(), ChainError> {
        self.update(|s| {
            f(s.subnet_mut(netuid)?);
            Ok(())
        })
    }

    /// Registers `hotkey` on `netuid` (creating the subnet with defaults if needed) and returns
    /// its uid. Registering a hotkey again keeps its uid and updates its coldkey, stake and
    /// permit.
    pub fn register(
        &self,
        netuid: NetUid,
        hotkey: PublicKey,
        coldkey: PublicKey,
        stake: u64,
        validator_permit: bool,
    ) -> Result<u16, ChainError> {
        self.update(|s| {
            let subnet = s.subnets.entry(netuid.0).or_default();
            let neuron = LocalNeuron { hotkey, coldkey, stake, validator_permit, last_update: 0 };
            if let Some(uid) = subnet.uid_of(&hotkey) {
                let n = &mut subnet.neurons[usize::from(uid)];
                *n = LocalNeuron { last_update: n.last_update, ..neuron };
                return Ok(uid);
            }
            let uid = u16::try_from(subnet.neurons.len())
                .map_err(|_| ChainError::Rejected(format!("subnet {netuid} is full")))?;
            subnet.neurons.push(neuron);
            Ok(uid)
        })
    }

    /// Moves the chain `n` blocks forward.
    pub fn advance_blocks(&self, n: u64) -> Result<u64, ChainError> {
        self.update(|s| {
            s.base_block = s.base_block.saturating_add(n);
            Ok(s.block())
        })
    }

    /// Sets the block time (milliseconds per block), keeping the current block number.
    pub fn set_block_ms(&self, block_ms: u64) -> Result<(), ChainError> {
        self.update(|s| {
            s.base_block = s.block();
            s.base_time_ms = now_ms();
            s.block_ms = block_ms.max(1);
            Ok(())
        })
    }

    /// The weights each validator uid last set on `netuid`.
    pub fn weights(&self, netuid: NetUid) -> Result<BTreeMap<u16, Vec<(u16, u16)>>, ChainError> {
        self.read(|s| Ok(s.subnet(netuid)?.weights.clone()))
    }

    /// Subnet `netuid` as stored.
    pub fn subnet(&self, netuid: NetUid) -> Result<LocalSubnet, ChainError> {
        self.read(|s| s.subnet(netuid).cloned())
    }
}

#[async_trait]
impl Chain for LocalChain {
    fn endpoint(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        self.read_async(move |s| Ok(s.block())).await
    }

    async fn metagraph(&self, netuid: NetUid) -> Result<Metagraph, ChainError> {
        self.read_async(move |s| {
            let neurons = s
                .subnet(netuid)?
                .neurons
                .iter()
                .zip(0u16..)
                .map(|(n, uid)| Neuron {
                    uid,
                    hotkey: n.hotkey,
                    coldkey: n.coldkey,
                    stake: n.stake,
                    validator_permit: n.validator_permit,
                    last_update: n.last_update,
                })
                .collect();
            Ok(Metagraph { netuid, block: s.block(), neurons })
        })
        .await
    }

    async fn weights_policy(&self, netuid: NetUid) -> Result<WeightsPolicy, ChainError> {
        self.read_async(move |s| Ok(s.subnet(netuid)?.policy())).await
    }

    async fn set_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        weights: &WeightVector,
        version_key: u64,
    ) -> Result<TxReceipt, ChainError> {
        let who = signer.public();
        let weights = weights.clone();
        self.update_async(move |s| {
            let block = s.block();
            let subnet = s.subnet_mut(netuid)?;
            if subnet.commit_reveal_enabled {
                return Err(ChainError::Rejected(
                    "CommitRevealEnabled: this subnet takes weights through commit_weights and \
                     reveal_weights"
                        .into(),
                ));
            }
            let uid = subnet.validator_uid(&who, netuid)?;
            subnet.apply_weights(uid, &weights, version_key, block)?;
            Ok(s.receipt("set_weights", block))
        })
        .await
    }

    async fn commit_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        hash: [u8; 32],
    ) -> Result<TxReceipt, ChainError> {
        let who = signer.public();
        self.update_async(move |s| {
            let block = s.block();
            let subnet = s.subnet_mut(netuid)?;
            if !subnet.commit_reveal_enabled {
                return Err(ChainError::Rejected("CommitRevealDisabled".into()));
            }
            let uid = subnet.validator_uid(&who, netuid)?;
            subnet.commits.push(PendingCommit { uid, hash: hex::encode(hash), block });
            Ok(s.receipt("commit_weights", block))
        })
        .await
    }

    async fn reveal_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        reveal: &WeightReveal,
    ) -> Result<TxReceipt, ChainError> {
        let who = signer.public();
        let hash = hex::encode(commit_hash(&who, netuid, reveal));
        let (weights, version_key) = (reveal.weights.clone(), reveal.version_key);
        self.update_async(move |s| {
            let block = s.block();
            let subnet = s.subnet_mut(netuid)?;
            if !subnet.commit_reveal_enabled {
                return Err(ChainError::Rejected("CommitRevealDisabled".into()));
            }
            let uid = subnet.validator_uid(&who, netuid)?;
            let Some(i) = subnet.commits.iter().position(|c| c.uid == uid && c.hash == hash) else {
                return Err(ChainError::Rejected(
                    "InvalidRevealCommitHashNotMatch: no commit of this hotkey matches the reveal"
                        .into(),
                ));
            };
            let reveal_epoch =
                subnet.epoch(netuid, subnet.commits[i].block) + subnet.reveal_period_epochs;
            let now_epoch = subnet.epoch(netuid, block);
            if now_epoch < reveal_epoch {
                // First block of the reveal epoch: epoch e starts at e·(tempo+1) − netuid − 1.
                let start = (reveal_epoch * (u64::from(subnet.tempo) + 1))
                    .saturating_sub(u64::from(netuid.0) + 1);
                return Err(ChainError::RateLimited { blocks_left: start.saturating_sub(block) });
            }
            if now_epoch > reveal_epoch {
                subnet.commits.remove(i);
                return Err(ChainError::Rejected("ExpiredWeightCommit".into()));
            }
            subnet.apply_weights(uid, &weights, version_key, block)?;
            subnet.commits.remove(i);
            Ok(s.receipt("reveal_weights", block))
        })
        .await
    }

    async fn set_commitment(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        data: &[u8],
    ) -> Result<TxReceipt, ChainError> {
        let who = signer.public();
        if data.len() > MAX_COMMITMENT_BYTES {
            return Err(ChainError::Rejected(format!(
                "commitment of {} bytes exceeds {MAX_COMMITMENT_BYTES}",
                data.len()
            )));
        }
        let data = data.to_vec();
        self.update_async(move |s| {
            let block = s.block();
            let subnet = s.subnet_mut(netuid)?;
            subnet.uid_of(&who).ok_or(ChainError::NotRegistered(who.to_string(), netuid.0))?;
            if let Some(last) = subnet.commitments.get(&who.to_string()) {
                let since = block.saturating_sub(last.block);
                let limit = subnet.commitment_rate_limit_blocks;
                if since < limit {
                    return Err(ChainError::RateLimited { blocks_left: limit - since });
                }
            }
            subnet.commitments.insert(who.to_string(), Commitment { block, data });
            Ok(s.receipt("set_commitment", block))
        })
        .await
    }

    async fn commitment(
        &self,
        netuid: NetUid,
        hotkey: &PublicKey,
    ) -> Result<Option<Commitment>, ChainError> {
        let hotkey = hotkey.to_string();
        self.read_async(move |s| Ok(s.subnet(netuid)?.commitments.get(&hotkey).cloned())).await
    }

    /// One read of the state: the commitments of the registered neurons, in uid order.
    async fn commitments(
        &self,
        netuid: NetUid,
    ) -> Result<Vec<(PublicKey, Commitment)>, ChainError> {
        self.read_async(move |s| {
            let subnet = s.subnet(netuid)?;
            Ok(subnet
                .neurons
                .iter()
                .filter_map(|n| {
                    let commitment = subnet.commitments.get(&n.hotkey.to_string())?;
                    Some((n.hotkey, commitment.clone()))
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
