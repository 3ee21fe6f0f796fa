//! The prover market's matmul batches (SPEC §7.4): a small JSON descriptor naming a product
//! exactly as a challenge does, and the check of a participant's whole product.
//!
//! A participant downloads a [`MatmulBatch`], computes `C = A·B` from the matrices it defines
//! (device seed §2, generator §3) and submits the canonical bytes (§4) of all `m` rows, row 0
//! first. The server checks every row with Freivalds' check ([`crate::freivalds`]): one `B·x`
//! per vector (`O(k·n)`) and `O(k + n)` per row, so `O(m·n + k·n + m·k)` in all instead of the
//! `O(m·k·n)` of recomputing the product. A wrong entry anywhere passes with probability at
//! most `p^−2 < 2^−61.99`, `p = 2^31 − 1`.

use rand::CryptoRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::challenge::{MAX_DIM, Mode, Shape, derive_device_seed};
use crate::freivalds::{Check, exact_range};
use crate::generator::Generator;
use crate::ids::{DeviceKey, Seed};

/// The `format` of every batch descriptor of this version.
pub const BATCH_FORMAT: &str = "veribench-matmul-batch/1";
/// Longest descriptor [`MatmulBatch::parse`] reads, in bytes: a real one is under 300.
pub const MAX_BATCH_JSON_BYTES: usize = 4096;
/// Largest product a batch may name, in canonical bytes (`m·n·4`): 256 MiB, e.g. 8192 × 8192.
/// The server holds a whole proof in memory, so a batch must bound it; `k` is free up to
/// [`MAX_DIM`] and is where a batch grows its work without growing its proof.
pub const MAX_PROOF_BYTES: usize = 1 << 28;

/// Why a descriptor is not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The descriptor is longer than [`MAX_BATCH_JSON_BYTES`]; refused before parsing.
    #[error("batch descriptor of {len} bytes exceeds {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// [`MAX_BATCH_JSON_BYTES`].
        max: usize,
    },
    /// Not a JSON object with exactly the descriptor's fields, each of its JSON type.
    #[error("malformed batch descriptor: {0}")]
    Malformed(String),
    /// A `format` other than [`BATCH_FORMAT`].
    #[error("unknown batch format {0:?} (expected {BATCH_FORMAT:?})")]
    UnknownFormat(String),
    /// A `seed` that is not 64 lowercase hex digits.
    #[error("batch seed is not 64 lowercase hex digits")]
    BadSeed,
    /// A `mode` that is not one of `int8`, `fp16`, `bf16`, `fp32` (lowercase).
    #[error("unknown mode {0:?}")]
    UnknownMode(String),
    /// `fp32`: its products have no single right value, so no whole-product check.
    #[error("mode {0} is not exact; batches are int8, fp16 or bf16")]
    InexactMode(Mode),
    /// A dimension outside `1..=MAX_DIM`.
    #[error("batch dimension {name} = {value} is outside 1..={max}")]
    BadShape {
        /// `m`, `k` or `n`.
        name: &'static str,
        /// The value given.
        value: u32,
        /// [`MAX_DIM`].
        max: u32,
    },
    /// A shape whose Freivalds arithmetic would not be exact ([`exact_range`] is `None`); no
    /// shape within [`MAX_DIM`] is one, so this is a guard against future limits.
    #[error("shape {0} has no exact Freivalds check")]
    NoExactCheck(Shape),
    /// The product's canonical bytes exceed [`MAX_PROOF_BYTES`].
    #[error("a {shape} product is {bytes} bytes, more than {max}")]
    ProofTooLarge {
        /// The shape.
        shape: Shape,
        /// `m·n·4`.
        bytes: u64,
        /// [`MAX_PROOF_BYTES`].
        max: usize,
    },
    /// A `device_key` that is empty or longer than [`DeviceKey::MAX_LEN`] bytes.
    #[error("device key must be 1 to {} bytes", DeviceKey::MAX_LEN)]
    BadDeviceKey,
}

impl BatchError {
    /// A short stable name for storage, metrics and API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            BatchError::TooLarge { .. } => "too_large",
            BatchError::Malformed(_) => "malformed",
            BatchError::UnknownFormat(_) => "unknown_format",
            BatchError::BadSeed => "bad_seed",
            BatchError::UnknownMode(_) => "unknown_mode",
            BatchError::InexactMode(_) => "inexact_mode",
            BatchError::BadShape { .. } => "bad_shape",
            BatchError::NoExactCheck(_) => "no_exact_check",
            BatchError::ProofTooLarge { .. } => "proof_too_large",
            BatchError::BadDeviceKey => "bad_device_key",
        }
    }
}

