// The veribench matrix generator (protocol SPEC.md §3) on the GPU.
//
// Bit-identical to `veribench_protocol::Generator`: Threefry-4x32-13 keyed by four words of the
// device seed, block (row, b) of a matrix is threefry(key, (row, b, tag, 0)), the row's word
// stream is its blocks' words in order and its byte stream those words in little-endian order.
// Only u32 add, xor and shifts are used, which every WGSL implementation executes exactly.
//
// Three entry points, one per storage layout the GEMMs want:
// - `gen_f32`:     row-major f32 (fp32, fp16 and bf16 modes; fp16/bf16 values are small
//                  integers, exact in f32).
// - `gen_i8_rows`: int8 A, row-major, four consecutive K elements packed per u32 (stream bytes in
//                  little-endian order, which is exactly the stream word), so the int8 GEMM
//                  reads A with `dot4I8Packed`. Bytes past the end of a row are zero.
// - `gen_i8_cols`: int8 B, packed along K: word (q, j) holds B[4q .. 4q+4, j] in bytes 0..4.
//                  Rows past K are zero, so a partial last quad adds nothing to the dot product.
//
// One invocation computes one 128-bit block (`gen_i8_cols`: the same block of four consecutive
// rows), so no Threefry output is wasted. Work items are flattened over a 2-D dispatch because
// a dispatch dimension is capped at 65535 workgroups.

