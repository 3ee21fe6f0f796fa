// veribench CUDA common definitions: the matrix generator of protocol/SPEC.md §3, and the
// canonical encoding of float product entries (+0, never -0; at the end of this file).
//
// This file is a line-by-line transcription of SPEC.md §3.1–§3.3 (and of
// protocol/src/generator.rs, the reference implementation, whose known-answer tests pin it):
// the same statements in the same order, on uint32_t with C's wrap-around arithmetic. It is
// compiled by NVRTC at run time (kernels/src/cuda/nvrtc.rs splices it into every .cu file in
// place of its #include line), so it includes nothing itself: NVRTC provides <stdint.h>-style
// types only through the fixed-width typedefs below.
//
// No floating-point rounding happens anywhere in the generator: int8 elements are stream bytes,
// fp16/bf16 elements are integers in [-16, 15] (exact in every float type), and fp32 elements
// are a 24-bit integer (exact in binary32) times 2^-23 (exact: a power of two).

#pragma once

typedef unsigned int vb_u32;
typedef int vb_i32;
typedef signed char vb_i8;
typedef unsigned long long vb_u64;

// SPEC §3.1: the Threefish key-schedule parity constant.
#define VB_KS_PARITY 0x1BD11BDAu
// SPEC §3.1: 13 rounds (Random123's threefry4x32_13).
#define VB_THREEFRY_ROUNDS 13

// rotl on 32-bit words; `__funnelshift_l(x, x, r)` is the single-instruction form (SHF) of
// (x << r) | (x >> (32 - r)) for r in 1..31, which is all R holds.
__device__ __forceinline__ vb_u32 vb_rotl(vb_u32 x, vb_u32 r) {
    return __funnelshift_l(x, x, r);
}

// The five-word key schedule of one matrix: ks[0..4] = k[0..4];
// ks[4] = 0x1BD11BDA ^ k[0] ^ k[1] ^ k[2] ^ k[3].
struct vb_keys {
    vb_u32 ks[5];
};

__device__ __forceinline__ vb_keys vb_key_schedule(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3) {
    vb_keys k;
    k.ks[0] = k0;
    k.ks[1] = k1;
    k.ks[2] = k2;
    k.ks[3] = k3;
    k.ks[4] = VB_KS_PARITY ^ k0 ^ k1 ^ k2 ^ k3;
    return k;
}

// SPEC §3.1, threefry4x32_13(key, counter) -> (x0, x1, x2, x3), statement by statement.
// R = [[10,26],[11,21],[13,27],[23,5],[6,20],[17,11],[25,10],[18,20]], indexed by round mod 8.
// The round loop is fully unrolled, so every rotation amount and key index is a constant.
__device__ __forceinline__ uint4 vb_threefry4x32_13(const vb_keys& k, vb_u32 c0, vb_u32 c1,
                                                     vb_u32 c2, vb_u32 c3) {
    const vb_u32 R[8][2] = {{10, 26}, {11, 21}, {13, 27}, {23, 5},
                            {6, 20},  {17, 11}, {25, 10}, {18, 20}};
    // x[i] = c[i] + ks[i]
    vb_u32 x0 = c0 + k.ks[0];
    vb_u32 x1 = c1 + k.ks[1];
    vb_u32 x2 = c2 + k.ks[2];
    vb_u32 x3 = c3 + k.ks[3];
#pragma unroll
    for (int r = 0; r < VB_THREEFRY_ROUNDS; ++r) {
        const vb_u32 a = R[r % 8][0];
        const vb_u32 b = R[r % 8][1];
        if (r % 2 == 0) {
            // r even: x0 += x1; x1 = rotl(x1, a) ^ x0; x2 += x3; x3 = rotl(x3, b) ^ x2
            x0 += x1; x1 = vb_rotl(x1, a) ^ x0;
            x2 += x3; x3 = vb_rotl(x3, b) ^ x2;
        } else {
            // r odd: x0 += x3; x3 = rotl(x3, a) ^ x0; x2 += x1; x1 = rotl(x1, b) ^ x2
            x0 += x3; x3 = vb_rotl(x3, a) ^ x0;
            x2 += x1; x1 = vb_rotl(x1, b) ^ x2;
        }
        if (r % 4 == 3) {
            // s = r / 4 + 1; x_i += ks[(s + i) mod 5]; x3 also += s
            const vb_u32 s = (vb_u32)(r / 4 + 1);
            x0 += k.ks[s % 5];
            x1 += k.ks[(s + 1) % 5];
            x2 += k.ks[(s + 2) % 5];
            x3 += k.ks[(s + 3) % 5] + s;
        }
    }
    return make_uint4(x0, x1, x2, x3);
}

