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
        let rows: Vec<[i32; VECTORS]> = (0..shape.k)
            .into_par_iter()
            .map_init(
                || vec![0i8; n],
                |b, i| {
                    // Exact mode, checked by `exact_range`.
                    let _ = generator.fill_i8(Matrix::B, i, 0, b);
                    dot2(b, [&x[0], &x[1]]).map(reduce)
                },
            )
            .collect();
        let y = std::array::from_fn(|v| rows.iter().map(|r| r[v]).collect());
        debug_assert!(rows.len() == k);
        Some(Self { mode, k, range, x, y })
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
        let ay = dot2(&a, [&self.y[0], &self.y[1]]).map(reduce);
        cx == ay
    }

    /// `C_r·x` mod p for each vector, or `None` if an entry is not an integer in range.
    fn c_dot_x(&self, bytes: &[u8]) -> Option<[i32; VECTORS]> {
        let (lo, hi) = self.range;
        let mut sums = [0i128; VECTORS];
        for (j, raw) in bytes.chunks_exact(4).enumerate() {
            let raw = [raw[0], raw[1], raw[2], raw[3]];
            let c = match self.mode {
                Mode::Int8 => i64::from(i32::from_le_bytes(raw)),
                _ => exact_integer(f32::from_le_bytes(raw))?,
            };
            if !(lo..=hi).contains(&c) {
                return None;
            }
            for (sum, x) in sums.iter_mut().zip(&self.x) {
                // |c| < 2^31 and x < 2^31: each term < 2^62, at most 2^24 of them.
                *sum += i128::from(c) * i128::from(x[j]);
            }
        }
        Some(sums.map(|s| s.rem_euclid(i128::from(PRIME)) as i32))
    }
}

/// The integer an f32 entry holds exactly, or `None` (NaN, infinite, fractional, or beyond
/// 2^31, where no exact-mode entry can be). −0 is 0.
fn exact_integer(v: f32) -> Option<i64> {
    (v.is_finite() && v.trunc() == v && v.abs() < 2_147_483_648.0).then_some(v as i64)
}

/// A sum of at most 2^24 terms below 2^38 in magnitude, reduced into `[0, p)`.
fn reduce(s: i64) -> i32 {
    s.rem_euclid(PRIME) as i32
}

/// `(Σ b_j·x0_j, Σ b_j·x1_j)` in i64: each product of a small integer and a residue < 2^31
/// is below 2^38, so sums of up to 2^24 terms cannot overflow.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
fn dot2(b: &[i8], x: [&[i32]; VECTORS]) -> [i64; VECTORS] {
    let (x0, x1) = (&x[0][..b.len()], &x[1][..b.len()]);
    let (mut s0, mut s1) = (0i64, 0i64);
    for ((&b, &u), &v) in b.iter().zip(x0).zip(x1) {
        let b = i64::from(b);
        s0 += b * i64::from(u);
        s1 += b * i64::from(v);
    }
    [s0, s1]
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
    fn exact_integer_refuses_what_no_exact_entry_can_be() {
        assert_eq!(exact_integer(-0.0), Some(0));
        assert_eq!(exact_integer(-3.0), Some(-3));
        assert_eq!(exact_integer(16_777_216.0), Some(1 << 24));
        for v in [0.5, -1.25, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9] {
            assert_eq!(exact_integer(v), None, "{v}");
        }
    }

    #[test]
    fn dot2_matches_a_scalar_sum_at_the_extremes() {
        let b = vec![-128i8; 1000];
        let x = vec![PRIME as i32 - 1; 1000];
        let want = -128 * (PRIME - 1) * 1000;
        assert_eq!(dot2(&b, [&x, &x]), [want, want]);
        assert_eq!(reduce(want), want.rem_euclid(PRIME) as i32);
    }
}
