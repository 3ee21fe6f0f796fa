//! The counter-based matrix generator.
//!
//! Every element of A and B is a pure function of (device seed, matrix, row, column), so any row
//! or column can be regenerated alone and every backend (CPU SIMD, CUDA, WGSL) produces
//! bit-identical matrices from the same integer operations. The core is Random123's
//! Threefry-4x32-13: only 32-bit add, rotate and xor, which every target has, with public
//! known-answer vectors that let anyone check a reimplementation. `SPEC.md` is the normative text.

mod lanes;

use multiversion::multiversion;

use crate::challenge::Mode;
use crate::error::ProtocolError;
use crate::ids::DeviceSeed;

/// Threefry rounds. Random123 ships 13- and 20-round variants; 13 is its fast "Crush-resistant"
/// one. The stream needs statistical quality only (the seed is public to the worker; what
/// protects the benchmark is that the seed is fresh), and generation is pure overhead on top
/// of the GEMM: 13 rounds make it 2-3× cheaper than 20 on AVX-512.
pub const THREEFRY_ROUNDS: usize = 13;
/// Rotation constants of Threefry-4x32, indexed by round mod 8.
const ROTATIONS: [[u32; 2]; 8] =
    [[10, 26], [11, 21], [13, 27], [23, 5], [6, 20], [17, 11], [25, 10], [18, 20]];
/// Threefish key-schedule parity constant for 32-bit words.
const KS_PARITY: u32 = 0x1BD1_1BDA;
/// Blocks computed side by side by the reference path: 16 u32 lanes fill one AVX-512 register.
const LANES: usize = 16;
/// Scale of fp32 elements: a 24-bit signed integer times 2^-23 lies in [-1, 1).
const FP32_SCALE: f32 = 1.0 / 8_388_608.0;

/// Which operand of the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Matrix {
    /// The left operand, `m × k`.
    A,
    /// The right operand, `k × n`.
    B,
}

impl Matrix {
    /// Counter word 2 of every block of this matrix, so A and B are distinct streams even under
    /// equal keys.
    pub const fn tag(self) -> u32 {
        match self {
            Matrix::A => 0,
            Matrix::B => 1,
        }
    }
}

/// The five-word Threefry key schedule of one matrix, with the matrix's counter tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeySchedule {
    words: [u32; 5],
    tag: u32,
}

impl KeySchedule {
    fn new(key: [u32; 4], matrix: Matrix) -> Self {
        let parity = KS_PARITY ^ key[0] ^ key[1] ^ key[2] ^ key[3];
        Self { words: [key[0], key[1], key[2], key[3], parity], tag: matrix.tag() }
    }
}

/// Random123 Threefry-4x32 with [`THREEFRY_ROUNDS`] rounds: one 128-bit block from a 128-bit
/// key and a 128-bit counter.
pub fn threefry4x32(key: [u32; 4], counter: [u32; 4]) -> [u32; 4] {
    threefry4x32_rounds::<THREEFRY_ROUNDS>(key, counter)
}

/// Threefry-4x32 with `R` rounds (tests check R = 20 too, against Random123's own vectors).
fn threefry4x32_rounds<const R: usize>(key: [u32; 4], counter: [u32; 4]) -> [u32; 4] {
    let ks = KeySchedule::new(key, Matrix::A);
    let out = threefry_lanes::<1, R>(&ks, [counter[0]], [counter[1]], counter[2], counter[3]);
    [out[0][0], out[1][0], out[2][0], out[3][0]]
}

