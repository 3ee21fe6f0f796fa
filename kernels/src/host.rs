//! A product held in host memory, shared by every backend that brings C back to the host: it
//! canonicalises and hashes the rows to leaves (in parallel) and serves openings from the same
//! bytes.

use rayon::prelude::*;
use veribench_protocol::{DeviceSeed, Leaf, leaf_hash};

use std::time::Instant;

use crate::backend::{BackendError, Execution, PhaseTimings, RowSource};

/// A 4-byte product entry: i32 (int8 mode), f32, or the raw u32 words a GPU hands back.
pub(crate) trait Entry: bytemuck::Pod + Send + Sync {
    /// The canonical little-endian encoding.
    fn le_bytes(self) -> [u8; 4];
}

macro_rules! entry {
    ($($t:ty),*) => {$(
        impl Entry for $t {
            fn le_bytes(self) -> [u8; 4] {
                self.to_le_bytes()
            }
        }
    )*};
}
entry!(i32, f32, u32);

/// The bit pattern of f32 -0.
const NEGATIVE_ZERO: u32 = 0x8000_0000;

/// What a product's entries are, which decides whether they must be canonicalised before they
/// are hashed. SPEC's row bytes are unique: a float entry equal to zero is +0, but IEEE
/// arithmetic yields -0 for a sum of -0 terms only (zero times a negative element), which a GEMM
/// writes when it does not start its accumulators at +0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entries {
    /// Already canonical, hashed as they are: i32 (int8 mode, where 0x8000_0000 is a number),
    /// or f32 words a device kernel has canonicalised itself.
    Canonical,
    /// f32 bit patterns as a GEMM wrote them: every -0 is rewritten to +0 in place.
    FloatBits,
    /// Exact i32 sums of a float mode whose product is integral (fp16/bf16 computed by the int8
    /// GEMM): each is replaced in place by the bit pattern of its f32 value, which is exact for
    /// |v| ≤ 2²⁴ (the caller guarantees it). i32 0 converts to +0, so no -0 can arise. The
    /// i32 words then hold f32 bit patterns, whose little-endian bytes are the canonical ones.
    IntsAsFloat,
}

/// Rewrites every -0 of a row of f32 bit patterns to +0. The scan is a read-only vectorised
/// pass over a row about to be hashed (so it brings the row into cache for the hash); a row is
/// written only when it holds a -0, so clean cache lines stay clean.
fn positive_zeros(words: &mut [u32]) {
    if words.iter().fold(false, |found, &w| found | (w == NEGATIVE_ZERO)) {
        for w in words.iter_mut().filter(|w| **w == NEGATIVE_ZERO) {
            *w = 0;
        }
    }
}

/// Rewrites a row of exact integer sums to the bit patterns of their f32 values, in place
/// (one vectorised conversion per lane, on a row about to be hashed and so already in cache).
fn ints_to_float_bits(words: &mut [i32]) {
    for w in words {
        // Exact for |w| ≤ 2²⁴ (caller contract); 0 becomes +0.0.
        *w = (*w as f32).to_bits() as i32;
    }
}

/// C, row-major, `rows × n`. Only [`HostProduct::into_execution`] turns it into a
/// [`RowSource`], after every row has been canonicalised, so openings serve the bytes the
/// leaves hashed.
pub(crate) struct HostProduct<T> {
    n: usize,
    rows: u32,
    entries: Entries,
    data: Vec<T>,
}

impl<T: Entry> HostProduct<T> {
    /// Wraps a row-major product of `rows` rows of `n` entries of kind `entries`.
    pub(crate) fn new(data: Vec<T>, n: usize, rows: u32, entries: Entries) -> Self {
        debug_assert_eq!(data.len(), n * rows as usize);
        Self { n, rows, entries, data }
    }

    /// Every row's leaf, rows canonicalised (see [`Entries`]) and hashed in parallel, each row
    /// canonicalised right before it is hashed, while it is in cache. On little-endian hosts
    /// the entries then are the canonical bytes and are hashed in place.
    fn hash_rows(&mut self, seed: &DeviceSeed) -> Vec<Leaf> {
        let entries = self.entries;
        self.data
            .par_chunks_mut(self.n.max(1))
            .enumerate()
            .map(|(row, values)| {
                match entries {
                    Entries::Canonical => {}
                    Entries::FloatBits => positive_zeros(bytemuck::cast_slice_mut(values)),
                    Entries::IntsAsFloat => ints_to_float_bits(bytemuck::cast_slice_mut(values)),
                }
                if cfg!(target_endian = "little") {
                    leaf_hash(seed, row as u32, bytemuck::cast_slice(values))
                } else {
                    leaf_hash(seed, row as u32, &row_bytes(values))
                }
            })
            .collect()
    }
}

