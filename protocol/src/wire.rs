//! The frames workers and coordinators exchange over WebSocket.
//!
//! A frame is `b"VB"` ‖ `u16_le(PROTOCOL_VERSION)` ‖ postcard([`Message`]), sent as one binary
//! WebSocket message:
//!
//! - the magic and version come first so that a peer speaking another version is told so
//!   ([`ProtocolError::UnsupportedVersion`]) instead of failing somewhere inside a message;
//! - [`decode`] checks the frame length against [`Limits::max_frame_bytes`] before it reads
//!   anything, so an oversized frame costs nothing beyond receiving it;
//! - postcard is compact and carries opened rows as raw bytes (a row of n = 65536 entries is
//!   256 KiB, four times that in JSON hex), and its encoding of a value is deterministic
//!   (signatures cover re-encoded values, so the non-minimal varints postcard also accepts
//!   change nothing);
//! - a decoded frame is only returned after [`Message::validate`] has checked every semantic
//!   bound, so callers never see an over-long text, list or shape.
//!
//! Signatures are carried, not checked, here: which key must have signed what is stated on each
//! message, and the coordinator and workers check them with their sr25519 implementation.

use serde::{Deserialize, Serialize};

use crate::challenge::{Challenge, MAX_DIM, Shape, UnixMillis};
use crate::error::{Bounded, ProtocolError};
pub use crate::error_code::ErrorCode;
use crate::ids::{ChallengeId, DeviceKey, PublicKey, Root, Signature};
use crate::verify::{Openings, Verdict};

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"VB";
/// The protocol version this build speaks; bumped on any change to [`Message`]'s encoding.
/// Version 2 added [`ErrorMsg::challenge_id`] and one [`ErrorCode`] per refusal (SPEC §11).
pub const PROTOCOL_VERSION: u16 = 2;
/// The largest frame every party must accept (SPEC §8.4): 16 MiB. A receiver may configure a
/// lower limit for itself; a coordinator then asks for fewer rows ([`max_open_rows`]).
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Bytes before the postcard body: magic and version.
pub const HEADER_LEN: usize = 4;
/// BLAKE3 `derive_key` context of [`Register::signing_payload`].
pub const REGISTER_SIGNING_CONTEXT: &str = "veribench 2026-11 register signature v1";
/// BLAKE3 `derive_key` context of [`Delegation::signing_payload`].
pub const DELEGATION_SIGNING_CONTEXT: &str = "veribench 2026-11 worker delegation v1";
/// BLAKE3 `derive_key` context of [`SignedChallenge::signed_bytes`].
pub const SIGNED_CHALLENGE_CONTEXT: &str = "veribench 2026-11 signed challenge v1";

/// Everything a worker or a coordinator sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Worker → coordinator, first frame of a connection.
    Register(Register),
    /// Coordinator → worker, after a registration it accepted.
    Welcome(Welcome),
    /// Either way, to keep the connection and its liveness measurement alive.
    Heartbeat(Heartbeat),
    /// Coordinator → worker: work for one device.
    Challenge(SignedChallenge),
    /// Worker → coordinator: the root of a computed product.
    Commitment(CommitmentMsg),
    /// Coordinator → worker: the rows to open, sampled after the commitment arrived.
    OpenRequest(OpenRequest),
    /// Worker → coordinator: the asked rows and their proof.
    Openings(OpeningsMsg),
    /// Coordinator → worker: the outcome of a challenge.
    Verdict(VerdictMsg),
    /// Either way: why a frame or request was refused.
    Error(ErrorMsg),
}

/// A worker introducing itself and the devices it offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// Human-readable name, for logs and dashboards only.
    pub name: String,
    /// The miner hotkey's permission for this worker's key; the hotkey is credited with the work.
    pub delegation: Delegation,
    /// What the worker claims to run on; compared against measured throughput.
    pub hardware: HardwareInfo,
    /// One key per compute device offered, each challenged separately.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::bounded::MAX_DEVICES }>")]
    pub devices: Vec<DeviceKey>,
    /// When the worker signed, so a stale registration can be refused.
    pub timestamp: UnixMillis,
    /// Fresh per registration, so a captured one cannot be replayed within the time window.
    pub nonce: u64,
    /// By `delegation.worker_key`, over [`Register::signing_payload`].
    pub signature: Signature,
}

/// A miner hotkey's permission for one worker key to register and be credited on its behalf,
/// until `expires_at`.
///
/// Workers hold their own key, not the miner hotkey: they run on rented or shared machines, and a
/// stolen hotkey could register on the subnet, serve axons and, for a validator, set weights,
/// while a stolen worker key can only register workers for this miner until its delegation
/// expires. A worker given the hotkey itself delegates to itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The miner's hotkey, which signs.
    pub miner_hotkey: PublicKey,
    /// The worker's own key.
    pub worker_key: PublicKey,
    /// After this the delegation is void.
    pub expires_at: UnixMillis,
    /// By `miner_hotkey`, over [`Delegation::signing_payload`].
    pub signature: Signature,
}

