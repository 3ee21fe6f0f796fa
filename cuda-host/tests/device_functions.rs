//! The CUDA kernels (`kernels/cuda/*.cu`) run on the host under the backend's launch grids
//! (see the crate docs), against the protocol crate's reference implementations, bit for bit:
//!
//! - the generator: every mode, A and B, row- and column-major with padded leading dimensions,
//!   ragged shapes, padding untouched, every element written; the raw stream and a grid whose
//!   rows exceed grid.y at the counter edges (row 2^32 − 1, blocks beyond 2^16);
//! - the BLAKE3 leaves: rows of every chunk- and block-boundary length up to MAX_DIM entries,
//!   random rows, row indices up to u32::MAX, strides beyond the row, against `leaf_hash`; the
//!   pinned context key against the blake3 crate's;
//! - the -0 → +0 fix-up of float products.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use veribench_cuda_host::{self as host, Layout};
use veribench_kernels::cuda::key_words;
use veribench_kernels::cuda::launch::Geometry;
use veribench_protocol::commitment::{LEAF_CONTEXT, NODE_CONTEXT};
use veribench_protocol::generator::threefry4x32;
use veribench_protocol::{DeviceSeed, Generator, MAX_DIM, Matrix, Mode, leaf_hash};

fn random_seed(rng: &mut StdRng) -> DeviceSeed {
    DeviceSeed(rng.random())
}

/// The key the backend gives `matrix`'s generator: seed words 0..4 for A, 4..8 for B.
fn matrix_key(seed: &DeviceSeed, matrix: Matrix) -> [u32; 4] {
    let w = key_words(seed);
    let at = match matrix {
        Matrix::A => 0,
        Matrix::B => 4,
    };
    [w[at], w[at + 1], w[at + 2], w[at + 3]]
}

/// A stored element as the exact f32 it encodes (injective for every mode, -0 included).
fn decode(mode: Mode, bytes: &[u8]) -> f32 {
    match mode {
        Mode::Int8 => f32::from(bytes[0] as i8),
        Mode::Fp16 => half::f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
        Mode::Bf16 => f32::from_bits(u32::from(u16::from_le_bytes([bytes[0], bytes[1]])) << 16),
        Mode::Fp32 => f32::from_bits(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
    }
}

/// Runs the generator kernel twice over `layout` (padding filled with different bytes), and
/// checks that every element was written (both runs agree on it), the padding was not, and the
/// elements of the rows in `check` equal the protocol's generator bit for bit.
fn check_generated(
    mode: Mode,
    seed: &DeviceSeed,
    matrix: Matrix,
    layout: Layout,
    check: impl Iterator<Item = u32>,
) {
    let key = matrix_key(seed, matrix);
    let what = format!("{mode} {matrix:?} {layout:?}");
    let first = host::generate(mode, key, matrix, layout, 0xA5).expect("valid layout");
    let second = host::generate(mode, key, matrix, layout, 0x5A).expect("valid layout");
    let esz = host::element_bytes(mode);
    let mut element = vec![false; first.len()];
    for i in 0..layout.rows {
        for j in 0..layout.cols {
            let at = layout.index(i, j) as usize * esz;
            element[at..at + esz].fill(true);
        }
    }
    for (at, ((&a, &b), &is_element)) in first.iter().zip(&second).zip(&element).enumerate() {
        if is_element {
            assert_eq!(a, b, "{what}: byte {at} of an element not written");
        } else {
            assert_eq!((a, b), (0xA5, 0x5A), "{what}: padding byte {at} written");
        }
    }
    let generator = Generator::new(seed, mode);
    let mut row = vec![0f32; layout.cols as usize];
    for i in check {
        generator.fill_f32(matrix, i, 0, &mut row);
        for (j, expected) in (0..).zip(&row) {
            let at = layout.index(i, j) as usize * esz;
            let got = decode(mode, &first[at..at + esz]);
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "{what}: element ({i}, {j}) is {got}, the protocol's {expected}"
            );
        }
    }
}

