// veribench: in-place fix-ups of a computed product C on the GPU.
//
// vb_positive_zeros rewrites every -0 word of a float-mode C to +0 (see vb_positive_zero in
// common.cuh). The backend launches it on the compute stream right after each GEMM chunk, so
// the copy to the host (leaves) and later openings both read canonical words.
//
//   c      the first word of the chunk: rows r0 .. r0 + rows of C, row-major with the padded
//          leading dimension ld_n, i.e. rows · ld_n contiguous words (padding columns are
//          rewritten too, harmlessly: they are never hashed or opened)
//   quads  rows · ld_n / 4: the chunk as uint4s (ld_n is a multiple of 16, and the chunk's
//          start a multiple of 64 bytes from C's 256-byte-aligned allocation)
//
// Launch: blockDim = (VB_PRODUCT_THREADS, 1, 1), any grid.x >= 1 (grid-stride loop). A word is
// stored only when it changes, so the pass is read-only for almost all of C.

#include "common.cuh"

#define VB_PRODUCT_THREADS 256

extern "C" __global__ void __launch_bounds__(VB_PRODUCT_THREADS)
vb_positive_zeros(uint4* c, vb_u64 quads) {
    const vb_u64 stride = (vb_u64)gridDim.x * blockDim.x;
    for (vb_u64 i = (vb_u64)blockIdx.x * blockDim.x + threadIdx.x; i < quads; i += stride) {
        const uint4 v = c[i];
        if (v.x == VB_NEGATIVE_ZERO || v.y == VB_NEGATIVE_ZERO || v.z == VB_NEGATIVE_ZERO ||
            v.w == VB_NEGATIVE_ZERO) {
            c[i] = make_uint4(vb_positive_zero(v.x), vb_positive_zero(v.y),
                              vb_positive_zero(v.z), vb_positive_zero(v.w));
        }
    }
}