impl Delegation {
    /// The bytes the miner hotkey signs: BLAKE3 `derive_key(DELEGATION_SIGNING_CONTEXT,
    /// miner_hotkey ‖ worker_key ‖ u64_le(expires_at))`.
    pub fn signing_payload(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(DELEGATION_SIGNING_CONTEXT);
        hasher.update(self.miner_hotkey.as_bytes());
        hasher.update(self.worker_key.as_bytes());
        hasher.update(&self.expires_at.0.to_le_bytes());
        *hasher.finalize().as_bytes()
    }
}

/// Every field of [`Register`] but the signature, borrowed: what the signature covers.
#[derive(Serialize)]
struct RegisterBody<'a> {
    name: &'a str,
    delegation: &'a Delegation,
    hardware: &'a HardwareInfo,
    devices: &'a [DeviceKey],
    timestamp: UnixMillis,
    nonce: u64,
}

impl Register {
    /// The bytes `worker_key` signs: BLAKE3 `derive_key(REGISTER_SIGNING_CONTEXT,
    /// postcard(every field but the signature, in declaration order))`.
    pub fn signing_payload(&self) -> [u8; 32] {
        let body = RegisterBody {
            name: &self.name,
            delegation: &self.delegation,
            hardware: &self.hardware,
            devices: &self.devices,
            timestamp: self.timestamp,
            nonce: self.nonce,
        };
        crate::canonical::digest(REGISTER_SIGNING_CONTEXT, &body)
    }
}

/// The machine a worker claims to be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardwareInfo {
    /// CPU model string, as the OS reports it.
    pub cpu_model: String,
    /// Logical cores, bounding what CPU devices can plausibly deliver.
    pub cpu_cores: u32,
    /// Installed RAM.
    pub memory_bytes: u64,
    /// The GPUs present, whether offered as devices or not.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::bounded::MAX_DEVICES }>")]
    pub gpus: Vec<GpuInfo>,
}

/// One GPU of a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// The driver's UUID (`GPU-…`), which its [`DeviceKey`] is made from.
    pub uuid: String,
    /// Marketing name, to compare the throughput against the model's expected range.
    pub name: String,
    /// Device memory, which bounds the largest shape worth sending it.
    pub memory_bytes: u64,
}

/// The coordinator's answer to an accepted registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The key that signs every challenge on this connection.
    pub coordinator: PublicKey,
    /// How often the worker should send a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The coordinator's clock, so a worker can spot a large skew.
    pub server_time: UnixMillis,
}

/// Liveness and round-trip measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one per heartbeat, so the peer can match replies and spot gaps.
    pub seq: u64,
    /// Sender's clock, for round-trip time and clock-skew estimates.
    pub sent_at: UnixMillis,
}

/// A challenge addressed to one device, signed by its coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedChallenge {
    /// The work.
    pub challenge: Challenge,
    /// The device that must compute it; its key is mixed into the matrices' seed.
    pub device: DeviceKey,
    /// The issuing coordinator, so a worker (or a later auditor) knows whose signature to check.
    pub coordinator: PublicKey,
    /// By `coordinator`, over [`SignedChallenge::signed_bytes`].
    pub signature: Signature,
}

impl SignedChallenge {
    /// The bytes the coordinator signs: BLAKE3 `derive_key(SIGNED_CHALLENGE_CONTEXT,
    /// challenge.signing_payload() ‖ u32_le(len(device key)) ‖ device key)`, so a signature
    /// binds the challenge to the device it was sent to.
    pub fn signed_bytes(&self) -> [u8; 32] {
        let key = self.device.as_str().as_bytes();
        let mut hasher = blake3::Hasher::new_derive_key(SIGNED_CHALLENGE_CONTEXT);
        hasher.update(&self.challenge.signing_payload());
        // DeviceKey::MAX_LEN keeps this far below u32::MAX.
        hasher.update(&(key.len() as u32).to_le_bytes());
        hasher.update(key);
        *hasher.finalize().as_bytes()
    }
}

/// A worker's commitment to a product, sent before it learns which rows will be opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitmentMsg {
    /// The challenge answered.
    pub challenge_id: ChallengeId,
    /// The device that computed it (a challenge names exactly one).
    pub device: DeviceKey,
    /// Merkle root over the product's rows.
    pub root: Root,
}

/// The rows a coordinator wants opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The challenge whose commitment is opened.
    pub challenge_id: ChallengeId,
    /// Row indices, strictly increasing.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::bounded::MAX_ROWS }>")]
    pub rows: Vec<u32>,
}

/// A worker's openings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpeningsMsg {
    /// The challenge whose commitment is opened.
    pub challenge_id: ChallengeId,
    /// The rows, in the order asked, and their multiproof.
    pub openings: Openings,
}

/// The coordinator's decision on a challenge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictMsg {
    /// The challenge decided.
    pub challenge_id: ChallengeId,
    /// Accepted, or the first problem found.
    pub verdict: Verdict,
}

/// A refusal (SPEC §8.5): a typed code for the peer's program, the challenge it concerns if
/// any, and text for the peer's operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// The challenge refused, given up or failed, when the error concerns one.
    pub challenge_id: Option<ChallengeId>,
    /// Details, for the peer's operator; never parsed.
    pub message: String,
}

