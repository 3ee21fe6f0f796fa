//! Exact int8 × int8 → i32 matrix multiply (GEMM) for the CPU backend.
//!
//! # Design
//!
//! The structure is the classic GotoBLAS/BLIS one:
//!
//! ```text
//! for jc in n step NC:                  B panel columns
//!   for pc in k step KC:                k block
//!     pack B[pc.., jc..] -> KC×NC panel          (shared, packed in parallel)
//!     parallel for (ic, column chunk):           rayon tasks
//!       pack A[ic.., pc..] -> MC×KC block        (per task, a few hundred KiB)
//!       for jr in chunk step NR:                 B micro-panel stays in L1
//!         for ir in ic block step MR:            A micro-panels stream from L2
//!           micro-kernel: MR×NR tile of C in registers
//! ```
//!
//! Packing buffers are bounded by `KC·NC` bytes (+ one `MC·KC` block per task), never a
//! copy of a whole operand. On the VNNI path `MR×NR = 12×32` (24 zmm accumulators),
//! `KC = 1024` (the 32 KiB B micro-panel stays in L1; C is read and written once per 1024 k),
//! `MC = 192` (192 KiB A block in L2) and `NC = 2048` (a 2 MiB shared B panel). The C tile
//! is prefetched a line at a time during the k loop: it is cold (it was last touched one k
//! block earlier), and fetching it only at store time cost about a third of the throughput at
//! n = 4096.
//!
//! # The AVX-512 VNNI path and the +128 trick
//!
//! `vpdpbusd` (`_mm512_dpbusd_epi32`) multiplies *unsigned* bytes by *signed* bytes and adds
//! each group of four products into an i32 lane. Both our operands are signed, so A is packed
//! as `a + 128` (a byte XOR `0x80`), which is in `0..=255`. Then
//!
//! ```text
//! Σ_k (a_ik + 128)·b_kj = Σ_k a_ik·b_kj + 128·colsum_j(B)
//! ```
//!
//! so every column only needs the exact correction `-128·Σ_k b_kj` (computed while packing B).
//! The micro-kernel starts its accumulators at zero and adds the correction (and C itself when
//! accumulating) once per tile, at store time. All sums wrap modulo 2³² (`vpdpbusd` is the
//! non-saturating form), so intermediate values may wrap but the final result is exact
//! whenever the true result fits in i32, which the caller guarantees (`k ≤ 65536`).
//!
//! Layout ("VNNI layout"): a packed B micro-panel stores, for every group of four consecutive
//! k, the `NR` columns each as four consecutive bytes, so one 64-byte load gives 16 columns ×
//! 4 k. A packed A micro-panel stores, per group, the `MR` rows each as four bytes, so one
//! 32-bit broadcast gives one row's four k values. Ragged edges (k not a multiple of 4, m
//! not a multiple of MR, n not a multiple of NR) are zero-padded in the packed buffers and
//! handled with masked stores, so any shape works.
//!
//! # Other paths
//!
//! * AVX2: `vpmaddubsw` saturates, so instead both operands are sign-extended to i16 and
//!   multiplied with `vpmaddwd` (`_mm256_madd_epi16`), pairs of k per 32-bit lane; exact, no
//!   offset needed.
//! * Portable: the same blocked driver with a plain-Rust micro-kernel that the compiler
//!   autovectorises; it is the only path on non-x86-64 targets.
//!
//! The path is chosen at run time with `is_x86_feature_detected!`.

use rayon::prelude::*;

/// C (m×n, row-major, leading dim n) = A (m×k, row-major) · B (k×n, row-major), or C += A·B
/// when `accumulate`.
///
/// Exact: i32 accumulation; callers guarantee `k ≤ 65536` so no overflow (|a|, |b| ≤ 128).
/// Arithmetic on C wraps rather than panicking if a caller breaks that guarantee.
///
/// # Panics
///
/// Only if a slice length disagrees with (m, k, n) (a caller bug); never on values.
pub fn gemm_i8(m: usize, k: usize, n: usize, a: &[i8], b: &[i8], c: &mut [i32], accumulate: bool) {
    gemm_with(Kernel::detect(), m, k, n, a, b, c, accumulate);
}

/// Which kernel [`gemm_i8`] will dispatch to on this CPU (`"avx512-vnni"`, `"avx2"` or
/// `"portable"`), for logs and bench output.
pub fn gemm_i8_kernel_name() -> &'static str {
    Kernel::detect().name()
}

/// One implementation of the GEMM, selectable for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512 VNNI (`vpdpbusd`) micro-kernel.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AVX2 `vpmaddwd` micro-kernel.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust, autovectorised.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if Self::Avx512Vnni.is_supported() {
                return Self::Avx512Vnni;
            }
            if Self::Avx2.is_supported() {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Whether this CPU can run the kernel.
    pub(crate) fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => is_x86_feature_detected!("avx2"),
            Self::Portable => true,
        }
    }

    /// Short name for logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Every kernel this CPU supports, fastest first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let all = [
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2,
            Self::Portable,
        ];
        all.into_iter().filter(|k| k.is_supported()).collect()
    }
}