#[test]
fn generator_matches_the_protocol_in_every_mode_and_layout() {
    let mut rng = StdRng::seed_from_u64(0x9e4e_2a70);
    // (m, k, n): a single element, the backend self-test's shape, a long ragged k.
    for (m, k, n) in [(1, 1, 1), (33, 70, 45), (17, 1023, 5)] {
        let seed = random_seed(&mut rng);
        let ld_k = u64::from(k).next_multiple_of(16);
        for mode in Mode::ALL {
            // The backend's layouts: A row-major, B transposed, both with ld = k padded to 16.
            let a = Layout { rows: m, cols: k, ld: ld_k, transposed: false };
            let b_t = Layout { rows: k, cols: n, ld: ld_k, transposed: true };
            // And the other two, with odd padding.
            let a_t = Layout { rows: m, cols: k, ld: u64::from(m) + 3, transposed: true };
            let b = Layout { rows: k, cols: n, ld: u64::from(n) + 7, transposed: false };
            for (matrix, layout) in
                [(Matrix::A, a), (Matrix::B, b_t), (Matrix::A, a_t), (Matrix::B, b)]
            {
                check_generated(mode, &seed, matrix, layout, 0..layout.rows);
            }
        }
    }
}

#[test]
fn generator_covers_rows_beyond_grid_y_and_long_rows() {
    let mut rng = StdRng::seed_from_u64(0x51de);
    let seed = random_seed(&mut rng);
    let edge = |rows: u32| (0..4).chain(rows - 4..rows);
    // MAX_DIM rows of one element: grid.y is clamped to 65535, so the last row is a thread's
    // second trip round its grid-stride loop.
    let tall = Layout { rows: MAX_DIM, cols: 1, ld: 1, transposed: false };
    check_generated(Mode::Int8, &seed, Matrix::A, tall, edge(MAX_DIM));
    // Bᵀ with MAX_DIM rows: grid.x spans 256 blocks of threads.
    let tall_t = Layout { rows: MAX_DIM, cols: 2, ld: u64::from(MAX_DIM), transposed: true };
    check_generated(Mode::Fp32, &seed, Matrix::B, tall_t, edge(MAX_DIM));
    // A row of MAX_DIM fp32 elements: 16384 Threefry blocks, counter word 1 up to 16383.
    let long = Layout { rows: 2, cols: MAX_DIM, ld: u64::from(MAX_DIM) + 16, transposed: false };
    check_generated(Mode::Fp32, &seed, Matrix::A, long, 0..2);
    check_generated(Mode::Bf16, &seed, Matrix::B, long, 0..2);
}

#[test]
fn stream_words_match_threefry_at_the_counter_edges() {
    // Random123's known answer (SPEC §3.1), as the GPU self-test checks it.
    assert_eq!(
        host::stream_words([0; 4], 0, 0, 4),
        [0x531c_7e4f, 0x3949_1ee5, 0x2c85_5a92, 0x3d6a_bf9a]
    );
    let key = [0x0123_4567, 0x89ab_cdef, 0xdead_beef, 0x0bad_f00d];
    // Blocks 0 .. 2^16 + 3 of the last row index: counter words 0 and 1 at their extremes.
    let count = 4 * ((1 << 16) + 3);
    for (tag, row) in [(0, u32::MAX), (1, u32::MAX), (1, 0x8000_0000)] {
        let words = host::stream_words(key, tag, row, count);
        assert_eq!(words.len(), count as usize);
        for (t, &w) in (0u32..).zip(&words) {
            let expected = threefry4x32(key, [row, t / 4, tag, 0])[(t % 4) as usize];
            assert_eq!(w, expected, "tag {tag} row {row:#x} word {t}");
        }
    }
}

/// `rows` rows of `n` random entries stored `stride` words apart (the padding random too, so
/// a read beyond the row changes the leaf).
fn random_rows(rng: &mut StdRng, rows: u32, n: u32, stride: u64) -> Vec<u32> {
    let len = (u64::from(rows.max(1)) - 1) * stride + u64::from(n);
    (0..len).map(|_| rng.random()).collect()
}