impl<T: Entry + 'static> HostProduct<T> {
    /// Canonicalises and hashes the rows (timed as the hash phase) and hands the product over
    /// for openings.
    pub(crate) fn into_execution(
        mut self,
        seed: &DeviceSeed,
        mut timings: PhaseTimings,
    ) -> Execution {
        let started = Instant::now();
        let leaves = self.hash_rows(seed);
        timings.hash += started.elapsed();
        Execution { leaves, timings, product: Box::new(self) }
    }
}

fn row_bytes<T: Entry>(values: &[T]) -> Vec<u8> {
    values.iter().flat_map(|v| v.le_bytes()).collect()
}

impl<T: Entry> RowSource for HostProduct<T> {
    fn row_bytes(&self, row: u32) -> Result<Vec<u8>, BackendError> {
        if row >= self.rows {
            return Err(BackendError::RowOutOfRange { row, rows: self.rows });
        }
        let at = row as usize * self.n..(row as usize + 1) * self.n;
        Ok(row_bytes(&self.data[at]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: DeviceSeed = DeviceSeed([7; 32]);

    /// Leaves and openings of a 2 × 3 product whose entries are `words`.
    fn run<T: Entry + 'static>(data: Vec<T>, entries: Entries) -> (Vec<Leaf>, Vec<Vec<u8>>) {
        let execution =
            HostProduct::new(data, 3, 2, entries).into_execution(&SEED, PhaseTimings::default());
        let rows = (0..2).map(|r| execution.product.row_bytes(r).expect("row")).collect();
        (execution.leaves, rows)
    }

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn float_bits_are_canonicalised_before_hashing_and_opening() {
        let f = vec![-0.0f32, 1.5, 0.0, -2.0, -0.0, -0.0];
        let canonical = [[0, 1.5f32.to_bits(), 0], [(-2.0f32).to_bits(), 0, 0]];
        for (leaves, rows) in [
            run(f.clone(), Entries::FloatBits),
            run(f.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(), Entries::FloatBits),
        ] {
            for (r, words) in canonical.iter().enumerate() {
                assert_eq!(rows[r], le(words), "row {r}");
                assert_eq!(leaves[r], leaf_hash(&SEED, r as u32, &le(words)), "row {r}");
            }
        }
    }

    #[test]
    fn ints_as_float_are_hashed_and_opened_as_their_f32_values() {
        let ints = vec![0, -1, 1 << 24, -(1 << 24), 257, -12];
        let (leaves, rows) = run(ints.clone(), Entries::IntsAsFloat);
        for (r, chunk) in ints.chunks(3).enumerate() {
            let words: Vec<u32> = chunk.iter().map(|&v| (v as f32).to_bits()).collect();
            assert_eq!(rows[r], le(&words), "row {r}");
            assert_eq!(leaves[r], leaf_hash(&SEED, r as u32, &le(&words)), "row {r}");
        }
        // Zero is +0 and ±2²⁴ survive exactly.
        assert_eq!(rows[0][..4], [0; 4]);
        assert_eq!(f32::from_le_bytes(rows[0][8..12].try_into().expect("4 bytes")), 16_777_216.0);
    }

    #[test]
    fn canonical_entries_are_hashed_as_they_are() {
        // i32::MIN has the bit pattern of -0: in int8 mode it is a number and must survive.
        let (leaves, rows) = run(vec![i32::MIN, 0, 1, -1, i32::MIN, 5], Entries::Canonical);
        let words = [[NEGATIVE_ZERO, 0, 1], [u32::MAX, NEGATIVE_ZERO, 5]];
        for (r, words) in words.iter().enumerate() {
            assert_eq!(rows[r], le(words), "row {r}");
            assert_eq!(leaves[r], leaf_hash(&SEED, r as u32, &le(words)), "row {r}");
        }
    }
}
