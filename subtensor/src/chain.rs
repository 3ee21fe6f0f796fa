//! [`SubxtChain`]: the [`Chain`] trait over a subtensor node's JSON-RPC (WebSocket).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use parity_scale_codec::{Decode, Encode};
use subxt::OnlineClient;
use subxt::backend::legacy::LegacyRpcMethods;
use subxt::config::{DefaultExtrinsicParamsBuilder, Header};
use subxt::error::{RpcError, TransactionError};
use subxt::ext::subxt_core::storage as core_storage;
use subxt::storage::Address;
use subxt::tx::{Payload, TxProgress, TxStatus};
use subxt::utils::{AccountId32, H256, Yes};
use subxt_rpcs::RpcClient;
use veribench_chain::{
    Chain, ChainError, Commitment, Metagraph, NetUid, Neuron, TxReceipt, WeightReveal,
    WeightVector, WeightsPolicy,
};
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

use crate::config::{HotkeySigner, SubtensorConfig};
use crate::errors::{self, Refusal};
use crate::finney;
use crate::finney::runtime_types::bounded_collections::bounded_vec::BoundedVec;
use crate::finney::runtime_types::pallet_commitments::types::{CommitmentInfo, Data};

/// Subtensor's limit of one raw commitment field (`Data::Raw128`).
pub const MAX_COMMITMENT_BYTES: usize = 128;

/// Keys per `state_queryStorageAt` request when reading a metagraph.
const QUERY_CHUNK: usize = 256;

/// How long [`SubxtChain`] waits for the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the WebSocket and fetching the genesis hash, runtime version and metadata.
    pub connect: Duration,
    /// From submitting an extrinsic until it is in a block and its events are read.
    pub inclusion: Duration,
}

impl Default for Timeouts {
    /// 30 s to connect; 3 minutes (15 blocks) to get an extrinsic into a block.
    fn default() -> Self {
        Self { connect: Duration::from_secs(30), inclusion: Duration::from_secs(180) }
    }
}

/// One open connection: the RPC client, subxt's client over it (runtime version and metadata
/// of the node) and the legacy RPC methods for the calls subxt's client does not make.
#[derive(Clone)]
struct Conn {
    rpc: RpcClient,
    api: OnlineClient<SubtensorConfig>,
    methods: LegacyRpcMethods<SubtensorConfig>,
}

