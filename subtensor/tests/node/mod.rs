//! A loopback subtensor node for the tests: a jsonrpsee WebSocket server on 127.0.0.1 that
//! answers the legacy JSON-RPC methods subxt's client uses, serves the REAL finney metadata
//! from `metadata/finney.scale` and whatever storage the test puts in, and records every
//! extrinsic submitted to it.
//!
//! Storage keys and values are made with subxt's own API from the generated code (a static
//! storage address gives the key; the value is encoded with the metadata's type of the entry),
//! so the tests exercise the same encoding a real node holds.
//!
//! Blocks: the genesis (number 0), the best and finalized block (number `BEST`), and one
//! inclusion block (number `BEST + 1`) that holds the last submitted extrinsic.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use parity_scale_codec::{Decode, Encode};
use serde_json::{Value, json};
use subxt::Metadata;
use subxt::ext::scale_encode::EncodeAsType;
use subxt::ext::subxt_core::storage as core_storage;
use subxt::storage::Address;
use subxt::utils::{AccountId32, H256};
use veribench_chain::NetUid;
use veribench_protocol::PublicKey;
use veribench_subtensor::finney;

/// The finney metadata the node serves (the vendored file itself).
pub const METADATA: &[u8] = include_bytes!("../../metadata/finney.scale");

/// Number of the best (and finalized) block.
pub const BEST: u32 = 4_000;
/// Hash of the genesis block.
pub const GENESIS: H256 = H256([0x11; 32]);
/// Hash of the best (and finalized) block.
pub const BEST_HASH: H256 = H256([0xbb; 32]);
/// Hash of the block that includes submitted extrinsics (number `BEST + 1`).
pub const INCLUSION_HASH: H256 = H256([0xcc; 32]);
/// The runtime version the node reports.
pub const SPEC_VERSION: u32 = 377;
/// The transaction version the node reports.
pub const TX_VERSION: u32 = 1;

/// The decoded finney metadata.
pub fn metadata() -> Metadata {
    Metadata::decode(&mut &METADATA[..]).expect("the vendored metadata decodes")
}

/// What the node holds, shared with the test.
#[derive(Default)]
pub struct State {
    /// Raw storage: key → SCALE value. The same at every block.
    pub storage: HashMap<Vec<u8>, Vec<u8>>,
    /// Every extrinsic submitted, as submitted (SCALE with its length prefix).
    pub submitted: Vec<Vec<u8>>,
    /// Every RPC method called, in order.
    pub calls: Vec<String>,
    /// When set, submissions are refused with this RPC error (code, message, data).
    pub reject: Option<(i32, String, Option<String>)>,
    /// When set, submissions are accepted ("ready") but never included in a block.
    pub never_include: bool,
    /// The nonce `system_accountNextIndex` answers (pool-aware; the runtime API answers 0).
    pub nonce: u32,
}

/// The running node.
pub struct Node {
    /// Its `ws://127.0.0.1:PORT` URL.
    pub url: String,
    state: Arc<Mutex<State>>,
    metadata: Metadata,
    handle: ServerHandle,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn unhex(text: &str) -> Result<Vec<u8>, ErrorObjectOwned> {
    hex::decode(text.trim_start_matches("0x"))
        .map_err(|e| ErrorObjectOwned::owned(-32602, format!("bad hex: {e}"), None::<()>))
}

fn args(params: &Params) -> Vec<Value> {
    params.parse::<Vec<Value>>().unwrap_or_default()
}

fn number_of(hash: &H256) -> Option<u32> {
    [(GENESIS, 0), (BEST_HASH, BEST), (INCLUSION_HASH, BEST + 1)]
        .into_iter()
        .find_map(|(h, n)| (h == *hash).then_some(n))
}

fn hash_arg(v: Option<&Value>) -> Result<Option<H256>, ErrorObjectOwned> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ErrorObjectOwned::owned(-32602, format!("bad hash: {e}"), None::<()>)),
    }
}

fn header(hash: H256) -> Value {
    let number = number_of(&hash).unwrap_or(BEST);
    let parent = match number {
        0 => H256::zero(),
        n if n == BEST + 1 => BEST_HASH,
        _ => GENESIS,
    };
    json!({
        "parentHash": parent,
        "number": format!("0x{number:x}"),
        "stateRoot": H256::zero(),
        "extrinsicsRoot": H256::zero(),
        "digest": { "logs": [] },
    })
}

type Ctx = Arc<Mutex<State>>;

fn lock(ctx: &Ctx) -> MutexGuard<'_, State> {
    ctx.lock().expect("node state lock")
}

