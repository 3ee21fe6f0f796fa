//! A product held in host memory, shared by every backend that brings C back to the host: it
//! hashes the rows to leaves (in parallel) and serves openings from the same bytes.

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

/// C, row-major, `rows × n`.
pub(crate) struct HostProduct<T> {
    n: usize,
    rows: u32,
    data: Vec<T>,
}

impl<T: Entry> HostProduct<T> {
    /// Wraps a row-major product of `rows` rows of `n` entries.
    pub(crate) fn new(data: Vec<T>, n: usize, rows: u32) -> Self {
        debug_assert_eq!(data.len(), n * rows as usize);
        Self { n, rows, data }
    }

    /// Every row's leaf, rows hashed in parallel. On little-endian hosts the entries already are
    /// the canonical bytes and are hashed in place.
    pub(crate) fn leaves(&self, seed: &DeviceSeed) -> Vec<Leaf> {
        self.data
            .par_chunks(self.n.max(1))
            .enumerate()
            .map(|(row, values)| {
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
    /// Hashes the rows (timed as the hash phase) and hands the product over for openings.
    pub(crate) fn into_execution(self, seed: &DeviceSeed, mut timings: PhaseTimings) -> Execution {
        let started = Instant::now();
        let leaves = self.leaves(seed);
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
