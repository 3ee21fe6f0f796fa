// veribench: fills A and B on the GPU from the device seed (protocol/SPEC.md §3).
//
// One thread computes one Threefry block of one row (SPEC §3.2) and writes the elements it
// covers: 16 for int8/fp16/bf16 (one per stream byte), 4 for fp32 (one per stream word).
// Every entry point has the same parameters:
//
//   k0..k3      the matrix's key (A: device-seed words 0..3, B: words 4..7, SPEC §3.2)
//   tag         the matrix's counter tag (A = 0, B = 1)
//   rows, cols  the matrix's shape in SPEC terms (A is m × k, B is k × n)
//   ld          leading dimension of `out` in elements (>= cols, or >= rows when transposed);
//               padding between is left untouched (the caller zeroes it)
//   transposed  0: element (i, j) at out[i·ld + j]  (row-major, used for A)
//               1: element (i, j) at out[j·ld + i]  (column-major, used for B, so that cuBLAS
//                  runs its tensor-core "TN" int8 layout; see kernels/src/cuda/gemm.rs)
//   out         the matrix
//
// Launch: blockDim = (VB_GEN_THREADS, 1, 1); grid.x covers the fast index (blocks of a row when
// not transposed, rows when transposed: consecutive threads then write consecutive addresses),
// grid.y strides over the slow index (any grid.y >= 1 works).

#include "common.cuh"

#define VB_GEN_THREADS 256

// The element of each mode from a block's stream, and its store.
struct vb_mode_int8 {
    typedef vb_i8 T;
    static constexpr int PER_BLOCK = 16;
    static __device__ __forceinline__ T element(uint4 v, int e) {
        return vb_int8_element(vb_byte(v, e));
    }
};

struct vb_mode_fp16 {
    typedef vb_half T;
    static constexpr int PER_BLOCK = 16;
    static __device__ __forceinline__ T element(uint4 v, int e) {
        return vb_half_from_small_int(vb_small_int_element(vb_byte(v, e)));
    }
};

struct vb_mode_bf16 {
    typedef vb_bfloat16 T;
    static constexpr int PER_BLOCK = 16;
    static __device__ __forceinline__ T element(uint4 v, int e) {
        return vb_bfloat16_from_small_int(vb_small_int_element(vb_byte(v, e)));
    }
};

struct vb_mode_fp32 {
    typedef float T;
    static constexpr int PER_BLOCK = 4;
    static __device__ __forceinline__ T element(uint4 v, int e) {
        return vb_fp32_element(vb_word(v, e));
    }
};

template <typename M>
__device__ __forceinline__ void vb_generate(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3,
                                            vb_u32 tag, vb_u32 rows, vb_u32 cols, vb_u64 ld,
                                            vb_u32 transposed, typename M::T* out) {
    const vb_keys keys = vb_key_schedule(k0, k1, k2, k3);
    const vb_u32 blocks_per_row = (cols + M::PER_BLOCK - 1) / M::PER_BLOCK;
    const vb_u32 fast = blockIdx.x * blockDim.x + threadIdx.x;
    const vb_u32 fast_len = transposed ? rows : blocks_per_row;
    const vb_u32 slow_len = transposed ? blocks_per_row : rows;
    if (fast >= fast_len) {
        return;
    }
    for (vb_u32 slow = blockIdx.y; slow < slow_len; slow += gridDim.y) {
        const vb_u32 row = transposed ? fast : slow;
        const vb_u32 blk = transposed ? slow : fast;
        const uint4 v = vb_row_block(keys, tag, row, blk);
        const vb_u32 first = blk * M::PER_BLOCK;
#pragma unroll
        for (int e = 0; e < M::PER_BLOCK; ++e) {
            const vb_u32 col = first + (vb_u32)e;
            if (col < cols) {
                const vb_u64 at = transposed ? (vb_u64)col * ld + row : (vb_u64)row * ld + col;
                out[at] = M::element(v, e);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(VB_GEN_THREADS)
vb_generate_int8(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3, vb_u32 tag, vb_u32 rows,
                 vb_u32 cols, vb_u64 ld, vb_u32 transposed, vb_i8* out) {
    vb_generate<vb_mode_int8>(k0, k1, k2, k3, tag, rows, cols, ld, transposed, out);
}

extern "C" __global__ void __launch_bounds__(VB_GEN_THREADS)
vb_generate_fp16(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3, vb_u32 tag, vb_u32 rows,
                 vb_u32 cols, vb_u64 ld, vb_u32 transposed, vb_half* out) {
    vb_generate<vb_mode_fp16>(k0, k1, k2, k3, tag, rows, cols, ld, transposed, out);
}

extern "C" __global__ void __launch_bounds__(VB_GEN_THREADS)
vb_generate_bf16(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3, vb_u32 tag, vb_u32 rows,
                 vb_u32 cols, vb_u64 ld, vb_u32 transposed, vb_bfloat16* out) {
    vb_generate<vb_mode_bf16>(k0, k1, k2, k3, tag, rows, cols, ld, transposed, out);
}

extern "C" __global__ void __launch_bounds__(VB_GEN_THREADS)
vb_generate_fp32(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3, vb_u32 tag, vb_u32 rows,
                 vb_u32 cols, vb_u64 ld, vb_u32 transposed, float* out) {
    vb_generate<vb_mode_fp32>(k0, k1, k2, k3, tag, rows, cols, ld, transposed, out);
}

// Single-element probe used by tests on a real GPU: writes the first `count` stream words of
// `row` of the matrix keyed (k0..k3, tag) to `out`, so the host can compare them with
// protocol::generator word for word.
extern "C" __global__ void vb_stream_words(vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3,
                                           vb_u32 tag, vb_u32 row, vb_u32 count, vb_u32* out) {
    const vb_keys keys = vb_key_schedule(k0, k1, k2, k3);
    const vb_u32 t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < count) {
        out[t] = vb_word(vb_row_block(keys, tag, row, t / 4), (int)(t % 4));
    }
}
