// veribench: the row leaves of a computed product C on the GPU (protocol::leaf_hash; the BLAKE3
// is blake3.cuh's), so only 32 bytes per row cross PCIe instead of the row.
//
// Two kernels per batch of rows, launched in this order on one stream:
//
//   vb_leaf_chunks  one thread per (row, chunk) of rows whose message spans two or more chunks:
//                   the chunk's chaining value into `scratch` (returns at once otherwise)
//   vb_leaf_roots   one thread per row: merges that row's chunk CVs into the leaf (or, for a
//                   single-chunk message, hashes the chunk as the root itself) into `out`
//
// Both take the same parameters:
//
//   c           entry 0 of the batch's first row (C's words: i32 or f32 bits, little-endian)
//   stride      words between consecutive rows of C (>= n: the padded leading dimension)
//   n           entries per row
//   rows        rows in the batch
//   first_row   the product row index of the batch's first row (hashed into every leaf)
//   s0..s7      the device seed as eight little-endian words
//   scratch     rows · chunks · 8 words, chunks = ceil((n + 9) / 256); unused (may be any
//               pointer) when chunks == 1
//   out         rows · 8 words: leaf r at out[8r .. 8r + 8], the leaf's 32 bytes in order
//
// Launch: blockDim = (VB_LEAF_THREADS, 1, 1), any grid.x >= 1 (grid-stride loops over
// rows · chunks, resp. rows).

#include "common.cuh"
#include "blake3.cuh"

#define VB_LEAF_THREADS 256

__device__ __forceinline__ vb_leaf_msg vb_leaf_message(const vb_u32* c, vb_u64 stride, vb_u32 n,
                                                       vb_u32 first_row, vb_u32 r, vb_u32 s0,
                                                       vb_u32 s1, vb_u32 s2, vb_u32 s3,
                                                       vb_u32 s4, vb_u32 s5, vb_u32 s6,
                                                       vb_u32 s7) {
    vb_leaf_msg msg;
    msg.row = c + (vb_u64)r * stride;
    msg.n = n;
    msg.seed[0] = s0;
    msg.seed[1] = s1;
    msg.seed[2] = s2;
    msg.seed[3] = s3;
    msg.seed[4] = s4;
    msg.seed[5] = s5;
    msg.seed[6] = s6;
    msg.seed[7] = s7;
    msg.index = first_row + r;
    return msg;
}

extern "C" __global__ void __launch_bounds__(VB_LEAF_THREADS)
vb_leaf_chunks(const vb_u32* c, vb_u64 stride, vb_u32 n, vb_u32 rows, vb_u32 first_row,
               vb_u32 s0, vb_u32 s1, vb_u32 s2, vb_u32 s3, vb_u32 s4, vb_u32 s5, vb_u32 s6,
               vb_u32 s7, vb_u32* scratch, vb_u32* out) {
    (void)out;
    const vb_u32 chunks = vb_leaf_chunk_count(n);
    if (chunks < 2u) {
        return;
    }
    const vb_u64 total = (vb_u64)rows * chunks;
    const vb_u64 step = (vb_u64)gridDim.x * blockDim.x;
    for (vb_u64 t = (vb_u64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const vb_u32 r = (vb_u32)(t / chunks);
        const vb_u32 chunk = (vb_u32)(t % chunks);
        const vb_leaf_msg msg =
            vb_leaf_message(c, stride, n, first_row, r, s0, s1, s2, s3, s4, s5, s6, s7);
        vb_b3_store_cv(scratch + 8u * t, vb_leaf_chunk_cv(msg, chunk, 0u));
    }
}

extern "C" __global__ void __launch_bounds__(VB_LEAF_THREADS)
vb_leaf_roots(const vb_u32* c, vb_u64 stride, vb_u32 n, vb_u32 rows, vb_u32 first_row,
              vb_u32 s0, vb_u32 s1, vb_u32 s2, vb_u32 s3, vb_u32 s4, vb_u32 s5, vb_u32 s6,
              vb_u32 s7, vb_u32* scratch, vb_u32* out) {
    const vb_u32 chunks = vb_leaf_chunk_count(n);
    const vb_u64 step = (vb_u64)gridDim.x * blockDim.x;
    for (vb_u64 t = (vb_u64)blockIdx.x * blockDim.x + threadIdx.x; t < rows; t += step) {
        const vb_u32 r = (vb_u32)t;
        vb_b3_cv leaf;
        if (chunks == 1u) {
            const vb_leaf_msg msg =
                vb_leaf_message(c, stride, n, first_row, r, s0, s1, s2, s3, s4, s5, s6, s7);
            leaf = vb_leaf_chunk_cv(msg, 0u, VB_B3_ROOT);
        } else {
            leaf = vb_leaf_merge(scratch + 8u * t * chunks, chunks);
        }
        vb_b3_store_cv(out + 8u * t, leaf);
    }
}
