//! `SubxtChain` against the loopback node of `node/`: reads, signed submissions decoded with the
//! finney metadata, and the mapping of every kind of failure.

mod node;

use std::time::{Duration, Instant};

use parity_scale_codec::Encode;
use subxt::config::Hasher;
use subxt::config::substrate::BlakeTwo256;
use subxt::ext::subxt_core::blocks::{self as core_blocks, ExtrinsicDetails};
use subxt::utils::{AccountId32, H256};
use veribench_chain::{
    Chain, ChainError, Commitment, NetUid, Network, Neuron, WeightReveal, WeightVector,
    WeightsPolicy, commit_hash,
};
use veribench_protocol::{PublicKey, Signature};
use veribench_subtensor::finney;
use veribench_subtensor::finney::runtime_types::bounded_collections::bounded_vec::BoundedVec;
use veribench_subtensor::finney::runtime_types::pallet_commitments::types::{
    CommitmentInfo, Data, Registration,
};
use veribench_subtensor::{SubtensorConfig, SubxtChain, Timeouts};
use veribench_wallet::Keypair;

use node::{BEST, BEST_HASH, GENESIS, Node, SPEC_VERSION, TX_VERSION, TestNeuron};

const NETUID: NetUid = NetUid(7);

const POLICY: WeightsPolicy = WeightsPolicy {
    commit_reveal_enabled: false,
    rate_limit_blocks: 100,
    tempo: 360,
    reveal_period_epochs: 2,
    version_key: 3,
};

const FAST: Timeouts =
    Timeouts { connect: Duration::from_secs(10), inclusion: Duration::from_secs(20) };

/// Three neurons: a validator (the signer), a second validator, and a miner without permit.
struct Setup {
    node: Node,
    chain: SubxtChain,
    validator: Keypair,
    miner: Keypair,
    neurons: Vec<TestNeuron>,
}

async fn setup() -> Setup {
    setup_with(FAST).await
}

async fn setup_with(timeouts: Timeouts) -> Setup {
    let validator = Keypair::from_seed(&[1; 32]);
    let other = Keypair::from_seed(&[2; 32]);
    let miner = Keypair::from_seed(&[3; 32]);
    let neurons = vec![
        TestNeuron {
            hotkey: validator.public(),
            coldkey: PublicKey([0xa1; 32]),
            stake: 1_500_000_000_000,
            validator_permit: true,
            last_update: u64::from(BEST) - 200,
        },
        TestNeuron {
            hotkey: other.public(),
            coldkey: PublicKey([0xa2; 32]),
            stake: 42_000_000_000,
            validator_permit: true,
            last_update: u64::from(BEST) - 7,
        },
        TestNeuron {
            hotkey: miner.public(),
            coldkey: PublicKey([0xa3; 32]),
            stake: 9,
            validator_permit: false,
            last_update: 0,
        },
    ];
    let node = Node::start().await;
    node.install_subnet(NETUID, &neurons, &POLICY);
    let chain = SubxtChain::connect_with(&node.url, timeouts).await.expect("connects to the node");
    Setup { node, chain, validator, miner, neurons }
}

/// The one extrinsic `i` the node received, decoded with the metadata.
fn submitted(node: &Node, i: usize) -> (Vec<u8>, ExtrinsicDetails<SubtensorConfig>) {
    let bytes = node.state().submitted.get(i).cloned().expect("an extrinsic was submitted");
    let extrinsics =
        core_blocks::decode_from::<SubtensorConfig>(vec![bytes.clone()], node.metadata().clone())
            .expect("the extrinsic decodes with the finney metadata");
    let ext = extrinsics.iter().next().expect("one extrinsic");
    (bytes, ext)
}