/// Why a submitted product was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofRefusal {
    /// The proof is not exactly [`MatmulBatch::proof_len`] bytes.
    #[error("proof is {got} bytes, expected {expected}")]
    WrongLength {
        /// `m·n·4`.
        expected: usize,
        /// What arrived.
        got: usize,
    },
    /// The first row (lowest index) with an entry out of range, a −0 (fp16/bf16), or failing
    /// Freivalds' check: wrong for sure, since a true row's canonical bytes always pass.
    #[error("row {row} of the product is wrong")]
    Row {
        /// Row index in C.
        row: u32,
    },
    /// The batch itself is not valid (its fields are public, so it can be built by hand): the
    /// caller's fault, never the participant's.
    #[error("the batch is not valid: {0}")]
    InvalidBatch(BatchError),
}

impl ProofRefusal {
    /// A short stable name for storage, metrics and API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ProofRefusal::WrongLength { .. } => "wrong_length",
            ProofRefusal::Row { .. } => "wrong_row",
            ProofRefusal::InvalidBatch(_) => "invalid_batch",
        }
    }
}

/// A batch file: one product `C = A·B`, its matrices those of a challenge with this seed, mode
/// and shape on this device (SPEC §7.4). Exact modes only (int8, fp16, bf16).
///
/// JSON: `{"format":"veribench-matmul-batch/1","seed":"<64 lowercase hex>","mode":"int8",
/// "m":4,"k":8,"n":3,"device_key":"…"}`; deserialising validates as [`MatmulBatch::parse`]
/// does, so a `MatmulBatch` read through serde is always valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BatchFields", try_from = "BatchFields")]
pub struct MatmulBatch {
    /// Always [`BATCH_FORMAT`].
    pub format: String,
    /// The challenge seed the matrices derive from (with `device_key`, SPEC §2).
    pub seed: Seed,
    /// int8, fp16 or bf16.
    pub mode: Mode,
    /// Rows of A and of C.
    pub m: u32,
    /// Inner dimension.
    pub k: u32,
    /// Columns of B and of C.
    pub n: u32,
    /// The device name mixed into the device seed (SPEC §2).
    pub device_key: DeviceKey,
}

/// The descriptor as JSON carries it, before validation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFields {
    format: String,
    seed: String,
    mode: String,
    m: u32,
    k: u32,
    n: u32,
    device_key: String,
}

impl From<MatmulBatch> for BatchFields {
    fn from(b: MatmulBatch) -> Self {
        Self {
            format: b.format,
            seed: b.seed.to_string(),
            mode: b.mode.as_str().to_owned(),
            m: b.m,
            k: b.k,
            n: b.n,
            device_key: b.device_key.into(),
        }
    }
}

impl TryFrom<BatchFields> for MatmulBatch {
    type Error = BatchError;

    fn try_from(f: BatchFields) -> Result<Self, BatchError> {
        if f.format != BATCH_FORMAT {
            return Err(BatchError::UnknownFormat(f.format));
        }
        // Lowercase only: one descriptor, one spelling.
        let hex_ok = f.seed.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        let seed = Seed::from_hex(&f.seed).filter(|_| hex_ok).ok_or(BatchError::BadSeed)?;
        let mode = Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == f.mode)
            .ok_or(BatchError::UnknownMode(f.mode))?;
        let device_key = DeviceKey::new(f.device_key).ok_or(BatchError::BadDeviceKey)?;
        MatmulBatch::new(seed, mode, Shape { m: f.m, k: f.k, n: f.n }, device_key)
    }
}

impl MatmulBatch {
    /// A batch for `seed`, `mode` and `shape` on `device_key`. Refuses fp32, dimensions outside
    /// `1..=MAX_DIM`, shapes without an exact Freivalds check and products over
    /// [`MAX_PROOF_BYTES`].
    pub fn new(
        seed: Seed,
        mode: Mode,
        shape: Shape,
        device_key: DeviceKey,
    ) -> Result<Self, BatchError> {
        let batch = Self {
            format: BATCH_FORMAT.to_owned(),
            seed,
            mode,
            m: shape.m,
            k: shape.k,
            n: shape.n,
            device_key,
        };
        batch.validate()?;
        Ok(batch)
    }

