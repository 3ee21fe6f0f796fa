// C = A·B for int8: int8 inputs, exact i32 accumulation (SPEC §4), with `dot4I8Packed`.
//
// A is m × k, packed along K: row r holds kw = ceil(k / 4) u32 words, word q = A[r, 4q .. 4q+4]
// as little-endian bytes (zero past k). B is packed along K too: word (q, j) = B[4q .. 4q+4, j],
// kw × n words. `dot4I8Packed(a, b)` is then the sum of four int8 products; naga emits SPIR-V
// `OpSDot` when the device has packed integer dot products (VK_KHR_shader_integer_dot_product)
// and an exact bit-extract polyfill otherwise. C is m × n row-major i32. Any m, k, n.
//
// Tiling is that of gemm_prelude.wgsl (prepended to this file), with TILE_K counted in K
// elements (a multiple of 4; TILE_K / 4 packed words per stage). Partial quads at the end of K are zero-padded by the
// generator, so they add nothing. i32 sums of at most 65536 products of magnitude ≤ 2^14 cannot
// overflow (SPEC §1), so the result is the same in any summation order.

// Packed words per K tile.
override TILE_KW: u32 = TILE_K / 4u;

@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<i32>;

var<workgroup> a_tile: array<u32, TILE_KW * A_STRIDE>;
var<workgroup> b_tile: array<u32, TILE_KW * BN>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let threads = WG_X * WG_Y;
    var acc: array<i32, TM * TN>;
    for (var i = 0u; i < TM * TN; i++) {
        acc[i] = 0;
    }

    let kw = (p.k + 3u) / 4u;
    var tiles = (kw + TILE_KW - 1u) / TILE_KW;
    if p.fault == 1u {
        tiles -= 1u;
    }
    for (var t = 0u; t < tiles; t++) {
        let q0 = t * TILE_KW;
        // Stage A words [row0 .. row0+BM, q0 .. q0+TILE_KW]: consecutive invocations read along k.
        for (var e = lidx; e < BM * TILE_KW; e += threads) {
            let r = e / TILE_KW;
            let qq = e % TILE_KW;
            let gr = row0 + r;
            let gq = q0 + qq;
            var v = 0u;
            if gr < p.m && gq < kw {
                v = a[gr * kw + gq];
            }
            a_tile[qq * A_STRIDE + r] = v;
        }
        // Stage B words [q0 .. q0+TILE_KW, col0 .. col0+BN]: consecutive invocations read along n.
        for (var e = lidx; e < TILE_KW * BN; e += threads) {
            let qq = e / BN;
            let cc = e % BN;
            let gq = q0 + qq;
            let gc = col0 + cc;
            var v = 0u;
            if gq < kw && gc < p.n {
                v = b[gq * p.n + gc];
            }
            b_tile[qq * BN + cc] = v;
        }
        workgroupBarrier();

        for (var qq = 0u; qq < TILE_KW; qq++) {
            var av: array<u32, TM>;
            var bv: array<u32, TN>;
            for (var i = 0u; i < TM; i++) {
                av[i] = a_tile[qq * A_STRIDE + lid.y + i * WG_Y];
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = b_tile[qq * BN + lid.x + j * WG_X];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] += dot4I8Packed(av[i], bv[j]);
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
                    c[gr * p.n + gc] = acc[i * TN + j];
                }
            }
        }
    }
}