/// [`gemm_i8`] with an explicit kernel.
///
/// # Panics
///
/// If a slice length disagrees with (m, k, n), or if `kernel` is not supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_with(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    a: &[i8],
    b: &[i8],
    c: &mut [i32],
    accumulate: bool,
) {
    assert_eq!(Some(a.len()), m.checked_mul(k), "gemm_i8: a.len() must be m*k");
    assert_eq!(Some(b.len()), k.checked_mul(n), "gemm_i8: b.len() must be k*n");
    assert_eq!(Some(c.len()), m.checked_mul(n), "gemm_i8: c.len() must be m*n");
    assert!(kernel.is_supported(), "gemm_i8: kernel {} unsupported here", kernel.name());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0);
        }
        return;
    }
    let shape = Shape { m, k, n };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512 F/BW/VNNI (checked above).
        Kernel::Avx512Vnni => unsafe { drive::<x86::Vnni512>(shape, a, b, c, accumulate) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked above).
        Kernel::Avx2 => unsafe { drive::<x86::Avx2>(shape, a, b, c, accumulate) },
        // SAFETY: the portable arch needs no CPU feature.
        Kernel::Portable => unsafe { drive::<Portable>(shape, a, b, c, accumulate) },
    }
}

/// Problem dimensions.
#[derive(Clone, Copy, Debug)]
struct Shape {
    m: usize,
    k: usize,
    n: usize,
}

/// One micro-architecture: packing formats, blocking parameters and micro-kernel.
///
/// Packed A micro-panel: for each group of `KG` consecutive k, `MR` rows × `KG` values.
/// Packed B micro-panel: for each group, `NR` columns × `KG` values. Both zero-padded.
trait Arch {
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// Consecutive k values interleaved per lane.
    const KG: usize;
    /// k block (multiple of `KG`).
    const KC: usize;
    /// Rows of C per task (multiple of `MR`).
    const MC: usize;
    /// Columns of the shared B panel (multiple of `NR`).
    const NC: usize;
    /// Packed A element.
    type PA: Copy + Default + Send + Sync;
    /// Packed B element.
    type PB: Copy + Default + Send + Sync;

    /// Packs rows `0..rows` (≤ MR) and k `0..kc` of `a` (row stride `lda`) into one A
    /// micro-panel `dst` of `MR · round_up(kc, KG)` elements.
    ///
    /// # Safety
    ///
    /// The CPU supports the arch's features.
    unsafe fn pack_a(a: &[i8], lda: usize, rows: usize, kc: usize, dst: &mut [Self::PA]);

    /// Packs k `0..kc` and columns `0..cols` (≤ NR) of `b` (row stride `ldb`) into one B
    /// micro-panel `dst` of `NR · round_up(kc, KG)` elements, and writes the per-column value
    /// the micro-kernel must add to its sums into `corr` (`NR` entries).
    ///
    /// # Safety
    ///
    /// The CPU supports the arch's features.
    unsafe fn pack_b(
        b: &[i8],
        ldb: usize,
        kc: usize,
        cols: usize,
        dst: &mut [Self::PB],
        corr: &mut [i32],
    );

    /// Packs columns `0..cols` (any width) into consecutive B micro-panels of
    /// `NR · round_up(kc, KG)` elements each, with `NR` `corr` entries per micro-panel.
    ///
    /// # Safety
    ///
    /// The CPU supports the arch's features.
    unsafe fn pack_b_panels(
        b: &[i8],
        ldb: usize,
        kc: usize,
        cols: usize,
        dst: &mut [Self::PB],
        corr: &mut [i32],
    ) {
        let len = kc.next_multiple_of(Self::KG) * Self::NR;
        let panels = dst.chunks_mut(len).zip(corr.chunks_mut(Self::NR));
        for (p, (dst, corr)) in panels.take(cols.div_ceil(Self::NR)).enumerate() {
            let j0 = p * Self::NR;
            // SAFETY: forwarded caller guarantee.
            unsafe { Self::pack_b(&b[j0..], ldb, kc, Self::NR.min(cols - j0), dst, corr) };
        }
    }

    /// Computes one `MR×NR` tile over `groups` k groups and writes its top-left
    /// `rows × cols` part to `c` (row stride `ldc`): `C = tile + corr`, or `C += tile + corr`
    /// when `load_c`.
    ///
    /// # Safety
    ///
    /// The CPU supports the arch's features; `a`/`b` hold at least `groups` groups;
    /// `corr` has `NR` entries; `c` is valid for reads and writes of a `rows × cols` tile
    /// with stride `ldc` and no other thread accesses it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        groups: usize,
        a: &[Self::PA],
        b: &[Self::PB],
        corr: &[i32],
        c: *mut i32,
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    );
}

/// A raw pointer to C that may cross threads: tasks write disjoint tiles.
#[derive(Clone, Copy, Debug)]
struct CPtr(*mut i32);
// SAFETY: the driver hands each task a disjoint set of C tiles, so no two threads ever access
// the same element, and the pointee outlives the parallel region (it is a borrowed slice).
unsafe impl Send for CPtr {}
// SAFETY: as above.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut i32 {
        self.0
    }
}

/// B micro-panels packed together by one packing job.
const PACK_PANELS: usize = 8;

