// Runs the real CUDA kernels of kernels/cuda on the host: every launch is emulated by calling
// the __global__ function once per (block, thread) of the grid, in order, with blockIdx,
// threadIdx, blockDim and gridDim set as the GPU would. The kernels use no shared memory and
// no barriers, so a sequential walk of the grid computes what the GPU computes.

#include "cuda_shim.h"

#include "generator.cu"
#include "leaves.cu"
#include "product.cu"

thread_local vbh_dim3 blockIdx;
thread_local vbh_dim3 threadIdx;
thread_local vbh_dim3 blockDim;
thread_local vbh_dim3 gridDim;

// A launch's dimensions, as veribench_kernels::cuda::launch::Geometry.
struct vbh_geometry {
    vb_u32 grid_x, grid_y, grid_z;
    vb_u32 block_x, block_y, block_z;
};

template <typename Kernel>
static void vbh_launch(const vbh_geometry& g, Kernel kernel) {
    gridDim = {g.grid_x, g.grid_y, g.grid_z};
    blockDim = {g.block_x, g.block_y, g.block_z};
    for (vb_u32 bz = 0; bz < g.grid_z; ++bz) {
        for (vb_u32 by = 0; by < g.grid_y; ++by) {
            for (vb_u32 bx = 0; bx < g.grid_x; ++bx) {
                blockIdx = {bx, by, bz};
                for (vb_u32 tz = 0; tz < g.block_z; ++tz) {
                    for (vb_u32 ty = 0; ty < g.block_y; ++ty) {
                        for (vb_u32 tx = 0; tx < g.block_x; ++tx) {
                            threadIdx = {tx, ty, tz};
                            kernel();
                        }
                    }
                }
            }
        }
    }
}

// Modes in veribench_protocol::Mode order.
enum vbh_mode : vb_u32 { VBH_INT8 = 0, VBH_FP16 = 1, VBH_BF16 = 2, VBH_FP32 = 3 };

extern "C" int vbh_generate(vbh_geometry g, vb_u32 mode, vb_u32 k0, vb_u32 k1, vb_u32 k2,
                            vb_u32 k3, vb_u32 tag, vb_u32 rows, vb_u32 cols, vb_u64 ld,
                            vb_u32 transposed, void* out) {
    switch (mode) {
        case VBH_INT8:
            vbh_launch(g, [&] {
                vb_generate_int8(k0, k1, k2, k3, tag, rows, cols, ld, transposed, (vb_i8*)out);
            });
            return 0;
        case VBH_FP16:
            vbh_launch(g, [&] {
                vb_generate_fp16(k0, k1, k2, k3, tag, rows, cols, ld, transposed, (vb_half*)out);
            });
            return 0;
        case VBH_BF16:
            vbh_launch(g, [&] {
                vb_generate_bf16(k0, k1, k2, k3, tag, rows, cols, ld, transposed,
                                 (vb_bfloat16*)out);
            });
            return 0;
        case VBH_FP32:
            vbh_launch(g, [&] {
                vb_generate_fp32(k0, k1, k2, k3, tag, rows, cols, ld, transposed, (float*)out);
            });
            return 0;
        default:
            return -1;
    }
}

extern "C" void vbh_stream_words(vbh_geometry g, vb_u32 k0, vb_u32 k1, vb_u32 k2, vb_u32 k3,
                                 vb_u32 tag, vb_u32 row, vb_u32 count, vb_u32* out) {
    vbh_launch(g, [&] { vb_stream_words(k0, k1, k2, k3, tag, row, count, out); });
}

extern "C" void vbh_positive_zeros(vbh_geometry g, vb_u32* c, vb_u64 quads) {
    vbh_launch(g, [&] { vb_positive_zeros((uint4*)c, quads); });
}

// vb_leaf_chunks (when `chunks` is non-null) then vb_leaf_roots, as the backend launches them.
extern "C" void vbh_leaves(const vbh_geometry* chunks, vbh_geometry roots, const vb_u32* c,
                           vb_u64 stride, vb_u32 n, vb_u32 rows, vb_u32 first_row,
                           const vb_u32* seed, vb_u32* scratch, vb_u32* out) {
    const vb_u32 s0 = seed[0], s1 = seed[1], s2 = seed[2], s3 = seed[3];
    const vb_u32 s4 = seed[4], s5 = seed[5], s6 = seed[6], s7 = seed[7];
    if (chunks != nullptr) {
        vbh_launch(*chunks, [&] {
            vb_leaf_chunks(c, stride, n, rows, first_row, s0, s1, s2, s3, s4, s5, s6, s7,
                           scratch, out);
        });
    }
    vbh_launch(roots, [&] {
        vb_leaf_roots(c, stride, n, rows, first_row, s0, s1, s2, s3, s4, s5, s6, s7, scratch,
                      out);
    });
}

// The pinned context key of blake3.cuh.
extern "C" void vbh_leaf_key(vb_u32* out) {
    vb_b3_store_cv(out, vb_b3_leaf_key());
}

// BLAKE3's context key of a context string of at most one chunk (1024 bytes), derived with
// blake3.cuh's compression function: the string's blocks under the IV with
// DERIVE_KEY_CONTEXT, chunk 0, the last block as ROOT. Returns -1 for longer strings.
extern "C" int vbh_context_key(const unsigned char* context, vb_u64 len, vb_u32* out) {
    if (len > 4u * VB_B3_CHUNK_WORDS) {
        return -1;
    }
    const vb_u64 block_bytes = 4u * VB_B3_BLOCK_WORDS;
    const vb_u64 blocks = len == 0 ? 1 : (len + block_bytes - 1) / block_bytes;
    vb_b3_cv cv = vb_b3_iv();
    for (vb_u64 b = 0; b < blocks; ++b) {
        const vb_u64 first = b * block_bytes;
        const vb_u64 bytes = len - first < block_bytes ? len - first : block_bytes;
        vb_b3_block m = {};
        for (vb_u64 i = 0; i < bytes; ++i) {
            m.w[i / 4] |= (vb_u32)context[first + i] << (8 * (i % 4));
        }
        vb_u32 flags = VB_B3_DERIVE_KEY_CONTEXT;
        if (b == 0) {
            flags |= VB_B3_CHUNK_START;
        }
        if (b + 1 == blocks) {
            flags |= VB_B3_CHUNK_END | VB_B3_ROOT;
        }
        cv = vb_b3_compress(cv, m, 0, (vb_u32)bytes, flags);
    }
    vb_b3_store_cv(out, cv);
    return 0;
}
