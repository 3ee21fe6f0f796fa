//! Freivalds' check of exact-mode rows: `C_r·x ≡ A_r·(B·x) (mod p)` for random `x`.
//!
//! Recomputing `s` sampled rows costs `s·k·n` multiply-adds; this check costs `k·n` for `y = B·x`
//! (plus regenerating B, which every verifier pays) and `s·(k + n)` for the rows. It is exact up
//! to a stated error probability, because the exact modes' products are integers:
//!
//! * Range. Every entry of a true row lies in `[lo·k, hi·k]`, where `[lo, hi]` is the range of one
//!   product `a·b` of the mode's elements; an opened entry outside it (or, for fp16/bf16, a
//!   non-integer, NaN or infinite f32) is wrong, so it is rejected before any modular arithmetic.
//! * Field. With both rows in range, every entry of the difference `d = C_r − A_r·B` satisfies
//!   `|d_j| ≤ (hi − lo)·k < p` ([`exact_range`] refuses shapes where it would not), so `d ≠ 0`
//!   over the integers implies `d ≢ 0` over `F_p`. A nonzero linear form `d·x` over `F_p`
//!   vanishes on exactly `p^(n−1)` of the `p^n` vectors `x`, so a uniform `x` misses a wrong
//!   row with probability `1/p`; [`VECTORS`] independent vectors, `p^−2 < 2^−61.99`.
//!
//! The vectors are drawn by the verifier after the openings arrive; a worker that knew them
//! could craft a wrong row orthogonal to them.

use multiversion::multiversion;
use rand::{CryptoRng, Rng};
use rayon::prelude::*;

use crate::challenge::{Mode, Shape};
use crate::generator::{Generator, Matrix};

/// The field's modulus, `2^31 − 1`: residues fit in i32, so `b·x` (|b| ≤ 128) fits in 38 bits
/// and a row of up to 2^16 of them sums far below 2^63 in i64 lanes the compiler vectorises
/// (a signed 32×32→64 multiply exists on every SIMD target).
pub const PRIME: i64 = (1 << 31) - 1;
/// Independent random vectors per check; a wrong row passes all of them with probability at most
/// `p^−VECTORS` = `(2^31 − 1)^−2`.
pub const VECTORS: usize = 2;

/// The range `[lo·k, hi·k]` every entry of a true row of an exact mode lies in, or `None` for
/// fp32 and for shapes where the check's arithmetic would not be exact: `(hi − lo)·k` must stay
/// below [`PRIME`] (so in-range rows that differ differ mod p) and `n`, `k` within 2^24 (so the
/// i64 sums cannot overflow). Every shape up to [`crate::MAX_DIM`] qualifies.
pub fn exact_range(mode: Mode, shape: Shape) -> Option<(i64, i64)> {
    // The element ranges are the generator's: int8 [-128, 127], fp16/bf16 [-16, 15].
    let (lo, hi) = match mode {
        Mode::Int8 => (-128 * 127, 128 * 128),
        Mode::Fp16 | Mode::Bf16 => (-16 * 15, 16 * 16),
        Mode::Fp32 => return None,
    };
    let (k, n) = (i64::from(shape.k), i64::from(shape.n));
    ((hi - lo) * k < PRIME && k <= 1 << 24 && n <= 1 << 24).then_some((lo * k, hi * k))
}

/// One challenge's Freivalds check: the random vectors and `B·x` for each.
#[derive(Debug)]
pub struct Check {
    mode: Mode,
    k: usize,
    range: (i64, i64),
    /// `VECTORS` vectors of `n` residues.
    x: [Vec<i32>; VECTORS],
    /// `B·x` mod p for each vector, `k` residues.
    y: [Vec<i32>; VECTORS],
    /// `y` split for [`dot_small`].
    y_halves: [Halves; VECTORS],
}

impl Check {
    /// Draws the vectors from `rng` and computes `B·x`, regenerating B row by row on all cores.
    /// `None` when [`exact_range`] refuses the mode or shape.
    pub fn new<R: CryptoRng + ?Sized>(
        generator: &Generator,
        shape: Shape,
        rng: &mut R,
    ) -> Option<Self> {
        exact_range(generator.mode(), shape)?;
        let n = shape.n as usize;
        let x: [Vec<i32>; VECTORS] =
            std::array::from_fn(|_| (0..n).map(|_| rng.random_range(0..PRIME as i32)).collect());
        Self::with_vectors(generator, shape, x)
    }