/// Below this many multiply-adds the call runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// The blocked driver shared by all arches.
///
/// # Safety
///
/// The CPU supports `K`'s features. Slices have been checked against `shape`.
unsafe fn drive<K: Arch>(shape: Shape, a: &[i8], b: &[i8], c: &mut [i32], accumulate: bool) {
    let Shape { m, k, n } = shape;
    let threads = rayon::current_num_threads().max(1);
    let parallel = threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS;

    let kc_max = K::KC.min(k.next_multiple_of(K::KG));
    let nc_max = K::NC.min(n.next_multiple_of(K::NR));
    let mut bpack = vec![K::PB::default(); kc_max * nc_max];
    let mut corr = vec![0i32; nc_max];

    // Row blocks: at most MC rows, a multiple of MR, equal-sized, and (when parallel) a
    // multiple of the thread count so the last wave is not half empty.
    let mut mblocks = m.div_ceil(K::MC);
    if parallel && mblocks > 1 {
        mblocks = mblocks.next_multiple_of(threads);
    }
    let mc = m.div_ceil(mblocks).next_multiple_of(K::MR);
    let mblocks = m.div_ceil(mc);

    let cptr = CPtr(c.as_mut_ptr());
    for jc in (0..n).step_by(K::NC) {
        let ncb = K::NC.min(n - jc);
        let npanels = ncb.div_ceil(K::NR);
        // Split the panel's columns too when there are few row blocks (tall-skinny C).
        let nsplit = if parallel { (2 * threads).div_ceil(mblocks).min(npanels) } else { 1 };
        for pc in (0..k).step_by(K::KC) {
            let kcb = K::KC.min(k - pc);
            let kcp = kcb.next_multiple_of(K::KG);
            let groups = kcp / K::KG;
            let bp = &mut bpack[..npanels * kcp * K::NR];
            let cs = &mut corr[..npanels * K::NR];
            // B is packed in chunks of PACK_PANELS micro-panels so each row of B is read as a
            // few contiguous cache lines rather than a 32-byte strip per row.
            let pack = |(q, (dst, corr)): (usize, (&mut [K::PB], &mut [i32]))| {
                let j0 = jc + q * PACK_PANELS * K::NR;
                let cols = (PACK_PANELS * K::NR).min(n - j0);
                let src = &b[pc * n + j0..];
                // SAFETY: the caller guarantees the CPU features.
                unsafe { K::pack_b_panels(src, n, kcb, cols, dst, corr) };
            };
            let (blen, clen) = (PACK_PANELS * kcp * K::NR, PACK_PANELS * K::NR);
            if parallel {
                bp.par_chunks_mut(blen).zip(cs.par_chunks_mut(clen)).enumerate().for_each(pack);
            } else {
                bp.chunks_mut(blen).zip(cs.chunks_mut(clen)).enumerate().for_each(pack);
            }

            let bp: &[K::PB] = bp;
            let cs: &[i32] = cs;
            let load_c = accumulate || pc > 0;
            // `scratch` is a per-worker buffer for the packed A block, reused across tasks.
            let task = |scratch: &mut Vec<K::PA>, t: usize| {
                let (ib, js) = (t / nsplit, t % nsplit);
                let i0 = ib * mc;
                let mcb = mc.min(m - i0);
                let (p0, p1) = (js * npanels / nsplit, (js + 1) * npanels / nsplit);
                let mpanels = mcb.div_ceil(K::MR);
                scratch.resize(mc * kcp, K::PA::default());
                let apack = &mut scratch[..mpanels * K::MR * kcp];
                for (ir, dst) in apack.chunks_mut(K::MR * kcp).enumerate() {
                    let r0 = i0 + ir * K::MR;
                    let rows = K::MR.min(m - r0);
                    // SAFETY: the caller guarantees the CPU features.
                    unsafe { K::pack_a(&a[r0 * k + pc..], k, rows, kcb, dst) };
                }
                for p in p0..p1 {
                    let j0 = jc + p * K::NR;
                    let cols = K::NR.min(n - j0);
                    let bpanel = &bp[p * kcp * K::NR..(p + 1) * kcp * K::NR];
                    let corr = &cs[p * K::NR..(p + 1) * K::NR];
                    for (ir, apanel) in apack.chunks(K::MR * kcp).enumerate() {
                        let r0 = i0 + ir * K::MR;
                        let rows = K::MR.min(m - r0);
                        // SAFETY: CPU features as guaranteed by the caller; the tile at
                        // (r0, j0) of size rows×cols lies inside C (r0 < m, j0 < n, rows and
                        // cols clipped), and tasks own disjoint tiles.
                        unsafe {
                            let ct = cptr.get().add(r0 * n + j0);
                            K::kernel(groups, apanel, bpanel, corr, ct, n, rows, cols, load_c);
                        }
                    }
                }
            };
            let ntasks = mblocks * nsplit;
            if parallel {
                (0..ntasks).into_par_iter().for_each_init(Vec::new, task);
            } else {
                let mut scratch = Vec::new();
                (0..ntasks).for_each(|t| task(&mut scratch, t));
            }
        }
    }
}

/// Scalar packing of an A micro-panel for any arch (`f` maps a value to its packed form).
#[allow(clippy::too_many_arguments)]
fn pack_a_generic<T: Copy + Default>(
    a: &[i8],
    lda: usize,
    rows: usize,
    kc: usize,
    mr: usize,
    kg: usize,
    dst: &mut [T],
    f: impl Fn(i8) -> T,
) {
    let groups = kc.div_ceil(kg);
    for i in 0..mr {
        let row = if i < rows { &a[i * lda..i * lda + kc] } else { &[][..] };
        for g in 0..groups {
            for t in 0..kg {
                let kk = g * kg + t;
                dst[(g * mr + i) * kg + t] = row.get(kk).map_or(T::default(), |&v| f(v));
            }
        }
    }
}

