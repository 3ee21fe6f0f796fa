//! A deliberately simple worker for protocol tests: it computes products with plain loops in
//! the least accurate order an honest kernel uses (sequential, left to right), and lets each
//! adversarial test replace any step.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use veribench_protocol::{
    Challenge, ChallengeId, Commitment, DeviceKey, DeviceSeed, Generator, Matrix, Mode, Openings,
    RowOpening, Seed, Shape, UnixMillis, leaf_hash,
};

/// A challenge with a seed from `rng`.
pub fn challenge(rng: &mut ChaCha20Rng, mode: Mode, shape: Shape) -> Challenge {
    Challenge {
        id: ChallengeId(rng.random()),
        seed: Seed(rng.random()),
        mode,
        shape,
        issued_at: UnixMillis(0),
        deadline: UnixMillis(u64::MAX),
    }
}

pub fn device() -> DeviceKey {
    DeviceKey::new("GPU-test-0").expect("valid key")
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A matrix as f64 values (exact for every mode).
pub fn matrix(g: &Generator, which: Matrix, rows: u32, cols: u32) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            let mut v = vec![0f32; cols as usize];
            g.fill_f32(which, r, 0, &mut v);
            v
        })
        .collect()
}

/// How the test worker turns A's row and B into one product row.
pub type RowKernel = dyn Fn(&[f32], &[Vec<f32>]) -> Vec<u8>;

/// Exact i32 row (int8 mode), little-endian.
pub fn int_row(a: &[f32], b: &[Vec<f32>]) -> Vec<u8> {
    let n = b.first().map_or(0, Vec::len);
    (0..n)
        .flat_map(|j| {
            let s: i32 = a.iter().zip(b).map(|(&x, row)| x as i32 * row[j] as i32).sum();
            s.to_le_bytes()
        })
        .collect()
}

/// f32 row with sequential f32 accumulation after `round` is applied to every input.
pub fn f32_row_with(a: &[f32], b: &[Vec<f32>], round: impl Fn(f32) -> f32) -> Vec<u8> {
    let n = b.first().map_or(0, Vec::len);
    (0..n)
        .flat_map(|j| {
            let mut s = 0f32;
            for (&x, row) in a.iter().zip(b) {
                s += round(x) * round(row[j]);
            }
            s.to_le_bytes()
        })
        .collect()
}

/// Honest f32 row: plain sequential f32 accumulation.
pub fn f32_row(a: &[f32], b: &[Vec<f32>]) -> Vec<u8> {
    f32_row_with(a, b, |v| v)
}

/// The honest kernel for a mode.
pub fn honest_kernel(mode: Mode) -> &'static RowKernel {
    if mode == Mode::Int8 { &int_row } else { &f32_row }
}

/// All rows of C for `challenge` on `device`, computed by `kernel`.
pub fn product_rows(challenge: &Challenge, device: &DeviceKey, kernel: &RowKernel) -> Vec<Vec<u8>> {
    let seed = challenge.device_seed(device);
    let g = Generator::new(&seed, challenge.mode);
    let Shape { m, k, n } = challenge.shape;
    let a = matrix(&g, Matrix::A, m, k);
    let b = matrix(&g, Matrix::B, k, n);
    a.iter().map(|row| kernel(row, &b)).collect()
}

/// A worker's state after committing.
pub struct Committed {
    pub seed: DeviceSeed,
    pub rows: Vec<Vec<u8>>,
    pub tree: Commitment,
}

/// Hashes `rows` under `seed` and builds the tree.
pub fn commit(seed: DeviceSeed, rows: Vec<Vec<u8>>) -> Committed {
    let leaves: Vec<_> =
        rows.iter().enumerate().map(|(r, bytes)| leaf_hash(&seed, r as u32, bytes)).collect();
    let tree = Commitment::from_leaves(&leaves).expect("non-empty product");
    Committed { seed, rows, tree }
}

impl Committed {
    /// Honest openings of `sampled`.
    pub fn open(&self, sampled: &[u32]) -> Openings {
        Openings {
            rows: sampled
                .iter()
                .map(|&r| RowOpening { row: r, bytes: self.rows[r as usize].clone() })
                .collect(),
            proof: self.tree.prove(sampled).expect("valid rows"),
        }
    }
}