/// The real chain: a subtensor node reached over `ws://` or `wss://`.
///
/// Reads are made at the node's best block. Extrinsics are signed with the caller's hotkey,
/// submitted with `author_submitAndWatchExtrinsic` and followed until they are in a (best)
/// block, whose events decide success. A dropped connection is reopened on the next call; a
/// runtime upgrade (new `spec_version`) is noticed before the next submission and the node's new
/// metadata fetched.
pub struct SubxtChain {
    url: String,
    timeouts: Timeouts,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl fmt::Debug for SubxtChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubxtChain")
            .field("url", &self.url)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl SubxtChain {
    /// Connects to the node at `url` (`ws://…` or `wss://…`) with the default [`Timeouts`].
    ///
    /// [`ChainError::Unreachable`] when the node cannot be reached or does not answer in time;
    /// [`ChainError::Decode`] when it answers with something that is not a substrate node's
    /// runtime metadata.
    pub async fn connect(url: &str) -> Result<Self, ChainError> {
        Self::connect_with(url, Timeouts::default()).await
    }

    /// [`SubxtChain::connect`] with explicit timeouts.
    pub async fn connect_with(url: &str, timeouts: Timeouts) -> Result<Self, ChainError> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ChainError::Unreachable(format!(
                "{url} is not a node endpoint: expected a ws:// or wss:// URL"
            )));
        }
        let conn = open(url, timeouts.connect).await?;
        Ok(Self { url: url.to_owned(), timeouts, conn: tokio::sync::Mutex::new(Some(conn)) })
    }

    /// The open connection, reopened if the last call lost it.
    async fn conn(&self) -> Result<Conn, ChainError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = open(&self.url, self.timeouts.connect).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `f` on the connection; a transport failure drops the connection so that the next
    /// call reconnects.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T, ChainError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, ChainError>>,
    {
        let out = f(self.conn().await?).await;
        if let Err(ChainError::Unreachable(reason)) = &out {
            tracing::warn!(url = %self.url, %reason, "chain connection lost; reconnecting on the next call");
            *self.conn.lock().await = None;
        }
        out
    }

    /// `conn` with subxt's client refreshed if the node's runtime was upgraded since it was made
    /// (a transaction signed for the old `spec_version` would be refused).
    async fn refreshed(&self, conn: Conn) -> Result<Conn, ChainError> {
        let live = conn.methods.state_get_runtime_version(None).await.map_err(errors::from_rpc)?;
        if live.spec_version == conn.api.runtime_version().spec_version {
            return Ok(conn);
        }
        tracing::info!(
            url = %self.url,
            spec_version = live.spec_version,
            "the chain's runtime was upgraded; fetching its new metadata"
        );
        let api = with_timeout(self.timeouts.connect, &self.url, async {
            OnlineClient::from_rpc_client(conn.rpc.clone()).await.map_err(errors::from_subxt)
        })
        .await?;
        let conn = Conn { api, ..conn };
        *self.conn.lock().await = Some(conn.clone());
        Ok(conn)
    }

    /// Signs `call` with `signer`, submits it and waits until it is in a block; failures are
    /// mapped to veribench's errors (rate limit, registration, permit…).
    async fn submit<C: Payload>(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        call: C,
    ) -> Result<TxReceipt, ChainError> {
        let hotkey = signer.public();
        let outcome = self
            .with_conn(|conn| async {
                let conn = self.refreshed(conn).await?;
                // The pool-aware nonce: an earlier extrinsic of this hotkey that is in a block
                // but not yet finalized (or still in the pool) already used the finalized one.
                let account = AccountId32(hotkey.0);
                let nonce = conn
                    .methods
                    .system_account_next_index(&account)
                    .await
                    .map_err(errors::from_rpc)?;
                let params =
                    DefaultExtrinsicParamsBuilder::<SubtensorConfig>::new().nonce(nonce).build();
                let submitted = async {
                    let progress = conn
                        .api
                        .tx()
                        .sign_and_submit_then_watch(&call, &HotkeySigner(signer), params)
                        .await?;
                    wait_in_block(progress).await
                };
                let (block_hash, ext_hash) =
                    match tokio::time::timeout(self.timeouts.inclusion, submitted).await {
                        Ok(Ok(done)) => done,
                        // A refusal is the chain's answer; a transport failure goes to
                        // `with_conn`, which drops the connection.
                        Ok(Err(e)) => match errors::classify_submission_error(e) {
                            Refusal::Failure(failure) => return Err(failure),
                            refusal => return Ok(Err(refusal)),
                        },
                        Err(_) => {
                            return Err(ChainError::Unreachable(format!(
                                "{}: the extrinsic was not in a block within {:?}",
                                self.url, self.timeouts.inclusion
                            )));
                        }
                    };
                let block = conn.block_number(block_hash).await?;
                Ok(Ok(TxReceipt { block, hash: format!("{ext_hash:#x}") }))
            })
            .await?;
        match outcome {
            Ok(receipt) => Ok(receipt),
            Err(refusal) => Err(self.refusal(refusal, &hotkey, netuid).await),
        }
    }

    /// The [`ChainError`] of a refused extrinsic, with the chain state a rate limit needs.
    async fn refusal(&self, refusal: Refusal, hotkey: &PublicKey, netuid: NetUid) -> ChainError {
        match refusal {
            Refusal::NotRegistered => ChainError::NotRegistered(hotkey.to_string(), netuid.0),
            Refusal::NoValidatorPermit => {
                ChainError::NoValidatorPermit(hotkey.to_string(), netuid.0)
            }
            Refusal::NoSuchSubnet => ChainError::NoSuchSubnet(netuid.0),
            Refusal::WeightsRateLimit => {
                let blocks_left = match self.conn().await {
                    Ok(conn) => conn.weights_blocks_left(hotkey, netuid).await.unwrap_or(1),
                    Err(_) => 1,
                };
                ChainError::RateLimited { blocks_left: blocks_left.max(1) }
            }
            // A hotkey's commitment space is reset at the subnet's next epoch.
            Refusal::RevealTooEarly | Refusal::CommitmentSpaceLimit => {
                let blocks_left = match self.conn().await {
                    Ok(conn) => conn.blocks_to_next_epoch(netuid).await.unwrap_or(1),
                    Err(_) => 1,
                };
                ChainError::RateLimited { blocks_left: blocks_left.max(1) }
            }
            Refusal::CommitmentRateLimit => ChainError::RateLimited { blocks_left: 1 },
            Refusal::Other(what) => ChainError::Rejected(what),
            Refusal::Failure(e) => e,
        }
    }
}