impl ErrorMsg {
    /// An error whose text is cut, on a character boundary, to `max_text_bytes`: the wire
    /// refuses longer texts, and the code and challenge id carry everything a program needs.
    pub fn new(
        code: ErrorCode,
        challenge_id: Option<ChallengeId>,
        message: &str,
        max_text_bytes: u32,
    ) -> Self {
        let mut end = message.len().min(max_text_bytes as usize);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Self { code, challenge_id, message: message[..end].to_owned() }
    }
}

/// Bounds a decoded message must respect. Every list and text on the wire has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, checked before anything is parsed.
    pub max_frame_bytes: usize,
    /// Most rows one open request or opening may list.
    pub max_open_rows: u32,
    /// Largest M, K or N of a challenge (capped at [`MAX_DIM`] regardless); opened rows may be at
    /// most `max_dim · 4` bytes.
    pub max_dim: u32,
    /// Most devices, and most GPUs, one worker may declare.
    pub max_devices: u32,
    /// Longest free-text field, in bytes.
    pub max_text_bytes: u32,
    /// Most sibling hashes in one multiproof.
    pub max_proof_hashes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
            max_open_rows: 1024,
            max_dim: MAX_DIM,
            max_devices: 64,
            max_text_bytes: 256,
            max_proof_hashes: 16_384,
        }
    }
}

/// Refuses `len` items of `what` above `max`.
fn check_len(what: Bounded, len: usize, max: u32) -> Result<(), ProtocolError> {
    if len > max as usize {
        return Err(ProtocolError::OverLimit { what, len, max });
    }
    Ok(())
}

/// Refuses a text field longer than the limit.
fn check_text(what: Bounded, text: &str, limits: &Limits) -> Result<(), ProtocolError> {
    check_len(what, text.len(), limits.max_text_bytes)
}

/// Refuses a row list that is empty, too long, or not strictly increasing.
fn check_rows(
    what: Bounded,
    rows: impl ExactSizeIterator<Item = u32>,
    limits: &Limits,
) -> Result<(), ProtocolError> {
    if rows.len() == 0 {
        return Err(ProtocolError::NoRows(what));
    }
    check_len(what, rows.len(), limits.max_open_rows)?;
    let mut previous = None;
    for row in rows {
        if previous.is_some_and(|p| p >= row) {
            return Err(ProtocolError::RowsNotIncreasing { what, row });
        }
        previous = Some(row);
    }
    Ok(())
}

/// Bytes of frame, beyond the rows and the proof hashes, that an `Openings` frame can take at
/// most: header 4, variant 1, challenge id ≤ 10, row count ≤ 3, proof count ≤ 3 (SPEC §8.4).
pub const OPENINGS_FRAME_OVERHEAD: u64 = 21;
/// Bytes per opened row beyond its entries, at most: row index ≤ 5, byte length ≤ 3.
pub const OPENED_ROW_OVERHEAD: u64 = 8;

/// Proof hashes that opening `rows` of a tree of `m` leaves can need at most: one per opened
/// row per layer below the root, `rows · ceil(log2 m)`.
pub fn max_proof_hashes(m: u32, rows: u32) -> u64 {
    let depth = u64::from(m.max(1).next_power_of_two().trailing_zeros());
    u64::from(rows) * depth
}

/// An upper bound on the `Openings` frame that opens `rows` rows of a challenge of `shape`
/// (SPEC §8.4): `21 + rows · (4n + 8) + 32 · rows · ceil(log2 m)`.
pub fn openings_frame_bound(shape: Shape, rows: u32) -> u64 {
    let row = 4 * u64::from(shape.n) + OPENED_ROW_OVERHEAD;
    OPENINGS_FRAME_OVERHEAD + u64::from(rows) * row + 32 * max_proof_hashes(shape.m, rows)
}

/// The most rows an open request for a challenge of `shape` may ask for: at most
/// `limits.max_open_rows` and the rows of the product, and few enough that
/// [`openings_frame_bound`] fits in `limits.max_frame_bytes` (SPEC §8.4). Every shape the
/// protocol allows opens at least one row within [`MAX_FRAME_BYTES`].
pub fn max_open_rows(shape: Shape, limits: &Limits) -> u32 {
    let frame = limits.max_frame_bytes as u64;
    let per_row = 4 * u64::from(shape.n) + OPENED_ROW_OVERHEAD + 32 * max_proof_hashes(shape.m, 1);
    let fit = frame.saturating_sub(OPENINGS_FRAME_OVERHEAD) / per_row.max(1);
    let fit = u32::try_from(fit).unwrap_or(u32::MAX);
    fit.min(limits.max_open_rows).min(shape.m)
}