/// Scalar packing of a B micro-panel for any arch; returns nothing, fills `dst` and the
/// column sums `colsum` (exact, i32).
#[allow(clippy::too_many_arguments)]
fn pack_b_generic<T: Copy + Default>(
    b: &[i8],
    ldb: usize,
    kc: usize,
    cols: usize,
    nr: usize,
    kg: usize,
    dst: &mut [T],
    colsum: &mut [i32],
    f: impl Fn(i8) -> T,
) {
    let groups = kc.div_ceil(kg);
    colsum.fill(0);
    for g in 0..groups {
        let out = &mut dst[g * nr * kg..(g + 1) * nr * kg];
        out.fill(T::default());
        for t in 0..kg.min(kc - g * kg) {
            let kk = g * kg + t;
            let row = &b[kk * ldb..kk * ldb + cols];
            for (j, &v) in row.iter().enumerate() {
                out[j * kg + t] = f(v);
                colsum[j] += i32::from(v);
            }
        }
    }
}

/// The portable arch: plain Rust, `KG = 1`, i16 operands so the products autovectorise.
#[derive(Debug)]
struct Portable;

impl Portable {
    const MR_: usize = 4;
    const NR_: usize = 16;
}

impl Arch for Portable {
    const MR: usize = Self::MR_;
    const NR: usize = Self::NR_;
    const KG: usize = 1;
    const KC: usize = 256;
    const MC: usize = 64;
    const NC: usize = 1024;
    type PA = i16;
    type PB = i16;

    unsafe fn pack_a(a: &[i8], lda: usize, rows: usize, kc: usize, dst: &mut [i16]) {
        pack_a_generic(a, lda, rows, kc, Self::MR, 1, dst, i16::from);
    }

    unsafe fn pack_b(
        b: &[i8],
        ldb: usize,
        kc: usize,
        cols: usize,
        dst: &mut [i16],
        corr: &mut [i32],
    ) {
        pack_b_generic(b, ldb, kc, cols, Self::NR, 1, dst, corr, i16::from);
        corr.fill(0);
    }