/// Opens a connection within `timeout`.
async fn open(url: &str, timeout: Duration) -> Result<Conn, ChainError> {
    with_timeout(timeout, url, async {
        let rpc = RpcClient::from_insecure_url(url).await.map_err(errors::from_rpc)?;
        let api = OnlineClient::<SubtensorConfig>::from_rpc_client(rpc.clone())
            .await
            .map_err(errors::from_subxt)?;
        Ok(Conn { methods: LegacyRpcMethods::new(rpc.clone()), rpc, api })
    })
    .await
}

/// `fut` bounded by `timeout`, its transport errors naming `url`.
async fn with_timeout<T>(
    timeout: Duration,
    url: &str,
    fut: impl Future<Output = Result<T, ChainError>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Err(ChainError::Unreachable(reason))) => {
            Err(ChainError::Unreachable(format!("{url}: {reason}")))
        }
        Ok(out) => out,
        Err(_) => Err(ChainError::Unreachable(format!("{url}: no answer within {timeout:?}"))),
    }
}

/// Follows a submitted extrinsic until it is in a block and succeeded there: the block's and the
/// extrinsic's hashes.
async fn wait_in_block(
    mut progress: TxProgress<SubtensorConfig, OnlineClient<SubtensorConfig>>,
) -> Result<(H256, H256), subxt::Error> {
    while let Some(status) = progress.next().await {
        match status? {
            TxStatus::InBestBlock(in_block) | TxStatus::InFinalizedBlock(in_block) => {
                in_block.wait_for_success().await?;
                return Ok((in_block.block_hash(), in_block.extrinsic_hash()));
            }
            TxStatus::Error { message } => return Err(TransactionError::Error(message).into()),
            TxStatus::Invalid { message } => return Err(TransactionError::Invalid(message).into()),
            TxStatus::Dropped { message } => return Err(TransactionError::Dropped(message).into()),
            TxStatus::Validated | TxStatus::Broadcasted | TxStatus::NoLongerInBestBlock => {}
        }
    }
    Err(RpcError::SubscriptionDropped.into())
}

impl Conn {
    /// The best block's hash and number.
    async fn best(&self) -> Result<(H256, u64), ChainError> {
        let hash = self
            .methods
            .chain_get_block_hash(None)
            .await
            .map_err(errors::from_rpc)?
            .ok_or_else(|| ChainError::Decode("the node reports no best block".into()))?;
        Ok((hash, self.block_number(hash).await?))
    }

    /// The number of block `hash`.
    async fn block_number(&self, hash: H256) -> Result<u64, ChainError> {
        let header =
            self.methods.chain_get_header(Some(hash)).await.map_err(errors::from_rpc)?.ok_or_else(
                || ChainError::Decode(format!("the node has no header of block {hash:#x}")),
            )?;
        Ok(header.number().into())
    }

    /// A storage value with a default (`ValueQuery`) at block `at`.
    async fn value<A>(&self, at: H256, address: &A) -> Result<A::Target, ChainError>
    where
        A: Address<IsFetchable = Yes, IsDefaultable = Yes>,
    {
        self.api.storage().at(at).fetch_or_default(address).await.map_err(errors::from_subxt)
    }

    /// The hotkey at every uid of `netuid` at block `at`, in uid order.
    async fn hotkeys(&self, at: H256, netuid: NetUid) -> Result<Vec<AccountId32>, ChainError> {
        let sm = finney::storage().subtensor_module();
        let n = self.value(at, &sm.subnetwork_n(netuid.0)).await?;
        let keys: Vec<_> = (0..n).map(|uid| sm.keys(netuid.0, uid)).collect();
        self.values(at, &keys).await
    }

    /// An optional storage value (`OptionQuery`) at block `at`.
    async fn option<A>(&self, at: H256, address: &A) -> Result<Option<A::Target>, ChainError>
    where
        A: Address<IsFetchable = Yes>,
    {
        self.api.storage().at(at).fetch(address).await.map_err(errors::from_subxt)
    }