    /// The check with given vectors, each `n` residues in `[0, p)`: for test vectors and
    /// audits, never for a verdict (the vectors must be fresh, [`Check::new`]). `None` when
    /// [`exact_range`] refuses the mode or shape, or a vector has the wrong length or an entry
    /// outside `[0, p)`.
    pub fn with_vectors(
        generator: &Generator,
        shape: Shape,
        x: [Vec<i32>; VECTORS],
    ) -> Option<Self> {
        let mode = generator.mode();
        let range = exact_range(mode, shape)?;
        let (k, n) = (shape.k as usize, shape.n as usize);
        if x.iter().any(|v| v.len() != n || v.iter().any(|&e| !(0..PRIME as i32).contains(&e))) {
            return None;
        }
        let x_halves = [Halves::of(&x[0]), Halves::of(&x[1])];
        let rows: Vec<[i32; VECTORS]> = (0..shape.k)
            .into_par_iter()
            .map_init(
                || vec![0i8; n],
                |b, i| {
                    // Exact mode, checked by `exact_range`.
                    let _ = generator.fill_i8(Matrix::B, i, 0, b);
                    dot_small(b, &x_halves).map(reduce)
                },
            )
            .collect();
        let y: [Vec<i32>; VECTORS] = std::array::from_fn(|v| rows.iter().map(|r| r[v]).collect());
        debug_assert!(rows.len() == k);
        let y_halves = [Halves::of(&y[0]), Halves::of(&y[1])];
        Some(Self { mode, k, range, x, y, y_halves })
    }

    /// `B·x` mod p, `k` residues per vector.
    pub fn b_x(&self) -> &[Vec<i32>; VECTORS] {
        &self.y
    }

    /// Whether opened row `row` with canonical bytes `bytes` (already checked to be `n` entries)
    /// passes: every entry in range, and `C_r·x ≡ A_r·y` for every vector.
    pub fn row_passes(&self, generator: &Generator, row: u32, bytes: &[u8]) -> bool {
        let Some(cx) = self.c_dot_x(bytes) else { return false };
        let mut a = vec![0i8; self.k];
        let _ = generator.fill_i8(Matrix::A, row, 0, &mut a);
        let ay = dot_small(&a, &self.y_halves).map(reduce);
        cx == ay
    }

    /// `C_r·x` mod p for each vector, or `None` if an entry is not an integer in range.
    fn c_dot_x(&self, bytes: &[u8]) -> Option<[i32; VECTORS]> {
        let entries = match self.mode {
            Mode::Int8 => int_entries(bytes),
            _ => float_entries(bytes)?,
        };
        // In range, so within i32: [lo, hi] ⊂ (−2^31, 2^30] (`exact_range`).
        let (lo, hi) = self.range;
        let (min, max) = min_max(&entries);
        if i64::from(min) < lo || i64::from(max) > hi {
            return None;
        }
        let halves = dot_split(&entries, [&self.x[0], &self.x[1]]);
        Some(halves.map(|(low, high)| {
            // C_r·x = 2^16·high + low over the integers.
            let sum = (i128::from(high) << 16) + i128::from(low);
            sum.rem_euclid(i128::from(PRIME)) as i32
        }))
    }
}

/// An int8 row's entries: little-endian i32 words.
fn int_entries(bytes: &[u8]) -> Vec<i32> {
    bytes.chunks_exact(4).map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
}

/// A float row's entries as the integers they hold exactly, or `None` if one is NaN, infinite,
/// fractional or beyond i32 (no exact-mode entry can be). Branch-free per entry, so it
/// vectorises: `v as i32` saturates (NaN gives 0), and the round trip `(v as i32) as f32 == v`
/// holds exactly for the integers of i32 that f32 represents, and for 2^31, which saturates to
/// `i32::MAX` and is then out of every range. −0 is 0.
fn float_entries(bytes: &[u8]) -> Option<Vec<i32>> {
    let mut exact = true;
    let entries = bytes
        .chunks_exact(4)
        .map(|w| {
            let v = f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let c = v as i32;
            exact &= c as f32 == v;
            c
        })
        .collect();
    exact.then_some(entries)
}

