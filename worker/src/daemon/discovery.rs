//! Which validators' coordinators a worker serves, decided from the chain alone.
//!
//! A coordinator announces its endpoint ([`Endpoint`]) as its validator hotkey's commitment. A
//! worker following a subnet trusts an announcement only when the hotkey holds a validator
//! permit, has at least the configured stake, the announcement is younger than
//! [`ANNOUNCEMENT_TTL_BLOCKS`](veribench_chain::ANNOUNCEMENT_TTL_BLOCKS) and it speaks this
//! build's wire protocol. Everything else is refused with a typed [`Distrust`], so an operator
//! can see why a validator is not served; plain miners (no permit, no announcement) are skipped
//! silently.
//!
//! [`assess`] is pure: metagraph and commitments in, [`Assessment`] out. [`plan`] turns two
//! assessments into connections to start and stop. The decisions are persisted as JSON
//! ([`DiscoveryState`], written by [`write_state`], read by [`read_state`]) so operators and tests
//! can inspect them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::debug;
use veribench_chain::{
    CertFingerprint, Commitment, Endpoint, EndpointError, Metagraph, NetUid, announcement_expired,
};
use veribench_protocol::PublicKey;
use veribench_wallet::{BITTENSOR_SS58_PREFIX, ss58_encode};

/// At most this many entries are written to the state file (one per hotkey).
pub const MAX_STATE_ENTRIES: usize = 4096;

/// What a worker requires of a validator before it serves its coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    /// The least stake, in rao, of a trusted validator hotkey.
    pub min_stake: u64,
    /// The wire protocol version this build speaks
    /// ([`veribench_protocol::wire::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// Whether endpoints on loopback, private or link-local addresses (and `localhost`) are
    /// served: on a single machine or a private network, never on a public subnet, where a
    /// validator could otherwise point every worker at services inside its network.
    pub allow_private_endpoints: bool,
}

/// A validator whose announcement is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    /// Its uid on the subnet.
    pub uid: u16,
    /// Where its coordinator listens and which certificate it presents.
    pub endpoint: Endpoint,
    /// The block the announcement was committed at.
    pub committed_at: u64,
}

/// A hotkey whose announcement (or connection) is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Its uid on the subnet.
    pub uid: u16,
    /// The announced URL, when the commitment decodes as an endpoint.
    pub url: Option<String>,
    /// Why.
    pub reason: Distrust,
}

/// Why a hotkey's coordinator is not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Distrust {
    /// The hotkey announces an endpoint but holds no validator permit.
    #[error("the hotkey announces an endpoint but holds no validator permit")]
    NoValidatorPermit,
    /// The hotkey's stake is below the worker's minimum.
    #[error("stake {stake} rao is below the minimum of {min} rao")]
    StakeBelowMinimum {
        /// Its stake, in rao.
        stake: u64,
        /// The configured minimum, in rao.
        min: u64,
    },
    /// A permitted validator's commitment is not an endpoint announcement.
    #[error("the commitment is not an endpoint announcement: {0}")]
    NotAnEndpoint(EndpointError),
    /// The announcement is older than the TTL.
    #[error("the announcement of block {committed_at} has expired at block {now}")]
    Expired {
        /// The block it was committed at.
        committed_at: u64,
        /// The block it was read at.
        now: u64,
    },
    /// The coordinator speaks another wire protocol version.
    #[error("the coordinator speaks protocol version {got}, this worker speaks {speaks}")]
    IncompatibleVersion {
        /// The announced version.
        got: u16,
        /// This build's version.
        speaks: u16,
    },
    /// The announced host is not on the public internet (and `allow_private_endpoints` is off).
    #[error("the announced host {host} is not a public address")]
    PrivateEndpoint {
        /// The host as announced.
        host: String,
    },
    /// The coordinator served another TLS certificate than the announced one.
    #[error("the coordinator served certificate {served}, but {announced} is announced")]
    FingerprintMismatch {
        /// The fingerprint on chain.
        announced: CertFingerprint,
        /// The fingerprint of the certificate served.
        served: CertFingerprint,
    },
    /// The coordinator's Welcome named another key than the announcing hotkey.
    #[error(
        "the coordinator welcomed with key {welcome_key}, but hotkey {announced_hotkey} announced it"
    )]
    WrongKey {
        /// The hotkey whose commitment announced the endpoint.
        announced_hotkey: PublicKey,
        /// The key in the Welcome.
        welcome_key: PublicKey,
    },
}