    /// Many values of one storage map at block `at`, in `state_queryStorageAt` batches; absent
    /// entries get the map's default.
    async fn values<A: Address>(
        &self,
        at: H256,
        addresses: &[A],
    ) -> Result<Vec<A::Target>, ChainError> {
        let core = |e: subxt::ext::subxt_core::Error| errors::from_subxt(e.into());
        let metadata = self.api.metadata();
        let Some(first) = addresses.first() else {
            return Ok(Vec::new());
        };
        core_storage::validate(first, &metadata).map_err(core)?;
        let keys = addresses
            .iter()
            .map(|a| core_storage::get_address_bytes(a, &metadata).map_err(core))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found = HashMap::new();
        for chunk in keys.chunks(QUERY_CHUNK) {
            let sets = self
                .methods
                .state_query_storage_at(chunk.iter().map(Vec::as_slice), Some(at))
                .await
                .map_err(errors::from_rpc)?;
            for (key, value) in sets.into_iter().flat_map(|set| set.changes) {
                if let Some(value) = value {
                    found.insert(key.0, value.0);
                }
            }
        }
        keys.iter()
            .zip(addresses)
            .map(|(key, address)| {
                match found.get(key) {
                    Some(bytes) => core_storage::decode_value(&mut &bytes[..], address, &metadata),
                    None => core_storage::default_value(address, &metadata),
                }
                .map_err(core)
            })
            .collect()
    }

    /// [`ChainError::NoSuchSubnet`] unless `netuid` is a subnet at block `at`.
    async fn ensure_subnet(&self, at: H256, netuid: NetUid) -> Result<(), ChainError> {
        let added =
            self.value(at, &finney::storage().subtensor_module().networks_added(netuid.0)).await?;
        if added { Ok(()) } else { Err(ChainError::NoSuchSubnet(netuid.0)) }
    }

    /// The uid of `hotkey` on `netuid` at block `at`, if registered.
    async fn uid(
        &self,
        at: H256,
        hotkey: &PublicKey,
        netuid: NetUid,
    ) -> Result<Option<u16>, ChainError> {
        self.option(at, &finney::storage().subtensor_module().uids(netuid.0, AccountId32(hotkey.0)))
            .await
    }

    /// What subtensor checks before weights: the subnet exists, `hotkey` is registered on it and
    /// holds a validator permit. Its uid.
    async fn validator_uid(&self, hotkey: &PublicKey, netuid: NetUid) -> Result<u16, ChainError> {
        let (at, _) = self.best().await?;
        self.ensure_subnet(at, netuid).await?;
        let uid = self
            .uid(at, hotkey, netuid)
            .await?
            .ok_or_else(|| ChainError::NotRegistered(hotkey.to_string(), netuid.0))?;
        let permits = self
            .value(at, &finney::storage().subtensor_module().validator_permit(netuid.0))
            .await?;
        if permits.get(usize::from(uid)).copied().unwrap_or(false) {
            Ok(uid)
        } else {
            Err(ChainError::NoValidatorPermit(hotkey.to_string(), netuid.0))
        }
    }

    /// Blocks until `hotkey` may set weights again: `WeightsSetRateLimit` minus the blocks since
    /// its `LastUpdate`.
    async fn weights_blocks_left(
        &self,
        hotkey: &PublicKey,
        netuid: NetUid,
    ) -> Result<u64, ChainError> {
        let sm = finney::storage().subtensor_module();
        let (at, block) = self.best().await?;
        let uid = self.uid(at, hotkey, netuid).await?.unwrap_or_default();
        let last = self.value(at, &sm.last_update(netuid.0)).await?;
        let last = last.get(usize::from(uid)).copied().unwrap_or(0);
        let limit = self.value(at, &sm.weights_set_rate_limit(netuid.0)).await?;
        Ok(limit.saturating_sub(block.saturating_sub(last)))
    }

    /// Blocks until the subnet's next epoch (subtensor's `get_epoch_index`): the earliest a
    /// reveal refused as too early can be accepted, and when a hotkey's commitment space
    /// (`UsedSpaceOf`, counted per epoch) is reset.
    async fn blocks_to_next_epoch(&self, netuid: NetUid) -> Result<u64, ChainError> {
        let (at, block) = self.best().await?;
        let tempo = self.value(at, &finney::storage().subtensor_module().tempo(netuid.0)).await?;
        let period = u64::from(tempo) + 1;
        let offset = u64::from(netuid.0) + 1;
        let next_epoch = (block + offset) / period + 1;
        Ok((next_epoch * period).saturating_sub(offset).saturating_sub(block))
    }
}

