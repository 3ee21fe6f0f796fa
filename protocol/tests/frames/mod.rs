//! The wire test vectors of SPEC §10.2: every message the vectors show, built from stated inputs,
//! and its frame annotated field by field. `examples/print_vectors.rs` prints them (signing with
//! the stated keys); `tests/spec_vectors.rs` rebuilds the annotations and checks them against the
//! SPEC text, byte for byte. Each field is encoded alone with postcard: a frame is exactly the
//! concatenation of its fields, which the annotation therefore proves.

#![allow(dead_code)]

use serde::Serialize;
use veribench_protocol::commitment::MultiProof;
use veribench_protocol::wire::{self, MAGIC, PROTOCOL_VERSION};
use veribench_protocol::{
    Challenge, ChallengeId, Commitment, CommitmentMsg, Delegation, DeviceKey, DeviceSeed,
    ErrorCode, ErrorMsg, Generator, GpuInfo, HardwareInfo, Heartbeat, Leaf, Matrix, Message, Mode,
    OpenRequest, Openings, OpeningsMsg, PublicKey, Register, RejectReason, Root, RowOpening, Seed,
    Shape, Signature, SignedChallenge, UnixMillis, Verdict, VerdictMsg, Welcome, leaf_hash,
};

/// The device of every vector.
pub const DEVICE: &str = "GPU-00000000-test-vector";
/// sr25519 mini secrets (expanded in Ed25519 mode, as substrate does) of the vectors' keys.
pub const COORDINATOR_SECRET: [u8; 32] = [0x01; 32];
pub const MINER_SECRET: [u8; 32] = [0x02; 32];
pub const WORKER_SECRET: [u8; 32] = [0x03; 32];
/// 2027-01-01T00:00:00Z.
pub const T0: u64 = 1_798_761_600_000;

/// The keys and signatures a vector set is built with: the signatures come from the SPEC when
/// checking (sr25519 signing is randomised) and from signing when printing.
#[derive(Clone, Debug)]
pub struct Keys {
    pub coordinator: PublicKey,
    pub miner: PublicKey,
    pub worker: PublicKey,
    pub challenge_signature: Signature,
    pub delegation_signature: Signature,
    pub register_signature: Signature,
}

pub fn seed() -> Seed {
    Seed(std::array::from_fn(|i| i as u8))
}

pub fn device() -> DeviceKey {
    DeviceKey::new(DEVICE).expect("a valid key")
}

/// fp16, 129 × 1 × 3: every row of C is one element of A times row 0 of B, so a zero element
/// of A against negative entries of B gives products that are −0 in IEEE arithmetic; their
/// canonical encoding is +0 (SPEC §4).
pub fn challenge() -> Challenge {
    Challenge {
        id: ChallengeId(7),
        seed: seed(),
        mode: Mode::Fp16,
        shape: Shape { m: 129, k: 1, n: 3 },
        issued_at: UnixMillis(T0),
        deadline: UnixMillis(T0 + 60_000),
    }
}

pub fn device_seed() -> DeviceSeed {
    challenge().device_seed(&device())
}

/// Row `r` of the product of a challenge, exact in f64 (every vector's sums are exact).
pub fn product_row(g: &Generator, shape: Shape, r: u32) -> Vec<f64> {
    (0..shape.n)
        .map(|j| {
            (0..shape.k).map(|t| g.element(Matrix::A, r, t) * g.element(Matrix::B, t, j)).sum()
        })
        .collect()
}

/// The canonical bytes of a row (SPEC §4): i32 for int8, binary32 otherwise, zero as +0.
pub fn canonical_bytes(row: &[f64], mode: Mode) -> Vec<u8> {
    row.iter()
        .flat_map(|&v| match mode {
            Mode::Int8 => (v as i32).to_le_bytes(),
            _ if v == 0.0 => 0f32.to_le_bytes(),
            _ => (v as f32).to_le_bytes(),
        })
        .collect()
}

/// The two vectors of the Freivalds vectors (SPEC §10.1): residues near both ends of `[0, p)`.
pub fn freivalds_vectors() -> [Vec<i32>; 2] {
    [vec![2_147_483_646, 1, 1_073_741_824, 12_345], vec![7, 2_147_483_000, 99, 0]]
}