    unsafe fn kernel(
        groups: usize,
        a: &[i16],
        b: &[i16],
        _corr: &[i32],
        c: *mut i32,
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    ) {
        let mut acc = [[0i32; Self::NR_]; Self::MR_];
        for (av, bv) in a.chunks_exact(Self::MR_).zip(b.chunks_exact(Self::NR_)).take(groups) {
            for (acc_row, &ai) in acc.iter_mut().zip(av) {
                for (x, &bj) in acc_row.iter_mut().zip(bv) {
                    *x = x.wrapping_add(i32::from(ai) * i32::from(bj));
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            // SAFETY: the caller guarantees `c` is valid for a rows×cols tile with stride
            // `ldc` that no one else accesses; i < rows.
            let crow = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
            for (x, &v) in crow.iter_mut().zip(acc_row) {
                *x = if load_c { x.wrapping_add(v) } else { v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 SIMD arches.

    use super::{Arch, pack_a_generic, pack_b_generic};
    use std::arch::x86_64::*;

    /// AVX-512 VNNI: `MR×NR = 12×32`, two zmm accumulators per row (24 of the 32 zmm
    /// registers), `KC = 1024` so the B micro-panel (32 KiB) stays in L1 and C is read and
    /// written once per 1024 k.
    #[derive(Debug)]
    pub(super) struct Vnni512;

    const V_MR: usize = 12;
    const V_NV: usize = 2;
    const V_NR: usize = 16 * V_NV;

    impl Arch for Vnni512 {
        const MR: usize = V_MR;
        const NR: usize = V_NR;
        const KG: usize = 4;
        const KC: usize = 1024;
        const MC: usize = 192;
        const NC: usize = 2048;
        type PA = u8;
        type PB = i8;

        unsafe fn pack_a(a: &[i8], lda: usize, rows: usize, kc: usize, dst: &mut [u8]) {
            pack_a_vnni(a, lda, rows, kc, dst);
        }

        unsafe fn pack_b(
            b: &[i8],
            ldb: usize,
            kc: usize,
            cols: usize,
            dst: &mut [i8],
            corr: &mut [i32],
        ) {
            // SAFETY: the caller guarantees AVX-512 F/BW/VNNI.
            unsafe { pack_b_vnni(b, ldb, kc, cols, dst, corr, false) };
        }

        unsafe fn pack_b_panels(
            b: &[i8],
            ldb: usize,
            kc: usize,
            cols: usize,
            dst: &mut [i8],
            corr: &mut [i32],
        ) {
            // SAFETY: the caller guarantees AVX-512 F/BW/VNNI.
            unsafe { pack_b_panels_vnni(b, ldb, kc, cols, dst, corr) };
        }

        unsafe fn kernel(
            groups: usize,
            a: &[u8],
            b: &[i8],
            corr: &[i32],
            c: *mut i32,
            ldc: usize,
            rows: usize,
            cols: usize,
            load_c: bool,
        ) {
            assert!(a.len() >= groups * V_MR * 4 && b.len() >= groups * V_NR * 4);
            assert!(corr.len() >= V_NR && rows <= V_MR && cols <= V_NR);
            // SAFETY: lengths checked above; the caller guarantees the CPU features and the
            // validity of the C tile.
            unsafe {
                kernel_vnni(
                    groups,
                    a.as_ptr(),
                    b.as_ptr(),
                    corr.as_ptr(),
                    c,
                    ldc,
                    rows,
                    cols,
                    load_c,
                )
            };
        }
    }

    /// Packs an A micro-panel as `a + 128` (u8), 4 k per row per group.
    fn pack_a_vnni(a: &[i8], lda: usize, rows: usize, kc: usize, dst: &mut [u8]) {
        let full = kc / 4;
        if rows == V_MR {
            // Fast path: whole 4-byte groups, copied as u32 with the sign bits flipped; one
            // output group (24 contiguous bytes) at a time.
            let src: [&[i8]; V_MR] = std::array::from_fn(|i| &a[i * lda..i * lda + kc]);
            for (g, out) in dst.chunks_exact_mut(4 * V_MR).enumerate().take(full) {
                for (o, row) in out.chunks_exact_mut(4).zip(&src) {
                    let q = &row[4 * g..4 * g + 4];
                    let w = u32::from_ne_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                    o.copy_from_slice(&(w ^ 0x8080_8080).to_ne_bytes());
                }
            }
            if !kc.is_multiple_of(4) {
                let out = &mut dst[full * 4 * V_MR..(full + 1) * 4 * V_MR];
                for (o, row) in out.chunks_exact_mut(4).zip(&src) {
                    for (t, x) in o.iter_mut().enumerate() {
                        *x = row.get(full * 4 + t).map_or(0, |&v| (v as u8) ^ 0x80);
                    }
                }
            }
        } else {
            pack_a_generic(a, lda, rows, kc, V_MR, 4, dst, |v| (v as u8) ^ 0x80);
        }
    }

    /// Packs full-width B micro-panels group by group across all of them (row-contiguous
    /// reads of B), then any ragged last micro-panel, via [`pack_b_vnni`] for the k tail and
    /// column sums.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX-512 F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn pack_b_panels_vnni(
        b: &[i8],
        ldb: usize,
        kc: usize,
        cols: usize,
        dst: &mut [i8],
        corr: &mut [i32],
    ) {
        let len = kc.div_ceil(4) * 4 * V_NR;
        let panels = cols.div_ceil(V_NR);
        let full_panels = cols / V_NR;
        assert!(dst.len() >= panels * len && corr.len() >= panels * V_NR);
        let full = kc / 4;
        assert!(full == 0 || full_panels == 0 || b.len() >= (4 * full - 1) * ldb + cols);
        for g in 0..full {
            for v in 0..full_panels * V_NV {
                let (p, vv) = (v / V_NV, v % V_NV);
                // SAFETY: rows 4g..4g+4 ≤ 4·full and columns 16v..16v+16 ≤ cols are in `b`,
                // the 64 output bytes are inside micro-panel p < panels of `dst` (both
                // checked above). Unaligned loads/stores.
                unsafe {
                    let src = b.as_ptr().add(4 * g * ldb + 16 * v);
                    let out = dst.as_mut_ptr().add(p * len + (g * V_NR + 16 * vv) * 4);
                    interleave4(src, ldb, out);
                }
            }
        }
        for (p, (d, c)) in dst.chunks_mut(len).zip(corr.chunks_mut(V_NR)).take(panels).enumerate() {
            let j0 = p * V_NR;
            // SAFETY: forwarded caller guarantee (CPU features).
            unsafe { pack_b_vnni(&b[j0..], ldb, kc, V_NR.min(cols - j0), d, c, p < full_panels) };
        }
    }

    /// Interleaves 16 columns of 4 consecutive rows of B (`src`, stride `ldb`) into 64 bytes
    /// at `out`: column j's four bytes at `out[4j..4j + 4]`.
    ///
    /// # Safety
    ///
    /// `src`, `src + ldb`, `src + 2·ldb`, `src + 3·ldb` are readable for 16 bytes and `out`
    /// writable for 64.
    #[inline(always)]
    unsafe fn interleave4(src: *const i8, ldb: usize, out: *mut i8) {
        // SAFETY: caller contract; SSE2 is part of the x86-64 baseline.
        unsafe {
            let r0 = _mm_loadu_si128(src.cast());
            let r1 = _mm_loadu_si128(src.add(ldb).cast());
            let r2 = _mm_loadu_si128(src.add(2 * ldb).cast());
            let r3 = _mm_loadu_si128(src.add(3 * ldb).cast());
            let t01l = _mm_unpacklo_epi8(r0, r1);
            let t01h = _mm_unpackhi_epi8(r0, r1);
            let t23l = _mm_unpacklo_epi8(r2, r3);
            let t23h = _mm_unpackhi_epi8(r2, r3);
            _mm_storeu_si128(out.cast(), _mm_unpacklo_epi16(t01l, t23l));
            _mm_storeu_si128(out.add(16).cast(), _mm_unpackhi_epi16(t01l, t23l));
            _mm_storeu_si128(out.add(32).cast(), _mm_unpacklo_epi16(t01h, t23h));
            _mm_storeu_si128(out.add(48).cast(), _mm_unpackhi_epi16(t01h, t23h));
        }
    }

    /// Packs a B micro-panel in the VNNI layout and computes `corr = -128 · colsum`; with
    /// `body_done`, a full-width panel's whole 4-k groups are already packed.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX-512 F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn pack_b_vnni(
        b: &[i8],
        ldb: usize,
        kc: usize,
        cols: usize,
        dst: &mut [i8],
        corr: &mut [i32],
        body_done: bool,
    ) {
        assert!(dst.len() >= kc.div_ceil(4) * 4 * V_NR && corr.len() >= V_NR);
        if cols < V_NR {
            pack_b_generic(b, ldb, kc, cols, V_NR, 4, dst, corr, |v| v);
        } else {
            let full = kc / 4;
            assert!(kc == 0 || b.len() >= (kc - 1) * ldb + V_NR);
            for g in (0..full).filter(|_| !body_done) {
                for v in 0..V_NV {
                    // SAFETY: rows 4g..4g+4 ≤ kc and columns 16v..16v+16 ≤ NR are in `b`,
                    // the 64 output bytes at (g·NR + 16v)·4 are inside `dst` (both checked
                    // above).
                    unsafe {
                        let out = dst.as_mut_ptr().add((g * V_NR + 16 * v) * 4);
                        interleave4(b.as_ptr().add(4 * g * ldb + 16 * v), ldb, out);
                    }
                }
            }
            if !kc.is_multiple_of(4) {
                let tail = &mut dst[full * V_NR * 4..(full + 1) * V_NR * 4];
                tail.fill(0);
                for t in 0..kc % 4 {
                    let row = &b[(4 * full + t) * ldb..(4 * full + t) * ldb + V_NR];
                    for (j, &x) in row.iter().enumerate() {
                        tail[j * 4 + t] = x;
                    }
                }
            }
            // Column sums: vpdpbusd with all-ones u8 sums the 4 k of each column.
            let groups = kc.div_ceil(4);
            for v in 0..V_NV {
                let mut s = _mm512_setzero_si512();
                let ones = _mm512_set1_epi8(1);
                for g in 0..groups {
                    // SAFETY: in bounds of `dst` (checked above).
                    let x = unsafe {
                        _mm512_loadu_si512(dst.as_ptr().add((g * V_NR + 16 * v) * 4).cast())
                    };
                    s = _mm512_dpbusd_epi32(s, ones, x);
                }
                // SAFETY: 16 i32 at 16v.. inside `corr` (len ≥ NR, checked above).
                unsafe { _mm512_storeu_si512(corr.as_mut_ptr().add(16 * v).cast(), s) };
            }
        }
        for x in &mut corr[..V_NR] {
            *x = x.wrapping_mul(-128);
        }
    }

    /// The `V_MR × V_NR` VNNI micro-kernel.
    ///
    /// # Safety
    ///
    /// AVX-512 F/BW/VNNI; `a` has `groups·MR·4` bytes, `b` `groups·NR·4`, `corr` `NR` i32;
    /// `c` valid for a `rows × cols` tile (stride `ldc`), `rows ≤ MR`, `cols ≤ NR`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_vnni(
        groups: usize,
        a: *const u8,
        b: *const i8,
        corr: *const i32,
        c: *mut i32,
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    ) {
        // The C tile is cold (last touched one k block ago) and its rows are far apart (a page
        // each for large n). Fetch it during the k loop, one line at a time: issuing all ~36
        // prefetches at once exhausts the line-fill buffers and stalls the loop. C need not be
        // 64-byte aligned, so each row's last element is fetched too.
        let mut pf = [0usize; V_MR * (V_NV + 1)];
        let mut npf = 0;
        for i in 0..rows {
            for j in (0..cols).step_by(16).chain([cols - 1]) {
                pf[npf] = i * ldc + j;
                npf += 1;
            }
        }
        let mut acc = [[_mm512_setzero_si512(); V_NV]; V_MR];
        let (mut ap, mut bp) = (a, b);
        // One k group: V_NV B vectors × V_MR broadcast A dwords → V_MR·V_NV vpdpbusd.
        macro_rules! step {
            () => {
                // SAFETY: `groups` groups are in bounds of `a` and `b` (caller contract).
                unsafe {
                    let bv: [__m512i; V_NV] =
                        std::array::from_fn(|j| _mm512_loadu_si512(bp.add(64 * j).cast()));
                    for (i, acc_row) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(ap.add(4 * i).cast::<i32>().read_unaligned());
                        for (x, &bj) in acc_row.iter_mut().zip(&bv) {
                            *x = _mm512_dpbusd_epi32(*x, av, bj);
                        }
                    }
                    ap = ap.add(4 * V_MR);
                    bp = bp.add(4 * V_NR);
                }
            };
        }
        // Spread the prefetches over the first half of the loop (at most one per 4 groups):
        // back-to-back prefetches were measured to stall, too sparse ones arrive late.
        let every = (groups / (2 * npf)).clamp(1, 4);
        let head = npf.min(groups / every);
        for &off in &pf[..head] {
            // A hint only: never faults (and the address is inside the tile anyway).
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(off).cast());
            for _ in 0..every {
                step!();
            }
        }
        for _ in head * every..groups {
            step!();
        }
        for j in 0..V_NV {
            let lanes = cols.saturating_sub(16 * j).min(16);
            if lanes == 0 {
                break;
            }
            let mask: __mmask16 = ((1u32 << lanes) - 1) as u16;
            // SAFETY: corr has NR entries.
            let cv = unsafe { _mm512_loadu_si512(corr.add(16 * j).cast()) };
            for (i, acc_row) in acc.iter().enumerate().take(rows) {
                // SAFETY: row i < rows and columns 16j.. with `lanes` valid lanes are inside
                // the tile; masked-off lanes are not accessed.
                unsafe {
                    let p = c.add(i * ldc + 16 * j);
                    let mut v = _mm512_add_epi32(acc_row[j], cv);
                    if load_c {
                        v = _mm512_add_epi32(v, _mm512_maskz_loadu_epi32(mask, p));
                    }
                    _mm512_mask_storeu_epi32(p, mask, v);
                }
            }
        }
    }

    /// AVX2: `MR×NR = 6×16`, i16 operands, `vpmaddwd` on pairs of k.
    #[derive(Debug)]
    pub(super) struct Avx2;

    const A_MR: usize = 6;
    const A_NR: usize = 16;

    impl Arch for Avx2 {
        const MR: usize = A_MR;
        const NR: usize = A_NR;
        const KG: usize = 2;
        const KC: usize = 256;
        const MC: usize = 96;
        const NC: usize = 2048;
        type PA = i16;
        type PB = i16;

        unsafe fn pack_a(a: &[i8], lda: usize, rows: usize, kc: usize, dst: &mut [i16]) {
            pack_a_generic(a, lda, rows, kc, A_MR, 2, dst, i16::from);
        }

        unsafe fn pack_b(
            b: &[i8],
            ldb: usize,
            kc: usize,
            cols: usize,
            dst: &mut [i16],
            corr: &mut [i32],
        ) {
            corr.fill(0);
            if cols < A_NR {
                pack_b_generic(b, ldb, kc, cols, A_NR, 2, dst, corr, i16::from);
                corr.fill(0);
            } else {
                // SAFETY: the caller guarantees AVX2.
                unsafe { pack_b_avx2(b, ldb, kc, dst) };
            }
        }

        unsafe fn kernel(
            groups: usize,
            a: &[i16],
            b: &[i16],
            _corr: &[i32],
            c: *mut i32,
            ldc: usize,
            rows: usize,
            cols: usize,
            load_c: bool,
        ) {
            assert!(a.len() >= groups * A_MR * 2 && b.len() >= groups * A_NR * 2);
            assert!(rows <= A_MR && cols <= A_NR);
            // SAFETY: lengths checked above; the caller guarantees AVX2 and the C tile.
            unsafe { kernel_avx2(groups, a.as_ptr(), b.as_ptr(), c, ldc, rows, cols, load_c) };
        }
    }

    /// Packs a full-width (16-column) B micro-panel as i16 pairs of k.
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn pack_b_avx2(b: &[i8], ldb: usize, kc: usize, dst: &mut [i16]) {
        assert!(dst.len() >= kc.div_ceil(2) * A_NR * 2);
        assert!(kc == 0 || b.len() >= (kc - 1) * ldb + A_NR);
        let full = kc / 2;
        for g in 0..full {
            // SAFETY: rows 2g, 2g+1 < kc with 16 columns are in `b`, 32 i16 outputs at
            // g·32 are in `dst` (both checked above).
            unsafe {
                let src = b.as_ptr().add(2 * g * ldb);
                let r0 = _mm_loadu_si128(src.cast());
                let r1 = _mm_loadu_si128(src.add(ldb).cast());
                let out = dst.as_mut_ptr().add(g * 2 * A_NR);
                let lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(r0, r1));
                let hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(r0, r1));
                _mm256_storeu_si256(out.cast(), lo);
                _mm256_storeu_si256(out.add(16).cast(), hi);
            }
        }
        if !kc.is_multiple_of(2) {
            let row = &b[(kc - 1) * ldb..(kc - 1) * ldb + A_NR];
            let tail = &mut dst[full * 2 * A_NR..(full + 1) * 2 * A_NR];
            for (j, &x) in row.iter().enumerate() {
                tail[2 * j] = i16::from(x);
                tail[2 * j + 1] = 0;
            }
        }
    }

    /// The 6×16 AVX2 micro-kernel.
    ///
    /// # Safety
    ///
    /// AVX2; `a` has `groups·MR·2` i16, `b` `groups·NR·2`; `c` valid for a `rows × cols`
    /// tile (stride `ldc`), `rows ≤ MR`, `cols ≤ NR`.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_avx2(
        groups: usize,
        a: *const i16,
        b: *const i16,
        c: *mut i32,
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    ) {
        let mut acc = [[_mm256_setzero_si256(); 2]; A_MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..groups {
            // SAFETY: `groups` groups are in bounds (caller contract).
            unsafe {
                let b0 = _mm256_loadu_si256(bp.cast());
                let b1 = _mm256_loadu_si256(bp.add(16).cast());
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_epi32(ap.add(2 * i).cast::<i32>().read_unaligned());
                    acc_row[0] = _mm256_add_epi32(acc_row[0], _mm256_madd_epi16(av, b0));
                    acc_row[1] = _mm256_add_epi32(acc_row[1], _mm256_madd_epi16(av, b1));
                }
                ap = ap.add(2 * A_MR);
                bp = bp.add(2 * A_NR);
            }
        }
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            if cols == A_NR {
                // SAFETY: full 16-column row i < rows of the tile.
                unsafe {
                    for (j, &x) in acc_row.iter().enumerate() {
                        let p = c.add(i * ldc + 8 * j);
                        let v = if load_c {
                            _mm256_add_epi32(x, _mm256_loadu_si256(p.cast()))
                        } else {
                            x
                        };
                        _mm256_storeu_si256(p.cast(), v);
                    }
                }
            } else {
                let mut tmp = [0i32; A_NR];
                // SAFETY: `tmp` holds 16 i32.
                unsafe {
                    _mm256_storeu_si256(tmp.as_mut_ptr().cast(), acc_row[0]);
                    _mm256_storeu_si256(tmp.as_mut_ptr().add(8).cast(), acc_row[1]);
                }
                // SAFETY: `cols` entries of row i < rows are inside the tile.
                let crow = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
                for (x, &v) in crow.iter_mut().zip(&tmp) {
                    *x = if load_c { x.wrapping_add(v) } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[i8],
        b: &[i8],
        c0: &[i32],
        acc: bool,
    ) -> Vec<i32> {
        let mut out = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s: i64 = if acc { i64::from(c0[i * n + j]) } else { 0 };
                for kk in 0..k {
                    s += i64::from(a[i * k + kk]) * i64::from(b[kk * n + j]);
                }
                out[i * n + j] = i32::try_from(s).expect("reference fits i32");
            }
        }
        out
    }

    fn random(len: usize, rng: &mut StdRng) -> Vec<i8> {
        (0..len).map(|_| rng.random::<i8>()).collect()
    }

    /// Runs `kernel` on (a, b) over a random C (seeded) and compares with the reference.
    fn check(
        kernel: Kernel,
        (m, k, n): (usize, usize, usize),
        a: &[i8],
        b: &[i8],
        acc: bool,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let c0: Vec<i32> = (0..m * n).map(|_| rng.random_range(-1_000_000..1_000_000)).collect();
        let want = reference(m, k, n, a, b, &c0, acc);
        let mut c = c0.clone();
        gemm_with(kernel, m, k, n, a, b, &mut c, acc);
        assert!(c == want, "{} m={m} k={k} n={n} acc={acc}", kernel.name());
    }

    fn check_random(kernel: Kernel, m: usize, k: usize, n: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        check(kernel, (m, k, n), &a, &b, false, seed);
        check(kernel, (m, k, n), &a, &b, true, seed + 1);
    }

    #[test]
    fn int8_awkward_shapes_all_kernels() {
        let dims = [0usize, 1, 3, 7, 33, 65, 257];
        for kernel in Kernel::available() {
            let mut seed = 0;
            for &m in &dims {
                for &k in &dims {
                    for &n in &dims {
                        seed += 1;
                        check_random(kernel, m, k, n, seed);
                    }
                }
            }
        }
    }

    #[test]
    fn int8_block_boundaries_all_kernels() {
        // Crosses KC, MC and NC of every arch, with ragged tails.
        for kernel in Kernel::available() {
            for &(m, k, n) in &[(200, 1030, 130), (37, 517, 4100), (390, 300, 70), (13, 2049, 2)] {
                check_random(kernel, m, k, n, (m * k * n) as u64);
            }
        }
    }

    #[test]
    fn int8_extreme_values_all_kernels() {
        for kernel in Kernel::available() {
            for &(m, k, n) in &[(9, 1027, 67), (64, 4096, 64), (1, 65536, 3)] {
                for (av, bv) in [(-128i8, -128i8), (127, 127), (-128, 127), (127, -128)] {
                    let a = vec![av; m * k];
                    let b = vec![bv; k * n];
                    check(kernel, (m, k, n), &a, &b, false, 7);
                    check(kernel, (m, k, n), &a, &b, true, 8);
                }
            }
        }
    }

    /// fp16/bf16 challenges run on this GEMM with elements in [-16, 15] (SPEC §3.3): every
    /// kernel must be exact for them on ragged shapes, and at k = 65536 (the largest k) the
    /// extreme sums ±2²⁴ must come out exactly (and so convert to f32 exactly).
    #[test]
    fn small_signed_inputs_are_exact_on_every_kernel() {
        let mut rng = StdRng::seed_from_u64(16);
        for kernel in Kernel::available() {
            for &(m, k, n) in &[(33, 70, 45), (129, 1, 3), (13, 1030, 130), (200, 9, 33)] {
                let a: Vec<i8> = (0..m * k).map(|_| rng.random_range(-16..=15)).collect();
                let b: Vec<i8> = (0..k * n).map(|_| rng.random_range(-16..=15)).collect();
                check(kernel, (m, k, n), &a, &b, false, 1);
            }
            let (m, k, n) = (3, 65_536, 17);
            for (av, bv, want) in [(-16i8, -16i8, 1 << 24), (-16, 15, -(15 << 20))] {
                let mut c = vec![7i32; m * n];
                gemm_with(kernel, m, k, n, &vec![av; m * k], &vec![bv; k * n], &mut c, false);
                assert!(c.iter().all(|&v| v == want), "{} {av}·{bv}", kernel.name());
                assert_eq!(want as f32 as i64, i64::from(want));
            }
        }
    }

    #[test]
    fn int8_accumulate_over_k_slabs() {
        // The verifier's pattern: 32 rows, k split into slabs, C accumulated.
        let (m, k, n, slab) = (32, 1024, 512, 256);
        let mut rng = StdRng::seed_from_u64(42);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let want = reference(m, k, n, &a, &b, &[], false);
        for kernel in Kernel::available() {
            let mut c = vec![0i32; m * n];
            for s in (0..k).step_by(slab) {
                let a_s: Vec<i8> =
                    (0..m).flat_map(|i| a[i * k + s..i * k + s + slab].iter().copied()).collect();
                gemm_with(kernel, m, slab, n, &a_s, &b[s * n..(s + slab) * n], &mut c, s > 0);
            }
            assert!(c == want, "{}", kernel.name());
        }
    }

    #[test]
    fn int8_public_api() {
        let mut rng = StdRng::seed_from_u64(3);
        let (m, k, n) = (70, 90, 110);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut c = vec![0i32; m * n];
        gemm_i8(m, k, n, &a, &b, &mut c, false);
        assert_eq!(c, reference(m, k, n, &a, &b, &[], false));
        assert!(["avx512-vnni", "avx2", "portable"].contains(&gemm_i8_kernel_name()));
    }

    #[test]
    #[should_panic(expected = "a.len()")]
    fn int8_bad_lengths_panic() {
        gemm_i8(2, 2, 2, &[0; 3], &[0; 4], &mut [0; 4], false);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn int8_proptest_matches_reference(
            m in 0usize..80, k in 0usize..300, n in 0usize..150, acc: bool, seed: u64,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            let c0: Vec<i32> = (0..m * n).map(|_| rng.random_range(-1000..1000)).collect();
            let want = reference(m, k, n, &a, &b, &c0, acc);
            for kernel in Kernel::available() {
                let mut c = c0.clone();
                gemm_with(kernel, m, k, n, &a, &b, &mut c, acc);
                prop_assert!(c == want, "{}", kernel.name());
            }
        }
    }
}
