//! What a challenge is: a seed, a mode, a shape and a deadline, plus the derivation of each
//! device's own seed from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::{ChallengeId, DeviceKey, DeviceSeed, Seed};

/// BLAKE3 `derive_key` context for per-device seeds.
pub const DEVICE_SEED_CONTEXT: &str = "veribench 2026-11 device seed v1";
/// BLAKE3 `derive_key` context for the bytes a coordinator signs.
pub const CHALLENGE_SIGNING_CONTEXT: &str = "veribench 2026-11 challenge signature v1";

/// The largest M, K or N the protocol allows. It keeps every exact mode exact:
/// int8 sums stay below 2^30 in i32 and the small-integer fp16/bf16 sums stay at or below 2^24,
/// where every integer is representable in f32.
pub const MAX_DIM: u32 = 65_536;

/// Arithmetic a challenge asks for. The input values of each mode are chosen so that `Int8`,
/// `Fp16` and `Bf16` have exactly one right answer; `Fp32` is checked against an error bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// int8 inputs in [-128, 127], i32 accumulation. Exact; the default.
    #[default]
    Int8,
    /// fp16 inputs (integers in [-16, 15]), f32 accumulation. Exact.
    Fp16,
    /// bf16 inputs (integers in [-16, 15]), f32 accumulation. Exact.
    Bf16,
    /// fp32 inputs with full 24-bit significands in [-1, 1), fp32 arithmetic.
    Fp32,
}

impl Mode {
    /// Every mode, in wire order.
    pub const ALL: [Mode; 4] = [Mode::Int8, Mode::Fp16, Mode::Bf16, Mode::Fp32];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Int8 => "int8",
            Mode::Fp16 => "fp16",
            Mode::Bf16 => "bf16",
            Mode::Fp32 => "fp32",
        }
    }

    /// Whether every entry of the product has one right value (compared for equality).
    pub fn is_exact(self) -> bool {
        !matches!(self, Mode::Fp32)
    }

    /// Bytes of one product entry in a row: i32 for `Int8`, f32 otherwise, little-endian.
    pub const fn output_bytes(self) -> usize {
        4
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ProtocolError::UnknownMode(s.to_owned()))
    }
}

/// The shape a coordinator gives CPU devices unless configured otherwise (SPEC §1.1). A worker
/// pays the GEMM, `2·m·n·k`, plus proof overhead: generating A and B, `k·(m + n)` elements, and
/// hashing C, `4·m·n` bytes. `k = 2n` halves the hash's share of a square challenge, and
/// `n = 4096` keeps the generator's small, so the overhead stays under 5% on a CPU.
pub const DEFAULT_CPU_SHAPE: Shape = Shape { m: 4096, k: 8192, n: 4096 };

/// The shape a coordinator gives GPU devices unless configured otherwise (capped to fit the
/// device's memory). GPUs hash C on the device, so a square shape already has low overhead, and
/// the verifier's cost (regenerating B, `k × n`) does not grow further.
pub const DEFAULT_GPU_SHAPE: Shape = Shape::square(16_384);

/// `A` is `m × k`, `B` is `k × n`, the product `C` is `m × n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// Rows of A and of C: the number of Merkle leaves.
    pub m: u32,
    /// Inner dimension.
    pub k: u32,
    /// Columns of B and of C.
    pub n: u32,
}

impl Shape {
    /// The common square case.
    pub const fn square(n: u32) -> Self {
        Self { m: n, k: n, n }
    }

    /// Arithmetic operations of the product, counting a multiply-add as two.
    pub fn ops(&self) -> f64 {
        2.0 * f64::from(self.m) * f64::from(self.k) * f64::from(self.n)
    }

    /// Bytes of one row of C on the wire and in its leaf.
    pub fn row_bytes(&self, mode: Mode) -> usize {
        self.n as usize * mode.output_bytes()
    }

