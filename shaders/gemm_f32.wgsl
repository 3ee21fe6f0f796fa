// C = A·B in f32 (fp32 mode, and fp16/bf16 whose small-integer inputs are exact in f32).
//
// A is m × k and B is k × n, both row-major f32; C is m × n row-major f32. Any m, k, n: tiles
// are loaded with bounds checks and zero padding, and only in-range outputs are stored.
//
// Tiling and its parameters: gemm_prelude.wgsl, prepended to this file.
//
// Summation order differs from other backends; the fp32 verifier allows for it
// (`fp32_tolerance`), and the fp16/bf16 sums are exact in any order (SPEC §1).
//
// C is bound as u32 words so the store can canonicalise zero: SPEC's row bytes are unique, a
// zero entry is +0 (0x00000000), but a sum of -0 terms only (zero times a negative element) is
// -0 in IEEE arithmetic, and WGSL lets implementations ignore the sign of zero in float
// operations (so a +0 accumulator start or `acc + 0.0` guarantees nothing). Integer ops on the
// bit pattern are exact everywhere.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
// f32 bit patterns, canonical (see above).
@group(0) @binding(3) var<storage, read_write> c: array<u32>;

var<workgroup> a_tile: array<f32, TILE_K * A_STRIDE>;
var<workgroup> b_tile: array<f32, TILE_K * BN>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let threads = WG_X * WG_Y;
    var acc: array<f32, TM * TN>;
    for (var i = 0u; i < TM * TN; i++) {
        acc[i] = 0.0;
    }

    var tiles = (p.k + TILE_K - 1u) / TILE_K;
    if p.fault == 1u {
        tiles -= 1u;
    }
    for (var t = 0u; t < tiles; t++) {
        let k0 = t * TILE_K;
        // Stage A[row0 .. row0+BM, k0 .. k0+TILE_K]: consecutive invocations read along k.
        for (var e = lidx; e < BM * TILE_K; e += threads) {
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let gr = row0 + r;
            let gk = k0 + kk;
            var v = 0.0;
            if gr < p.m && gk < p.k {
                v = a[gr * p.k + gk];
            }
            a_tile[kk * A_STRIDE + r] = v;
        }
        // Stage B[k0 .. k0+TILE_K, col0 .. col0+BN]: consecutive invocations read along n.
        for (var e = lidx; e < TILE_K * BN; e += threads) {
            let kk = e / BN;
            let cc = e % BN;
            let gk = k0 + kk;
            let gc = col0 + cc;
            var v = 0.0;
            if gk < p.k && gc < p.n {
                v = b[gk * p.n + gc];
            }
            b_tile[kk * BN + cc] = v;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            var av: array<f32, TM>;
            var bv: array<f32, TN>;
            for (var i = 0u; i < TM; i++) {
                av[i] = a_tile[kk * A_STRIDE + lid.y + i * WG_Y];
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = b_tile[kk * BN + lid.x + j * WG_X];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] += av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let gr = row0 + lid.y + i * WG_Y;
        if gr < p.m {
            for (var j = 0u; j < TN; j++) {
                let gc = col0 + lid.x + j * WG_X;
                if gc < p.n {
                    let bits = bitcast<u32>(acc[i * TN + j]);
                    c[gr * p.n + gc] = select(bits, 0u, bits == 0x80000000u);
                }
            }
        }
    }
}
