//! The fast path of the generator: [`BLOCKS`] Threefry blocks of one row at a time, held as
//! structure of arrays (word w of every block in one `[u32; BLOCKS]`), so each statement of the
//! cipher is one vector instruction per register's worth of lanes.
//!
//! Portable code written for the autovectoriser, compiled per target by `multiversion`. What
//! keeps it vectorised (each point checked in the disassembly, and measured):
//! - the 13 rounds are unrolled by a macro, so rotations are immediates (`vprold zmm, imm`);
//!   a rolled loop made LLVM gather the rotation table and use variable rotates;
//! - 32 blocks, not 16: two independent registers per word on AVX-512 (four on AVX2) give the
//!   out-of-order core enough independent work; 16 blocks ran at a third of the throughput;
//! - plain index loops instead of `array::map`/`from_fn`, which were left as out-of-line calls
//!   compiled for the baseline target, or turned into gathers and scatters;
//! - the counter vector is `IOTA + (first - 1)` with `IOTA = 1..=BLOCKS`: with a lane of value 0
//!   LLVM folded that lane to a scalar and rebuilt the vector through the stack each batch;
//! - the per-mode byte mapping runs on whole stream bytes after the interleave, one vector
//!   shift per 64 bytes, instead of extracting bytes from words.
//!
//! The output is bit-identical to the reference path in `generator.rs` (tests check every mode,
//! offset and length class).

use multiversion::multiversion;

use super::{FP32_SCALE, KeySchedule, ROTATIONS, THREEFRY_ROUNDS};
use crate::challenge::Mode;

/// Blocks per batch.
const BLOCKS: usize = 32;
/// Stream words per batch: four per block.
const WORDS: usize = 4 * BLOCKS;
/// Stream bytes per batch.
const BYTES: usize = 4 * WORDS;
/// `1..=BLOCKS`, the offsets of the batch's blocks from `first - 1` (see the module docs).
const IOTA: [u32; BLOCKS] = {
    let mut a = [0u32; BLOCKS];
    let mut i = 0;
    while i < BLOCKS {
        a[i] = i as u32 + 1;
        i += 1;
    }
    a
};

// The unrolled rounds below are those of Threefry-4x32-13.
const _: () = assert!(THREEFRY_ROUNDS == 13);

type Lanes = [u32; BLOCKS];

/// One Threefry mix on every lane: `a += b; b = rotl(b, r) ^ a`.
#[inline(always)]
fn mix(a: &mut Lanes, b: &mut Lanes, r: u32) {
    for i in 0..BLOCKS {
        a[i] = a[i].wrapping_add(b[i]);
        b[i] = b[i].rotate_left(r) ^ a[i];
    }
}

/// Adds `k` to every lane.
#[inline(always)]
fn add(a: &mut Lanes, k: u32) {
    for v in a.iter_mut() {
        *v = v.wrapping_add(k);
    }
}

/// Round `r` (0-based) and, after every fourth round, key injection `r / 4 + 1`; exactly the
/// steps of the reference `threefry_lanes`. `r` is a literal at every call, so every branch and
/// table lookup folds away.
#[inline(always)]
fn round(x: &mut [Lanes; 4], ks: &[u32; 5], r: usize) {
    let [ra, rb] = ROTATIONS[r % 8];
    let [x0, x1, x2, x3] = x;
    if r.is_multiple_of(2) {
        mix(x0, x1, ra);
        mix(x2, x3, rb);
    } else {
        mix(x0, x3, ra);
        mix(x2, x1, rb);
    }
    if r % 4 == 3 {
        let s = r / 4 + 1;
        add(x0, ks[s % 5]);
        add(x1, ks[(s + 1) % 5]);
        add(x2, ks[(s + 2) % 5]);
        add(x3, ks[(s + 3) % 5].wrapping_add(s as u32));
    }
}

/// Blocks `first .. first + BLOCKS` of `row`, counters `(row, block, tag, 0)`, by word.
#[inline(always)]
fn blocks(ks: &KeySchedule, row: u32, first: u32) -> [Lanes; 4] {
    let k = &ks.words;
    let mut x1 = IOTA;
    add(&mut x1, first.wrapping_sub(1).wrapping_add(k[1]));
    let mut x =
        [[row.wrapping_add(k[0]); BLOCKS], x1, [ks.tag.wrapping_add(k[2]); BLOCKS], [k[3]; BLOCKS]];
    macro_rules! rounds {
        ($($r:literal)*) => { $(round(&mut x, k, $r);)* };
    }
    rounds!(0 1 2 3 4 5 6 7 8 9 10 11 12);
    x
}

/// Stream order: block b's words `4b .. 4b + 4` (a 4 × BLOCKS transpose, done with shuffles).
#[inline(always)]
fn interleave<T: Copy>(x: &[[T; BLOCKS]; 4], out: &mut [T; WORDS]) {
    for b in 0..BLOCKS {
        for w in 0..4 {
            out[4 * b + w] = x[w][b];
        }
    }
}

/// The fp32 elements of one word array (SPEC: top 24 bits, signed, times 2^-23).
#[inline(always)]
fn fp32s(x: &Lanes) -> [f32; BLOCKS] {
    let mut y = [0f32; BLOCKS];
    for i in 0..BLOCKS {
        y[i] = ((x[i] as i32) >> 8) as f32 * FP32_SCALE;
    }
    y
}