impl Message {
    /// A stable snake_case name of the variant, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Register(_) => "register",
            Message::Welcome(_) => "welcome",
            Message::Heartbeat(_) => "heartbeat",
            Message::Challenge(_) => "challenge",
            Message::Commitment(_) => "commitment",
            Message::OpenRequest(_) => "open_request",
            Message::Openings(_) => "openings",
            Message::Verdict(_) => "verdict",
            Message::Error(_) => "error",
        }
    }

    /// Checks every semantic bound of `limits`. Device keys need no check here: they cannot be
    /// deserialized outside `1..=DeviceKey::MAX_LEN` bytes.
    pub fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        match self {
            Message::Register(r) => {
                check_text(Bounded::WorkerName, &r.name, limits)?;
                check_text(Bounded::CpuModel, &r.hardware.cpu_model, limits)?;
                check_len(Bounded::GpuList, r.hardware.gpus.len(), limits.max_devices)?;
                for gpu in &r.hardware.gpus {
                    check_text(Bounded::GpuUuid, &gpu.uuid, limits)?;
                    check_text(Bounded::GpuName, &gpu.name, limits)?;
                }
                check_len(Bounded::DeviceList, r.devices.len(), limits.max_devices)?;
                // At most `max_devices` keys: quadratic is fine and needs no allocation.
                if let Some((index, key)) =
                    r.devices.iter().enumerate().find(|(i, k)| r.devices[..*i].contains(k))
                {
                    return Err(ProtocolError::RepeatedDevice { key: key.to_string(), index });
                }
                Ok(())
            }
            Message::Challenge(c) => {
                c.challenge.shape.validate(limits.max_dim)?;
                if c.challenge.deadline < c.challenge.issued_at {
                    return Err(ProtocolError::DeadlineBeforeIssue);
                }
                Ok(())
            }
            Message::OpenRequest(o) => {
                check_rows(Bounded::RequestedRows, o.rows.iter().copied(), limits)
            }
            Message::Openings(o) => {
                let rows = &o.openings.rows;
                check_rows(Bounded::OpenedRows, rows.iter().map(|r| r.row), limits)?;
                let max_row = limits.max_dim.min(MAX_DIM).saturating_mul(4);
                for row in rows {
                    check_len(Bounded::OpenedRow, row.bytes.len(), max_row)?;
                }
                check_len(Bounded::ProofHashes, o.openings.proof.0.len(), limits.max_proof_hashes)
            }
            Message::Error(e) => check_text(Bounded::ErrorMessage, &e.message, limits),
            Message::Welcome(_)
            | Message::Heartbeat(_)
            | Message::Commitment(_)
            | Message::Verdict(_) => Ok(()),
        }
    }
}

/// The frame of `msg`: magic, version, postcard body.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    crate::canonical::encode_into(msg, frame)
}

/// Parses and validates one frame.
///
/// Checked in this order, the first three before anything is allocated: the length against
/// `limits.max_frame_bytes`, the magic, the version; then the body is decoded, must be consumed
/// exactly, and must pass [`Message::validate`].
///
/// Allocation while decoding stays within a small multiple of the frame: postcard's slice
/// deserializer (1.1) takes a string or byte string only after checking that many bytes remain;
/// serde preallocates at most `size_hint::cautious` (≤ 1 MiB) for other sequences; and every list
/// whose items are wider in memory than on the wire (opened rows, requested rows, devices, GPUs)
/// is decoded through [`crate::bounded::vec`], which stops at a hard item cap before storing more.
pub fn decode(frame: &[u8], limits: &Limits) -> Result<Message, ProtocolError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(ProtocolError::FrameTooLarge { len: frame.len(), max: limits.max_frame_bytes });
    }
    if frame.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(ProtocolError::Malformed("missing VB magic".into()));
    }
    let Some(&[lo, hi]) = frame.get(MAGIC.len()..HEADER_LEN) else {
        return Err(ProtocolError::Malformed("truncated header".into()));
    };
    let version = u16::from_le_bytes([lo, hi]);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            got: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(&frame[HEADER_LEN..])
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtocolError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    msg.validate(limits)?;
    Ok(msg)
}

/// The frame answering a frame that failed [`decode`] with `e` (SPEC §8.7): a frame of
/// another version gets [`version_refusal`], which its sender can read; any other failure an
/// `Error` with the failure's code and no challenge id.
pub fn decode_refusal(e: &ProtocolError, limits: &Limits) -> Vec<u8> {
    match e {
        ProtocolError::UnsupportedVersion { got, .. } => version_refusal(*got, limits),
        other => {
            let text = other.to_string();
            encode(&Message::Error(ErrorMsg::new(other.code(), None, &text, limits.max_text_bytes)))
        }
    }
}