/// `row·x mod p` for each vector, computed directly in i128 (an independent transcription of
/// SPEC §7.2's `C_r·x`).
pub fn row_dot_mod_p(row: &[f64], x: &[Vec<i32>; 2]) -> Vec<i32> {
    let p = i128::from(veribench_protocol::freivalds::PRIME);
    x.iter()
        .map(|x| {
            let s: i128 = row.iter().zip(x).map(|(&c, &x)| c as i128 * i128::from(x)).sum();
            s.rem_euclid(p) as i32
        })
        .collect()
}

/// The leaves of every row of a challenge's product.
pub fn leaves(seed: &DeviceSeed, mode: Mode, shape: Shape) -> Vec<Leaf> {
    let g = Generator::new(seed, mode);
    (0..shape.m)
        .map(|r| leaf_hash(seed, r, &canonical_bytes(&product_row(&g, shape, r), mode)))
        .collect()
}

/// The rows the vectors open: the first zero row of A (a row of ±0 products), the middle row,
/// and row 128, which has no sibling in layer 0 and is promoted (an odd layer).
pub fn opened_rows() -> Vec<u32> {
    let g = Generator::new(&device_seed(), Mode::Fp16);
    let zero = (0..64).find(|&r| g.element(Matrix::A, r, 0) == 0.0).expect("a zero row below 64");
    vec![zero, 64, 128]
}

pub fn register(keys: &Keys) -> Register {
    Register {
        name: "vector-worker".into(),
        delegation: Delegation {
            miner_hotkey: keys.miner,
            worker_key: keys.worker,
            expires_at: UnixMillis(T0 + 86_400_000),
            signature: keys.delegation_signature,
        },
        hardware: HardwareInfo {
            cpu_model: "Test CPU".into(),
            cpu_cores: 16,
            memory_bytes: 64 << 30,
            gpus: vec![GpuInfo {
                uuid: DEVICE.into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 80 << 30,
            }],
        },
        devices: vec![device()],
        timestamp: UnixMillis(T0 - 5_000),
        nonce: 0x0123_4567_89ab_cdef,
        signature: keys.register_signature,
    }
}

pub fn signed_challenge(keys: &Keys) -> SignedChallenge {
    SignedChallenge {
        challenge: challenge(),
        device: device(),
        coordinator: keys.coordinator,
        signature: keys.challenge_signature,
    }
}

pub fn root() -> Root {
    let c = challenge();
    let tree = Commitment::from_leaves(&leaves(&device_seed(), c.mode, c.shape)).expect("leaves");
    tree.root()
}

pub fn openings() -> Openings {
    let c = challenge();
    let seed = device_seed();
    let g = Generator::new(&seed, c.mode);
    let tree = Commitment::from_leaves(&leaves(&seed, c.mode, c.shape)).expect("leaves");
    let rows = opened_rows();
    let proof = tree.prove(&rows).expect("rows in range");
    let rows = rows
        .into_iter()
        .map(|row| RowOpening {
            row,
            bytes: canonical_bytes(&product_row(&g, c.shape, row), c.mode),
        })
        .collect();
    Openings { rows, proof }
}

/// A frame being annotated: `(bytes, what they are)` per field.
#[derive(Default)]
pub struct Annotated(pub Vec<(Vec<u8>, String)>);

impl Annotated {
    fn header(variant: u32, name: &str) -> Self {
        let mut a = Self::default();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        a.raw(header, format!("magic \"VB\", version {PROTOCOL_VERSION} (u16 LE)"));
        a.field(&variant, format!("Message::{name} (variant {variant})"));
        a
    }

    fn raw(&mut self, bytes: Vec<u8>, what: impl Into<String>) {
        self.0.push((bytes, what.into()));
    }

    fn field<T: Serialize + ?Sized>(&mut self, value: &T, what: impl Into<String>) {
        self.raw(postcard::to_stdvec(value).expect("postcard"), what);
    }

    fn text(&mut self, value: &str, field: &str) {
        self.field(&(value.len() as u32), format!("{field}: length {}", value.len()));
        self.raw(value.as_bytes().to_vec(), format!("{field} = {value:?} (UTF-8)"));
    }

    fn signature(&mut self, sig: &Signature, field: &str) {
        self.field(&64u32, format!("{field}: length 64"));
        self.raw(sig.0.to_vec(), format!("{field} (64 bytes)"));
    }

    fn key(&mut self, key: &PublicKey, field: &str) {
        self.raw(key.0.to_vec(), format!("{field} (32 raw bytes)"));
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|(b, _)| b.iter().copied()).collect()
    }

    /// Lines of at most 16 bytes as hex, `|` and the field's description on its first line.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for (bytes, what) in &self.0 {
            for (i, chunk) in bytes.chunks(16).enumerate() {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let hex = hex.join(" ");
                if i == 0 {
                    out.push_str(&format!("{hex:<47} | {what}\n"));
                } else {
                    out.push_str(&format!("{hex}\n"));
                }
            }
        }
        out
    }
}