/// `data` as one raw commitment field, `Data::Raw<len>`.
///
/// The variants `Raw0`…`Raw128` carry fixed-size arrays; rather than spell out 129 match arms,
/// the field is decoded from its SCALE form (variant index `len + 1`, then the bytes), which the
/// metadata fixes, and checked to encode back to the same bytes.
fn raw_field(data: &[u8]) -> Result<Data, ChainError> {
    let too_long = || {
        ChainError::Rejected(format!(
            "commitment of {} bytes exceeds subtensor's {MAX_COMMITMENT_BYTES}",
            data.len()
        ))
    };
    if data.len() > MAX_COMMITMENT_BYTES {
        return Err(too_long());
    }
    let index = u8::try_from(data.len() + 1).map_err(|_| too_long())?;
    let mut encoded = Vec::with_capacity(data.len() + 1);
    encoded.push(index);
    encoded.extend_from_slice(data);
    let field = Data::decode(&mut &encoded[..])
        .map_err(|e| ChainError::Decode(format!("Data::Raw{}: {e}", data.len())))?;
    if field.encode() != encoded {
        return Err(ChainError::Decode(format!("Data::Raw{} does not round-trip", data.len())));
    }
    Ok(field)
}

/// The bytes of a commitment field: `Raw<n>` or `BigRaw`.
fn field_bytes(field: &Data) -> Result<Vec<u8>, ChainError> {
    if let Data::BigRaw(BoundedVec(bytes)) = field {
        return Ok(bytes.clone());
    }
    let encoded = field.encode();
    match encoded.split_first() {
        Some((&index, bytes))
            if (1..=129).contains(&index) && bytes.len() == usize::from(index - 1) =>
        {
            Ok(bytes.to_vec())
        }
        _ => Err(ChainError::Decode(format!("commitment field {field:?} is not raw data"))),
    }
}

#[async_trait]
impl Chain for SubxtChain {
    fn endpoint(&self) -> String {
        self.url.clone()
    }

    async fn current_block(&self) -> Result<u64, ChainError> {
        self.with_conn(|conn| async move { Ok(conn.best().await?.1) }).await
    }

    async fn metagraph(&self, netuid: NetUid) -> Result<Metagraph, ChainError> {
        self.with_conn(|conn| async move {
            let sm = finney::storage().subtensor_module();
            let (at, block) = conn.best().await?;
            conn.ensure_subnet(at, netuid).await?;
            let permits = conn.value(at, &sm.validator_permit(netuid.0)).await?;
            let last_updates = conn.value(at, &sm.last_update(netuid.0)).await?;
            let hotkeys = conn.hotkeys(at, netuid).await?;
            let coldkeys = conn
                .values(at, &hotkeys.iter().map(|hk| sm.owner(hk.clone())).collect::<Vec<_>>())
                .await?;
            let stakes = conn
                .values(
                    at,
                    &hotkeys
                        .iter()
                        .map(|hk| sm.total_hotkey_alpha(hk.clone(), netuid.0))
                        .collect::<Vec<_>>(),
                )
                .await?;
            let neurons = (0u16..)
                .zip(hotkeys.iter().zip(coldkeys.iter().zip(&stakes)))
                .map(|(uid, (hotkey, (coldkey, &stake)))| {
                    let i = usize::from(uid);
                    Neuron {
                        uid,
                        hotkey: PublicKey(hotkey.0),
                        coldkey: PublicKey(coldkey.0),
                        stake,
                        validator_permit: permits.get(i).copied().unwrap_or(false),
                        last_update: last_updates.get(i).copied().unwrap_or(0),
                    }
                })
                .collect();
            Ok(Metagraph { netuid, block, neurons })
        })
        .await
    }

    async fn weights_policy(&self, netuid: NetUid) -> Result<WeightsPolicy, ChainError> {
        self.with_conn(|conn| async move {
            let sm = finney::storage().subtensor_module();
            let (at, _) = conn.best().await?;
            conn.ensure_subnet(at, netuid).await?;
            Ok(WeightsPolicy {
                commit_reveal_enabled: conn
                    .value(at, &sm.commit_reveal_weights_enabled(netuid.0))
                    .await?,
                rate_limit_blocks: conn.value(at, &sm.weights_set_rate_limit(netuid.0)).await?,
                tempo: conn.value(at, &sm.tempo(netuid.0)).await?,
                reveal_period_epochs: conn.value(at, &sm.reveal_period_epochs(netuid.0)).await?,
                version_key: conn.value(at, &sm.weights_version_key(netuid.0)).await?,
            })
        })
        .await
    }