/// Checks that `ext` is signed by `signer`: its address is `MultiAddress::Id(signer)`, and its
/// `MultiSignature::Sr25519` verifies over the payload substrate checks — call ‖ extensions'
/// extra ‖ their additional data (spec version, transaction version, genesis hash, the mortality
/// checkpoint, no metadata hash), BLAKE2-256-hashed when longer than 256 bytes.
fn assert_signed_by(node: &Node, ext: &ExtrinsicDetails<SubtensorConfig>, signer: &Keypair) {
    assert!(ext.is_signed(), "a signed extrinsic");
    let mut address = vec![0u8];
    address.extend_from_slice(&signer.public().0);
    assert_eq!(ext.address_bytes(), Some(&address[..]), "MultiAddress::Id(hotkey)");

    let signature = ext.signature_bytes().expect("signed");
    assert_eq!(signature.len(), 65);
    assert_eq!(signature[0], 1, "MultiSignature::Sr25519");
    let signature = Signature(signature[1..].try_into().expect("64 bytes"));

    let extensions = ext.transaction_extensions().expect("signed");
    assert_eq!(extensions.nonce(), Some(u64::from(node.state().nonce)), "the node's nonce");
    let era = extensions.iter().find(|e| e.name() == "CheckMortality").expect("CheckMortality");
    assert_ne!(era.bytes(), [0], "mortal from the finalized block");
    let mut payload = ext.call_bytes().to_vec();
    payload.extend_from_slice(ext.transaction_extensions_bytes().expect("signed"));
    payload.extend_from_slice(&SPEC_VERSION.encode());
    payload.extend_from_slice(&TX_VERSION.encode());
    payload.extend_from_slice(&GENESIS.0);
    payload.extend_from_slice(&BEST_HASH.0);
    payload.push(0); // CheckMetadataHash: None
    let payload = if payload.len() > 256 { BlakeTwo256.hash(&payload).0.to_vec() } else { payload };
    assert!(
        veribench_wallet::verify(&signer.public(), &payload, &signature),
        "the signature verifies over the signer payload"
    );
    let mut tampered = payload.clone();
    tampered[0] ^= 1;
    assert!(!veribench_wallet::verify(&signer.public(), &tampered, &signature));
}

fn ext_hash(bytes: &[u8]) -> String {
    format!("{:#x}", BlakeTwo256.hash(bytes))
}

/// Pallet and error index of `pallet::name` in the metadata.
fn error_index(node: &Node, pallet: &str, name: &str) -> (u8, u8) {
    let p = node.metadata().pallet_by_name(pallet).expect("pallet");
    let v = p.error_variants().expect("errors").iter().find(|v| v.name == name).expect("error");
    (p.index(), v.index)
}

/// Makes the inclusion block's events say the extrinsic failed with `pallet::name`.
fn fail_next_with(node: &Node, pallet: &str, name: &str) {
    use finney::runtime_types::{frame_support, frame_system, sp_runtime, sp_weights};
    let (index, error) = error_index(node, pallet, name);
    let record = frame_system::EventRecord {
        phase: frame_system::Phase::ApplyExtrinsic(0),
        event: finney::Event::System(frame_system::pallet::Event::ExtrinsicFailed {
            dispatch_error: sp_runtime::DispatchError::Module(sp_runtime::ModuleError {
                index,
                error: [error, 0, 0, 0],
            }),
            dispatch_info: frame_system::DispatchEventInfo {
                weight: sp_weights::weight_v2::Weight { ref_time: 1, proof_size: 1 },
                class: frame_support::dispatch::DispatchClass::Normal,
                pays_fee: frame_support::dispatch::Pays::No,
            },
        }),
        topics: Vec::<H256>::new(),
    };
    node.set(&finney::storage().system().events(), &vec![record]);
}