/// The smallest and largest entry (`(i32::MAX, i32::MIN)` for none).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn min_max(c: &[i32]) -> (i32, i32) {
    c.iter().fold((i32::MAX, i32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `C_r·x` for two vectors, each as `(Σ lo_j·x_j, Σ hi_j·x_j)` with `c_j = 2^16·hi_j + lo_j`,
/// `lo_j ∈ [0, 2^16)`: every term is a 32×32→64-bit product (one SIMD multiply) and, with
/// `x_j < 2^31` and at most 2^16 entries, neither sum can reach 2^63.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn dot_split(c: &[i32], x: [&[i32]; VECTORS]) -> [(i64, i64); VECTORS] {
    let (x0, x1) = (&x[0][..c.len()], &x[1][..c.len()]);
    let (mut l0, mut h0, mut l1, mut h1) = (0i64, 0i64, 0i64, 0i64);
    for ((&c, &u), &v) in c.iter().zip(x0).zip(x1) {
        let lo = i64::from(c & 0xFFFF);
        let hi = i64::from(c >> 16);
        let (u, v) = (i64::from(u), i64::from(v));
        l0 += lo * u;
        h0 += hi * u;
        l1 += lo * v;
        h1 += hi * v;
    }
    [(l0, h0), (l1, h1)]
}

/// A sum of at most 2^24 terms below 2^38 in magnitude, reduced into `[0, p)`.
fn reduce(s: i64) -> i32 {
    s.rem_euclid(PRIME) as i32
}

/// A vector of residues in `[0, 2^31)` as two i16 halves, for a 16-bit multiply-add:
/// `x = 2^16·high + low + 2^15`, `high ∈ [0, 2^15)`, `low ∈ [−2^15, 2^15)`.
#[derive(Debug)]
struct Halves {
    high: Vec<i16>,
    low: Vec<i16>,
}

impl Halves {
    fn of(residues: &[i32]) -> Self {
        Self {
            high: residues.iter().map(|&x| (x >> 16) as i16).collect(),
            low: residues.iter().map(|&x| ((x & 0xFFFF) - (1 << 15)) as i16).collect(),
        }
    }
}

/// Elements per block of the SIMD [`dot_small`]'s i32 partial sums: each i32 lane takes two
/// products of magnitude ≤ `2^7 · 2^15` per 16 elements, so a block of 2048 elements adds at most
/// `128 · 2^23 = 2^30` to a lane before it is flushed to i64.
const SMALL_BLOCK: usize = 2048;

/// `Σ b_j·x_j` for two vectors of residues (`|b_j| ≤ 128`), exact in i64, as
/// `2^16·Σ b·high + Σ b·low + 2^15·Σ b` ([`Halves`]): three sums of i8 × i16 products, which
/// a 16-bit multiply-add (`vpmaddwd`) forms 16 at a time, in i32 per [`SMALL_BLOCK`] elements.
fn dot_small(b: &[i8], x: &[Halves; VECTORS]) -> [i64; VECTORS] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available, checked on the line above.
        return unsafe { avx2::dot_small(b, x) };
    }
    dot_small_scalar(b, x)
}