/// `L` Threefry blocks at once, written lane-wise so the compiler maps each statement to one
/// vector instruction. Counter words 0 and 1 vary per lane; 2 and 3 are shared.
#[inline(always)]
fn threefry_lanes<const L: usize, const R: usize>(
    ks: &KeySchedule,
    c0: [u32; L],
    c1: [u32; L],
    c2: u32,
    c3: u32,
) -> [[u32; L]; 4] {
    let ks = ks.words;
    let mut x0 = c0.map(|c| c.wrapping_add(ks[0]));
    let mut x1 = c1.map(|c| c.wrapping_add(ks[1]));
    let mut x2 = [c2.wrapping_add(ks[2]); L];
    let mut x3 = [c3.wrapping_add(ks[3]); L];
    for round in 0..R {
        let [ra, rb] = ROTATIONS[round % 8];
        for l in 0..L {
            if round % 2 == 0 {
                x0[l] = x0[l].wrapping_add(x1[l]);
                x1[l] = x1[l].rotate_left(ra) ^ x0[l];
                x2[l] = x2[l].wrapping_add(x3[l]);
                x3[l] = x3[l].rotate_left(rb) ^ x2[l];
            } else {
                x0[l] = x0[l].wrapping_add(x3[l]);
                x3[l] = x3[l].rotate_left(ra) ^ x0[l];
                x2[l] = x2[l].wrapping_add(x1[l]);
                x1[l] = x1[l].rotate_left(rb) ^ x2[l];
            }
        }
        if round % 4 == 3 {
            let s = round / 4 + 1;
            for l in 0..L {
                x0[l] = x0[l].wrapping_add(ks[s % 5]);
                x1[l] = x1[l].wrapping_add(ks[(s + 1) % 5]);
                x2[l] = x2[l].wrapping_add(ks[(s + 2) % 5]);
                x3[l] = x3[l].wrapping_add(ks[(s + 3) % 5]).wrapping_add(s as u32);
            }
        }
    }
    [x0, x1, x2, x3]
}

/// `LANES` consecutive blocks of one row, starting at block `first`, in the order of the row's
/// word stream: block b, word w is stream word `4·b + w`; the stream's bytes are those words in
/// little-endian order. The counter of block b is `(row, b, matrix tag, 0)`.
#[inline(always)]
fn row_stream(ks: &KeySchedule, row: u32, first: u32) -> [u32; BATCH_WORDS] {
    let c1: [u32; LANES] = std::array::from_fn(|l| first.wrapping_add(l as u32));
    let x = threefry_lanes::<LANES, THREEFRY_ROUNDS>(ks, [row; LANES], c1, ks.tag, 0);
    let mut words = [0u32; BATCH_WORDS];
    for (l, out) in words.chunks_exact_mut(4).enumerate() {
        out.copy_from_slice(&[x[0][l], x[1][l], x[2][l], x[3][l]]);
    }
    words
}

/// Stream words per batch of `LANES` blocks.
const BATCH_WORDS: usize = LANES * 4;

/// Maps a stream byte to an element of an exact mode.
#[inline(always)]
fn small_int(byte: u8, mode: Mode) -> i8 {
    let v = byte as i8;
    if mode == Mode::Int8 { v } else { v >> 3 }
}

/// Maps a stream word to an fp32 element: the top 24 bits as a signed integer, times 2^-23.
#[inline(always)]
fn fp32_value(word: u32) -> f32 {
    ((word as i32) >> 8) as f32 * FP32_SCALE
}

/// Stream byte `at` of a batch.
#[inline(always)]
fn stream_byte(words: &[u32; BATCH_WORDS], at: usize) -> u8 {
    (words[at / 4] >> (8 * (at % 4))) as u8
}

/// Walks one row's stream in whole batches, handing `fill(batch words, skip, dst)` the part of
/// `out` each batch covers; `per_batch` is elements per batch for the mode.
#[inline(always)]
fn for_each_batch<T>(
    ks: &KeySchedule,
    row: u32,
    first_col: u32,
    per_batch: usize,
    out: &mut [T],
    mut fill: impl FnMut(&[u32; BATCH_WORDS], usize, &mut [T]),
) {
    let mut col = first_col as usize;
    let mut done = 0;
    while done < out.len() {
        let batch = col / per_batch;
        let skip = col - batch * per_batch;
        let take = (per_batch - skip).min(out.len() - done);
        let words = row_stream(ks, row, (batch * LANES) as u32);
        fill(&words, skip, &mut out[done..done + take]);
        done += take;
        col += take;
    }
}