#[tokio::test]
async fn reads_the_metagraph_and_the_weights_policy() {
    let s = setup().await;
    assert_eq!(s.chain.endpoint(), s.node.url);
    assert_eq!(s.chain.current_block().await.expect("block"), u64::from(BEST));

    let metagraph = s.chain.metagraph(NETUID).await.expect("metagraph");
    assert_eq!(metagraph.netuid, NETUID);
    assert_eq!(metagraph.block, u64::from(BEST));
    let expected: Vec<Neuron> = (0u16..)
        .zip(&s.neurons)
        .map(|(uid, n)| Neuron {
            uid,
            hotkey: n.hotkey,
            coldkey: n.coldkey,
            stake: n.stake,
            validator_permit: n.validator_permit,
            last_update: n.last_update,
        })
        .collect();
    assert_eq!(metagraph.neurons, expected);
    assert_eq!(metagraph.uid(&s.miner.public()), Some(2));

    assert_eq!(s.chain.weights_policy(NETUID).await.expect("policy"), POLICY);

    assert!(matches!(s.chain.metagraph(NetUid(99)).await, Err(ChainError::NoSuchSubnet(99))));
    assert!(matches!(s.chain.weights_policy(NetUid(99)).await, Err(ChainError::NoSuchSubnet(99))));
    let calls = s.node.state().calls.clone();
    assert!(calls.iter().any(|c| c == "state_queryStorageAt"), "hotkeys are read in batches");
    assert!(!calls.iter().any(|c| c == "author_submitAndWatchExtrinsic"));
}

#[tokio::test]
async fn set_weights_submits_a_signed_extrinsic_the_metadata_decodes() {
    let s = setup().await;
    s.node.state().nonce = 5;
    let weights = WeightVector::new([(0, 100), (1, 65535), (2, 7)]).expect("distinct uids");
    let receipt =
        s.chain.set_weights(&s.validator, NETUID, &weights, 3).await.expect("weights set");

    let (bytes, ext) = submitted(&s.node, 0);
    assert_eq!(receipt.block, u64::from(BEST) + 1, "the inclusion block");
    assert_eq!(receipt.hash, ext_hash(&bytes));
    assert_eq!(ext.pallet_name().expect("pallet"), "SubtensorModule");
    assert_eq!(ext.variant_name().expect("call"), "set_weights");
    let call = ext
        .as_extrinsic::<finney::subtensor_module::calls::types::SetWeights>()
        .expect("decodes")
        .expect("is set_weights");
    assert_eq!(call.netuid, NETUID.0);
    assert_eq!(call.dests, [0, 1, 2]);
    assert_eq!(call.weights, [100, 65535, 7]);
    assert_eq!(call.version_key, 3);
    assert_signed_by(&s.node, &ext, &s.validator);
}

#[tokio::test]
async fn commitments_are_set_as_one_raw_field_and_read_back() {
    let s = setup().await;
    let data: Vec<u8> = (0..45u8).collect();
    let receipt = s.chain.set_commitment(&s.miner, NETUID, &data).await.expect("committed");

    let (bytes, ext) = submitted(&s.node, 0);
    assert_eq!(receipt.hash, ext_hash(&bytes));
    assert_eq!(ext.pallet_name().expect("pallet"), "Commitments");
    assert_eq!(ext.variant_name().expect("call"), "set_commitment");
    let call = ext
        .as_extrinsic::<finney::commitments::calls::types::SetCommitment>()
        .expect("decodes")
        .expect("is set_commitment");
    assert_eq!(call.netuid, NETUID.0);
    match &call.info.fields.0[..] {
        [Data::Raw45(raw)] => assert_eq!(raw[..], data[..]),
        other => panic!("expected one Raw45 field, got {other:?}"),
    }
    assert_signed_by(&s.node, &ext, &s.miner);

    assert!(matches!(
        s.chain.set_commitment(&s.miner, NETUID, &[0; 129]).await,
        Err(ChainError::Rejected(_))
    ));

    // Reading: absent, then what the pallet stores.
    let hotkey = s.miner.public();
    assert_eq!(s.chain.commitment(NETUID, &hotkey).await.expect("read"), None);
    assert!(matches!(
        s.chain.commitment(NetUid(99), &hotkey).await,
        Err(ChainError::NoSuchSubnet(99))
    ));
    let mut raw = [0u8; 45];
    raw.copy_from_slice(&data);
    let registration = Registration {
        deposit: 0,
        block: BEST - 3,
        info: CommitmentInfo { fields: BoundedVec(vec![Data::Raw45(raw)]) },
    };
    s.node.set(
        &finney::storage().commitments().commitment_of(NETUID.0, AccountId32(hotkey.0)),
        &registration,
    );
    assert_eq!(
        s.chain.commitment(NETUID, &hotkey).await.expect("read"),
        Some(Commitment { block: u64::from(BEST) - 3, data: data.clone() })
    );
}

