//! The CUDA kernels of `veribench-kernels` (`kernels/cuda/*.cu`), compiled for the host by
//! `build.rs` through a shim of the CUDA built-ins (`harness/cuda_shim.h`) and run under
//! emulated launches (`harness/harness.cpp`): every `__global__` function is called once per
//! (block, thread) of the grid the backend would launch ([`veribench_kernels::cuda::launch`]).
//! So the kernels' own text — generator, BLAKE3 leaves, zero fix-up — and their index math are
//! compared with the protocol crate bit for bit on machines without a GPU (`tests/`). What this
//! cannot check is the device compiler; the backend's start-up self-test covers that.
//!
//! Safe wrappers: buffers are sized here from the same geometry, so the kernels never write
//! outside them.

use veribench_kernels::cuda::key_words;
use veribench_kernels::cuda::launch::{self, CV_WORDS, Geometry};
use veribench_protocol::{DeviceSeed, Leaf, Matrix, Mode};

/// Refused arguments (the kernels would read or write outside the buffers).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    /// A leading dimension or row stride below the row length.
    #[error("leading dimension {ld} is below the {len} elements of a stored row")]
    Stride {
        /// The leading dimension or stride given.
        ld: u64,
        /// The row (or, transposed, column) length it must cover.
        len: u64,
    },
    /// A buffer shorter than the launch reads or writes.
    #[error("buffer of {have} words, the launch needs {need}")]
    Buffer {
        /// Words the launch touches.
        need: u64,
        /// Words given.
        have: u64,
    },
    /// A context string longer than one BLAKE3 chunk.
    #[error("context strings of more than 1024 bytes are not supported")]
    Context,
    /// `vb_positive_zeros` works on whole uint4s.
    #[error("{0} words are not a whole number of uint4s")]
    NotQuads(usize),
    /// A matrix too large to hold in memory here.
    #[error("a matrix of {0} elements does not fit in memory")]
    TooLarge(u64),
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawGeometry {
    grid: [u32; 3],
    block: [u32; 3],
}

impl From<Geometry> for RawGeometry {
    fn from(g: Geometry) -> Self {
        Self { grid: [g.grid.0, g.grid.1, g.grid.2], block: [g.block.0, g.block.1, g.block.2] }
    }
}

unsafe extern "C" {
    fn vbh_generate(
        g: RawGeometry,
        mode: u32,
        k0: u32,
        k1: u32,
        k2: u32,
        k3: u32,
        tag: u32,
        rows: u32,
        cols: u32,
        ld: u64,
        transposed: u32,
        out: *mut core::ffi::c_void,
    ) -> i32;
    fn vbh_stream_words(
        g: RawGeometry,
        k0: u32,
        k1: u32,
        k2: u32,
        k3: u32,
        tag: u32,
        row: u32,
        count: u32,
        out: *mut u32,
    );
    fn vbh_positive_zeros(g: RawGeometry, c: *mut u32, quads: u64);
    #[allow(clippy::too_many_arguments)]
    fn vbh_leaves(
        chunks: *const RawGeometry,
        roots: RawGeometry,
        c: *const u32,
        stride: u64,
        n: u32,
        rows: u32,
        first_row: u32,
        seed: *const u32,
        scratch: *mut u32,
        out: *mut u32,
    );
    fn vbh_leaf_key(out: *mut u32);
    fn vbh_context_key(context: *const u8, len: u64, out: *mut u32) -> i32;
}

/// How a generated matrix is stored: `rows × cols` in SPEC terms, element `(i, j)` at
/// `i·ld + j`, or at `j·ld + i` when `transposed` (the backend's Bᵀ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Rows of the matrix (SPEC: A is m × k, B is k × n).
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Leading dimension in elements.
    pub ld: u64,
    /// Column-major storage.
    pub transposed: bool,
}

impl Layout {
    /// Elements of the buffer: every stored row (column when transposed) `ld` long.
    pub fn elements(&self) -> u64 {
        let lines = if self.transposed { self.cols } else { self.rows };
        u64::from(lines) * self.ld
    }

    /// Where element `(i, j)` is stored.
    pub fn index(&self, i: u32, j: u32) -> u64 {
        if self.transposed {
            u64::from(j) * self.ld + u64::from(i)
        } else {
            u64::from(i) * self.ld + u64::from(j)
        }
    }
}

/// Bytes of one element of `mode`'s A and B.
pub fn element_bytes(mode: Mode) -> usize {
    match mode {
        Mode::Int8 => 1,
        Mode::Fp16 | Mode::Bf16 => 2,
        Mode::Fp32 => 4,
    }
}