// SPEC §3.2: block `blk` of row `row` of the matrix tagged `tag` (A = 0, B = 1): counter
// (row, blk, tag, 0). Its output words .x .y .z .w are stream words 4·blk + 0..3 of the row.
__device__ __forceinline__ uint4 vb_row_block(const vb_keys& k, vb_u32 tag, vb_u32 row,
                                              vb_u32 blk) {
    return vb_threefry4x32_13(k, row, blk, tag, 0u);
}

// SPEC §3.2: stream word `w` (0..3) of a block.
__device__ __forceinline__ vb_u32 vb_word(uint4 v, int w) {
    return w == 0 ? v.x : (w == 1 ? v.y : (w == 2 ? v.z : v.w));
}

// SPEC §3.2: stream byte `j` (0..15) of a block: byte j mod 4 (little-endian) of word j / 4.
__device__ __forceinline__ vb_u32 vb_byte(uint4 v, int j) {
    return (vb_word(v, j / 4) >> (8 * (j % 4))) & 0xFFu;
}

// SPEC §3.3, int8: the stream byte as a two's-complement i8.
__device__ __forceinline__ vb_i8 vb_int8_element(vb_u32 byte) {
    return (vb_i8)byte;
}

// SPEC §3.3, fp16 and bf16: (stream byte as i8) >> 3, an integer in [-16, 15]. The shift is
// arithmetic on a signed int (CUDA's `>>` on signed operands is arithmetic: SHF/SHR.S32).
__device__ __forceinline__ vb_i32 vb_small_int_element(vb_u32 byte) {
    return ((vb_i32)(vb_i8)byte) >> 3;
}

// fp16 and bf16 element storage: the IEEE binary16 / bfloat16 bit pattern, bit-compatible
// with CUDA's __half / __nv_bfloat16 (which is what cuBLAS reads as CUDA_R_16F / CUDA_R_16BF).
// NVRTC ships no cuda_fp16.h / cuda_bf16.h (they belong to the toolkit, which workers need not
// install), so the two conversions below build the bits directly. They are exact for the
// integers in [-16, 15] that SPEC §3.3 produces, and only for small integers like them:
typedef unsigned short vb_half;
typedef unsigned short vb_bfloat16;

// bfloat16 is the top half of binary32; an integer with |v| <= 256 has at most 8 significant
// bits, so the low 16 bits of its binary32 form are zero and truncation is exact.
__device__ __forceinline__ vb_bfloat16 vb_bfloat16_from_small_int(vb_i32 v) {
    return (vb_bfloat16)(__float_as_uint(__int2float_rn(v)) >> 16);
}

// binary16: sign, exponent rebiased from 127 to 15, top 10 mantissa bits. Exact for integers
// with |v| <= 2048 (at most 11 significant bits, exponent 0..11 in range); 0 is +0 (0x0000).
__device__ __forceinline__ vb_half vb_half_from_small_int(vb_i32 v) {
    if (v == 0) {
        return (vb_half)0;
    }
    const vb_u32 u = __float_as_uint(__int2float_rn(v));
    const vb_u32 sign = (u >> 16) & 0x8000u;
    const vb_u32 exponent = ((u >> 23) & 0xFFu) - 127u + 15u;
    const vb_u32 mantissa = (u >> 13) & 0x3FFu;
    return (vb_half)(sign | (exponent << 10) | mantissa);
}

// SPEC §3.3, fp32: ((stream word as i32) >> 8) · 2^-23. Both steps are exact; the explicit
// round-to-nearest intrinsics keep the compiler from contracting or approximating anything.
__device__ __forceinline__ float vb_fp32_element(vb_u32 word) {
    const vb_i32 top24 = ((vb_i32)word) >> 8;
    return __fmul_rn(__int2float_rn(top24), 1.0f / 8388608.0f);
}

// Canonical product bytes (SPEC: a row's bytes are unique): a float entry equal to zero is +0.
// IEEE arithmetic gives -0 for a sum of -0 terms only (zero times a negative element), and
// cuBLAS does not promise to start its accumulators at +0, so the float modes' C words are
// rewritten with this after the GEMM. Integer ops on the bit pattern: exact, immune to any
// float optimisation. Never applied to int8's i32 C, where 0x80000000 is a number.
#define VB_NEGATIVE_ZERO 0x80000000u

__device__ __forceinline__ vb_u32 vb_positive_zero(vb_u32 bits) {
    return bits == VB_NEGATIVE_ZERO ? 0u : bits;
}