/// `commitments` iterates `CommitmentOf` under the subnet once: registered hotkeys' raw
/// commitments in uid order; another subnet's, a deregistered hotkey's and a non-raw one are
/// left out.
#[tokio::test]
async fn all_commitments_of_a_subnet_are_read_in_uid_order() {
    let s = setup().await;
    assert_eq!(s.chain.commitments(NETUID).await.expect("none yet"), vec![]);
    let registration = |block: u32, fields: Vec<Data>| Registration {
        deposit: 0,
        block,
        info: CommitmentInfo { fields: BoundedVec(fields) },
    };
    let raw = |bytes: &[u8; 3]| Data::Raw3(*bytes);
    let commitments = finney::storage().commitments();
    let at = |netuid: NetUid, hotkey: PublicKey| {
        commitments.commitment_of(netuid.0, AccountId32(hotkey.0))
    };
    // Set out of uid order, so that the order read back is the join's, not the insertion's.
    s.node.set(&at(NETUID, s.miner.public()), &registration(10, vec![raw(b"min")]));
    s.node.set(&at(NETUID, s.validator.public()), &registration(20, vec![raw(b"val")]));
    s.node.set(&at(NETUID, s.neurons[1].hotkey), &registration(30, vec![Data::Sha256([0; 32])]));
    s.node.set(&at(NETUID, PublicKey([0xdd; 32])), &registration(40, vec![raw(b"old")]));
    s.node.set(&at(NetUid(8), s.validator.public()), &registration(50, vec![raw(b"alt")]));

    let all = s.chain.commitments(NETUID).await.expect("read");
    assert_eq!(
        all,
        vec![
            (s.validator.public(), Commitment { block: 20, data: b"val".to_vec() }),
            (s.miner.public(), Commitment { block: 10, data: b"min".to_vec() }),
        ]
    );
    assert!(s.node.state().calls.iter().any(|c| c == "state_getKeysPaged"), "one iteration");
    assert!(matches!(s.chain.commitments(NetUid(99)).await, Err(ChainError::NoSuchSubnet(99))));
}

#[tokio::test]
async fn a_commit_reveal_round_commits_the_hash_of_the_reveal() {
    let s = setup().await;
    let reveal = WeightReveal::new(WeightVector::new([(0, 10), (2, 20)]).expect("uids"), 4);
    let hash = commit_hash(&s.validator.public(), NETUID, &reveal);
    s.chain.commit_weights(&s.validator, NETUID, hash).await.expect("committed");
    s.node.state().nonce += 1;
    s.chain.reveal_weights(&s.validator, NETUID, &reveal).await.expect("revealed");

    let (_, commit) = submitted(&s.node, 0);
    assert_eq!(commit.variant_name().expect("call"), "commit_weights");
    let commit_call = commit
        .as_extrinsic::<finney::subtensor_module::calls::types::CommitWeights>()
        .expect("decodes")
        .expect("is commit_weights");
    assert_eq!(commit_call.netuid, NETUID.0);

    let (_, revealed) = submitted(&s.node, 1);
    assert_eq!(revealed.variant_name().expect("call"), "reveal_weights");
    let reveal_call = revealed
        .as_extrinsic::<finney::subtensor_module::calls::types::RevealWeights>()
        .expect("decodes")
        .expect("is reveal_weights");
    assert_eq!(reveal_call.netuid, NETUID.0);
    assert_signed_by(&s.node, &revealed, &s.validator);

    // The committed hash is subtensor's hash of what the reveal discloses, as decoded.
    let decoded = WeightReveal {
        weights: WeightVector::new(
            reveal_call.uids.iter().copied().zip(reveal_call.values.clone()),
        )
        .expect("uids"),
        salt: reveal_call.salt.clone(),
        version_key: reveal_call.version_key,
    };
    assert_eq!(decoded, reveal);
    assert_eq!(commit_call.commit_hash.0, commit_hash(&s.validator.public(), NETUID, &decoded));
    s.node.state().nonce -= 1;
    assert_signed_by(&s.node, &commit, &s.validator);
}