/// Fills `out` with exact-mode elements `first_col ..` of one row: the reference path (the fast
/// one is [`lanes::fill_small_ints`]).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn reference_small_ints(ks: &KeySchedule, mode: Mode, row: u32, first_col: u32, out: &mut [i8]) {
    for_each_batch(ks, row, first_col, BATCH_WORDS * 4, out, |words, skip, dst| {
        if dst.len() == BATCH_WORDS * 4 {
            // Whole batch: a straight-line loop the compiler vectorises.
            for (quad, &w) in dst.chunks_exact_mut(4).zip(words.iter()) {
                for (d, b) in quad.iter_mut().zip(w.to_le_bytes()) {
                    *d = small_int(b, mode);
                }
            }
        } else {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = small_int(stream_byte(words, skip + i), mode);
            }
        }
    });
}

/// Fills `out` with the elements `first_col ..` of one row as f32 (exact for every mode): the
/// reference path (the fast one is [`lanes::fill_f32s`]).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn reference_f32s(ks: &KeySchedule, mode: Mode, row: u32, first_col: u32, out: &mut [f32]) {
    if mode == Mode::Fp32 {
        for_each_batch(ks, row, first_col, BATCH_WORDS, out, |words, skip, dst| {
            if let Ok(whole) = <&mut [f32; BATCH_WORDS]>::try_from(&mut *dst) {
                *whole = words.map(fp32_value);
            } else {
                for (d, &w) in dst.iter_mut().zip(&words[skip..]) {
                    *d = fp32_value(w);
                }
            }
        });
    } else {
        for_each_batch(ks, row, first_col, BATCH_WORDS * 4, out, |words, skip, dst| {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = f32::from(small_int(stream_byte(words, skip + i), mode));
            }
        });
    }
}

/// The elements of one challenge's A and B for one device.
#[derive(Clone, Debug)]
pub struct Generator {
    mode: Mode,
    a: KeySchedule,
    b: KeySchedule,
}

