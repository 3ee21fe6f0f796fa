//! Deciding whether a worker's openings are right.
//!
//! Exact modes (int8, and fp16/bf16 whose inputs are small integers): Freivalds' check
//! ([`crate::freivalds`]) — every opened entry must be an integer in the range a true entry can
//! take, and `C_r·x ≡ A_r·(B·x) (mod 2^31 − 1)` for two random vectors `x` drawn after the
//! openings arrive. That costs `k·n` multiply-adds for `B·x` plus regenerating B, instead of
//! `s·k·n` to recompute `s` rows; a wrong row passes with probability at most `(2^31 − 1)^−2`.
//! A row that fails is then recomputed in full to name its first wrong entry.
//!
//! fp32: every sampled row is recomputed in f64 (exact products, a negligible summation error)
//! by a register-blocked kernel and every entry must lie within [`fp32_tolerance`].

use multiversion::multiversion;
use rand::CryptoRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::challenge::{Mode, Shape};
use crate::commitment::{MultiProof, leaf_hash, verify_multiproof};
use crate::freivalds::Check;
use crate::generator::{Generator, Matrix};
use crate::ids::{DeviceSeed, Root};

/// Columns of B regenerated per parallel task while recomputing sampled rows.
const COLUMN_CHUNK: usize = 256;

/// One opened row of the product, as the worker sends it: `n` little-endian entries (i32 for
/// int8, f32 for the other modes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowOpening {
    /// Row index in C.
    pub row: u32,
    /// The row's canonical bytes, exactly what its leaf hashed.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A worker's answer to an open request: the asked rows, in increasing order, and one
/// multiproof connecting them to the committed root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Openings {
    /// The opened rows.
    #[serde(deserialize_with = "crate::bounded::vec::<_, _, { crate::bounded::MAX_ROWS }>")]
    pub rows: Vec<RowOpening>,
    /// Sibling hashes from the opened leaves to the root.
    pub proof: MultiProof,
}

/// Why a commitment was rejected. Stored by the coordinator; [`RejectReason::code`] is stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// The opened rows are not exactly the sampled ones.
    #[error("opened rows are not the {asked} rows asked for")]
    WrongRows {
        /// How many rows were asked for.
        asked: u32,
    },
    /// A row of the wrong length.
    #[error("row {row} has {got} bytes, expected {expected}")]
    RowLength {
        /// Row index.
        row: u32,
        /// `n · 4`.
        expected: u32,
        /// What arrived (saturated).
        got: u32,
    },
    /// The rows do not hash up to the committed root.
    #[error("the opened rows do not match the committed root")]
    BadProof,
    /// An exact-mode entry differs from the reference.
    #[error("row {row} column {col}: got {got}, expected exactly {expected}")]
    Mismatch {
        /// Row index.
        row: u32,
        /// Column index.
        col: u32,
        /// The reference value.
        expected: f64,
        /// The worker's value.
        got: f64,
    },
    /// An fp32 entry outside the error bound.
    #[error("row {row} column {col}: got {got}, expected {expected} ± {bound}")]
    OutOfTolerance {
        /// Row index.
        row: u32,
        /// Column index.
        col: u32,
        /// The reference value (computed in f64).
        expected: f64,
        /// The worker's value.
        got: f64,
        /// [`fp32_tolerance`] for this challenge.
        bound: f64,
    },
}

impl RejectReason {
    /// A short stable name for storage and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::WrongRows { .. } => "wrong_rows",
            RejectReason::RowLength { .. } => "row_length",
            RejectReason::BadProof => "bad_proof",
            RejectReason::Mismatch { .. } => "value_mismatch",
            RejectReason::OutOfTolerance { .. } => "out_of_tolerance",
        }
    }
}