#[tokio::test]
async fn no_permit_or_no_registration_fails_before_submitting() {
    let s = setup().await;
    let weights = WeightVector::new([(0, 1)]).expect("uid");
    let miner = s.miner.public().to_string();
    match s.chain.set_weights(&s.miner, NETUID, &weights, 3).await {
        Err(ChainError::NoValidatorPermit(who, 7)) => assert_eq!(who, miner),
        other => panic!("expected NoValidatorPermit, got {other:?}"),
    }
    assert!(matches!(
        s.chain.commit_weights(&s.miner, NETUID, [0; 32]).await,
        Err(ChainError::NoValidatorPermit(_, 7))
    ));
    let stranger = Keypair::from_seed(&[9; 32]);
    assert!(matches!(
        s.chain.set_weights(&stranger, NETUID, &weights, 3).await,
        Err(ChainError::NotRegistered(_, 7))
    ));
    assert!(matches!(
        s.chain.set_commitment(&stranger, NETUID, b"x").await,
        Err(ChainError::NotRegistered(_, 7))
    ));
    assert!(matches!(
        s.chain.set_weights(&s.validator, NetUid(99), &weights, 3).await,
        Err(ChainError::NoSuchSubnet(99))
    ));
    let state = s.node.state();
    assert!(state.submitted.is_empty(), "nothing was submitted");
    assert!(!state.calls.iter().any(|c| c == "author_submitAndWatchExtrinsic"));
}