fn register<F>(module: &mut RpcModule<Ctx>, name: &'static str, f: F)
where
    F: Fn(Vec<Value>, &Ctx) -> Result<Value, ErrorObjectOwned> + Send + Sync + 'static,
{
    module
        .register_method(name, move |params, ctx, _| {
            lock(ctx).calls.push(name.to_owned());
            f(args(&params), ctx)
        })
        .expect("method names are unique");
}

impl Node {
    /// Starts a node on a free loopback port.
    pub async fn start() -> Node {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts a node on `addr` (to restart one on the port a stopped node had).
    pub async fn start_on(addr: &str) -> Node {
        let state: Ctx = Arc::default();
        let server = Server::builder().build(addr).await.expect("bind the loopback node");
        let url = format!("ws://{}", server.local_addr().expect("local address"));
        let mut module = RpcModule::new(state.clone());

        register(&mut module, "chain_getBlockHash", |a, _| {
            Ok(match a.first() {
                None | Some(Value::Null) => json!(BEST_HASH),
                Some(n) if n.as_u64() == Some(0) => json!(GENESIS),
                Some(n) if n.as_u64() == Some(u64::from(BEST)) => json!(BEST_HASH),
                Some(n) if n.as_u64() == Some(u64::from(BEST) + 1) => json!(INCLUSION_HASH),
                Some(_) => Value::Null,
            })
        });
        register(&mut module, "chain_getFinalizedHead", |_, _| Ok(json!(BEST_HASH)));
        register(&mut module, "chain_getHeader", |a, _| {
            let hash = hash_arg(a.first())?.unwrap_or(BEST_HASH);
            Ok(if number_of(&hash).is_some() { header(hash) } else { Value::Null })
        });
        register(&mut module, "chain_getBlock", |a, ctx| {
            let hash = hash_arg(a.first())?.unwrap_or(BEST_HASH);
            if number_of(&hash).is_none() {
                return Ok(Value::Null);
            }
            let extrinsics: Vec<String> = if hash == INCLUSION_HASH {
                lock(ctx).submitted.last().map(|x| hex0x(x)).into_iter().collect()
            } else {
                Vec::new()
            };
            Ok(
                json!({ "block": { "header": header(hash), "extrinsics": extrinsics }, "justifications": null }),
            )
        });
        register(&mut module, "state_getRuntimeVersion", |_, _| {
            Ok(json!({
                "specName": "node-subtensor",
                "implName": "node-subtensor",
                "authoringVersion": 1,
                "specVersion": SPEC_VERSION,
                "implVersion": 1,
                "apis": [],
                "transactionVersion": TX_VERSION,
                "stateVersion": 1,
            }))
        });
        register(&mut module, "state_call", |a, _| {
            let method = a.first().and_then(Value::as_str).unwrap_or_default().to_owned();
            let data = unhex(a.get(1).and_then(Value::as_str).unwrap_or("0x"))?;
            let answer = match method.as_str() {
                "Metadata_metadata_versions" => vec![14u32, 15, 16].encode(),
                "Metadata_metadata_at_version" => {
                    let version = u32::decode(&mut &data[..]).unwrap_or(0);
                    let opaque = (version == 16).then(|| METADATA.to_vec());
                    opaque.encode()
                }
                // The finalized state's nonce, which knows nothing of extrinsics still in the
                // pool or in unfinalized blocks: extrinsics must use `system_accountNextIndex`.
                "AccountNonceApi_account_nonce" => 0u32.encode(),
                other => {
                    return Err(ErrorObjectOwned::owned(
                        -32000,
                        format!("the test node has no runtime API {other}"),
                        None::<()>,
                    ));
                }
            };
            Ok(json!(hex0x(&answer)))
        });
        register(&mut module, "system_accountNextIndex", |_, ctx| Ok(json!(lock(ctx).nonce)));
        register(&mut module, "state_getStorage", |a, ctx| {
            let key = unhex(a.first().and_then(Value::as_str).unwrap_or("0x"))?;
            Ok(lock(ctx).storage.get(&key).map_or(Value::Null, |v| json!(hex0x(v))))
        });
        // The keys under a prefix, in key order, `count` at a time after `start_key`: how
        // subxt's legacy backend iterates a storage map.
        register(&mut module, "state_getKeysPaged", |a, ctx| {
            let prefix = unhex(a.first().and_then(Value::as_str).unwrap_or("0x"))?;
            let count = a.get(1).and_then(Value::as_u64).unwrap_or(0) as usize;
            let after = a.get(2).and_then(Value::as_str).map(unhex).transpose()?;
            let state = lock(ctx);
            let mut keys: Vec<&Vec<u8>> = state
                .storage
                .keys()
                .filter(|k| k.starts_with(&prefix) && after.as_ref().is_none_or(|a| *k > a))
                .collect();
            keys.sort();
            let page: Vec<String> = keys.into_iter().take(count).map(|k| hex0x(k)).collect();
            Ok(json!(page))
        });
        register(&mut module, "state_queryStorageAt", |a, ctx| {
            let keys: Vec<String> =
                a.first().and_then(|k| serde_json::from_value(k.clone()).ok()).unwrap_or_default();
            let state = lock(ctx);
            let mut changes = Vec::new();
            for key in keys {
                let value = state.storage.get(&unhex(&key)?).map(|v| hex0x(v));
                changes.push(json!([key, value]));
            }
            Ok(json!([{ "block": BEST_HASH, "changes": changes }]))
        });
        module
            .register_subscription(
                "author_submitAndWatchExtrinsic",
                "author_extrinsicUpdate",
                "author_unwatchExtrinsic",
                |params: Params<'static>, pending: PendingSubscriptionSink, ctx: Arc<Ctx>, _| async move {
                    let xt = args(&params)
                        .first()
                        .and_then(Value::as_str)
                        .map(unhex)
                        .transpose()
                        .ok()
                        .flatten();
                    let (reject, never_include) = {
                        let mut state = lock(&ctx);
                        state.calls.push("author_submitAndWatchExtrinsic".into());
                        if let Some(xt) = xt {
                            state.submitted.push(xt);
                        }
                        (state.reject.clone(), state.never_include)
                    };
                    if let Some((code, message, data)) = reject {
                        pending.reject(ErrorObjectOwned::owned(code, message, data)).await;
                        return;
                    }
                    let Ok(sink) = pending.accept().await else { return };
                    if never_include {
                        let ready = SubscriptionMessage::from_json(&"ready").expect("serialises");
                        if sink.send(ready).await.is_ok() {
                            sink.closed().await;
                        }
                        return;
                    }
                    for status in
                        [json!("ready"), json!({ "inBlock": INCLUSION_HASH }), json!({ "finalized": INCLUSION_HASH })]
                    {
                        let msg = SubscriptionMessage::from_json(&status).expect("status serialises");
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                },
            )
            .expect("subscription names are unique");

        let handle = server.start(module);
        Node { url, state, metadata: metadata(), handle }
    }

    /// The node's state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The metadata the node serves, decoded.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Stops the node (its port is free again once this returns).
    pub async fn stop(self) {
        let handle = self.handle.clone();
        let _ = handle.stop();
        handle.stopped().await;
    }

    /// Sets storage entry `address` to `value`, encoded as the metadata's type of the entry.
    pub fn set<A: Address>(&self, address: &A, value: &impl EncodeAsType) {
        let key = core_storage::get_address_bytes(address, &self.metadata).expect("storage key");
        let entry = self
            .metadata
            .pallet_by_name(address.pallet_name())
            .and_then(|p| p.storage())
            .and_then(|s| s.entry_by_name(address.entry_name()))
            .expect("the entry is in the metadata");
        let bytes = value
            .encode_as_type(entry.entry_type().value_ty(), self.metadata.types())
            .expect("the value has the entry's type");
        self.state().storage.insert(key, bytes);
    }

    /// Puts subnet `netuid` with `neurons` and `policy` into storage the way subtensor keeps it.
    pub fn install_subnet(
        &self,
        netuid: NetUid,
        neurons: &[TestNeuron],
        policy: &veribench_chain::WeightsPolicy,
    ) {
        let sm = finney::storage().subtensor_module();
        let n = netuid.0;
        self.set(&sm.networks_added(n), &true);
        self.set(&sm.subnetwork_n(n), &(neurons.len() as u16));
        for (uid, neuron) in (0u16..).zip(neurons) {
            let hotkey = AccountId32(neuron.hotkey.0);
            self.set(&sm.keys(n, uid), &hotkey);
            self.set(&sm.uids(n, hotkey.clone()), &uid);
            self.set(&sm.owner(hotkey.clone()), &AccountId32(neuron.coldkey.0));
            self.set(&sm.total_hotkey_alpha(hotkey, n), &neuron.stake);
        }
        let permits: Vec<bool> = neurons.iter().map(|x| x.validator_permit).collect();
        let last: Vec<u64> = neurons.iter().map(|x| x.last_update).collect();
        self.set(&sm.validator_permit(n), &permits);
        self.set(&sm.last_update(n), &last);
        self.set(&sm.commit_reveal_weights_enabled(n), &policy.commit_reveal_enabled);
        self.set(&sm.weights_set_rate_limit(n), &policy.rate_limit_blocks);
        self.set(&sm.tempo(n), &policy.tempo);
        self.set(&sm.reveal_period_epochs(n), &policy.reveal_period_epochs);
        self.set(&sm.weights_version_key(n), &policy.version_key);
    }
}

/// A neuron as a test sets it up.
#[derive(Clone, Debug)]
pub struct TestNeuron {
    pub hotkey: PublicKey,
    pub coldkey: PublicKey,
    pub stake: u64,
    pub validator_permit: bool,
    pub last_update: u64,
}