struct GenParams {
    key: vec4<u32>,
    // 0x1BD11BDA ^ key words: the fifth key-schedule word.
    parity: u32,
    // Counter word 2: 0 for A, 1 for B.
    tag: u32,
    rows: u32,
    cols: u32,
    // 0 = int8 (`gen_f32` does not use it), 1 = fp16/bf16 small integers, 2 = fp32.
    mode: u32,
    // Work items (invocations that do something) of this dispatch.
    items: u32,
    // Blocks per row (`gen_f32`, `gen_i8_rows`) or per row quad (`gen_i8_cols`).
    blocks: u32,
    // u32 words per row of the output.
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: GenParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

const WG: u32 = 64u;
// 2^-23: the fp32 element scale.
const FP32_SCALE: f32 = 1.1920928955078125e-7;

fn rotl(x: u32, r: u32) -> u32 {
    return (x << r) | (x >> (32u - r));
}

// Threefry-4x32-13 of counter (c0, c1, tag, 0) under this dispatch's key, rounds unrolled with
// the rotation constants R[r mod 8] and key injections after rounds 3, 7 and 11.
fn threefry(c0: u32, c1: u32) -> vec4<u32> {
    let ks0 = p.key.x;
    let ks1 = p.key.y;
    let ks2 = p.key.z;
    let ks3 = p.key.w;
    let ks4 = p.parity;
    var x0 = c0 + ks0;
    var x1 = c1 + ks1;
    var x2 = p.tag + ks2;
    var x3 = ks3;
    // Rounds 0..3: R = [10,26], [11,21], [13,27], [23,5].
    x0 += x1; x1 = rotl(x1, 10u) ^ x0; x2 += x3; x3 = rotl(x3, 26u) ^ x2;
    x0 += x3; x3 = rotl(x3, 11u) ^ x0; x2 += x1; x1 = rotl(x1, 21u) ^ x2;
    x0 += x1; x1 = rotl(x1, 13u) ^ x0; x2 += x3; x3 = rotl(x3, 27u) ^ x2;
    x0 += x3; x3 = rotl(x3, 23u) ^ x0; x2 += x1; x1 = rotl(x1, 5u) ^ x2;
    x0 += ks1; x1 += ks2; x2 += ks3; x3 += ks4 + 1u;
    // Rounds 4..7: R = [6,20], [17,11], [25,10], [18,20].
    x0 += x1; x1 = rotl(x1, 6u) ^ x0; x2 += x3; x3 = rotl(x3, 20u) ^ x2;
    x0 += x3; x3 = rotl(x3, 17u) ^ x0; x2 += x1; x1 = rotl(x1, 11u) ^ x2;
    x0 += x1; x1 = rotl(x1, 25u) ^ x0; x2 += x3; x3 = rotl(x3, 10u) ^ x2;
    x0 += x3; x3 = rotl(x3, 18u) ^ x0; x2 += x1; x1 = rotl(x1, 20u) ^ x2;
    x0 += ks2; x1 += ks3; x2 += ks4; x3 += ks0 + 2u;
    // Rounds 8..11: R = [10,26], [11,21], [13,27], [23,5].
    x0 += x1; x1 = rotl(x1, 10u) ^ x0; x2 += x3; x3 = rotl(x3, 26u) ^ x2;
    x0 += x3; x3 = rotl(x3, 11u) ^ x0; x2 += x1; x1 = rotl(x1, 21u) ^ x2;
    x0 += x1; x1 = rotl(x1, 13u) ^ x0; x2 += x3; x3 = rotl(x3, 27u) ^ x2;
    x0 += x3; x3 = rotl(x3, 23u) ^ x0; x2 += x1; x1 = rotl(x1, 5u) ^ x2;
    x0 += ks3; x1 += ks4; x2 += ks0; x3 += ks1 + 3u;
    // Round 12: R = [6,20].
    x0 += x1; x1 = rotl(x1, 6u) ^ x0; x2 += x3; x3 = rotl(x3, 20u) ^ x2;
    return vec4<u32>(x0, x1, x2, x3);
}

// Flat work-item index over a 2-D grid of 1-D workgroups.
fn item(wid: vec3<u32>, nwg: vec3<u32>, lidx: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lidx;
}

// Stream byte `byte` (0..4) of `word` as a two's-complement i8, widened to i32.
fn as_i8(word: u32, byte: u32) -> i32 {
    return bitcast<i32>(word << (24u - 8u * byte)) >> 24u;
}

@compute @workgroup_size(64, 1, 1)
fn gen_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let id = item(wid, nwg, lidx);
    if id >= p.items {
        return;
    }
    let row = id / p.blocks;
    let blk = id % p.blocks;
    let x = threefry(row, blk);
    let base = row * p.stride;
    if p.mode == 2u {
        // fp32: one element per stream word, (word as i32 >> 8) · 2^-23.
        for (var w = 0u; w < 4u; w++) {
            let col = blk * 4u + w;
            if col < p.cols {
                let v = f32(bitcast<i32>(x[w]) >> 8u) * FP32_SCALE;
                out[base + col] = bitcast<u32>(v);
            }
        }
    } else {
        // fp16/bf16: one element per stream byte, (byte as i8) >> 3.
        for (var w = 0u; w < 4u; w++) {
            for (var byte = 0u; byte < 4u; byte++) {
                let col = blk * 16u + w * 4u + byte;
                if col < p.cols {
                    let v = f32(as_i8(x[w], byte) >> 3u);
                    out[base + col] = bitcast<u32>(v);
                }
            }
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn gen_i8_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let id = item(wid, nwg, lidx);
    if id >= p.items {
        return;
    }
    let row = id / p.blocks;
    let blk = id % p.blocks;
    let x = threefry(row, blk);
    let base = row * p.stride;
    for (var w = 0u; w < 4u; w++) {
        let word = blk * 4u + w;
        let first = word * 4u;
        if first < p.cols {
            let valid = p.cols - first;
            var v = x[w];
            if valid < 4u {
                // Zero the bytes past the row's end so they add nothing to dot4I8Packed.
                v &= (1u << (8u * valid)) - 1u;
            }
            out[base + word] = v;
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn gen_i8_cols(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let id = item(wid, nwg, lidx);
    if id >= p.items {
        return;
    }
    let quad = id / p.blocks;
    let blk = id % p.blocks;
    // Blocks `blk` of rows 4·quad .. 4·quad + 4 (zero past the last row).
    var x: array<vec4<u32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        let row = quad * 4u + r;
        if row < p.rows {
            x[r] = threefry(row, blk);
        } else {
            x[r] = vec4<u32>(0u);
        }
    }
    let base = quad * p.stride;
    // Column 16·blk + c is byte c of each block; gather the four rows' bytes into one word.
    for (var c = 0u; c < 16u; c++) {
        let col = blk * 16u + c;
        if col < p.cols {
            let w = c / 4u;
            let s = 8u * (c % 4u);
            var v = 0u;
            for (var r = 0u; r < 4u; r++) {
                v |= ((x[r][w] >> s) & 0xffu) << (8u * r);
            }
            out[base + col] = v;
        }
    }
}