/// `vb_generate_<mode>` with key `key` and counter tag `matrix.tag()` over `layout`, under the
/// backend's grid ([`launch::generator`]). Returns the buffer's bytes, every byte the kernel
/// does not write (padding) left at `fill`.
pub fn generate(
    mode: Mode,
    key: [u32; 4],
    matrix: Matrix,
    layout: Layout,
    fill: u8,
) -> Result<Vec<u8>, HostError> {
    let line = if layout.transposed { layout.rows } else { layout.cols };
    if layout.ld < u64::from(line) {
        return Err(HostError::Stride { ld: layout.ld, len: u64::from(line) });
    }
    let esz = element_bytes(mode);
    let elements = layout.elements();
    let bytes = usize::try_from(elements)
        .ok()
        .and_then(|e| e.checked_mul(esz))
        .ok_or(HostError::TooLarge(elements))?;
    // u32 storage: aligned for every element type the kernels store.
    let mut words = vec![u32::from_ne_bytes([fill; 4]); bytes.div_ceil(4)];
    let g = launch::generator(mode, layout.rows, layout.cols, layout.transposed);
    let mode_id = match mode {
        Mode::Int8 => 0,
        Mode::Fp16 => 1,
        Mode::Bf16 => 2,
        Mode::Fp32 => 3,
    };
    // SAFETY: the kernel writes elements (i, j) < (rows, cols) at `layout.index(i, j)`, all below
    // `elements` since ld covers a stored line; the buffer holds `elements` elements of `esz`
    // bytes, 4-byte aligned.
    let status = unsafe {
        vbh_generate(
            g.into(),
            mode_id,
            key[0],
            key[1],
            key[2],
            key[3],
            matrix.tag(),
            layout.rows,
            layout.cols,
            layout.ld,
            u32::from(layout.transposed),
            words.as_mut_ptr().cast(),
        )
    };
    debug_assert_eq!(status, 0);
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    out.truncate(bytes);
    Ok(out)
}

/// `vb_stream_words`: the first `count` stream words of `row` of the matrix keyed `key` with
/// counter tag `tag`, under the backend's grid.
pub fn stream_words(key: [u32; 4], tag: u32, row: u32, count: u32) -> Vec<u32> {
    let mut out = vec![0u32; count as usize];
    // SAFETY: the kernel writes out[t] for t < count only.
    unsafe {
        vbh_stream_words(
            launch::stream_words(count).into(),
            key[0],
            key[1],
            key[2],
            key[3],
            tag,
            row,
            count,
            out.as_mut_ptr(),
        )
    };
    out
}

/// `vb_positive_zeros` over `words` in place, under the backend's grid or `geometry`.
pub fn positive_zeros(words: &mut [u32], geometry: Option<Geometry>) -> Result<(), HostError> {
    if !words.len().is_multiple_of(4) {
        return Err(HostError::NotQuads(words.len()));
    }
    let quads = (words.len() / 4) as u64;
    let g = geometry.unwrap_or_else(|| launch::positive_zeros(quads));
    // SAFETY: the kernel touches quads 0 .. quads, i.e. exactly `words`.
    unsafe { vbh_positive_zeros(g.into(), words.as_mut_ptr(), quads) };
    Ok(())
}

/// `vb_leaf_chunks` then `vb_leaf_roots` under the backend's grids: the leaves of `rows` rows
/// of `n` entries stored `stride` words apart from `c[0]`, the first being product row
/// `first_row`.
pub fn leaves(
    c: &[u32],
    stride: u64,
    n: u32,
    rows: u32,
    first_row: u32,
    seed: &DeviceSeed,
) -> Result<Vec<Leaf>, HostError> {
    if stride < u64::from(n) {
        return Err(HostError::Stride { ld: stride, len: u64::from(n) });
    }
    let need = match rows {
        0 => 0,
        _ => u64::from(rows - 1) * stride + u64::from(n),
    };
    if (c.len() as u64) < need {
        return Err(HostError::Buffer { need, have: c.len() as u64 });
    }
    let mut scratch = vec![0u32; launch::leaf_scratch_words(rows, n).max(1)];
    let mut out = vec![0u32; rows as usize * CV_WORDS];
    let chunks = launch::leaf_chunks(rows, n).map(RawGeometry::from);
    let chunks_ptr = chunks.as_ref().map_or(std::ptr::null(), |g| g as *const RawGeometry);
    let seed_words = key_words(seed);
    // SAFETY: row r < rows is read at c[r·stride .. r·stride + n] (checked above); scratch
    // holds rows · chunks CVs when chunks >= 2 (leaf_scratch_words) and is not read otherwise;
    // out holds rows leaves; seed_words is 8 words.
    unsafe {
        vbh_leaves(
            chunks_ptr,
            launch::leaf_roots(rows).into(),
            c.as_ptr(),
            stride,
            n,
            rows,
            first_row,
            seed_words.as_ptr(),
            scratch.as_mut_ptr(),
            out.as_mut_ptr(),
        )
    };
    Ok(out
        .chunks_exact(CV_WORDS)
        .map(|cv| {
            let mut leaf = [0u8; 32];
            for (bytes, word) in leaf.chunks_exact_mut(4).zip(cv) {
                bytes.copy_from_slice(&word.to_le_bytes());
            }
            Leaf(leaf)
        })
        .collect())
}

/// The context key `blake3.cuh` pins (`vb_b3_leaf_key`), as little-endian bytes.
pub fn pinned_leaf_key() -> [u8; 32] {
    let mut words = [0u32; 8];
    // SAFETY: writes 8 words.
    unsafe { vbh_leaf_key(words.as_mut_ptr()) };
    words_to_bytes(words)
}

/// BLAKE3's context key of `context` derived with `blake3.cuh`'s compression function (as
/// little-endian bytes).
pub fn derive_context_key(context: &str) -> Result<[u8; 32], HostError> {
    let mut words = [0u32; 8];
    // SAFETY: reads `context.len()` bytes, writes 8 words.
    let status =
        unsafe { vbh_context_key(context.as_ptr(), context.len() as u64, words.as_mut_ptr()) };
    if status != 0 {
        return Err(HostError::Context);
    }
    Ok(words_to_bytes(words))
}

fn words_to_bytes(words: [u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(words) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
}