/// The leaves of the host-run kernels equal `leaf_hash` of every row's bytes.
fn check_leaves(rng: &mut StdRng, n: u32, rows: u32, stride: u64, first_row: u32) {
    let seed = random_seed(rng);
    let c = random_rows(rng, rows, n, stride);
    let leaves = host::leaves(&c, stride, n, rows, first_row, &seed).expect("valid rows");
    assert_eq!(leaves.len(), rows as usize);
    for (r, leaf) in (0..rows).zip(&leaves) {
        let at = (u64::from(r) * stride) as usize;
        let bytes: Vec<u8> = c[at..at + n as usize].iter().flat_map(|w| w.to_le_bytes()).collect();
        let row = first_row + r;
        assert_eq!(
            *leaf,
            leaf_hash(&seed, row, &bytes),
            "n {n}, stride {stride}, row {row:#x} of {rows} from {first_row:#x}"
        );
    }
}

#[test]
fn leaves_match_leaf_hash_at_every_block_and_chunk_edge() {
    let mut rng = StdRng::seed_from_u64(0x1eaf);
    // Message words n + 9: 7 → one full block; 8 → a block and one word; 247 → exactly one
    // chunk; 248 → a chunk and one word; 503 → two whole chunks; 1023..1025 → five chunks,
    // the last partial; 65536 → 257 chunks (a 256-chunk left subtree and a promoted tail).
    for n in [1, 7, 8, 247, 248, 503, 1023, 1024, 1025, 65536] {
        let rows = if n == MAX_DIM { 2 } else { 3 };
        for stride in [u64::from(n), u64::from(n) + 5] {
            for first_row in [0, 1 << 20, u32::MAX - (rows - 1)] {
                check_leaves(&mut rng, n, rows, stride, first_row);
            }
        }
    }
}

#[test]
fn leaves_match_leaf_hash_on_random_rows() {
    let mut rng = StdRng::seed_from_u64(0x5eed_1eaf);
    for _ in 0..40 {
        let n = rng.random_range(1..5000);
        let rows = rng.random_range(1..6);
        let stride = u64::from(n) + rng.random_range(0..40);
        let first_row = rng.random_range(0..=u32::MAX - (rows - 1));
        check_leaves(&mut rng, n, rows, stride, first_row);
    }
}

#[test]
fn leaf_context_key_is_blake3s_context_key() {
    let expected = blake3::hazmat::hash_derive_key_context(LEAF_CONTEXT);
    assert_eq!(host::derive_context_key(LEAF_CONTEXT), Ok(expected));
    assert_eq!(host::pinned_leaf_key(), expected, "blake3.cuh's VB_LEAF_KEY_* constants");
    // The derivation itself on contexts of zero, two and sixteen blocks.
    for context in [String::new(), NODE_CONTEXT.repeat(3), "x".repeat(1024)] {
        assert_eq!(
            host::derive_context_key(&context),
            Ok(blake3::hazmat::hash_derive_key_context(&context)),
            "context of {} bytes",
            context.len()
        );
    }
    assert_eq!(host::derive_context_key(&"x".repeat(1025)), Err(host::HostError::Context));
}

#[test]
fn positive_zeros_rewrite_exactly_the_negative_zero_words() {
    let mut rng = StdRng::seed_from_u64(0x2e50);
    let special = [0x8000_0000, 0, 0x8000_0001, 0x7fff_ffff, 0x0000_0001, 0xffff_ffff];
    let words: Vec<u32> = (0..4 * 3000)
        .map(|_| if rng.random_bool(0.3) { special[rng.random_range(0..6)] } else { rng.random() })
        .collect();
    let expected: Vec<u32> = words.iter().map(|&w| if w == 0x8000_0000 { 0 } else { w }).collect();
    // The backend's grid, and a small one whose threads loop over many quads.
    let small = Geometry { grid: (3, 1, 1), block: (7, 1, 1) };
    for geometry in [None, Some(small)] {
        let mut c = words.clone();
        host::positive_zeros(&mut c, geometry).expect("whole quads");
        assert_eq!(c, expected, "{geometry:?}");
    }
    assert_eq!(host::positive_zeros(&mut [0; 6], None), Err(host::HostError::NotQuads(6)));
}