#[tokio::test]
async fn dispatch_errors_in_the_block_events_are_mapped() {
    let s = setup().await;
    let weights = WeightVector::new([(0, 1)]).expect("uid");

    // The weights rate limit: 100 blocks, last update 60 blocks before the best block.
    let sm = finney::storage().subtensor_module();
    s.node.set(&sm.last_update(NETUID.0), &vec![u64::from(BEST) - 60, 0u64, 0]);
    fail_next_with(&s.node, "SubtensorModule", "SettingWeightsTooFast");
    match s.chain.set_weights(&s.validator, NETUID, &weights, 3).await {
        Err(ChainError::RateLimited { blocks_left }) => assert_eq!(blocks_left, 40),
        other => panic!("expected RateLimited, got {other:?}"),
    }

    fail_next_with(&s.node, "SubtensorModule", "IncorrectWeightVersionKey");
    match s.chain.set_weights(&s.validator, NETUID, &weights, 1).await {
        Err(ChainError::Rejected(what)) => {
            assert!(what.starts_with("SubtensorModule::IncorrectWeightVersionKey"), "{what}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    // The chain's verdict stands even where the metagraph said otherwise.
    fail_next_with(&s.node, "SubtensorModule", "NeuronNoValidatorPermit");
    assert!(matches!(
        s.chain.set_weights(&s.validator, NETUID, &weights, 3).await,
        Err(ChainError::NoValidatorPermit(_, 7))
    ));

    fail_next_with(&s.node, "SubtensorModule", "HotKeyNotRegisteredInSubNet");
    assert!(matches!(
        s.chain.set_commitment(&s.miner, NETUID, b"abc").await,
        Err(ChainError::NotRegistered(_, 7))
    ));

    // A hotkey's commitment space is reset at the subnet's next epoch: tempo 360 and netuid 7
    // put the next one at block 4324, 324 blocks after the best block.
    fail_next_with(&s.node, "Commitments", "SpaceLimitExceeded");
    match s.chain.set_commitment(&s.miner, NETUID, b"abc").await {
        Err(ChainError::RateLimited { blocks_left }) => assert_eq!(blocks_left, 324),
        other => panic!("expected RateLimited, got {other:?}"),
    }

    fail_next_with(&s.node, "Commitments", "TooManyFieldsInCommitmentInfo");
    match s.chain.set_commitment(&s.miner, NETUID, b"abc").await {
        Err(ChainError::Rejected(what)) => {
            assert!(what.starts_with("Commitments::TooManyFieldsInCommitmentInfo"), "{what}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(s.node.state().submitted.len(), 6, "each was submitted and failed in its block");
}

#[tokio::test]
async fn transaction_pool_refusals_are_mapped() {
    let s = setup().await;
    let weights = WeightVector::new([(0, 1)]).expect("uid");
    let refuse = |data: &str| {
        s.node.state().reject =
            Some((1010, "Invalid Transaction".to_owned(), Some(data.to_owned())));
    };

    refuse("Custom error: 6");
    let sm = finney::storage().subtensor_module();
    s.node.set(&sm.last_update(NETUID.0), &vec![u64::from(BEST) - 90, 0u64, 0]);
    assert!(matches!(
        s.chain.set_weights(&s.validator, NETUID, &weights, 3).await,
        Err(ChainError::RateLimited { blocks_left: 10 })
    ));

    refuse("Transaction has a bad signature");
    match s.chain.set_weights(&s.validator, NETUID, &weights, 3).await {
        Err(ChainError::Rejected(what)) => assert!(what.contains("bad signature"), "{what}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(s.node.state().submitted.len(), 2);
}

#[tokio::test]
async fn an_extrinsic_never_included_is_unreachable_after_the_inclusion_timeout() {
    let s = setup_with(Timeouts { inclusion: Duration::from_millis(300), ..FAST }).await;
    let weights = WeightVector::new([(0, 1)]).expect("uid");
    s.node.state().never_include = true;
    let started = Instant::now();
    match s.chain.set_weights(&s.validator, NETUID, &weights, 3).await {
        Err(e @ ChainError::Unreachable(_)) => assert!(e.is_transient()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the inclusion timeout");

    // The next call reconnects and goes through.
    s.node.state().never_include = false;
    s.chain.set_weights(&s.validator, NETUID, &weights, 3).await.expect("included this time");
    assert_eq!(s.node.state().submitted.len(), 2);
}

#[tokio::test]
async fn an_unreachable_node_is_reported_promptly() {
    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let started = Instant::now();
    let err = SubxtChain::connect(&format!("ws://127.0.0.1:{port}")).await.expect_err("no node");
    assert!(matches!(err, ChainError::Unreachable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5), "refused connections fail at once");

    // A peer that accepts TCP but never speaks: the connect timeout bounds the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let started = Instant::now();
    let short = Timeouts { connect: Duration::from_millis(500), ..FAST };
    let err = SubxtChain::connect_with(&url, short).await.expect_err("silent peer");
    assert!(matches!(err, ChainError::Unreachable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the connect timeout");
    hold.abort();

    assert!(matches!(
        SubxtChain::connect("http://127.0.0.1:1").await,
        Err(ChainError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_lost_connection_is_unreachable_then_reopened() {
    let s = setup().await;
    let Setup { node, chain, neurons, .. } = s;
    let addr = node.url.trim_start_matches("ws://").to_owned();
    node.stop().await;
    assert!(matches!(chain.current_block().await, Err(ChainError::Unreachable(_))));

    let node = node::Node::start_on(&addr).await;
    node.install_subnet(NETUID, &neurons, &POLICY);
    assert_eq!(chain.current_block().await.expect("reconnected"), u64::from(BEST));
    assert_eq!(chain.metagraph(NETUID).await.expect("metagraph").neurons.len(), 3);
}

#[tokio::test]
async fn connect_picks_the_local_chain_for_files_and_subxt_for_urls() {
    let dir = std::env::temp_dir().join(format!("veribench-subtensor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("chain.json");
    let local = veribench_subtensor::connect(&Network::File(path.clone())).await.expect("file");
    assert_eq!(local.endpoint(), format!("file:{}", path.display()));
    std::fs::remove_dir_all(&dir).expect("clean up");

    let node = Node::start().await;
    let remote = veribench_subtensor::connect(&Network::Url(node.url.clone())).await.expect("url");
    assert_eq!(remote.endpoint(), node.url);
    assert_eq!(remote.current_block().await.expect("block"), u64::from(BEST));
}