/// The `(layer, index)` of every proof hash opening `rows` of a tree of `m` leaves, in proof
/// order (SPEC §5.3): per layer, the siblings of the known nodes that are not known themselves.
pub fn proof_nodes(rows: &[u32], m: u32) -> Vec<(u32, u32)> {
    let mut known: Vec<u32> = rows.to_vec();
    let (mut len, mut layer, mut out) = (m, 0, Vec::new());
    while len > 1 {
        let mut siblings: Vec<u32> =
            known.iter().map(|i| i ^ 1).filter(|s| *s < len && !known.contains(s)).collect();
        siblings.sort_unstable();
        siblings.dedup();
        out.extend(siblings.into_iter().map(|s| (layer, s)));
        known = known.iter().map(|i| i / 2).collect();
        known.dedup();
        len = len.div_ceil(2);
        layer += 1;
    }
    out
}

fn varint_u64(a: &mut Annotated, v: u64, what: String) {
    a.field(&v, what);
}

/// Every vector frame: its name in the SPEC, the message, and its annotation.
pub fn frames(keys: &Keys) -> Vec<(&'static str, Message, Annotated)> {
    let mut out = Vec::new();

    let r = register(keys);
    let mut a = Annotated::header(0, "Register");
    a.text(&r.name, "name");
    a.key(&r.delegation.miner_hotkey, "delegation.miner_hotkey");
    a.key(&r.delegation.worker_key, "delegation.worker_key");
    let exp = r.delegation.expires_at.0;
    varint_u64(&mut a, exp, format!("delegation.expires_at = {exp} (varint)"));
    a.signature(&r.delegation.signature, "delegation.signature");
    a.text(&r.hardware.cpu_model, "hardware.cpu_model");
    let cores = r.hardware.cpu_cores;
    a.field(&cores, format!("hardware.cpu_cores = {cores} (varint)"));
    let mem = r.hardware.memory_bytes;
    a.field(&mem, format!("hardware.memory_bytes = {mem} (varint)"));
    a.field(
        &(r.hardware.gpus.len() as u32),
        format!("hardware.gpus: {} entry", r.hardware.gpus.len()),
    );
    for gpu in &r.hardware.gpus {
        a.text(&gpu.uuid, "gpus[0].uuid");
        a.text(&gpu.name, "gpus[0].name");
        let mem = gpu.memory_bytes;
        a.field(&mem, format!("gpus[0].memory_bytes = {mem} (varint)"));
    }
    a.field(&(r.devices.len() as u32), format!("devices: {} entry", r.devices.len()));
    for d in &r.devices {
        a.text(d.as_str(), "devices[0]");
    }
    varint_u64(&mut a, r.timestamp.0, format!("timestamp = {} (varint)", r.timestamp.0));
    varint_u64(&mut a, r.nonce, format!("nonce = {:#x} (varint)", r.nonce));
    a.signature(&r.signature, "signature");
    out.push(("register", Message::Register(r), a));

    let w = Welcome {
        coordinator: keys.coordinator,
        heartbeat_interval_ms: 15_000,
        server_time: UnixMillis(T0 - 4_990),
    };
    let mut a = Annotated::header(1, "Welcome");
    a.key(&w.coordinator, "coordinator");
    a.field(&w.heartbeat_interval_ms, "heartbeat_interval_ms = 15000 (varint)");
    a.field(&w.server_time.0, format!("server_time = {} (varint)", w.server_time.0));
    out.push(("welcome", Message::Welcome(w), a));

    let h = Heartbeat { seq: 300, sent_at: UnixMillis(T0 - 1) };
    let mut a = Annotated::header(2, "Heartbeat");
    a.field(&h.seq, "seq = 300 (varint)");
    a.field(&h.sent_at.0, format!("sent_at = {} (varint)", h.sent_at.0));
    out.push(("heartbeat", Message::Heartbeat(h), a));

    let s = signed_challenge(keys);
    let c = &s.challenge;
    let mut a = Annotated::header(3, "Challenge");
    a.field(&c.id.0, format!("challenge.id = {} (varint)", c.id));
    a.raw(c.seed.0.to_vec(), "challenge.seed (32 raw bytes)");
    a.field(&c.mode, format!("challenge.mode = {} (variant 1)", c.mode));
    a.field(&c.shape.m, format!("challenge.shape.m = {} (varint)", c.shape.m));
    a.field(&c.shape.k, format!("challenge.shape.k = {} (varint)", c.shape.k));
    a.field(&c.shape.n, format!("challenge.shape.n = {} (varint)", c.shape.n));
    a.field(&c.issued_at.0, format!("challenge.issued_at = {} (varint)", c.issued_at.0));
    a.field(&c.deadline.0, format!("challenge.deadline = {} (varint)", c.deadline.0));
    a.text(s.device.as_str(), "device");
    a.key(&s.coordinator, "coordinator");
    a.signature(&s.signature, "signature");
    out.push(("challenge", Message::Challenge(s), a));

    let commitment = CommitmentMsg { challenge_id: ChallengeId(7), device: device(), root: root() };
    let mut a = Annotated::header(4, "Commitment");
    a.field(&7u64, "challenge_id = 7 (varint)");
    a.text(DEVICE, "device");
    a.raw(commitment.root.0.to_vec(), "root (32 raw bytes)");
    out.push(("commitment", Message::Commitment(commitment), a));

    let rows = opened_rows();
    let mut a = Annotated::header(5, "OpenRequest");
    a.field(&7u64, "challenge_id = 7 (varint)");
    a.field(&(rows.len() as u32), format!("rows: {} entries", rows.len()));
    for row in &rows {
        a.field(row, format!("row {row} (varint)"));
    }
    out.push((
        "open_request",
        Message::OpenRequest(OpenRequest { challenge_id: ChallengeId(7), rows }),
        a,
    ));

    let openings = openings();
    let mut a = Annotated::header(6, "Openings");
    a.field(&7u64, "challenge_id = 7 (varint)");
    a.field(&(openings.rows.len() as u32), format!("rows: {} entries", openings.rows.len()));
    for row in &openings.rows {
        a.field(&row.row, format!("rows[].row = {} (varint)", row.row));
        a.field(&(row.bytes.len() as u32), format!("rows[].bytes: length {}", row.bytes.len()));
        let values: Vec<String> = row
            .bytes
            .chunks(4)
            .map(|b| format!("{}", f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect();
        a.raw(row.bytes.clone(), format!("row {} = [{}] as f32 LE", row.row, values.join(", ")));
    }
    let MultiProof(hashes) = &openings.proof;
    a.field(&(hashes.len() as u32), format!("proof: {} hashes", hashes.len()));
    let nodes = proof_nodes(&opened_rows(), challenge().shape.m);
    assert_eq!(nodes.len(), hashes.len());
    for (i, (h, (layer, node))) in hashes.iter().zip(nodes).enumerate() {
        a.raw(h.to_vec(), format!("proof[{i}]: layer {layer}, node {node}"));
    }
    out.push((
        "openings",
        Message::Openings(OpeningsMsg { challenge_id: ChallengeId(7), openings }),
        a,
    ));

    let reason = RejectReason::Mismatch { row: 64, col: 2, expected: 2.0, got: 2.5 };
    let mut a = Annotated::header(7, "Verdict");
    a.field(&7u64, "challenge_id = 7 (varint)");
    a.field(&1u32, "verdict = Rejected (variant 1)");
    a.field(&3u32, "reason = Mismatch (variant 3)");
    a.field(&64u32, "row = 64 (varint)");
    a.field(&2u32, "col = 2 (varint)");
    a.field(&2.0f64, "expected = 2.0 (f64 LE)");
    a.field(&2.5f64, "got = 2.5 (f64 LE)");
    let verdict = VerdictMsg { challenge_id: ChallengeId(7), verdict: Verdict::Rejected(reason) };
    out.push(("verdict", Message::Verdict(verdict), a));

    let text = "device GPU-00000000-test-vector is busy with challenge 6";
    let error = ErrorMsg {
        code: ErrorCode::Busy,
        challenge_id: Some(ChallengeId(7)),
        message: text.into(),
    };
    let mut a = Annotated::header(8, "Error");
    a.field(&ErrorCode::Busy, "code = busy (22, varint)");
    a.field(&1u8, "challenge_id: Some");
    a.field(&7u64, "challenge_id = 7 (varint)");
    a.text(text, "message");
    out.push(("error", Message::Error(error), a));

    for (_, msg, a) in &out {
        assert_eq!(a.bytes(), wire::encode(msg), "annotation of {}", msg.kind());
    }
    out
}