/// The outcome of checking one challenge's openings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every sampled row is committed and right.
    Accepted,
    /// The first problem found.
    Rejected(RejectReason),
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Accepted`].
    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted)
    }
}

/// Largest allowed |worker − exact| for an fp32 entry with inner dimension `k`:
/// `(k + 8) · 2⁻²³`.
///
/// Inputs lie in `[-1, 1)` (mean square 1/3), so the partial sums of a row·column product grow like
/// `sqrt(i / 9)`. Plain sequential f32 summation, the least accurate order a real kernel uses,
/// then has an error of standard deviation about `k · 2⁻²⁴ / 7.35`; the bound is ~15 of those
/// deviations, and blocked or pairwise orders (every BLAS) are far more accurate still. A
/// product computed from inputs rounded to TF32 (11-bit significands) errs by about
/// `sqrt(k) · 2⁻¹¹ · 0.27`, which exceeds the bound for every `k ≤ 65536` (4× at the largest `k`,
/// 30× at k = 4096); bf16 or fp16 inputs err more still.
pub fn fp32_tolerance(k: u32) -> f64 {
    (f64::from(k) + 8.0) * 2f64.powi(-23)
}

/// The exact or f64 reference of some rows of C.
enum Reference {
    /// `rows × n`, exact.
    Exact(Vec<i32>),
    /// `rows × n`, products exact and sums in f64.
    Float(Vec<f64>),
}

/// Checks `openings` against `root` for the `sampled` rows (strictly increasing) of the challenge
/// with `mode` and `shape` whose matrices come from `seed`. Exact modes use Freivalds' check
/// with vectors drawn here from the thread's CSPRNG, after the openings exist.
pub fn verify_openings(
    mode: Mode,
    shape: Shape,
    seed: &DeviceSeed,
    root: &Root,
    sampled: &[u32],
    openings: &Openings,
) -> Verdict {
    verify_openings_with(mode, shape, seed, root, sampled, openings, &mut rand::rng())
}

/// [`verify_openings`] drawing Freivalds' vectors from `rng`, which must be unpredictable to the
/// worker (a worker that knew the vectors could open wrong rows that pass); a seeded CSPRNG is
/// for tests only.
pub fn verify_openings_with<R: CryptoRng + ?Sized>(
    mode: Mode,
    shape: Shape,
    seed: &DeviceSeed,
    root: &Root,
    sampled: &[u32],
    openings: &Openings,
    rng: &mut R,
) -> Verdict {
    if let Some(reason) = check_committed(mode, shape, seed, root, sampled, openings) {
        return Verdict::Rejected(reason);
    }
    if openings.rows.is_empty() {
        return Verdict::Accepted;
    }
    let generator = Generator::new(seed, mode);
    let Some(check) = Check::new(&generator, shape, rng) else {
        return compare_with_reference(&generator, shape, &openings.rows);
    };
    // Each row costs O(k + n): check them on all cores, then report in the order opened.
    let passes: Vec<bool> = openings
        .rows
        .par_iter()
        .map(|opening| check.row_passes(&generator, opening.row, &opening.bytes))
        .collect();
    for (opening, passed) in openings.rows.iter().zip(passes) {
        if !passed {
            // Wrong for sure (an honest row always passes): recompute it to name the first
            // wrong entry. Finding none would mean the row is exactly right after all.
            let verdict = compare_with_reference(&generator, shape, std::slice::from_ref(opening));
            if !verdict.is_accepted() {
                return verdict;
            }
        }
    }
    Verdict::Accepted
}

/// The verifier as it was before Freivalds' check and the blocked fp32 kernel: every sampled
/// row recomputed in full (fp32 row by row) and compared entry by entry. Same verdicts as
/// [`verify_openings`] (up to Freivalds' error probability); kept as the oracle the fast paths
/// are tested against and the baseline they are measured against.
#[doc(hidden)]
pub fn verify_openings_by_recompute(
    mode: Mode,
    shape: Shape,
    seed: &DeviceSeed,
    root: &Root,
    sampled: &[u32],
    openings: &Openings,
) -> Verdict {
    if let Some(reason) = check_committed(mode, shape, seed, root, sampled, openings) {
        return Verdict::Rejected(reason);
    }
    let generator = Generator::new(seed, mode);
    let indices: Vec<u32> = openings.rows.iter().map(|o| o.row).collect();
    let reference = if mode.is_exact() {
        reference_rows(&generator, shape, &indices)
    } else {
        Reference::Float(reference_f64_by_rows(&generator, shape, &indices))
    };
    compare(mode, shape, &openings.rows, reference)
}

/// The checks before any arithmetic: the right rows, of the right length, under the root.
fn check_committed(
    mode: Mode,
    shape: Shape,
    seed: &DeviceSeed,
    root: &Root,
    sampled: &[u32],
    openings: &Openings,
) -> Option<RejectReason> {
    let asked = sampled.len() as u32;
    if openings.rows.len() != sampled.len()
        || openings.rows.iter().zip(sampled).any(|(o, &s)| o.row != s)
    {
        return Some(RejectReason::WrongRows { asked });
    }
    let row_bytes = shape.row_bytes(mode);
    if let Some(bad) = openings.rows.iter().find(|o| o.bytes.len() != row_bytes) {
        return Some(RejectReason::RowLength {
            row: bad.row,
            expected: row_bytes as u32,
            got: u32::try_from(bad.bytes.len()).unwrap_or(u32::MAX),
        });
    }
    let leaves: Vec<_> =
        openings.rows.par_iter().map(|o| leaf_hash(seed, o.row, &o.bytes)).collect();
    if !verify_multiproof(root, shape.m, sampled, &leaves, &openings.proof) {
        return Some(RejectReason::BadProof);
    }
    None
}

/// Recomputes `rows` in full and compares them entry by entry: exactly for the exact modes,
/// within [`fp32_tolerance`] for fp32. Rows have the right length (checked before).
fn compare_with_reference(generator: &Generator, shape: Shape, rows: &[RowOpening]) -> Verdict {
    let indices: Vec<u32> = rows.iter().map(|o| o.row).collect();
    compare(generator.mode(), shape, rows, reference_rows(generator, shape, &indices))
}

/// Compares `rows` with their `reference`, entry by entry.
fn compare(mode: Mode, shape: Shape, rows: &[RowOpening], reference: Reference) -> Verdict {
    let n = shape.n as usize;
    match reference {
        Reference::Exact(expected) => {
            for (opening, want) in rows.iter().zip(expected.chunks_exact(n)) {
                let got = row_entries(&opening.bytes, mode);
                // −0 equals +0 here, as for every f64 comparison.
                if let Some((col, (g, &w))) =
                    got.zip(want).enumerate().find(|(_, (g, w))| *g != f64::from(**w))
                {
                    return Verdict::Rejected(RejectReason::Mismatch {
                        row: opening.row,
                        col: col as u32,
                        expected: f64::from(w),
                        got: g,
                    });
                }
            }
        }
        Reference::Float(expected) => {
            let bound = fp32_tolerance(shape.k);
            for (opening, want) in rows.iter().zip(expected.chunks_exact(n)) {
                let got = row_entries(&opening.bytes, mode);
                let outside = |g: f64, w: f64| {
                    let err = (g - w).abs();
                    err.is_nan() || err > bound
                };
                if let Some((col, (g, &w))) =
                    got.zip(want).enumerate().find(|(_, (g, w))| outside(*g, **w))
                {
                    return Verdict::Rejected(RejectReason::OutOfTolerance {
                        row: opening.row,
                        col: col as u32,
                        expected: w,
                        got: g,
                        bound,
                    });
                }
            }
        }
    }
    Verdict::Accepted
}

/// The entries of a row's canonical bytes (i32 for int8, f32 otherwise, little-endian) as f64,
/// which represents both exactly.
pub fn row_entries(bytes: &[u8], mode: Mode) -> impl Iterator<Item = f64> + '_ {
    bytes.chunks_exact(4).map(move |c| {
        let raw = [c[0], c[1], c[2], c[3]];
        match mode {
            Mode::Int8 => f64::from(i32::from_le_bytes(raw)),
            _ => f64::from(f32::from_le_bytes(raw)),
        }
    })
}

/// B rows regenerated and applied together, so each accumulator row is loaded and stored once
/// per `K_STEP` rows of B instead of once per row.
const K_STEP: usize = 4;

/// Rows `rows` of an exact-mode product as exact integers, row-major `rows.len() × n`; `None`
/// for fp32. The prover market's reference product (`crate::market`).
pub(crate) fn exact_rows(generator: &Generator, shape: Shape, rows: &[u32]) -> Option<Vec<i32>> {
    match reference_rows(generator, shape, rows) {
        Reference::Exact(rows) => Some(rows),
        Reference::Float(_) => None,
    }
}

/// Recomputes rows `rows` of C = A·B, regenerating B in column chunks on all cores.
fn reference_rows(generator: &Generator, shape: Shape, rows: &[u32]) -> Reference {
    if generator.mode().is_exact() {
        let a = a_rows(shape, rows, |r, dst: &mut [i8]| {
            // Exact modes always have integer elements.
            let _ = generator.fill_i8(Matrix::A, r, 0, dst);
        });
        Reference::Exact(recompute(
            shape,
            rows.len(),
            &a,
            |k, c0, b: &mut [i8]| {
                let _ = generator.fill_i8(Matrix::B, k, c0, b);
            },
            axpy4_i32,
        ))
    } else {
        Reference::Float(reference_f64(generator, shape, rows))
    }
}

/// Opened rows per register tile of the f64 kernel.
const TILE_ROWS: usize = 4;
/// Columns per register tile: two AVX-512 or four AVX2 vectors of f64 per row.
const TILE_COLS: usize = 16;
/// Rows of B converted to f64 at a time (`PANEL_K × COLUMN_CHUNK` f64 = 128 KiB, in L2).
const PANEL_K: usize = 64;

/// Rows `rows` of C = A·B in f64: f32 products are exact in f64 and only the sums round.
///
/// Per column chunk (one rayon task) B is regenerated `PANEL_K` rows at a time into an f64
/// panel, and `TILE_ROWS × TILE_COLS` register tiles of the result accumulate over the panel.
/// The summation order differs from a row-by-row dot product only in how f64 roundings fall:
/// the error of any order is at most `k · 2⁻⁵³ · Σ|aᵢbᵢ| ≤ k² · 2⁻⁵³`, below `2⁻¹⁴` of
/// [`fp32_tolerance`] for every `k ≤ 2¹⁶`.
fn reference_f64(generator: &Generator, shape: Shape, rows: &[u32]) -> Vec<f64> {
    let (k, n, s) = (shape.k as usize, shape.n as usize, rows.len());
    let groups = s.div_ceil(TILE_ROWS);
    // A packed per tile of rows: `groups` blocks of `k` coefficient tuples, padding rows zero.
    let mut a = vec![[0f64; TILE_ROWS]; groups * k];
    let mut row = vec![0f32; k];
    for (i, &r) in rows.iter().enumerate() {
        generator.fill_f32(Matrix::A, r, 0, &mut row);
        for (dst, &v) in a[(i / TILE_ROWS) * k..][..k].iter_mut().zip(&row) {
            dst[i % TILE_ROWS] = f64::from(v);
        }
    }
    let chunks: Vec<usize> = (0..n).step_by(COLUMN_CHUNK).collect();
    let parts: Vec<Vec<f64>> = chunks
        .par_iter()
        .map(|&c0| {
            let w = COLUMN_CHUNK.min(n - c0);
            let tiles = w.div_ceil(TILE_COLS);
            // `groups · TILE_ROWS` rows of `tiles` column tiles. The panel is tile-major
            // (`tiles × PANEL_K`), so the kernel walks each tile's rows contiguously rather than
            // at a stride of a whole panel row, which would alias a few L1 sets.
            let mut acc = vec![[0f64; TILE_COLS]; groups * TILE_ROWS * tiles];
            let mut panel = vec![[0f64; TILE_COLS]; PANEL_K * tiles];
            let mut b = vec![0f32; w];
            for k0 in (0..k).step_by(PANEL_K) {
                let depth = PANEL_K.min(k - k0);
                for j in 0..depth {
                    generator.fill_f32(Matrix::B, (k0 + j) as u32, c0 as u32, &mut b);
                    for (t, src) in b.chunks(TILE_COLS).enumerate() {
                        let dst = &mut panel[t * PANEL_K + j];
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = f64::from(v);
                        }
                    }
                }
                for (g, acc) in acc.chunks_exact_mut(TILE_ROWS * tiles).enumerate() {
                    let a = &a[g * k + k0..g * k + k0 + depth];
                    panel_f64(acc, a, &panel, tiles);
                }
            }
            // Drop the padding: `s × w`, row-major.
            let mut out = Vec::with_capacity(s * w);
            for r in 0..s {
                out.extend(acc[r * tiles..(r + 1) * tiles].iter().flatten().take(w));
            }
            out
        })
        .collect();
    scatter(parts, &chunks, s, n)
}

/// `acc[r][t][c] += Σⱼ a[j][r] · panel[t][j][c]` for one tile of `TILE_ROWS` rows: `acc` is
/// `TILE_ROWS × tiles` and `panel` is `tiles × PANEL_K` column tiles, of which the first
/// `a.len()` rows count. Each `TILE_ROWS × TILE_COLS` tile stays in registers over the depth.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn panel_f64(
    acc: &mut [[f64; TILE_COLS]],
    a: &[[f64; TILE_ROWS]],
    panel: &[[f64; TILE_COLS]],
    tiles: usize,
) {
    for t in 0..tiles {
        let mut tile = [[0f64; TILE_COLS]; TILE_ROWS];
        for (coeffs, b) in a.iter().zip(&panel[t * PANEL_K..]) {
            for r in 0..TILE_ROWS {
                for c in 0..TILE_COLS {
                    tile[r][c] += coeffs[r] * b[c];
                }
            }
        }
        for (r, sums) in tile.iter().enumerate() {
            for (d, v) in acc[r * tiles + t].iter_mut().zip(sums) {
                *d += v;
            }
        }
    }
}

/// [`reference_f64`] the way the verifier computed it before the blocked kernel: each opened
/// row's f64 accumulators updated four rows of B at a time. Kept as the baseline and oracle.
fn reference_f64_by_rows(generator: &Generator, shape: Shape, rows: &[u32]) -> Vec<f64> {
    let a = a_rows(shape, rows, |r, dst: &mut [f32]| generator.fill_f32(Matrix::A, r, 0, dst));
    recompute(
        shape,
        rows.len(),
        &a,
        |k, c0, b: &mut [f32]| generator.fill_f32(Matrix::B, k, c0, b),
        axpy4_f64,
    )
}

/// The sampled rows of A, row-major `rows × k`.
fn a_rows<T: Copy + Default>(shape: Shape, rows: &[u32], fill: impl Fn(u32, &mut [T])) -> Vec<T> {
    let k = shape.k as usize;
    let mut a = vec![T::default(); rows.len() * k];
    for (dst, &r) in a.chunks_exact_mut(k).zip(rows) {
        fill(r, dst);
    }
    a
}

/// `s × n` accumulators of the sampled rows times B, B regenerated chunk by chunk of columns
/// (one rayon task per chunk) and `K_STEP` rows at a time.
fn recompute<T, Acc>(
    shape: Shape,
    s: usize,
    a: &[T],
    fill_b: impl Fn(u32, u32, &mut [T]) + Sync,
    axpy4: fn(&mut [Acc], [T; K_STEP], [&[T]; K_STEP]),
) -> Vec<Acc>
where
    T: Copy + Default + Send + Sync,
    Acc: Copy + Default + Send,
{
    let (k, n) = (shape.k as usize, shape.n as usize);
    let chunks: Vec<usize> = (0..n).step_by(COLUMN_CHUNK).collect();
    let parts: Vec<Vec<Acc>> = chunks
        .par_iter()
        .map(|&c0| {
            let w = COLUMN_CHUNK.min(n - c0);
            let mut acc = vec![Acc::default(); s * w];
            let mut b = vec![T::default(); K_STEP * w];
            for k0 in (0..k).step_by(K_STEP) {
                let step = K_STEP.min(k - k0);
                b.fill(T::default());
                for (j, row) in b.chunks_exact_mut(w).take(step).enumerate() {
                    fill_b((k0 + j) as u32, c0 as u32, row);
                }
                let brows: [&[T]; K_STEP] = std::array::from_fn(|j| &b[j * w..(j + 1) * w]);
                for (i, acc_row) in acc.chunks_exact_mut(w).enumerate() {
                    // Rows of B past `k` are zero, so their coefficients do not matter.
                    let coeff = std::array::from_fn(|j| {
                        a.get(i * k + k0 + j).copied().filter(|_| j < step).unwrap_or_default()
                    });
                    axpy4(acc_row, coeff, brows);
                }
            }
            acc
        })
        .collect();
    scatter(parts, &chunks, s, n)
}

/// Reassembles per-column-chunk `s × w` blocks into one row-major `s × n` matrix.
fn scatter<T: Copy + Default>(parts: Vec<Vec<T>>, chunks: &[usize], s: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); s * n];
    for (part, &c0) in parts.iter().zip(chunks) {
        let w = part.len() / s.max(1);
        for (i, src) in part.chunks_exact(w.max(1)).enumerate().take(s) {
            out[i * n + c0..i * n + c0 + w].copy_from_slice(src);
        }
    }
    out
}

/// `acc += Σⱼ a[j] · b[j]` in exact i32.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn axpy4_i32(acc: &mut [i32], a: [i8; K_STEP], b: [&[i8]; K_STEP]) {
    let a = a.map(i32::from);
    for (i, d) in acc.iter_mut().enumerate() {
        *d += a[0] * i32::from(b[0][i])
            + a[1] * i32::from(b[1][i])
            + a[2] * i32::from(b[2][i])
            + a[3] * i32::from(b[3][i]);
    }
}

/// `acc += Σⱼ a[j] · b[j]` in f64 (f32 products are exact in f64).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn axpy4_f64(acc: &mut [f64], a: [f32; K_STEP], b: [&[f32]; K_STEP]) {
    let a = a.map(f64::from);
    for (i, d) in acc.iter_mut().enumerate() {
        *d += a[0] * f64::from(b[0][i])
            + a[1] * f64::from(b[1][i])
            + a[2] * f64::from(b[2][i])
            + a[3] * f64::from(b[3][i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitment::{Commitment, MultiProof};
    use crate::freivalds::PRIME;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    const EXACT: [Mode; 3] = [Mode::Int8, Mode::Fp16, Mode::Bf16];
    const RAGGED: [Shape; 5] = [
        Shape { m: 1, k: 1, n: 1 },
        Shape { m: 7, k: 33, n: 19 },
        Shape { m: 5, k: 130, n: 3 },
        Shape { m: 9, k: 3, n: 300 },
        Shape { m: 6, k: 70, n: 257 },
    ];

    /// The product C = A·B from single elements: i64 sums for the exact modes, sequential f64
    /// sums for fp32, as canonical row bytes.
    fn product(mode: Mode, shape: Shape, seed: &DeviceSeed) -> Vec<Vec<u8>> {
        let g = Generator::new(seed, mode);
        (0..shape.m)
            .map(|r| {
                (0..shape.n)
                    .flat_map(|c| {
                        let v: f64 = (0..shape.k)
                            .map(|i| g.element(Matrix::A, r, i) * g.element(Matrix::B, i, c))
                            .sum();
                        match mode {
                            Mode::Int8 => (v as i32).to_le_bytes(),
                            _ => (v as f32).to_le_bytes(),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Commits `rows` and opens `sampled`.
    fn open(seed: &DeviceSeed, rows: &[Vec<u8>], sampled: &[u32]) -> (Root, Openings) {
        let leaves: Vec<_> =
            rows.iter().enumerate().map(|(r, b)| leaf_hash(seed, r as u32, b)).collect();
        let tree = Commitment::from_leaves(&leaves).expect("rows");
        let openings = Openings {
            rows: sampled
                .iter()
                .map(|&r| RowOpening { row: r, bytes: rows[r as usize].clone() })
                .collect(),
            proof: tree.prove(sampled).expect("in range"),
        };
        (tree.root(), openings)
    }

    /// Both verifiers' verdicts on `rows` opened at `sampled`.
    fn verdicts(
        mode: Mode,
        shape: Shape,
        seed: &DeviceSeed,
        rows: &[Vec<u8>],
        sampled: &[u32],
        rng: u64,
    ) -> (Verdict, Verdict) {
        let (root, o) = open(seed, rows, sampled);
        let mut rng = ChaCha20Rng::seed_from_u64(rng);
        (
            verify_openings_with(mode, shape, seed, &root, sampled, &o, &mut rng),
            verify_openings_by_recompute(mode, shape, seed, &root, sampled, &o),
        )
    }

    /// Adds `delta` to entry `col` of a row.
    fn bump(mode: Mode, row: &mut [u8], col: usize, f: impl Fn(f64) -> f64) {
        let at = &mut row[4 * col..4 * col + 4];
        let v = row_entries(at, mode).next().expect("one entry");
        let bytes = match mode {
            Mode::Int8 => (f(v) as i32).to_le_bytes(),
            _ => (f(v) as f32).to_le_bytes(),
        };
        at.copy_from_slice(&bytes);
    }

    #[test]
    fn honest_rows_are_accepted_on_ragged_shapes() {
        for mode in Mode::ALL {
            for (i, shape) in RAGGED.into_iter().enumerate() {
                let seed = DeviceSeed([i as u8 + 1; 32]);
                let rows = product(mode, shape, &seed);
                let all: Vec<u32> = (0..shape.m).collect();
                let (fast, full) = verdicts(mode, shape, &seed, &rows, &all, i as u64);
                assert_eq!((fast, full), (Verdict::Accepted, Verdict::Accepted), "{mode} {shape}");
            }
        }
    }

    #[test]
    fn a_single_wrong_entry_is_named_by_row_and_column() {
        let shape = Shape { m: 6, k: 40, n: 23 };
        for mode in EXACT {
            let seed = DeviceSeed([7; 32]);
            let mut rows = product(mode, shape, &seed);
            let expected = row_entries(&rows[3], mode).nth(17).expect("n > 17");
            bump(mode, &mut rows[3], 17, |v| v + 1.0);
            let want = Verdict::Rejected(RejectReason::Mismatch {
                row: 3,
                col: 17,
                expected,
                got: expected + 1.0,
            });
            for rng in 0..20 {
                let (fast, full) = verdicts(mode, shape, &seed, &rows, &[1, 3, 5], rng);
                assert_eq!((&fast, &full), (&want, &want), "{mode}");
            }
        }
    }

    /// An entry off by p is congruent mod p, so only the range check can catch it; it must.
    #[test]
    fn an_entry_off_by_the_modulus_is_rejected() {
        let shape = Shape { m: 4, k: 40, n: 9 };
        let seed = DeviceSeed([8; 32]);
        let mut rows = product(Mode::Int8, shape, &seed);
        let expected = row_entries(&rows[2], Mode::Int8).nth(4).expect("n > 4");
        let p = PRIME as f64;
        let aliased = if expected >= 0.0 { expected - p } else { expected + p };
        bump(Mode::Int8, &mut rows[2], 4, |_| aliased);
        assert_eq!(row_entries(&rows[2], Mode::Int8).nth(4), Some(aliased), "fits in i32");
        let (fast, _) = verdicts(Mode::Int8, shape, &seed, &rows, &[0, 2], 1);
        assert_eq!(
            fast,
            Verdict::Rejected(RejectReason::Mismatch { row: 2, col: 4, expected, got: aliased })
        );
        // The largest in-range entry is caught too when it is wrong.
        let big = (16384 * shape.k) as f64;
        bump(Mode::Int8, &mut rows[2], 4, |_| big);
        let (fast, full) = verdicts(Mode::Int8, shape, &seed, &rows, &[2], 2);
        assert_eq!(fast, full);
        assert!(matches!(fast, Verdict::Rejected(RejectReason::Mismatch { col: 4, .. })));
    }

    #[test]
    fn non_integer_and_non_finite_entries_are_rejected_in_fp16_and_bf16() {
        let shape = Shape { m: 3, k: 12, n: 8 };
        for mode in [Mode::Fp16, Mode::Bf16] {
            for bad in [|v: f64| v + 0.5, |_| f64::NAN, |_| f64::INFINITY, |v| v - 1e-3] {
                let seed = DeviceSeed([4; 32]);
                let mut rows = product(mode, shape, &seed);
                bump(mode, &mut rows[1], 6, bad);
                let (fast, full) = verdicts(mode, shape, &seed, &rows, &[0, 1, 2], 3);
                assert!(
                    matches!(
                        fast,
                        Verdict::Rejected(RejectReason::Mismatch { row: 1, col: 6, .. })
                    ),
                    "{mode}: {fast:?}"
                );
                assert_eq!(format!("{fast:?}"), format!("{full:?}"), "NaN-safe equality");
            }
        }
    }

    #[test]
    fn negative_zero_equals_zero() {
        let shape = Shape { m: 4, k: 1, n: 64 };
        for mode in [Mode::Fp16, Mode::Bf16] {
            let seed = DeviceSeed([5; 32]);
            let mut rows = product(mode, shape, &seed);
            let mut flipped = 0;
            for row in &mut rows {
                for entry in row.chunks_exact_mut(4) {
                    if entry == 0f32.to_le_bytes() {
                        entry.copy_from_slice(&(-0f32).to_le_bytes());
                        flipped += 1;
                    }
                }
            }
            assert!(flipped > 0, "{mode}: the test needs zero entries");
            let (fast, full) = verdicts(mode, shape, &seed, &rows, &[0, 1, 2, 3], 4);
            assert_eq!((fast, full), (Verdict::Accepted, Verdict::Accepted), "{mode}");
        }
    }

    /// Random corruptions of random products: the Freivalds verifier and full recomputation
    /// reach the same verdict (a wrong row passing Freivalds has probability ≤ 2^-61.99).
    #[test]
    fn freivalds_agrees_with_full_recomputation() {
        let mut r = ChaCha20Rng::seed_from_u64(99);
        for i in 0..300 {
            let mode = EXACT[i % 3];
            let shape = Shape {
                m: r.random_range(1..12),
                k: r.random_range(1..80),
                n: r.random_range(1..40),
            };
            let seed = DeviceSeed(r.random());
            let mut rows = product(mode, shape, &seed);
            let row = r.random_range(0..shape.m) as usize;
            let col = r.random_range(0..shape.n) as usize;
            match r.random_range(0..4) {
                0 => {}
                1 => bump(mode, &mut rows[row], col, |v| v - 1.0),
                2 => r.fill(&mut rows[row][..]),
                _ => rows[row].fill(0),
            }
            let sampled: Vec<u32> = (0..shape.m).filter(|_| r.random_bool(0.7)).collect();
            if sampled.is_empty() {
                continue;
            }
            let (fast, full) = verdicts(mode, shape, &seed, &rows, &sampled, i as u64);
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{mode} {shape} case {i}");
        }
    }

    /// The blocked fp32 reference equals sequential f64 sums up to f64 rounding, across ragged
    /// row counts (tiles of 4), column counts (tiles of 16, chunks of 256) and depths (panels
    /// of 64).
    #[test]
    fn blocked_fp32_reference_matches_sequential_sums() {
        let seed = DeviceSeed([6; 32]);
        let g = Generator::new(&seed, Mode::Fp32);
        for shape in
            [Shape { m: 9, k: 130, n: 300 }, Shape { m: 5, k: 1, n: 17 }, Shape::square(65)]
        {
            let rows: Vec<u32> = (0..shape.m).filter(|r| r.is_multiple_of(2) || *r == 3).collect();
            let got = reference_f64(&g, shape, &rows);
            let old = reference_f64_by_rows(&g, shape, &rows);
            for (i, &r) in rows.iter().enumerate() {
                for c in 0..shape.n {
                    let want: f64 = (0..shape.k)
                        .map(|j| g.element(Matrix::A, r, j) * g.element(Matrix::B, j, c))
                        .sum();
                    let at = i * shape.n as usize + c as usize;
                    let slack = f64::from(shape.k) * f64::EPSILON;
                    assert!((got[at] - want).abs() <= slack, "{shape} row {r} col {c}");
                    assert!((old[at] - want).abs() <= slack, "{shape} row {r} col {c}");
                }
            }
        }
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop::sample::select(Mode::ALL.to_vec())
    }

    proptest! {
        /// Whatever a worker sends, the verifier answers with a verdict, never a panic, and never
        /// accepts openings that were not derived from the committed product.
        #[test]
        fn arbitrary_openings_never_panic_and_are_never_accepted(
            mode in mode(),
            m in 1u32..20, k in 1u32..20, n in 1u32..20,
            sampled in prop::collection::btree_set(0u32..25, 0..6),
            rows in prop::collection::vec((0u32..25, prop::collection::vec(any::<u8>(), 0..90)), 0..6),
            proof in prop::collection::vec(any::<[u8; 32]>(), 0..8),
            root in any::<[u8; 32]>(),
        ) {
            let sampled: Vec<u32> = sampled.into_iter().collect();
            let openings = Openings {
                rows: rows.into_iter().map(|(row, bytes)| RowOpening { row, bytes }).collect(),
                proof: MultiProof(proof),
            };
            let verdict = verify_openings(
                mode, Shape { m, k, n }, &DeviceSeed([1; 32]), &Root(root), &sampled, &openings,
            );
            prop_assert!(!verdict.is_accepted() || sampled.is_empty());
        }
    }
}