    /// Reads a descriptor strictly: at most [`MAX_BATCH_JSON_BYTES`], exactly the seven fields,
    /// then every rule of [`MatmulBatch::new`].
    pub fn parse(json: &[u8]) -> Result<Self, BatchError> {
        if json.len() > MAX_BATCH_JSON_BYTES {
            return Err(BatchError::TooLarge { len: json.len(), max: MAX_BATCH_JSON_BYTES });
        }
        let fields: BatchFields =
            serde_json::from_slice(json).map_err(|e| BatchError::Malformed(e.to_string()))?;
        Self::try_from(fields)
    }

    /// The descriptor as one line of JSON, fields in the order of SPEC §7.4.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks the rules of [`MatmulBatch::new`] (the fields are public, so a batch may have been
    /// built or changed by hand).
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.format != BATCH_FORMAT {
            return Err(BatchError::UnknownFormat(self.format.clone()));
        }
        if !self.mode.is_exact() {
            return Err(BatchError::InexactMode(self.mode));
        }
        let shape = self.shape();
        for (name, value) in [("m", shape.m), ("k", shape.k), ("n", shape.n)] {
            if value == 0 || value > MAX_DIM {
                return Err(BatchError::BadShape { name, value, max: MAX_DIM });
            }
        }
        if exact_range(self.mode, shape).is_none() {
            return Err(BatchError::NoExactCheck(shape));
        }
        let bytes = u64::from(shape.m) * u64::from(shape.n) * self.mode.output_bytes() as u64;
        if bytes > MAX_PROOF_BYTES as u64 {
            return Err(BatchError::ProofTooLarge { shape, bytes, max: MAX_PROOF_BYTES });
        }
        Ok(())
    }

    /// `m × k × n`.
    pub fn shape(&self) -> Shape {
        Shape { m: self.m, k: self.k, n: self.n }
    }

    /// Bytes of a right proof: `m·n·4` (every exact mode's entry is 4 bytes, SPEC §4).
    /// Saturates for an invalid hand-built batch rather than overflow.
    pub fn proof_len(&self) -> usize {
        (self.m as usize).saturating_mul(self.n as usize).saturating_mul(self.mode.output_bytes())
    }

    /// Length of the proof's base64 (RFC 4648, padded): `4·⌈proof_len / 3⌉`, the exact length
    /// of a right `proof_data`, for the server's body cap.
    pub fn max_proof_base64_len(&self) -> usize {
        self.proof_len().div_ceil(3).saturating_mul(4)
    }

    /// Arithmetic operations of the product, `2·m·k·n`.
    pub fn operations(&self) -> f64 {
        self.shape().ops()
    }

    /// The generator of the batch's A and B: keyed by the device seed of `seed` and
    /// `device_key` (SPEC §2, §3).
    pub fn generator(&self) -> Generator {
        Generator::new(&derive_device_seed(&self.seed, &self.device_key), self.mode)
    }

    /// The product's canonical bytes, what an honest participant submits, computed by the
    /// verifier's CPU reference (`O(m·k·n)`: for tests and small shapes). Empty for an invalid
    /// batch.
    pub fn reference_product(&self) -> Vec<u8> {
        if self.validate().is_err() {
            return Vec::new();
        }
        let rows: Vec<u32> = (0..self.m).collect();
        let Some(entries) = crate::verify::exact_rows(&self.generator(), self.shape(), &rows)
        else {
            return Vec::new();
        };
        canonical_bytes(&entries, self.mode)
    }
}

/// Canonical bytes (SPEC §4) of exact entries: i32 for int8, binary32 for fp16/bf16 (exact:
/// every entry is an integer of magnitude ≤ 2^24). An integer zero converts to +0.
fn canonical_bytes(entries: &[i32], mode: Mode) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|&v| match mode {
            Mode::Int8 => v.to_le_bytes(),
            _ => (v as f32).to_le_bytes(),
        })
        .collect()
}

/// Whether a float row holds a −0 (`00 00 00 80`): the right value, but not its canonical
/// bytes (SPEC §4). Refusing it makes the accepted proof unique, byte for byte.
fn has_negative_zero(bytes: &[u8], mode: Mode) -> bool {
    mode != Mode::Int8 && bytes.chunks_exact(4).any(|w| w == [0, 0, 0, 0x80])
}