/// The frame refusing a frame of version `got`: an `Error` with code `unsupported_version`,
/// encoded so that its sender can read it. A version-1 peer gets a version-1 frame (its
/// `Error` is code 2, `Unsupported`, then the text: SPEC §11), any other peer a current one.
pub fn version_refusal(got: u16, limits: &Limits) -> Vec<u8> {
    let text = format!(
        "protocol version {got} is not supported: this peer speaks version {PROTOCOL_VERSION}"
    );
    if got == 1 {
        /// Version 1's `Message::Error` variant and its `ErrorCode::Unsupported` index.
        const V1_ERROR_VARIANT: u8 = 8;
        const V1_UNSUPPORTED: u8 = 2;
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&1u16.to_le_bytes());
        frame.extend_from_slice(&[V1_ERROR_VARIANT, V1_UNSUPPORTED]);
        // A string is a varint length and its bytes, as in every version.
        return crate::canonical::encode_into(text.as_str(), frame);
    }
    let msg = ErrorMsg::new(ErrorCode::UnsupportedVersion, None, &text, limits.max_text_bytes);
    encode(&Message::Error(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{Mode, Shape};
    use crate::commitment::MultiProof;
    use crate::ids::Seed;
    use crate::verify::{RejectReason, RowOpening};
    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,24}"
    }

    fn key() -> impl Strategy<Value = PublicKey> {
        any::<[u8; 32]>().prop_map(PublicKey)
    }

    fn sig() -> impl Strategy<Value = Signature> {
        any::<[u8; 64]>().prop_map(Signature)
    }

    fn device() -> impl Strategy<Value = DeviceKey> {
        "[A-Za-z0-9:-]{1,48}".prop_filter_map("valid key", DeviceKey::new)
    }

    fn millis() -> impl Strategy<Value = UnixMillis> {
        any::<u64>().prop_map(UnixMillis)
    }

    fn register() -> impl Strategy<Value = Register> {
        let gpu = (text(), text(), any::<u64>()).prop_map(|(uuid, name, memory_bytes)| GpuInfo {
            uuid,
            name,
            memory_bytes,
        });
        let hardware = (text(), any::<u32>(), any::<u64>(), vec(gpu, 0..4)).prop_map(
            |(cpu_model, cpu_cores, memory_bytes, gpus)| HardwareInfo {
                cpu_model,
                cpu_cores,
                memory_bytes,
                gpus,
            },
        );
        let devices = btree_set(device(), 0..5).prop_map(|d| d.into_iter().collect::<Vec<_>>());
        (text(), key(), key(), hardware, devices, millis(), any::<u64>(), sig()).prop_map(
            |(name, miner_hotkey, worker_key, hardware, devices, timestamp, nonce, signature)| {
                Register {
                    name,
                    delegation: Delegation {
                        miner_hotkey,
                        worker_key,
                        expires_at: timestamp,
                        signature,
                    },
                    hardware,
                    devices,
                    timestamp,
                    nonce,
                    signature,
                }
            },
        )
    }

    fn challenge() -> impl Strategy<Value = Challenge> {
        let dim = 1..=MAX_DIM;
        let mode = prop::sample::select(Mode::ALL.to_vec());
        (any::<u64>(), any::<[u8; 32]>(), mode, (dim.clone(), dim.clone(), dim), any::<u32>())
            .prop_flat_map(|(id, seed, mode, (m, k, n), window)| {
                (0..=u64::MAX - u64::from(window)).prop_map(move |issued| Challenge {
                    id: ChallengeId(id),
                    seed: Seed(seed),
                    mode,
                    shape: Shape { m, k, n },
                    issued_at: UnixMillis(issued),
                    deadline: UnixMillis(issued + u64::from(window)),
                })
            })
    }

    fn rows() -> impl Strategy<Value = Vec<u32>> {
        btree_set(any::<u32>(), 1..32).prop_map(|r| r.into_iter().collect())
    }

    fn openings() -> impl Strategy<Value = Openings> {
        let bytes = vec(any::<u8>(), 0..64);
        (rows(), vec(bytes, 32), vec(any::<[u8; 32]>(), 0..16)).prop_map(|(rows, bytes, proof)| {
            Openings {
                rows: rows
                    .into_iter()
                    .zip(bytes)
                    .map(|(row, bytes)| RowOpening { row, bytes })
                    .collect(),
                proof: MultiProof(proof),
            }
        })
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        let x = -1e9f64..1e9;
        prop_oneof![
            Just(Verdict::Accepted),
            any::<u32>().prop_map(|asked| Verdict::Rejected(RejectReason::WrongRows { asked })),
            Just(Verdict::Rejected(RejectReason::BadProof)),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(row, expected, got)| {
                Verdict::Rejected(RejectReason::RowLength { row, expected, got })
            }),
            (any::<u32>(), any::<u32>(), x.clone(), x.clone()).prop_map(
                |(row, col, expected, got)| {
                    Verdict::Rejected(RejectReason::Mismatch { row, col, expected, got })
                }
            ),
            (any::<u32>(), any::<u32>(), x.clone(), x.clone(), x).prop_map(
                |(row, col, expected, got, bound)| Verdict::Rejected(
                    RejectReason::OutOfTolerance { row, col, expected, got, bound }
                )
            ),
        ]
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![
            prop::sample::select(ErrorCode::ALL.to_vec()),
            any::<u32>().prop_map(ErrorCode::from_index),
        ]
    }

    /// Every variant, each field arbitrary within the default limits.
    fn message() -> impl Strategy<Value = Message> {
        let id = any::<u64>().prop_map(ChallengeId);
        prop_oneof![
            register().prop_map(Message::Register),
            (key(), any::<u64>(), millis()).prop_map(
                |(coordinator, heartbeat_interval_ms, server_time)| {
                    Message::Welcome(Welcome { coordinator, heartbeat_interval_ms, server_time })
                }
            ),
            (any::<u64>(), millis())
                .prop_map(|(seq, sent_at)| Message::Heartbeat(Heartbeat { seq, sent_at })),
            (challenge(), device(), key(), sig()).prop_map(
                |(challenge, device, coordinator, signature)| {
                    Message::Challenge(SignedChallenge {
                        challenge,
                        device,
                        coordinator,
                        signature,
                    })
                }
            ),
            (id.clone(), device(), any::<[u8; 32]>()).prop_map(|(challenge_id, device, root)| {
                Message::Commitment(CommitmentMsg { challenge_id, device, root: Root(root) })
            }),
            (id.clone(), rows()).prop_map(|(challenge_id, rows)| Message::OpenRequest(
                OpenRequest { challenge_id, rows }
            )),
            (id.clone(), openings()).prop_map(|(challenge_id, openings)| Message::Openings(
                OpeningsMsg { challenge_id, openings }
            )),
            (id.clone(), verdict()).prop_map(|(challenge_id, verdict)| Message::Verdict(
                VerdictMsg { challenge_id, verdict }
            )),
            (error_code(), proptest::option::of(id), text()).prop_map(
                |(code, challenge_id, message)| {
                    Message::Error(ErrorMsg { code, challenge_id, message })
                }
            ),
        ]
    }

    fn limits() -> Limits {
        Limits::default()
    }

    /// Prefixes a hand-built body with the current header.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut frame = MAGIC.to_vec();
        frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        frame.extend_from_slice(body);
        frame
    }

    fn signed_challenge(shape: Shape) -> SignedChallenge {
        SignedChallenge {
            challenge: Challenge {
                id: ChallengeId(1),
                seed: Seed([3; 32]),
                mode: Mode::Int8,
                shape,
                issued_at: UnixMillis(10),
                deadline: UnixMillis(20),
            },
            device: DeviceKey::new("GPU-1").expect("key"),
            coordinator: PublicKey([1; 32]),
            signature: Signature([2; 64]),
        }
    }

    fn open_request(rows: Vec<u32>) -> Message {
        Message::OpenRequest(OpenRequest { challenge_id: ChallengeId(9), rows })
    }

    proptest! {
        #[test]
        fn every_variant_round_trips(msg in message()) {
            let frame = encode(&msg);
            prop_assert_eq!(&frame[..HEADER_LEN], b"VB\x02\x00");
            prop_assert_eq!(decode(&frame, &limits()), Ok(msg));
        }

        #[test]
        fn every_truncation_is_refused(msg in message()) {
            let frame = encode(&msg);
            for len in 0..frame.len() {
                prop_assert!(decode(&frame[..len], &limits()).is_err(), "prefix of {len}");
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..512), header in any::<bool>()) {
            let frame = if header { framed(&body) } else { body };
            if let Ok(msg) = decode(&frame, &limits()) {
                prop_assert!(msg.validate(&limits()).is_ok());
                prop_assert_eq!(decode(&encode(&msg), &limits()), Ok(msg));
            }
        }

        #[test]
        fn corrupted_bytes_never_panic(msg in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut frame = encode(&msg);
            let i = at.index(frame.len());
            frame[i] = byte;
            if let Ok(decoded) = decode(&frame, &limits()) {
                prop_assert!(decoded.validate(&limits()).is_ok());
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_parsing() {
        let frame = encode(&open_request(vec![1, 2, 3]));
        let tight = Limits { max_frame_bytes: frame.len() - 1, ..limits() };
        assert_eq!(
            decode(&frame, &tight),
            Err(ProtocolError::FrameTooLarge { len: frame.len(), max: frame.len() - 1 })
        );
        // Zeros would be Malformed if the magic were looked at.
        let max = limits().max_frame_bytes;
        assert_eq!(
            decode(&vec![0; max + 1], &limits()),
            Err(ProtocolError::FrameTooLarge { len: max + 1, max })
        );
    }

    #[test]
    fn huge_claimed_lengths_are_refused_cheaply() {
        let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]; // varint 2^60
        // An OpenRequest whose row list claims 2^60 rows: its own encoding with no rows
        // (variant, challenge id 9, length 0), the length replaced, and a few bytes of rows.
        let empty = encode(&open_request(vec![]));
        assert_eq!(&empty[HEADER_LEN..], [5, 9, 0], "OpenRequest is variant 5");
        let mut frame = empty[..empty.len() - 1].to_vec();
        frame.extend_from_slice(&huge);
        frame.resize(30, 7);
        let err = decode(&frame, &limits()).expect_err("2^60 rows are refused");
        // The claimed length buys no allocation: with fewer bytes left than it claims, the row
        // list gets no size hint, reads the rows that are there and stops at the frame's end.
        let end = postcard::Error::DeserializeUnexpectedEnd.to_string();
        assert_eq!(err, ProtocolError::Malformed(end), "{err}");
        // More rows than the cap, all present, are refused by the cap itself.
        let rows: Vec<u32> = (0..=crate::bounded::MAX_ROWS as u32).collect();
        let err = decode(&encode(&open_request(rows)), &limits()).expect_err("over the cap");
        let cap = postcard::Error::SerdeDeCustom.to_string();
        assert_eq!(err, ProtocolError::Malformed(cap), "{err}");
        // A Commitment (variant 4) whose device key claims 2^60 bytes.
        let mut body = vec![4, 1];
        body.extend_from_slice(&huge);
        body.resize(26, 7);
        assert!(matches!(decode(&framed(&body), &limits()), Err(ProtocolError::Malformed(_))));
        // Register (variant 0) with a worker name of 2^60 bytes.
        let mut body = vec![0];
        body.extend_from_slice(&huge);
        assert!(matches!(decode(&framed(&body), &limits()), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let mut frame = encode(&open_request(vec![1]));
        for version in [1u16, 3, u16::MAX] {
            frame[2..4].copy_from_slice(&version.to_le_bytes());
            let got = decode(&frame, &limits());
            assert_eq!(got, Err(ProtocolError::UnsupportedVersion { got: version, supported: 2 }));
            assert_eq!(got.map_err(|e| e.code()), Err(ErrorCode::UnsupportedVersion));
        }
        frame[0] = b'X';
        assert!(matches!(decode(&frame, &limits()), Err(ProtocolError::Malformed(_))));
        assert!(matches!(decode(b"VB\x02", &limits()), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn a_version_1_peer_is_refused_in_version_1() {
        // Version 1's Error: variant 8, then code Unsupported (2), then the text.
        let frame = version_refusal(1, &limits());
        assert_eq!(&frame[..6], b"VB\x01\x00\x08\x02");
        let (text, rest) = postcard::take_from_bytes::<String>(&frame[6..]).expect("a string");
        assert!(rest.is_empty() && text.contains("version 1 is not supported"), "{text}");
        // Any other version is told in the current one.
        let Ok(Message::Error(e)) = decode(&version_refusal(9, &limits()), &limits()) else {
            panic!("a current error frame");
        };
        assert_eq!((e.code, e.challenge_id), (ErrorCode::UnsupportedVersion, None));
    }

    #[test]
    fn openings_that_could_exceed_a_frame_are_never_asked_for() {
        let widest = Shape::square(MAX_DIM);
        // 65536 columns, 16 layers: 262,664 bytes a row, so 63 rows fit in 16 MiB, not 64.
        assert_eq!(max_open_rows(widest, &limits()), 63);
        assert!(openings_frame_bound(widest, 63) <= MAX_FRAME_BYTES as u64);
        assert!(openings_frame_bound(widest, 64) > MAX_FRAME_BYTES as u64);
        assert_eq!(max_open_rows(Shape::square(4096), &limits()), 1000);
        assert_eq!(max_open_rows(Shape::square(2048), &limits()), 1024);
        assert_eq!(max_open_rows(Shape { m: 3, k: 1, n: 1 }, &limits()), 3);
        let tight = Limits { max_frame_bytes: 1 << 20, ..limits() };
        assert_eq!(max_open_rows(widest, &tight), 3);
        // The bound holds for real frames: the widest legal opening of a tall, wide product.
        let shape = Shape { m: 65_536, k: 1, n: 4096 };
        let rows = max_open_rows(shape, &limits());
        let hashes = max_proof_hashes(shape.m, rows) as usize;
        let msg = Message::Openings(OpeningsMsg {
            challenge_id: ChallengeId(u64::MAX),
            openings: Openings {
                rows: (0..rows)
                    .map(|i| RowOpening { row: u32::MAX - rows + i, bytes: vec![0; 4 * 4096] })
                    .collect(),
                proof: MultiProof(vec![[0; 32]; hashes]),
            },
        });
        let (len, bound) = (encode(&msg).len() as u64, openings_frame_bound(shape, rows));
        // Only the two list lengths (992 rows, 15872 hashes) take 2 of their 3 bytes here.
        assert_eq!(len + 2, bound);
        assert!(decode(&encode(&msg), &limits()).is_ok());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode(&open_request(vec![1, 5]));
        frame.push(0);
        assert!(matches!(decode(&frame, &limits()), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn challenge_shapes_and_deadlines_are_checked() {
        let frame = |c: SignedChallenge| encode(&Message::Challenge(c));
        assert!(decode(&frame(signed_challenge(Shape::square(MAX_DIM))), &limits()).is_ok());
        for shape in [Shape { m: 4, k: 4, n: 0 }, Shape { m: 4, k: 4, n: MAX_DIM + 1 }] {
            let got = decode(&frame(signed_challenge(shape)), &limits());
            assert!(matches!(got, Err(ProtocolError::BadShape { .. })), "{shape}");
        }
        let small = Limits { max_dim: 1024, ..limits() };
        assert!(decode(&frame(signed_challenge(Shape::square(1025))), &small).is_err());
        let mut late = signed_challenge(Shape::square(8));
        late.challenge.deadline = UnixMillis(9);
        assert_eq!(decode(&frame(late), &limits()), Err(ProtocolError::DeadlineBeforeIssue));
    }

    #[test]
    fn open_rows_must_be_increasing_and_bounded() {
        let decoded = |rows: Vec<u32>| decode(&encode(&open_request(rows)), &limits());
        assert!(decoded(vec![0, 3, 7]).is_ok());
        let what = Bounded::RequestedRows;
        assert_eq!(decoded(vec![3, 1]), Err(ProtocolError::RowsNotIncreasing { what, row: 1 }));
        assert_eq!(decoded(vec![1, 1]), Err(ProtocolError::RowsNotIncreasing { what, row: 1 }));
        assert_eq!(decoded(vec![]), Err(ProtocolError::NoRows(what)));
        assert!(decoded((0..=limits().max_open_rows).collect()).is_err());

        let opening = |row, len| RowOpening { row, bytes: vec![0; len] };
        let openings = |rows, hashes| {
            let msg = Message::Openings(OpeningsMsg {
                challenge_id: ChallengeId(1),
                openings: Openings { rows, proof: MultiProof(vec![[0; 32]; hashes]) },
            });
            decode(&encode(&msg), &limits())
        };
        let row_max = MAX_DIM as usize * 4;
        let hashes = limits().max_proof_hashes as usize;
        assert!(openings(vec![opening(0, row_max), opening(2, 4)], hashes).is_ok());
        assert!(openings(vec![opening(2, 4), opening(2, 4)], 1).is_err());
        assert!(openings(vec![opening(0, row_max + 1)], 1).is_err());
        assert!(openings(vec![opening(0, 4)], hashes + 1).is_err());
    }

    #[test]
    fn register_texts_and_lists_are_bounded() {
        let base = Register {
            name: "w".into(),
            delegation: Delegation {
                miner_hotkey: PublicKey([1; 32]),
                worker_key: PublicKey([2; 32]),
                expires_at: UnixMillis(9),
                signature: Signature([4; 64]),
            },
            hardware: HardwareInfo {
                cpu_model: "cpu".into(),
                cpu_cores: 8,
                memory_bytes: 1,
                gpus: vec![],
            },
            devices: vec![
                DeviceKey::new("GPU-a").expect("key"),
                DeviceKey::new("GPU-b").expect("key"),
            ],
            timestamp: UnixMillis(5),
            nonce: 6,
            signature: Signature([0; 64]),
        };
        let check = |r: &Register| Message::Register(r.clone()).validate(&limits());
        assert!(check(&base).is_ok());
        let long = "x".repeat(limits().max_text_bytes as usize + 1);
        let gpu = GpuInfo { uuid: "GPU-a".into(), name: "g".into(), memory_bytes: 1 };
        let mut bad = vec![base.clone(); 5];
        bad[0].name = long.clone();
        bad[1].hardware.cpu_model = long.clone();
        bad[2].hardware.gpus = vec![GpuInfo { name: long, ..gpu.clone() }];
        bad[3].hardware.gpus = vec![gpu; limits().max_devices as usize + 1];
        bad[4].devices.push(DeviceKey::new("GPU-a").expect("key"));
        for r in &bad {
            let got = check(r);
            assert!(
                matches!(
                    got,
                    Err(ProtocolError::OverLimit { .. } | ProtocolError::RepeatedDevice { .. })
                ),
                "{r:?}"
            );
            assert_eq!(got.map_err(|e| e.code()), Err(ErrorCode::Invalid));
        }
    }

    #[test]
    fn signing_payloads_cover_every_field_but_the_signature() {
        let signed = signed_challenge(Shape::square(8));
        let mut other = signed.clone();
        other.signature = Signature([9; 64]);
        assert_eq!(signed.signed_bytes(), other.signed_bytes());
        other.device = DeviceKey::new("GPU-2").expect("key");
        assert_ne!(signed.signed_bytes(), other.signed_bytes());
        assert_ne!(signed.signed_bytes(), signed.challenge.signing_payload());

        let register = Register {
            name: "w".into(),
            delegation: Delegation {
                miner_hotkey: PublicKey([1; 32]),
                worker_key: PublicKey([2; 32]),
                expires_at: UnixMillis(9),
                signature: Signature([4; 64]),
            },
            hardware: HardwareInfo {
                cpu_model: String::new(),
                cpu_cores: 1,
                memory_bytes: 1,
                gpus: vec![],
            },
            devices: vec![],
            timestamp: UnixMillis(5),
            nonce: 6,
            signature: Signature([0; 64]),
        };
        let payload = register.signing_payload();
        assert_eq!(
            Register { signature: Signature([7; 64]), ..register.clone() }.signing_payload(),
            payload
        );
        assert_ne!(Register { nonce: 7, ..register.clone() }.signing_payload(), payload);
        let mut other_key = register.clone();
        other_key.delegation.worker_key = PublicKey([3; 32]);
        assert_ne!(other_key.signing_payload(), payload);
        let delegation = register.delegation.clone();
        let later = Delegation { expires_at: UnixMillis(10), ..delegation.clone() };
        assert_ne!(later.signing_payload(), delegation.signing_payload());
        let resigned = Delegation { signature: Signature([8; 64]), ..delegation.clone() };
        assert_eq!(resigned.signing_payload(), delegation.signing_payload());
    }

    #[test]
    fn keys_print_as_hex_and_kinds_are_stable() {
        assert_eq!(PublicKey([0xab; 32]).to_string(), "ab".repeat(32));
        assert_eq!(format!("{:?}", Signature([1; 64])), format!("Signature({})", "01".repeat(64)));
        assert_eq!(open_request(vec![]).kind(), "open_request");
    }
}