/// [`dot_small`] one element at a time: the reference the SIMD path is tested against.
fn dot_small_scalar(b: &[i8], x: &[Halves; VECTORS]) -> [i64; VECTORS] {
    let mut out = [0i64; VECTORS];
    for (v, halves) in x.iter().enumerate() {
        let (mut high, mut low, mut sum_b) = (0i64, 0i64, 0i64);
        for ((&b, &h), &l) in b.iter().zip(&halves.high).zip(&halves.low) {
            let b = i64::from(b);
            high += b * i64::from(h);
            low += b * i64::from(l);
            sum_b += b;
        }
        out[v] = (high << 16) + low + (sum_b << 15);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Halves, SMALL_BLOCK, VECTORS};

    /// Sum of the eight i32 lanes, in i64.
    #[target_feature(enable = "avx2")]
    fn lanes(v: __m256i) -> i64 {
        let mut out = [0i32; 8];
        // SAFETY: `out` is 32 writable bytes; unaligned stores are allowed.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out.iter().map(|&l| i64::from(l)).sum()
    }

    /// [`super::dot_small`] with `vpmaddwd`: 16 elements an instruction and vector half, in
    /// i32 lanes flushed to i64 every [`SMALL_BLOCK`] elements.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_small(b: &[i8], x: &[Halves; VECTORS]) -> [i64; VECTORS] {
        // The common length (they are equal by construction; a mismatch must not read past
        // one), as the scalar path's `zip` takes it.
        let len = x.iter().fold(b.len(), |len, h| len.min(h.high.len()).min(h.low.len()));
        let ones = _mm256_set1_epi16(1);
        // Per vector: high, low; and Σ b once.
        let mut totals = [[0i64; 2]; VECTORS];
        let mut sum_b = 0i64;
        let whole = len - len % 16;
        let mut j = 0;
        while j < whole {
            let end = (j + SMALL_BLOCK).min(whole);
            let zero = _mm256_setzero_si256();
            let (mut acc, mut acc_b) = ([[zero; 2]; VECTORS], zero);
            while j < end {
                // SAFETY: j + 16 <= whole <= len, the length of b and of every half.
                let bv = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(j).cast())) };
                for (v, halves) in x.iter().enumerate() {
                    // SAFETY: as above, 16 i16 from j of vectors as long as b.
                    let (h, l) = unsafe {
                        (
                            _mm256_loadu_si256(halves.high.as_ptr().add(j).cast()),
                            _mm256_loadu_si256(halves.low.as_ptr().add(j).cast()),
                        )
                    };
                    acc[v][0] = _mm256_add_epi32(acc[v][0], _mm256_madd_epi16(bv, h));
                    acc[v][1] = _mm256_add_epi32(acc[v][1], _mm256_madd_epi16(bv, l));
                }
                acc_b = _mm256_add_epi32(acc_b, _mm256_madd_epi16(bv, ones));
                j += 16;
            }
            for v in 0..VECTORS {
                totals[v][0] += lanes(acc[v][0]);
                totals[v][1] += lanes(acc[v][1]);
            }
            sum_b += lanes(acc_b);
        }
        let mut out = [0i64; VECTORS];
        for (v, halves) in x.iter().enumerate() {
            let [mut high, mut low] = totals[v];
            let mut tail_b = 0i64;
            let tail =
                b[whole..len].iter().zip(&halves.high[whole..len]).zip(&halves.low[whole..len]);
            for ((&bt, &h), &l) in tail {
                let bt = i64::from(bt);
                high += bt * i64::from(h);
                low += bt * i64::from(l);
                tail_b += bt;
            }
            out[v] = (high << 16) + low + ((sum_b + tail_b) << 15);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_DIM;

    #[test]
    fn every_shape_up_to_max_dim_keeps_in_range_differences_below_p() {
        for mode in [Mode::Int8, Mode::Fp16, Mode::Bf16] {
            let shape = Shape::square(MAX_DIM);
            let (lo, hi) = exact_range(mode, shape).expect("qualifies");
            assert!(hi - lo < PRIME, "{mode}");
            // The true extremes are reachable products summed k times.
            assert_eq!(hi, i64::from(MAX_DIM) * if mode == Mode::Int8 { 16384 } else { 256 });
        }
        assert_eq!(exact_range(Mode::Fp32, Shape::square(4)), None);
        // Past the bound (int8: k > 65793), the verifier falls back to recomputing rows.
        assert!(exact_range(Mode::Int8, Shape { m: 1, k: 65_793, n: 1 }).is_some());
        assert_eq!(exact_range(Mode::Int8, Shape { m: 1, k: 65_794, n: 1 }), None);
    }

    #[test]
    fn element_ranges_are_the_generators() {
        let g = Generator::new(&crate::DeviceSeed([9; 32]), Mode::Int8);
        let mut v = vec![0i8; 1 << 14];
        g.fill_i8(Matrix::B, 0, 0, &mut v).expect("int8");
        let extreme =
            v.iter().map(|&e| i64::from(e)).fold((0, 0), |(l, h), e| (l.min(e), h.max(e)));
        assert_eq!(extreme, (-128, 127));
        let g = Generator::new(&crate::DeviceSeed([9; 32]), Mode::Fp16);
        g.fill_i8(Matrix::B, 0, 0, &mut v).expect("fp16");
        let extreme =
            v.iter().map(|&e| i64::from(e)).fold((0, 0), |(l, h), e| (l.min(e), h.max(e)));
        assert_eq!(extreme, (-16, 15));
    }

    #[test]
    fn float_entries_refuse_what_no_exact_entry_can_be() {
        let row =
            |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let good = [-0.0, -3.0, 16_777_216.0, 0.0, 1_073_741_824.0, -2_147_483_648.0];
        assert_eq!(float_entries(&row(&good)), Some(vec![0, -3, 1 << 24, 0, 1 << 30, i32::MIN]));
        for v in [0.5, -1.25, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9] {
            assert_eq!(float_entries(&row(&[1.0, v])), None, "{v}");
        }
        // 2^31 saturates to i32::MAX, which every exact range refuses.
        assert_eq!(float_entries(&row(&[2_147_483_648.0])), Some(vec![i32::MAX]));
        assert_eq!(min_max(&[3, -7, 12, 0]), (-7, 12));
    }

    #[test]
    fn dot_split_is_the_exact_product_at_the_extremes() {
        let x = vec![PRIME as i32 - 1; 1 << 16];
        for c in [i32::MIN + 1, -16_256 * 65_536, -1, 0, 1, 0xFFFF, 0x1_0000, 1 << 30] {
            let entries = vec![c; 1 << 16];
            let [(low, high), second] = dot_split(&entries, [&x, &x]);
            assert_eq!(second, (low, high));
            let want = i128::from(c) * i128::from(PRIME - 1) * (1 << 16);
            assert_eq!((i128::from(high) << 16) + i128::from(low), want, "{c}");
        }
    }

    /// The plain i64 sum `dot_small` must equal.
    fn direct(b: &[i8], x: &[i32]) -> i64 {
        b.iter().zip(x).map(|(&b, &x)| i64::from(b) * i64::from(x)).sum()
    }

    #[test]
    fn dot_small_is_the_exact_sum_at_the_extremes_and_on_random_rows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        // Extremes: every b at −128 or 127 against residues at 0, 2^15, 2^16 − 1 and p − 1,
        // over lengths that end inside and on a 16-element step and span several blocks.
        for len in [0usize, 1, 15, 16, 17, 255, 256, 257, 4096, 65_536] {
            for (b0, x0) in [
                (-128i8, PRIME as i32 - 1),
                (127, PRIME as i32 - 1),
                (-128, 0),
                (-128, 1 << 15),
                (127, 0xFFFF),
            ] {
                let (b, x) = (vec![b0; len], vec![x0; len]);
                let y = vec![x0 ^ 1; len];
                let halves = [Halves::of(&x), Halves::of(&y)];
                let want = [direct(&b, &x), direct(&b, &y)];
                assert_eq!(dot_small(&b, &halves), want, "len {len}, b {b0}, x {x0}");
                assert_eq!(dot_small_scalar(&b, &halves), want, "len {len}, b {b0}, x {x0}");
            }
        }
        for _ in 0..50 {
            let len = rng.random_range(0..3000);
            let b: Vec<i8> = (0..len).map(|_| rng.random()).collect();
            let x: Vec<i32> = (0..len).map(|_| rng.random_range(0..PRIME as i32)).collect();
            let y: Vec<i32> = (0..len).map(|_| rng.random_range(0..PRIME as i32)).collect();
            let halves = [Halves::of(&x), Halves::of(&y)];
            assert_eq!(dot_small(&b, &halves), [direct(&b, &x), direct(&b, &y)]);
        }
        let want = -128 * (PRIME - 1) * 1000;
        assert_eq!(reduce(want), want.rem_euclid(PRIME) as i32);
    }
}