    async fn set_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        weights: &WeightVector,
        version_key: u64,
    ) -> Result<TxReceipt, ChainError> {
        let hotkey = signer.public();
        self.with_conn(|conn| async move { conn.validator_uid(&hotkey, netuid).await }).await?;
        let call = finney::tx().subtensor_module().set_weights(
            netuid.0,
            weights.uids().to_vec(),
            weights.weights().to_vec(),
            version_key,
        );
        self.submit(signer, netuid, call).await
    }

    async fn commit_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        hash: [u8; 32],
    ) -> Result<TxReceipt, ChainError> {
        let hotkey = signer.public();
        self.with_conn(|conn| async move { conn.validator_uid(&hotkey, netuid).await }).await?;
        let call = finney::tx().subtensor_module().commit_weights(netuid.0, H256(hash));
        self.submit(signer, netuid, call).await
    }

    async fn reveal_weights(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        reveal: &WeightReveal,
    ) -> Result<TxReceipt, ChainError> {
        let hotkey = signer.public();
        self.with_conn(|conn| async move { conn.validator_uid(&hotkey, netuid).await }).await?;
        let call = finney::tx().subtensor_module().reveal_weights(
            netuid.0,
            reveal.weights.uids().to_vec(),
            reveal.weights.weights().to_vec(),
            reveal.salt.clone(),
            reveal.version_key,
        );
        self.submit(signer, netuid, call).await
    }

    async fn set_commitment(
        &self,
        signer: &Keypair,
        netuid: NetUid,
        data: &[u8],
    ) -> Result<TxReceipt, ChainError> {
        let field = raw_field(data)?;
        let hotkey = signer.public();
        self.with_conn(|conn| async move {
            let (at, _) = conn.best().await?;
            conn.ensure_subnet(at, netuid).await?;
            match conn.uid(at, &hotkey, netuid).await? {
                Some(_) => Ok(()),
                None => Err(ChainError::NotRegistered(hotkey.to_string(), netuid.0)),
            }
        })
        .await?;
        let info = CommitmentInfo { fields: BoundedVec(vec![field]) };
        let call = finney::tx().commitments().set_commitment(netuid.0, info);
        self.submit(signer, netuid, call).await
    }

    async fn commitment(
        &self,
        netuid: NetUid,
        hotkey: &PublicKey,
    ) -> Result<Option<Commitment>, ChainError> {
        let hotkey = *hotkey;
        self.with_conn(|conn| async move {
            let (at, _) = conn.best().await?;
            conn.ensure_subnet(at, netuid).await?;
            let address =
                finney::storage().commitments().commitment_of(netuid.0, AccountId32(hotkey.0));
            let Some(registration) = conn.option(at, &address).await? else {
                return Ok(None);
            };
            stored_commitment(&registration.info.fields.0, registration.block).map(Some)
        })
        .await
    }

    /// One iteration of `Commitments.CommitmentOf` under `netuid`, joined with the subnet's
    /// hotkeys (`Keys`, one batched read) for uid order. Entries of hotkeys that are no longer
    /// registered are left out, and so are entries that are not one raw field (another tool's
    /// commitment, a timelocked one): one odd entry must not hide everyone else's.
    async fn commitments(
        &self,
        netuid: NetUid,
    ) -> Result<Vec<(PublicKey, Commitment)>, ChainError> {
        self.with_conn(|conn| async move {
            let (at, _) = conn.best().await?;
            conn.ensure_subnet(at, netuid).await?;
            let entries = finney::storage().commitments().commitment_of_iter1(netuid.0);
            let mut stream =
                conn.api.storage().at(at).iter(entries).await.map_err(errors::from_subxt)?;
            let mut by_hotkey = HashMap::new();
            while let Some(entry) = stream.next().await {
                let entry = entry.map_err(errors::from_subxt)?;
                let hotkey = hotkey_of_commitment_key(&entry.key_bytes)?;
                let registration = entry.value;
                match stored_commitment(&registration.info.fields.0, registration.block) {
                    Ok(commitment) => {
                        by_hotkey.insert(hotkey.0, commitment);
                    }
                    Err(e) => {
                        tracing::debug!(%hotkey, netuid = netuid.0, error = %e, "commitment skipped");
                    }
                }
            }
            if by_hotkey.is_empty() {
                return Ok(Vec::new());
            }
            let hotkeys = conn.hotkeys(at, netuid).await?;
            Ok(hotkeys
                .into_iter()
                .filter_map(|hotkey| {
                    let commitment = by_hotkey.remove(&hotkey.0)?;
                    Some((PublicKey(hotkey.0), commitment))
                })
                .collect())
        })
        .await
    }
}