/// Checks a whole product: `proof` must be exactly [`MatmulBatch::proof_len`] bytes, hold no
/// −0 (fp16/bf16), and every row must pass Freivalds' check (SPEC §7.2, §7.4) with [`crate::freivalds::VECTORS`] fresh
/// vectors drawn from `rng`, which must be a CSPRNG the participant cannot predict (e.g.
/// `rand::rng()`). Rows are checked on all cores; the lowest failing row is reported.
pub fn check_product<R: CryptoRng + ?Sized>(
    batch: &MatmulBatch,
    proof: &[u8],
    rng: &mut R,
) -> Result<(), ProofRefusal> {
    batch.validate().map_err(ProofRefusal::InvalidBatch)?;
    let expected = batch.proof_len();
    if proof.len() != expected {
        return Err(ProofRefusal::WrongLength { expected, got: proof.len() });
    }
    let shape = batch.shape();
    let generator = batch.generator();
    // The vectors are drawn only now, after the proof is fixed.
    let check = Check::new(&generator, shape, rng)
        .ok_or(ProofRefusal::InvalidBatch(BatchError::NoExactCheck(shape)))?;
    let row_bytes = shape.row_bytes(batch.mode);
    let failed = proof.par_chunks_exact(row_bytes).enumerate().find_first(|(r, bytes)| {
        has_negative_zero(bytes, batch.mode) || !check.row_passes(&generator, *r as u32, bytes)
    });
    match failed {
        Some((row, _)) => Err(ProofRefusal::Row { row: row as u32 }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn batch(mode: Mode, shape: Shape, seed: u8) -> MatmulBatch {
        let key = DeviceKey::new("GPU-market-test").expect("key");
        MatmulBatch::new(Seed([seed; 32]), mode, shape, key).expect("a valid batch")
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(11)
    }

    const SHAPE: Shape = Shape { m: 5, k: 9, n: 7 };

    /// The product computed independently: element by element in f64 from the generator.
    fn naive_product(b: &MatmulBatch) -> Vec<u8> {
        let g = b.generator();
        let mut out = Vec::new();
        for r in 0..b.m {
            for j in 0..b.n {
                let v: f64 = (0..b.k)
                    .map(|t| g.element(crate::Matrix::A, r, t) * g.element(crate::Matrix::B, t, j))
                    .sum();
                match b.mode {
                    Mode::Int8 => out.extend((v as i32).to_le_bytes()),
                    _ => out.extend((v as f32 + 0.0).to_le_bytes()),
                }
            }
        }
        out
    }

    #[test]
    fn honest_products_are_accepted_in_every_exact_mode() {
        for mode in [Mode::Int8, Mode::Fp16, Mode::Bf16] {
            let b = batch(mode, SHAPE, 1);
            let proof = b.reference_product();
            assert_eq!(proof.len(), b.proof_len());
            assert_eq!(proof, naive_product(&b), "{mode}");
            assert_eq!(check_product(&b, &proof, &mut rng()), Ok(()), "{mode}");
            // And with the thread's CSPRNG, as the server calls it.
            assert_eq!(check_product(&b, &proof, &mut rand::rng()), Ok(()), "{mode}");
        }
    }

    #[test]
    fn one_wrong_entry_in_any_row_is_refused() {
        for mode in [Mode::Int8, Mode::Fp16, Mode::Bf16] {
            let b = batch(mode, SHAPE, 2);
            let proof = b.reference_product();
            let n = SHAPE.n as usize;
            for (row, col) in [(0, 0), (2, 3), (4, 6)] {
                let mut bad = proof.clone();
                let at = (row * n + col) * 4;
                let word = [bad[at], bad[at + 1], bad[at + 2], bad[at + 3]];
                let changed = match mode {
                    Mode::Int8 => (i32::from_le_bytes(word) + 1).to_le_bytes(),
                    _ => (f32::from_le_bytes(word) + 1.0).to_le_bytes(),
                };
                bad[at..at + 4].copy_from_slice(&changed);
                assert_eq!(
                    check_product(&b, &bad, &mut rng()),
                    Err(ProofRefusal::Row { row: row as u32 }),
                    "{mode} ({row}, {col})"
                );
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        // k = 1 gives zero entries (an element is 0 with probability 1/32 in fp16/bf16), whose
        // sign-bit flip is −0: the right value in the wrong bytes.
        for (mode, shape) in [
            (Mode::Int8, SHAPE),
            (Mode::Fp16, SHAPE),
            (Mode::Bf16, SHAPE),
            (Mode::Fp16, Shape { m: 6, k: 1, n: 9 }),
            (Mode::Bf16, Shape { m: 6, k: 1, n: 9 }),
        ] {
            let b = batch(mode, shape, 3);
            let proof = b.reference_product();
            if shape.k == 1 {
                assert!(proof.chunks_exact(4).any(|w| w == [0; 4]), "{mode}: no zero entry");
            }
            let bits = proof.len() * 8;
            let mut refused = 0;
            for bit in 0..bits {
                let mut bad = proof.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let row = (bit / 8 / (shape.n as usize * 4)) as u32;
                assert_eq!(
                    check_product(&b, &bad, &mut rng()),
                    Err(ProofRefusal::Row { row }),
                    "{mode} bit {bit}"
                );
                refused += 1;
            }
            assert_eq!(refused, bits);
        }
    }

    #[test]
    fn wrong_lengths_are_refused_before_any_arithmetic() {
        let b = batch(Mode::Int8, SHAPE, 4);
        let proof = b.reference_product();
        let expected = b.proof_len();
        for got in [0, 1, expected - 4, expected - 1, expected + 1, expected + 4] {
            let mut bad = proof.clone();
            bad.resize(got, 0);
            assert_eq!(
                check_product(&b, &bad, &mut rng()),
                Err(ProofRefusal::WrongLength { expected, got })
            );
        }
        assert_eq!(ProofRefusal::WrongLength { expected, got: 0 }.code(), "wrong_length");
    }

    #[test]
    fn another_batchs_product_is_refused() {
        for mode in [Mode::Int8, Mode::Bf16] {
            let other = batch(mode, SHAPE, 5).reference_product();
            let b = batch(mode, SHAPE, 6);
            assert_ne!(other, b.reference_product());
            assert!(
                matches!(check_product(&b, &other, &mut rng()), Err(ProofRefusal::Row { .. })),
                "{mode}"
            );
            // Same seed, another device: other matrices.
            let mut moved = b.clone();
            moved.device_key = DeviceKey::new("GPU-other").expect("key");
            assert!(check_product(&moved, &b.reference_product(), &mut rng()).is_err());
        }
    }

    #[test]
    fn fp32_is_refused_at_construction_parse_and_check() {
        let key = DeviceKey::new("cpu:x").expect("key");
        assert_eq!(
            MatmulBatch::new(Seed([0; 32]), Mode::Fp32, SHAPE, key),
            Err(BatchError::InexactMode(Mode::Fp32))
        );
        let json = batch(Mode::Int8, SHAPE, 7).to_json().replace("\"int8\"", "\"fp32\"");
        assert_eq!(MatmulBatch::parse(json.as_bytes()), Err(BatchError::InexactMode(Mode::Fp32)));
        let mut b = batch(Mode::Int8, SHAPE, 7);
        let proof = b.reference_product();
        b.mode = Mode::Fp32;
        assert_eq!(
            check_product(&b, &proof, &mut rng()),
            Err(ProofRefusal::InvalidBatch(BatchError::InexactMode(Mode::Fp32)))
        );
        assert!(b.reference_product().is_empty());
    }

    #[test]
    fn descriptors_round_trip_through_json_and_serde() {
        for mode in [Mode::Int8, Mode::Fp16, Mode::Bf16] {
            let b = batch(mode, SHAPE, 8);
            let json = b.to_json();
            assert!(json.starts_with(r#"{"format":"veribench-matmul-batch/1","seed":"0808"#));
            assert!(json.contains(&format!(r#""mode":"{mode}","m":5,"k":9,"n":7,"#)));
            assert_eq!(MatmulBatch::parse(json.as_bytes()), Ok(b.clone()));
            assert_eq!(serde_json::from_str::<MatmulBatch>(&json).ok(), Some(b.clone()));
            // Whitespace and field order are free; the values are not.
            let spaced = format!(
                r#"  {{ "device_key": "GPU-market-test", "n": 7, "k": 9, "m": 5, "mode": "{mode}",
                "seed": "{}", "format": "veribench-matmul-batch/1" }} "#,
                b.seed
            );
            assert_eq!(MatmulBatch::parse(spaced.as_bytes()), Ok(b));
        }
        let b = batch(Mode::Int8, Shape { m: 3, k: 2, n: 5 }, 9);
        assert_eq!(b.proof_len(), 60);
        assert_eq!(b.max_proof_base64_len(), 80);
        assert_eq!(b.operations(), 60.0);
        let b = batch(Mode::Int8, Shape { m: 1, k: 1, n: 1 }, 9);
        assert_eq!((b.proof_len(), b.max_proof_base64_len()), (4, 8));
    }

    #[test]
    fn hostile_descriptors_are_refused_without_panic() {
        let good = batch(Mode::Int8, SHAPE, 10).to_json();
        let swap = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            MatmulBatch::parse(good.replacen(from, to, 1).as_bytes())
        };
        let code = |r: Result<MatmulBatch, BatchError>| r.err().map(|e| e.code());
        assert_eq!(code(swap("batch/1", "batch/2")), Some("unknown_format"));
        assert_eq!(code(swap("\"m\":5", "\"m\":65537")), Some("bad_shape"));
        assert_eq!(code(swap("\"k\":9", "\"k\":0")), Some("bad_shape"));
        assert_eq!(code(swap("\"n\":7", "\"n\":4294967295")), Some("bad_shape"));
        assert_eq!(code(swap("\"n\":7", "\"n\":4294967296")), Some("malformed"));
        assert_eq!(code(swap("\"n\":7", "\"n\":-7")), Some("malformed"));
        assert_eq!(code(swap("\"n\":7", "\"n\":7.5")), Some("malformed"));
        assert_eq!(code(swap("\"n\":7", "\"n\":\"7\"")), Some("malformed"));
        assert_eq!(
            code(swap("\"m\":5,\"k\":9,\"n\":7", "\"m\":65536,\"k\":9,\"n\":65536")),
            Some("proof_too_large")
        );
        assert_eq!(code(swap("\"int8\"", "\"INT8\"")), Some("unknown_mode"));
        assert_eq!(code(swap("\"int8\"", "\"fp8\"")), Some("unknown_mode"));
        assert_eq!(code(swap("0a0a", "0A0A")), Some("bad_seed"));
        assert_eq!(code(swap("0a0a", "0a0")), Some("bad_seed"));
        assert_eq!(code(swap("0a0a", "0a0g")), Some("bad_seed"));
        assert_eq!(code(swap("GPU-market-test", "")), Some("bad_device_key"));
        let long = "x".repeat(DeviceKey::MAX_LEN + 1);
        assert_eq!(code(swap("GPU-market-test", &long)), Some("bad_device_key"));
        assert_eq!(code(swap("{", "{\"extra\":1,")), Some("malformed"));
        assert_eq!(code(swap(",\"device_key\":\"GPU-market-test\"", "")), Some("malformed"));
        assert_eq!(code(swap("}", "}}")), Some("malformed"));
        assert_eq!(code(swap("{", "{\"m\":5,")), Some("malformed"), "a repeated member");
        for junk in [&b""[..], b"null", b"[]", b"{}", b"\"x\"", &[0xff, 0xfe], &[b'['; 3000]] {
            assert_eq!(code(MatmulBatch::parse(junk)), Some("malformed"), "{junk:?}");
        }
        let huge = format!("{good}{}", " ".repeat(MAX_BATCH_JSON_BYTES));
        assert_eq!(code(MatmulBatch::parse(huge.as_bytes())), Some("too_large"));
        // serde goes through the same validation.
        let fp32 = good.replace("\"int8\"", "\"fp32\"");
        assert!(serde_json::from_str::<MatmulBatch>(&fp32).is_err());
    }

    #[test]
    fn limits_hold_at_their_edges() {
        let key = || DeviceKey::new("k").expect("key");
        let at = |m, k, n| MatmulBatch::new(Seed([0; 32]), Mode::Int8, Shape { m, k, n }, key());
        // 8192 × 8192 is exactly the proof cap; k is free up to MAX_DIM.
        assert!(at(8192, MAX_DIM, 8192).is_ok());
        assert_eq!(at(8193, 1, 8192).err().map(|e| e.code()), Some("proof_too_large"));
        assert_eq!(at(1, MAX_DIM + 1, 1).err().map(|e| e.code()), Some("bad_shape"));
        let mut b = at(2, 2, 2).expect("valid");
        b.m = u32::MAX;
        b.n = u32::MAX;
        assert!(b.proof_len() > 0);
        assert_eq!(
            check_product(&b, &[], &mut rng()).err().map(|e| e.code()),
            Some("invalid_batch")
        );
    }
}