impl Distrust {
    /// A stable snake_case code, for logs and the state file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NoValidatorPermit => "no_validator_permit",
            Self::StakeBelowMinimum { .. } => "stake_below_minimum",
            Self::NotAnEndpoint(_) => "not_an_endpoint",
            Self::Expired { .. } => "expired",
            Self::IncompatibleVersion { .. } => "incompatible_version",
            Self::PrivateEndpoint { .. } => "private_endpoint",
            Self::FingerprintMismatch { .. } => "fingerprint_mismatch",
            Self::WrongKey { .. } => "wrong_key",
        }
    }
}

/// The outcome of one [`assess`]: trusted and refused hotkeys, each at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The block the decisions hold at.
    pub block: u64,
    /// Validators whose coordinators are served.
    pub trusted: BTreeMap<PublicKey, Trusted>,
    /// Hotkeys that announce an endpoint (or hold a permit) but are not served.
    pub refused: BTreeMap<PublicKey, Refused>,
}

/// Decides, for every commitment of a registered hotkey, whether its coordinator is served at
/// block `now`. Commitments of hotkeys not in `metagraph` are ignored (deregistered since).
pub fn assess(
    metagraph: &Metagraph,
    commitments: &[(PublicKey, Commitment)],
    now: u64,
    policy: &TrustPolicy,
) -> Assessment {
    let neurons: HashMap<&PublicKey, _> =
        metagraph.neurons.iter().map(|n| (&n.hotkey, n)).collect();
    let mut out = Assessment { block: now, ..Assessment::default() };
    for (hotkey, commitment) in commitments {
        let Some(neuron) = neurons.get(hotkey) else {
            debug!(%hotkey, "commitment of an unregistered hotkey; skipped");
            continue;
        };
        let uid = neuron.uid;
        let endpoint = match Endpoint::decode(&commitment.data) {
            Ok(endpoint) => endpoint,
            Err(e) if neuron.validator_permit => {
                let reason = Distrust::NotAnEndpoint(e);
                out.refused.insert(*hotkey, Refused { uid, url: None, reason });
                continue;
            }
            Err(e) => {
                debug!(uid, reason = %e, "a miner's commitment; skipped");
                continue;
            }
        };
        let refusal = if !neuron.validator_permit {
            Some(Distrust::NoValidatorPermit)
        } else if neuron.stake < policy.min_stake {
            Some(Distrust::StakeBelowMinimum { stake: neuron.stake, min: policy.min_stake })
        } else if announcement_expired(commitment.block, now) {
            Some(Distrust::Expired { committed_at: commitment.block, now })
        } else if endpoint.protocol_version != policy.protocol_version {
            Some(Distrust::IncompatibleVersion {
                got: endpoint.protocol_version,
                speaks: policy.protocol_version,
            })
        } else if !policy.allow_private_endpoints && endpoint.url.host().is_non_public() {
            Some(Distrust::PrivateEndpoint { host: endpoint.url.host().to_string() })
        } else {
            None
        };
        match refusal {
            Some(reason) => {
                let url = Some(endpoint.url.as_str().to_owned());
                out.refused.insert(*hotkey, Refused { uid, url, reason });
            }
            None => {
                let trusted = Trusted { uid, endpoint, committed_at: commitment.block };
                out.trusted.insert(*hotkey, trusted);
            }
        }
    }
    out
}

/// Connections to stop and start to go from the endpoints served now to `next`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Hotkeys whose connection ends: no longer trusted, or their endpoint changed.
    pub stop: Vec<PublicKey>,
    /// Hotkeys to connect to: newly trusted, or at a changed endpoint.
    pub start: Vec<PublicKey>,
}