impl Generator {
    /// Keys A with bytes 0..16 of the device seed and B with bytes 16..32, as little-endian words.
    pub fn new(seed: &DeviceSeed, mode: Mode) -> Self {
        let word = |i: usize| {
            let b = &seed.as_bytes()[4 * i..4 * i + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        Self {
            mode,
            a: KeySchedule::new([word(0), word(1), word(2), word(3)], Matrix::A),
            b: KeySchedule::new([word(4), word(5), word(6), word(7)], Matrix::B),
        }
    }

    /// The mode whose value mapping this generator applies.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn keys(&self, matrix: Matrix) -> &KeySchedule {
        match matrix {
            Matrix::A => &self.a,
            Matrix::B => &self.b,
        }
    }

    /// One element, computed alone (slow path; for spot checks and tests).
    pub fn element(&self, matrix: Matrix, row: u32, col: u32) -> f64 {
        let mut one = [0f32];
        reference_f32s(self.keys(matrix), self.mode, row, col, &mut one);
        f64::from(one[0])
    }

    /// Fills `out` with the integer elements `first_col .. first_col + out.len()` of `row`.
    /// Only the exact modes have integer elements; `Fp32` is refused.
    pub fn fill_i8(
        &self,
        matrix: Matrix,
        row: u32,
        first_col: u32,
        out: &mut [i8],
    ) -> Result<(), ProtocolError> {
        if !self.mode.is_exact() {
            return Err(ProtocolError::NotIntegerMode(self.mode));
        }
        lanes::fill_small_ints(self.keys(matrix), self.mode, row, first_col, out);
        Ok(())
    }

    /// Fills `out` with the elements `first_col .. first_col + out.len()` of `row` as f32, which
    /// represents every mode's values exactly.
    pub fn fill_f32(&self, matrix: Matrix, row: u32, first_col: u32, out: &mut [f32]) {
        lanes::fill_f32s(self.keys(matrix), self.mode, row, first_col, out);
    }

    /// [`Generator::fill_i8`] by the reference path: 16 blocks at a time, the implementation
    /// before the 32-block fast path. Same output; kept so tests and the generator bench compare
    /// the two (`benches/generator.rs`).
    pub fn fill_i8_reference(
        &self,
        matrix: Matrix,
        row: u32,
        first_col: u32,
        out: &mut [i8],
    ) -> Result<(), ProtocolError> {
        if !self.mode.is_exact() {
            return Err(ProtocolError::NotIntegerMode(self.mode));
        }
        reference_small_ints(self.keys(matrix), self.mode, row, first_col, out);
        Ok(())
    }

    /// [`Generator::fill_f32`] by the reference path (see [`Generator::fill_i8_reference`]).
    pub fn fill_f32_reference(&self, matrix: Matrix, row: u32, first_col: u32, out: &mut [f32]) {
        reference_f32s(self.keys(matrix), self.mode, row, first_col, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI_KEY: [u32; 4] = [0xa409_3822, 0x299f_31d0, 0x082e_fa98, 0xec4e_6c89];
    const PI_COUNTER: [u32; 4] = [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344];

    /// Random123 known-answer vectors (kat_vectors) for Threefry-4x32-13, the generator's core.
    #[test]
    fn threefry13_matches_random123_known_answers() {
        assert_eq!(
            threefry4x32([0; 4], [0; 4]),
            [0x531c_7e4f, 0x3949_1ee5, 0x2c85_5a92, 0x3d6a_bf9a]
        );
        assert_eq!(
            threefry4x32([u32::MAX; 4], [u32::MAX; 4]),
            [0xc418_9358, 0x1c9c_c83a, 0xd588_1c67, 0x6a0a_89e0]
        );
        assert_eq!(
            threefry4x32(PI_KEY, PI_COUNTER),
            [0x4aa7_1d8f, 0x7347_38c2, 0x431f_c6a8, 0xae6d_ebf1]
        );
    }

    /// The 20-round vectors exercise the rotation table and key injections past round 13.
    #[test]
    fn threefry20_matches_random123_known_answers() {
        let t = threefry4x32_rounds::<20>;
        assert_eq!(t([0; 4], [0; 4]), [0x9c6c_a96a, 0xe17e_ae66, 0xfc10_ecd4, 0x5256_a7d8]);
        assert_eq!(
            t([u32::MAX; 4], [u32::MAX; 4]),
            [0x2a88_1696, 0x5701_2287, 0xf6c7_446e, 0xa16a_6732]
        );
        assert_eq!(t(PI_KEY, PI_COUNTER), [0x59cd_1dbb, 0xb887_9579, 0x86b5_d00c, 0xac8b_6d84]);
    }

    fn scalar_word(g: &Generator, m: Matrix, row: u32, word: u32) -> u32 {
        let ks = g.keys(m).words;
        threefry4x32([ks[0], ks[1], ks[2], ks[3]], [row, word / 4, m.tag(), 0])[(word % 4) as usize]
    }

    #[test]
    fn vector_fill_matches_the_scalar_definition_at_any_offset() {
        let seed = DeviceSeed([3; 32]);
        for mode in Mode::ALL {
            let g = Generator::new(&seed, mode);
            for (first, len) in [(0u32, 1usize), (5, 300), (255, 257), (1000, 7), (17, 1)] {
                let mut f = vec![0f32; len];
                g.fill_f32(Matrix::B, 9, first, &mut f);
                for (i, &v) in f.iter().enumerate() {
                    let col = first + i as u32;
                    let expected = match mode {
                        Mode::Fp32 => fp32_value(scalar_word(&g, Matrix::B, 9, col)),
                        _ => {
                            let w = scalar_word(&g, Matrix::B, 9, col / 4);
                            f32::from(small_int((w >> (8 * (col % 4))) as u8, mode))
                        }
                    };
                    assert_eq!(v.to_bits(), expected.to_bits(), "{mode} col {col}");
                }
                if mode.is_exact() {
                    let mut ints = vec![0i8; len];
                    g.fill_i8(Matrix::B, 9, first, &mut ints).expect("exact mode");
                    assert!(ints.iter().zip(&f).all(|(&i, &v)| f32::from(i) == v));
                }
                let mut reference = vec![0f32; len];
                g.fill_f32_reference(Matrix::B, 9, first, &mut reference);
                assert!(reference.iter().zip(&f).all(|(r, v)| r.to_bits() == v.to_bits()));
            }
        }
    }

    /// The fast path against the reference path, bit for bit, in every mode: every length
    /// 1..=200 at start columns on and around the batch boundaries of both paths (16, 64, 128,
    /// 256, 512 elements) and mid-word (int8 elements are bytes of a word), rows near `u32::MAX`,
    /// start columns near `u32::MAX` (runs up to and past the last column), plus whole rows.
    #[test]
    fn fast_path_matches_the_reference_bit_for_bit() {
        let seed = DeviceSeed(std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(1)));
        let starts = [
            0u32,
            1,
            3,
            5,
            15,
            16,
            17,
            63,
            64,
            65,
            127,
            128,
            129,
            255,
            256,
            257,
            511,
            512,
            513,
            1000,
            (1 << 20) + 7,
            u32::MAX - 600,
            u32::MAX - 130,
            u32::MAX - 1,
            u32::MAX,
        ];
        let lengths = (1..=200).chain([511, 512, 513, 1000, 4096, 5000]);
        let lengths: Vec<usize> = lengths.collect();
        for mode in Mode::ALL {
            let g = Generator::new(&seed, mode);
            for matrix in [Matrix::A, Matrix::B] {
                for row in [0, 77, u32::MAX - 1, u32::MAX] {
                    for &first in &starts {
                        for &len in &lengths {
                            let at = format!("{mode} {matrix:?} row {row} cols {first}+{len}");
                            let (mut fast, mut reference) = (vec![0f32; len], vec![0f32; len]);
                            g.fill_f32(matrix, row, first, &mut fast);
                            g.fill_f32_reference(matrix, row, first, &mut reference);
                            let bits =
                                |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert_eq!(bits(&fast), bits(&reference), "fill_f32 {at}");
                            if mode.is_exact() {
                                let (mut fast, mut reference) = (vec![0i8; len], vec![0i8; len]);
                                g.fill_i8(matrix, row, first, &mut fast).expect("exact");
                                g.fill_i8_reference(matrix, row, first, &mut reference)
                                    .expect("exact");
                                assert_eq!(fast, reference, "fill_i8 {at}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn empty_fills_write_nothing() {
        for mode in Mode::ALL {
            let g = Generator::new(&DeviceSeed([1; 32]), mode);
            g.fill_f32(Matrix::A, 3, 5, &mut []);
            if mode.is_exact() {
                g.fill_i8(Matrix::A, 3, 5, &mut []).expect("exact");
            }
        }
    }

    #[test]
    fn value_ranges_are_as_specified() {
        let seed = DeviceSeed([11; 32]);
        let mut ints = vec![0i8; 4096];
        let mut floats = vec![0f32; 4096];
        Generator::new(&seed, Mode::Int8).fill_i8(Matrix::A, 0, 0, &mut ints).expect("int8");
        assert_eq!(ints.iter().min(), Some(&-128));
        assert_eq!(ints.iter().max(), Some(&127));
        Generator::new(&seed, Mode::Bf16).fill_i8(Matrix::A, 0, 0, &mut ints).expect("bf16");
        assert_eq!((ints.iter().min(), ints.iter().max()), (Some(&-16), Some(&15)));
        Generator::new(&seed, Mode::Fp32).fill_f32(Matrix::A, 0, 0, &mut floats);
        assert!(floats.iter().all(|v| (-1.0..1.0).contains(v)));
        // Full 24-bit significands: most values need more than TF32's 11 bits.
        let wide = floats.iter().filter(|v| (v.to_bits() & 0x1fff) != 0).count();
        assert!(wide > 3900, "only {wide} values use the low significand bits");
        assert!(Generator::new(&seed, Mode::Fp32).fill_i8(Matrix::A, 0, 0, &mut ints).is_err());
    }

    #[test]
    fn matrices_and_rows_differ() {
        let g = Generator::new(&DeviceSeed([5; 32]), Mode::Int8);
        let row = |m, r| {
            let mut v = vec![0i8; 64];
            g.fill_i8(m, r, 0, &mut v).expect("int8");
            v
        };
        assert_ne!(row(Matrix::A, 0), row(Matrix::B, 0));
        assert_ne!(row(Matrix::A, 0), row(Matrix::A, 1));
    }
}