/// A stored commitment: its block and the bytes of its first field (none: empty).
fn stored_commitment(fields: &[Data], block: u32) -> Result<Commitment, ChainError> {
    let data = match fields.first() {
        Some(field) => field_bytes(field)?,
        None => Vec::new(),
    };
    Ok(Commitment { block: u64::from(block), data })
}

/// The hotkey of a `Commitments.CommitmentOf(netuid, hotkey)` storage key: its last 32 bytes,
/// since the map hashes the account with a `…Concat` hasher, which appends the account itself
/// (checked against the vendored metadata by a test).
fn hotkey_of_commitment_key(key: &[u8]) -> Result<PublicKey, ChainError> {
    // Pallet and entry prefixes (16 bytes each), the netuid's hash, then the account's.
    const MIN_LEN: usize = 32 + 2 + 32;
    let tail = key.len().checked_sub(32).filter(|_| key.len() >= MIN_LEN).ok_or_else(|| {
        ChainError::Decode(format!("CommitmentOf key of {} bytes is too short", key.len()))
    })?;
    let mut account = [0u8; 32];
    account.copy_from_slice(&key[tail..]);
    Ok(PublicKey(account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_round_trip_for_every_length() {
        for len in [0usize, 1, 31, 32, 64, 127, 128] {
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let field = raw_field(&data).expect("up to 128 bytes fit a raw field");
            let encoded = field.encode();
            assert_eq!(usize::from(encoded[0]), len + 1, "variant Raw{len}");
            assert_eq!(field_bytes(&field).expect("raw"), data);
        }
        assert!(matches!(raw_field(&[0; 129]), Err(ChainError::Rejected(_))));
        assert_eq!(
            field_bytes(&Data::BigRaw(BoundedVec(vec![1, 2, 3]))).expect("big raw"),
            [1, 2, 3]
        );
        assert!(matches!(field_bytes(&Data::Sha256([0; 32])), Err(ChainError::Decode(_))));
        assert!(matches!(field_bytes(&Data::None), Err(ChainError::Decode(_))));
    }

    /// The hotkey read back from a `CommitmentOf` key as the vendored finney metadata builds
    /// it: the account's hasher appends the account, so a whole-map read needs no other lookup.
    #[test]
    fn the_hotkey_of_a_commitment_key_is_its_account() {
        let bytes = include_bytes!("../metadata/finney.scale");
        let metadata = subxt::Metadata::decode(&mut &bytes[..]).expect("vendored metadata");
        for (netuid, account) in [(0u16, [0u8; 32]), (7, [0xa5; 32]), (u16::MAX, [0x01; 32])] {
            let address =
                finney::storage().commitments().commitment_of(netuid, AccountId32(account));
            let key = core_storage::get_address_bytes(&address, &metadata).expect("key");
            assert_eq!(hotkey_of_commitment_key(&key).expect("hotkey"), PublicKey(account));
            let prefix = finney::storage().commitments().commitment_of_iter1(netuid);
            let prefix = core_storage::get_address_bytes(&prefix, &metadata).expect("prefix");
            assert!(key.starts_with(&prefix), "an iteration under the netuid yields this key");
        }
        assert!(matches!(hotkey_of_commitment_key(&[0; 40]), Err(ChainError::Decode(_))));
    }

    #[test]
    fn a_stored_commitment_is_its_first_raw_field() {
        let one = raw_field(b"endpoint").expect("raw");
        let got = stored_commitment(&[one, Data::None], 42).expect("raw first field");
        assert_eq!(got, Commitment { block: 42, data: b"endpoint".to_vec() });
        assert_eq!(
            stored_commitment(&[], 3).expect("no field"),
            Commitment { block: 3, data: vec![] }
        );
        assert!(stored_commitment(&[Data::Sha256([0; 32])], 3).is_err());
    }
}