    /// Checks every dimension is in `1..=max_dim` (and `max_dim` itself within [`MAX_DIM`]).
    pub fn validate(&self, max_dim: u32) -> Result<(), ProtocolError> {
        let cap = max_dim.min(MAX_DIM);
        for (name, value) in [("m", self.m), ("k", self.k), ("n", self.n)] {
            if value == 0 || value > cap {
                return Err(ProtocolError::BadShape { name, value, max: cap });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.m, self.k, self.n)
    }
}

/// A shape that does not read as `MxKxN` (three positive integers; `N` alone is the square).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a shape: write MxKxN (e.g. 4096x8192x4096) or N for N x N x N")]
pub struct ParseShapeError(String);

impl FromStr for Shape {
    type Err = ParseShapeError;

    /// Parses what [`fmt::Display`] writes, `MxKxN`, or a single `N` for the square.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseShapeError(text.to_owned());
        let dims = text
            .split('x')
            .map(|d| d.trim().parse::<u32>().ok().filter(|&v| v > 0))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(bad)?;
        match dims[..] {
            [n] => Ok(Shape::square(n)),
            [m, k, n] => Ok(Shape { m, k, n }),
            _ => Err(bad()),
        }
    }
}

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current wall-clock time; 0 if the clock is before 1970.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(ms)
    }
}

/// One unit of work, as the coordinator issues and signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Unique at the issuing coordinator.
    pub id: ChallengeId,
    /// Fresh randomness; nothing about the matrices is known before it is sent.
    pub seed: Seed,
    /// The arithmetic asked for.
    pub mode: Mode,
    /// The product's dimensions.
    pub shape: Shape,
    /// When the coordinator issued it.
    pub issued_at: UnixMillis,
    /// After this the coordinator no longer accepts a commitment.
    pub deadline: UnixMillis,
}

impl Challenge {
    /// The seed of one device's matrices: BLAKE3 `derive_key(DEVICE_SEED_CONTEXT,
    /// seed ‖ u32_le(len(device key)) ‖ device key)`.
    pub fn device_seed(&self, device: &DeviceKey) -> DeviceSeed {
        derive_device_seed(&self.seed, device)
    }

    /// The exact bytes a coordinator signs: a domain-separated hash of the canonical encoding.
    pub fn signing_payload(&self) -> [u8; 32] {
        crate::canonical::digest(CHALLENGE_SIGNING_CONTEXT, self)
    }
}

/// See [`Challenge::device_seed`].
pub fn derive_device_seed(seed: &Seed, device: &DeviceKey) -> DeviceSeed {
    let key = device.as_str().as_bytes();
    let mut hasher = blake3::Hasher::new_derive_key(DEVICE_SEED_CONTEXT);
    hasher.update(seed.as_bytes());
    // DeviceKey::MAX_LEN keeps this far below u32::MAX.
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    DeviceSeed(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_names() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().ok(), Some(mode));
        }
        assert!("fp8".parse::<Mode>().is_err());
    }

    #[test]
    fn shapes_parse_from_what_they_display() {
        for shape in [Shape { m: 4096, k: 8192, n: 4096 }, Shape::square(1)] {
            assert_eq!(shape.to_string().parse::<Shape>(), Ok(shape));
        }
        assert_eq!("2048".parse::<Shape>(), Ok(Shape::square(2048)));
        for bad in ["", "0", "4x4", "4x0x4", "4x4x4x4", "-1", "ax4x4", "4096x"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_outside_the_limits_are_refused() {
        assert!(Shape::square(1).validate(MAX_DIM).is_ok());
        assert!(Shape::square(0).validate(MAX_DIM).is_err());
        assert!(Shape::square(4097).validate(4096).is_err());
        assert!(Shape::square(MAX_DIM + 1).validate(u32::MAX).is_err());
        assert!(Shape { m: 3, k: 0, n: 3 }.validate(8).is_err());
    }

    #[test]
    fn each_device_gets_its_own_seed() {
        let seed = Seed([7; 32]);
        let a = derive_device_seed(&seed, &DeviceKey::new("GPU-a").expect("key"));
        let b = derive_device_seed(&seed, &DeviceKey::new("GPU-b").expect("key"));
        assert_ne!(a, b);
        let other = derive_device_seed(&Seed([8; 32]), &DeviceKey::new("GPU-a").expect("key"));
        assert_ne!(a, other);
    }
}