/// The [`Plan`] from `current` (the endpoint each running connection dials) to `next`. Only the
/// endpoint matters: the same endpoint re-announced at a newer block keeps its connection.
pub fn plan(current: &BTreeMap<PublicKey, Endpoint>, next: &Assessment) -> Plan {
    let mut out = Plan::default();
    for (hotkey, endpoint) in current {
        match next.trusted.get(hotkey) {
            Some(t) if &t.endpoint == endpoint => {}
            _ => out.stop.push(*hotkey),
        }
    }
    for (hotkey, trusted) in &next.trusted {
        if current.get(hotkey) != Some(&trusted.endpoint) {
            out.start.push(*hotkey);
        }
    }
    out
}

/// The persisted decisions of a worker following a subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryState {
    /// The subnet followed.
    pub netuid: u16,
    /// The block of the last assessment.
    pub block: u64,
    /// One entry per hotkey: trusted ones first, then refused ones, each in key order.
    pub coordinators: Vec<CoordinatorRecord>,
}

/// One hotkey's decision in a [`DiscoveryState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorRecord {
    /// The validator hotkey, ss58 (prefix 42).
    pub hotkey: String,
    /// Its uid on the subnet.
    pub uid: u16,
    /// The announced URL, if the commitment is an endpoint.
    pub url: Option<String>,
    /// Whether it is served.
    pub status: TrustStatus,
    /// [`Distrust::as_str`] of a refusal.
    pub reason: Option<String>,
    /// The refusal in words.
    pub detail: Option<String>,
}

/// Served or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustStatus {
    /// Its coordinator is served.
    Trusted,
    /// It is not, for the record's reason.
    Refused,
}

impl fmt::Display for TrustStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trusted => "trusted",
            Self::Refused => "refused",
        })
    }
}

/// Why the state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The file (or its temporary sibling).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a [`DiscoveryState`].
    #[error("state file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// The ss58 form of `key` (Bittensor's prefix), or hex if that fails (it cannot for prefix 42).
pub fn ss58(key: &PublicKey) -> String {
    ss58_encode(key, BITTENSOR_SS58_PREFIX).unwrap_or_else(|_| key.to_string())
}

/// The state to persist: `assessment`, with the connection-level refusals of `connections`
/// overriding the trust of those hotkeys; at most [`MAX_STATE_ENTRIES`] entries.
pub fn state_of(
    netuid: NetUid,
    assessment: &Assessment,
    connections: &HashMap<PublicKey, Distrust>,
) -> DiscoveryState {
    let mut trusted = Vec::new();
    let mut refused = Vec::new();
    for (hotkey, t) in &assessment.trusted {
        let url = Some(t.endpoint.url.as_str().to_owned());
        let hotkey_text = ss58(hotkey);
        match connections.get(hotkey) {
            Some(reason) => refused.push(CoordinatorRecord {
                hotkey: hotkey_text,
                uid: t.uid,
                url,
                status: TrustStatus::Refused,
                reason: Some(reason.as_str().to_owned()),
                detail: Some(reason.to_string()),
            }),
            None => trusted.push(CoordinatorRecord {
                hotkey: hotkey_text,
                uid: t.uid,
                url,
                status: TrustStatus::Trusted,
                reason: None,
                detail: None,
            }),
        }
    }
    for (hotkey, r) in &assessment.refused {
        refused.push(CoordinatorRecord {
            hotkey: ss58(hotkey),
            uid: r.uid,
            url: r.url.clone(),
            status: TrustStatus::Refused,
            reason: Some(r.reason.as_str().to_owned()),
            detail: Some(r.reason.to_string()),
        });
    }
    let mut coordinators = trusted;
    coordinators.append(&mut refused);
    coordinators.truncate(MAX_STATE_ENTRIES);
    DiscoveryState { netuid: netuid.0, block: assessment.block, coordinators }
}

