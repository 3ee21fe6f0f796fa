//! Launch geometry and buffer sizes of every CUDA kernel: plain arithmetic, no driver, shared
//! by the backend and by `veribench-cuda-host`, whose tests run the real `.cu` kernels on the
//! host under exactly these grids (so the index math the backend relies on is tested too).

use cudarc::driver::LaunchConfig;
use veribench_protocol::Mode;

use super::nvrtc;

/// A kernel launch's grid and block dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
}

impl From<Geometry> for LaunchConfig {
    fn from(g: Geometry) -> Self {
        LaunchConfig { grid_dim: g.grid, block_dim: g.block, shared_mem_bytes: 0 }
    }
}

/// The largest grid.y (and grid.x of the grid-stride kernels) launched.
pub const MAX_GRID: u32 = 65_535;

/// Elements one generator thread writes: one per stream byte (16) for int8, fp16 and bf16, one
/// per stream word (4) for fp32.
pub fn generator_per_block(mode: Mode) -> u32 {
    match mode {
        Mode::Int8 | Mode::Fp16 | Mode::Bf16 => 16,
        Mode::Fp32 => 4,
    }
}

/// `vb_generate_*` over a `rows × cols` matrix: grid.x covers the fast index (blocks of a row,
/// or rows when transposed), grid.y strides over the slow one.
pub fn generator(mode: Mode, rows: u32, cols: u32, transposed: bool) -> Geometry {
    let blocks_per_row = cols.div_ceil(generator_per_block(mode));
    let (fast, slow) = if transposed { (rows, blocks_per_row) } else { (blocks_per_row, rows) };
    Geometry {
        grid: (fast.div_ceil(nvrtc::GENERATOR_THREADS).max(1), slow.clamp(1, MAX_GRID), 1),
        block: (nvrtc::GENERATOR_THREADS, 1, 1),
    }
}

/// `vb_stream_words` for `count` words: one thread per word.
pub fn stream_words(count: u32) -> Geometry {
    Geometry { grid: (count.div_ceil(64).max(1), 1, 1), block: (64, 1, 1) }
}

/// `vb_positive_zeros` over `quads` uint4s (grid-stride beyond [`MAX_GRID`] blocks).
pub fn positive_zeros(quads: u64) -> Geometry {
    let blocks = quads.div_ceil(u64::from(nvrtc::PRODUCT_THREADS)).clamp(1, u64::from(MAX_GRID));
    Geometry { grid: (blocks as u32, 1, 1), block: (nvrtc::PRODUCT_THREADS, 1, 1) }
}

/// Words of a leaf's message beyond its row: the device seed (8) and the row index (1).
pub const LEAF_TAIL_WORDS: u64 = 9;
/// Words of a BLAKE3 chunk (1 KiB).
pub const LEAF_CHUNK_WORDS: u64 = 256;
/// Words of one chaining value or leaf.
pub const CV_WORDS: usize = 8;

/// BLAKE3 chunks of the leaf message of a row of `n` entries (`vb_leaf_chunk_count`).
pub fn leaf_chunks_per_row(n: u32) -> u32 {
    // At most (2^32 + 8) / 256 + 1, which fits.
    (u64::from(n) + LEAF_TAIL_WORDS).div_ceil(LEAF_CHUNK_WORDS) as u32
}

/// Words of `vb_leaf_chunks`' scratch for `rows` rows of `n` entries: one chaining value per
/// chunk, none when a row's message is a single chunk (the roots kernel hashes it alone).
pub fn leaf_scratch_words(rows: u32, n: u32) -> usize {
    let chunks = leaf_chunks_per_row(n);
    if chunks < 2 { 0 } else { rows as usize * chunks as usize * CV_WORDS }
}

/// `vb_leaf_chunks` over `rows` rows of `n` entries, or `None` when their messages are single
/// chunks (nothing to do).
pub fn leaf_chunks(rows: u32, n: u32) -> Option<Geometry> {
    let chunks = leaf_chunks_per_row(n);
    (chunks >= 2 && rows > 0).then(|| grid_stride(u64::from(rows) * u64::from(chunks)))
}

/// `vb_leaf_roots` over `rows` rows: one thread per row.
pub fn leaf_roots(rows: u32) -> Geometry {
    grid_stride(u64::from(rows))
}

/// A one-dimensional grid-stride launch of the leaf kernels over `threads` work items.
fn grid_stride(threads: u64) -> Geometry {
    let blocks = threads.div_ceil(u64::from(nvrtc::LEAF_THREADS)).clamp(1, u64::from(MAX_GRID));
    Geometry { grid: (blocks as u32, 1, 1), block: (nvrtc::LEAF_THREADS, 1, 1) }
}
