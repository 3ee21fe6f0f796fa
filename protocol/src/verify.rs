//! Deciding whether a worker's openings are right.
//!
//! Strategy: every sampled row is recomputed in full from the generator and compared entry by
//! entry. For the exact modes (int8, and fp16/bf16 whose inputs are small integers) the reference
//! is computed in i32 and must match exactly; for fp32 it is computed in f64 (exact products, a
//! negligible summation error) and every entry must lie within [`fp32_tolerance`]. Recomputing
//! `s` rows costs `s·k·n` multiply-adds plus regenerating B (`k·n` elements); measured, the
//! multiply-adds dominate (halving `s` halves the time), so the cost is ≈ `s/m` of the worker's
//! GEMM done at autovectorised-loop speed. A Freivalds check (`C_r·x` against `A_r·(B·x)`) would
//! cost `k·n` instead, at the price of checking random combinations of entries rather than each
//! entry; `SPEC.md` §7 gives the numbers and the trade-off.

use multiversion::multiversion;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::challenge::{Mode, Shape};
use crate::commitment::{MultiProof, leaf_hash, verify_multiproof};
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
/// with `mode` and `shape` whose matrices come from `seed`.
pub fn verify_openings(
    mode: Mode,
    shape: Shape,
    seed: &DeviceSeed,
    root: &Root,
    sampled: &[u32],
    openings: &Openings,
) -> Verdict {
    let asked = sampled.len() as u32;
    if openings.rows.len() != sampled.len()
        || openings.rows.iter().zip(sampled).any(|(o, &s)| o.row != s)
    {
        return Verdict::Rejected(RejectReason::WrongRows { asked });
    }
    let row_bytes = shape.row_bytes(mode);
    if let Some(bad) = openings.rows.iter().find(|o| o.bytes.len() != row_bytes) {
        return Verdict::Rejected(RejectReason::RowLength {
            row: bad.row,
            expected: row_bytes as u32,
            got: u32::try_from(bad.bytes.len()).unwrap_or(u32::MAX),
        });
    }
    let leaves: Vec<_> = openings.rows.iter().map(|o| leaf_hash(seed, o.row, &o.bytes)).collect();
    if !verify_multiproof(root, shape.m, sampled, &leaves, &openings.proof) {
        return Verdict::Rejected(RejectReason::BadProof);
    }
    let generator = Generator::new(seed, mode);
    let n = shape.n as usize;
    match reference_rows(&generator, shape, sampled) {
        Reference::Exact(expected) => {
            for (opening, want) in openings.rows.iter().zip(expected.chunks_exact(n)) {
                let got = row_entries(&opening.bytes, mode);
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
            for (opening, want) in openings.rows.iter().zip(expected.chunks_exact(n)) {
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
        let a = a_rows(shape, rows, |r, dst: &mut [f32]| generator.fill_f32(Matrix::A, r, 0, dst));
        Reference::Float(recompute(
            shape,
            rows.len(),
            &a,
            |k, c0, b: &mut [f32]| {
                generator.fill_f32(Matrix::B, k, c0, b);
            },
            axpy4_f64,
        ))
    }
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
    use crate::commitment::MultiProof;
    use proptest::prelude::*;

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