/// Fp32 elements `WORDS · batch ..` of `row`.
#[inline(always)]
fn fp32_batch(ks: &KeySchedule, row: u32, batch: usize, out: &mut [f32; WORDS]) {
    let x = blocks(ks, row, (batch * BLOCKS) as u32);
    interleave(&[fp32s(&x[0]), fp32s(&x[1]), fp32s(&x[2]), fp32s(&x[3])], out);
}

/// Small-integer elements `BYTES · batch ..` of `row`: each stream byte as i8, shifted right
/// (arithmetically) by `SHIFT` (0 for int8, 3 for the 16-bit float modes).
#[inline(always)]
fn int_batch<const SHIFT: u32>(ks: &KeySchedule, row: u32, batch: usize, out: &mut [i8; BYTES]) {
    let x = blocks(ks, row, (batch * BLOCKS) as u32);
    let mut words = [0u32; WORDS];
    interleave(&x, &mut words);
    let mut bytes = [0u8; BYTES];
    for (quad, w) in bytes.chunks_exact_mut(4).zip(words) {
        quad.copy_from_slice(&w.to_le_bytes());
    }
    for (d, b) in out.iter_mut().zip(bytes) {
        *d = (b as i8) >> SHIFT;
    }
}

/// The same elements as f32.
#[inline(always)]
fn int_f32_batch<const SHIFT: u32>(
    ks: &KeySchedule,
    row: u32,
    batch: usize,
    out: &mut [f32; BYTES],
) {
    let mut ints = [0i8; BYTES];
    int_batch::<SHIFT>(ks, row, batch, &mut ints);
    for (d, v) in out.iter_mut().zip(ints) {
        *d = f32::from(v);
    }
}

/// Whole batches of `N` elements of one row. A trait rather than a closure: closures were
/// compiled out of line for the baseline target, losing the vector code.
trait Batches<T, const N: usize> {
    /// Elements `N · index ..` of the row.
    fn batch(&self, index: usize, out: &mut [T; N]);
}

/// The row's fp32 elements.
struct Fp32<'a> {
    ks: &'a KeySchedule,
    row: u32,
}

impl Batches<f32, WORDS> for Fp32<'_> {
    #[inline(always)]
    fn batch(&self, index: usize, out: &mut [f32; WORDS]) {
        fp32_batch(self.ks, self.row, index, out);
    }
}

/// The row's small-integer elements (see [`int_batch`]).
struct Ints<'a, const SHIFT: u32> {
    ks: &'a KeySchedule,
    row: u32,
}

impl<const SHIFT: u32> Batches<i8, BYTES> for Ints<'_, SHIFT> {
    #[inline(always)]
    fn batch(&self, index: usize, out: &mut [i8; BYTES]) {
        int_batch::<SHIFT>(self.ks, self.row, index, out);
    }
}

impl<const SHIFT: u32> Batches<f32, BYTES> for Ints<'_, SHIFT> {
    #[inline(always)]
    fn batch(&self, index: usize, out: &mut [f32; BYTES]) {
        int_f32_batch::<SHIFT>(self.ks, self.row, index, out);
    }
}

/// Fills `out` with elements `first_col ..` of a row: whole batches straight into `out`, a
/// ragged head and tail through a scratch batch.
#[inline(always)]
fn fill_row<T: Copy + Default, const N: usize>(
    source: &impl Batches<T, N>,
    first_col: u32,
    out: &mut [T],
) {
    let first = first_col as usize;
    let mut batch = first / N;
    let skip = first % N;
    let mut rest = out;
    if skip != 0 && !rest.is_empty() {
        let mut scratch = [T::default(); N];
        source.batch(batch, &mut scratch);
        let take = (N - skip).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&scratch[skip..skip + take]);
        rest = tail;
        batch += 1;
    }
    let mut whole = rest.chunks_exact_mut(N);
    for chunk in &mut whole {
        if let Ok(chunk) = <&mut [T; N]>::try_from(chunk) {
            source.batch(batch, chunk);
        }
        batch += 1;
    }
    let tail = whole.into_remainder();
    if !tail.is_empty() {
        let mut scratch = [T::default(); N];
        source.batch(batch, &mut scratch);
        let n = tail.len();
        tail.copy_from_slice(&scratch[..n]);
    }
}

/// Whether the small-integer mapping takes the whole byte (int8) rather than its top five bits
/// (the 16-bit float modes; SPEC §3).
fn whole_byte(mode: Mode) -> bool {
    mode == Mode::Int8
}

/// Fills `out` with exact-mode elements `first_col ..` of one row (`mode` must be exact).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
pub(super) fn fill_small_ints(
    ks: &KeySchedule,
    mode: Mode,
    row: u32,
    first_col: u32,
    out: &mut [i8],
) {
    if whole_byte(mode) {
        fill_row(&Ints::<0> { ks, row }, first_col, out);
    } else {
        fill_row(&Ints::<3> { ks, row }, first_col, out);
    }
}

/// Fills `out` with the elements `first_col ..` of one row as f32 (exact for every mode).
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma", "aarch64+neon"))]
pub(super) fn fill_f32s(ks: &KeySchedule, mode: Mode, row: u32, first_col: u32, out: &mut [f32]) {
    if mode == Mode::Fp32 {
        fill_row(&Fp32 { ks, row }, first_col, out);
    } else if whole_byte(mode) {
        fill_row(&Ints::<0> { ks, row }, first_col, out);
    } else {
        fill_row(&Ints::<3> { ks, row }, first_col, out);
    }
}