/// Writes `state` to `path` atomically: a temporary file in the same directory, then a rename.
/// The directory is created if missing.
pub fn write_state(path: &Path, state: &DiscoveryState) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut text = serde_json::to_vec_pretty(state)
        .map_err(|source| StateError::Parse { path: path.to_owned(), source })?;
    text.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        StateError::Io { path: path.to_owned(), source }
    })
}

/// Reads a state file written by [`write_state`].
pub fn read_state(path: &Path) -> Result<DiscoveryState, StateError> {
    let text =
        std::fs::read(path).map_err(|source| StateError::Io { path: path.to_owned(), source })?;
    serde_json::from_slice(&text)
        .map_err(|source| StateError::Parse { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use veribench_chain::{ANNOUNCEMENT_TTL_BLOCKS, Neuron, WssUrl};
    use veribench_protocol::wire::PROTOCOL_VERSION;

    use super::*;

    const MIN: u64 = 1_000_000_000_000;
    const POLICY: TrustPolicy = TrustPolicy {
        min_stake: MIN,
        protocol_version: PROTOCOL_VERSION,
        allow_private_endpoints: false,
    };

    fn key(byte: u8) -> PublicKey {
        PublicKey([byte; 32])
    }

    fn neuron(uid: u16, stake: u64, validator_permit: bool) -> Neuron {
        Neuron {
            uid,
            hotkey: key(uid as u8 + 1),
            coldkey: key(200),
            stake,
            validator_permit,
            last_update: 0,
        }
    }

    fn endpoint(host: &str) -> Endpoint {
        Endpoint {
            url: WssUrl::new(format!("wss://{host}:8443/ws")).expect("url"),
            fingerprint: Some(CertFingerprint([7; 32])),
            protocol_version: PROTOCOL_VERSION,
        }
    }

    fn announce(e: &Endpoint, block: u64) -> Commitment {
        Commitment { block, data: e.encode().expect("encodes") }
    }

    fn metagraph(neurons: Vec<Neuron>) -> Metagraph {
        Metagraph { netuid: NetUid(7), block: 100, neurons }
    }

    fn reason(a: &Assessment, hotkey: PublicKey) -> Option<&Distrust> {
        a.refused.get(&hotkey).map(|r| &r.reason)
    }

    #[test]
    fn a_permitted_staked_validator_with_a_fresh_endpoint_is_trusted() {
        let v = neuron(0, MIN, true);
        let e = endpoint("v0.example");
        let a = assess(&metagraph(vec![v.clone()]), &[(v.hotkey, announce(&e, 90))], 100, &POLICY);
        let trusted = a.trusted.get(&v.hotkey).expect("trusted");
        assert_eq!((trusted.uid, &trusted.endpoint, trusted.committed_at), (0, &e, 90));
        assert!(a.refused.is_empty());
    }

    /// A validator announcing a host inside a network (its own or the worker's) is refused,
    /// unless private endpoints are allowed (a devnet).
    #[test]
    fn private_endpoints_are_refused_unless_allowed() {
        let graph = metagraph((0..4).map(|uid| neuron(uid, MIN, true)).collect());
        let hosts = ["localhost", "10.0.0.7", "[fe80::1]", "203.0.114.9"];
        let commitments: Vec<_> = graph
            .neurons
            .iter()
            .zip(hosts)
            .map(|(n, host)| (n.hotkey, announce(&endpoint(host), 100)))
            .collect();
        let a = assess(&graph, &commitments, 100, &POLICY);
        for (n, host) in graph.neurons.iter().zip(hosts).take(3) {
            let host = host.trim_matches(['[', ']']).to_owned();
            assert_eq!(reason(&a, n.hotkey), Some(&Distrust::PrivateEndpoint { host }));
            assert_eq!(a.refused[&n.hotkey].reason.as_str(), "private_endpoint");
        }
        assert!(a.trusted.contains_key(&graph.neurons[3].hotkey), "a public address is served");
        let devnet = TrustPolicy { allow_private_endpoints: true, ..POLICY };
        assert_eq!(assess(&graph, &commitments, 100, &devnet).trusted.len(), 4);
    }

    #[test]
    fn stake_at_the_minimum_is_enough_and_one_rao_less_is_not() {
        let (at, below) = (neuron(0, MIN, true), neuron(1, MIN - 1, true));
        let commitments = [
            (at.hotkey, announce(&endpoint("a.example"), 100)),
            (below.hotkey, announce(&endpoint("b.example"), 100)),
        ];
        let a = assess(&metagraph(vec![at.clone(), below.clone()]), &commitments, 100, &POLICY);
        assert!(a.trusted.contains_key(&at.hotkey));
        assert_eq!(
            reason(&a, below.hotkey),
            Some(&Distrust::StakeBelowMinimum { stake: MIN - 1, min: MIN })
        );
        assert_eq!(a.refused[&below.hotkey].url.as_deref(), Some("wss://b.example:8443/ws"));
    }

    #[test]
    fn an_announcement_is_valid_for_the_ttl_inclusive() {
        let v = neuron(0, MIN, true);
        let graph = metagraph(vec![v.clone()]);
        let commitments = [(v.hotkey, announce(&endpoint("v.example"), 1_000))];
        let at_ttl = assess(&graph, &commitments, 1_000 + ANNOUNCEMENT_TTL_BLOCKS, &POLICY);
        assert!(at_ttl.trusted.contains_key(&v.hotkey));
        let now = 1_001 + ANNOUNCEMENT_TTL_BLOCKS;
        let past = assess(&graph, &commitments, now, &POLICY);
        assert_eq!(reason(&past, v.hotkey), Some(&Distrust::Expired { committed_at: 1_000, now }));
        assert!(past.trusted.is_empty());
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let v = neuron(0, MIN, true);
        let e = Endpoint { protocol_version: PROTOCOL_VERSION + 1, ..endpoint("v.example") };
        let a = assess(&metagraph(vec![v.clone()]), &[(v.hotkey, announce(&e, 100))], 100, &POLICY);
        let expected =
            Distrust::IncompatibleVersion { got: PROTOCOL_VERSION + 1, speaks: PROTOCOL_VERSION };
        assert_eq!(reason(&a, v.hotkey), Some(&expected));
        assert_eq!(expected.as_str(), "incompatible_version");
    }

    #[test]
    fn a_rogue_announcing_without_a_permit_is_refused() {
        // Rich, fresh, compatible, but not a validator.
        let rogue = neuron(3, MIN * 10, false);
        let c = announce(&endpoint("rogue.example"), 100);
        let a = assess(&metagraph(vec![rogue.clone()]), &[(rogue.hotkey, c)], 100, &POLICY);
        assert_eq!(reason(&a, rogue.hotkey), Some(&Distrust::NoValidatorPermit));
        assert_eq!(a.refused[&rogue.hotkey].reason.as_str(), "no_validator_permit");
        assert!(a.trusted.is_empty());
    }

    #[test]
    fn miners_are_skipped_and_a_validator_without_an_endpoint_is_refused() {
        let miner = neuron(1, 0, false);
        let other_miner = neuron(2, 0, false);
        let validator = neuron(4, MIN, true);
        let circuit = Commitment { block: 100, data: vec![0xab; 32] };
        let commitments = [
            (miner.hotkey, circuit.clone()),
            (other_miner.hotkey, Commitment { block: 100, data: b"hello".to_vec() }),
            (validator.hotkey, circuit),
            // Not registered: ignored.
            (key(99), announce(&endpoint("gone.example"), 100)),
        ];
        let graph = metagraph(vec![miner, other_miner, validator.clone()]);
        let a = assess(&graph, &commitments, 100, &POLICY);
        assert!(a.trusted.is_empty());
        assert_eq!(a.refused.len(), 1, "{:?}", a.refused);
        let refused = &a.refused[&validator.hotkey];
        assert_eq!(refused.reason, Distrust::NotAnEndpoint(EndpointError::CircuitCommitmentLength));
        assert_eq!((refused.uid, refused.url.as_deref()), (4, None));
        assert_eq!(refused.reason.as_str(), "not_an_endpoint");
    }

    #[test]
    fn a_reannounced_endpoint_is_not_a_change_and_a_new_one_is() {
        let (v, w) = (neuron(0, MIN, true), neuron(1, MIN, true));
        let graph = metagraph(vec![v.clone(), w.clone()]);
        let e = endpoint("v.example");
        let first = assess(&graph, &[(v.hotkey, announce(&e, 100))], 100, &POLICY);
        let running: BTreeMap<_, _> =
            first.trusted.iter().map(|(k, t)| (*k, t.endpoint.clone())).collect();
        assert_eq!(plan(&BTreeMap::new(), &first), Plan { stop: vec![], start: vec![v.hotkey] });

        // Same endpoint, newer block: nothing to do.
        let again = assess(&graph, &[(v.hotkey, announce(&e, 3_700))], 3_700, &POLICY);
        assert_eq!(again.trusted[&v.hotkey].committed_at, 3_700);
        assert_eq!(plan(&running, &again), Plan::default());

        // A new fingerprint is a new endpoint: reconnect. A newcomer is started.
        let rotated = Endpoint { fingerprint: Some(CertFingerprint([8; 32])), ..e.clone() };
        let commitments =
            [(v.hotkey, announce(&rotated, 200)), (w.hotkey, announce(&endpoint("w.x"), 200))];
        let changed = assess(&graph, &commitments, 200, &POLICY);
        let mut expected = Plan { stop: vec![v.hotkey], start: vec![v.hotkey, w.hotkey] };
        expected.start.sort();
        assert_eq!(plan(&running, &changed), expected);

        // Losing the permit stops the connection.
        let demoted = metagraph(vec![neuron(0, MIN, false)]);
        let lost = assess(&demoted, &[(v.hotkey, announce(&e, 100))], 100, &POLICY);
        assert_eq!(plan(&running, &lost), Plan { stop: vec![v.hotkey], start: vec![] });
    }

    #[test]
    fn the_state_file_round_trips_and_connection_refusals_override_trust() {
        let (v, w, rogue) = (neuron(0, MIN, true), neuron(1, MIN, true), neuron(2, MIN, false));
        let commitments = [
            (v.hotkey, announce(&endpoint("v.example"), 100)),
            (w.hotkey, announce(&endpoint("w.example"), 100)),
            (rogue.hotkey, announce(&endpoint("r.example"), 100)),
        ];
        let graph = metagraph(vec![v.clone(), w.clone(), rogue.clone()]);
        let a = assess(&graph, &commitments, 100, &POLICY);
        let mismatch = Distrust::FingerprintMismatch {
            announced: CertFingerprint([7; 32]),
            served: CertFingerprint([9; 32]),
        };
        let connections = HashMap::from([(w.hotkey, mismatch.clone())]);
        let state = state_of(NetUid(7), &a, &connections);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/coordinators.json");
        write_state(&path, &state).expect("written");
        let read = read_state(&path).expect("read back");
        assert_eq!(read, state);
        assert_eq!((read.netuid, read.block), (7, 100));
        let summary: Vec<_> = read
            .coordinators
            .iter()
            .map(|c| (c.uid, c.status, c.reason.as_deref(), c.url.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                (0, TrustStatus::Trusted, None, Some("wss://v.example:8443/ws")),
                (
                    1,
                    TrustStatus::Refused,
                    Some("fingerprint_mismatch"),
                    Some("wss://w.example:8443/ws")
                ),
                (
                    2,
                    TrustStatus::Refused,
                    Some("no_validator_permit"),
                    Some("wss://r.example:8443/ws")
                ),
            ]
        );
        assert_eq!(read.coordinators[0].hotkey, ss58(&v.hotkey));
        assert!(read.coordinators[0].hotkey.starts_with('5'));
        assert_eq!(read.coordinators[1].detail.as_deref(), Some(mismatch.to_string().as_str()));

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("file")).expect("json");
        assert_eq!(json["coordinators"][0]["status"], "trusted");
        assert_eq!(json["coordinators"][0]["reason"], serde_json::Value::Null);
        let leftovers = std::fs::read_dir(path.parent().expect("dir")).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
