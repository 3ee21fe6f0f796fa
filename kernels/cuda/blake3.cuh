// veribench CUDA BLAKE3: the row leaves of protocol::leaf_hash (protocol/src/commitment.rs),
//
//   leaf(row) = BLAKE3 derive_key("veribench 2026-11 row leaf v1",
//                                 row bytes ‖ device seed ‖ u32_le(row)),
//
// computed where C lives. A row of n entries is n little-endian 32-bit words, so the hashed
// message is always n + 9 whole words: the row, the seed's eight words, the row index.
//
// A transcription of the BLAKE3 specification's portable implementation (compression function,
// chunk chaining values with CHUNK_START / CHUNK_END and the chunk counter, parent nodes, ROOT)
// in derive-key mode: every compression of the message is keyed by the context key and carries
// DERIVE_KEY_MATERIAL. Only vb_u32 / vb_u64 (common.cuh, which must come first) and
// `__device__ __forceinline__` functions, so the same text compiles with NVRTC and, through
// cuda-host's shim, for the host, where veribench-cuda-host's tests compare it with
// protocol::leaf_hash bit for bit. Nothing is indexed by a run-time value except C, the chunk
// CVs in global memory and the (constant-indexed, fully unrolled) message schedule, so
// everything stays in registers.

#pragma once

// BLAKE3 domain flags.
#define VB_B3_CHUNK_START 1u
#define VB_B3_CHUNK_END 2u
#define VB_B3_PARENT 4u
#define VB_B3_ROOT 8u
#define VB_B3_DERIVE_KEY_CONTEXT 32u
#define VB_B3_DERIVE_KEY_MATERIAL 64u

// A block is 64 bytes, a chunk 16 blocks (1 KiB), both in 32-bit words here.
#define VB_B3_BLOCK_WORDS 16u
#define VB_B3_CHUNK_WORDS 256u
// Words after a leaf's row: the device seed (8) and the row index (1).
#define VB_LEAF_TAIL_WORDS 9u

// A chaining value (or key), eight little-endian words.
struct vb_b3_cv {
    vb_u32 w[8];
};

// One message block, sixteen little-endian words (zero-padded past the block's length).
struct vb_b3_block {
    vb_u32 w[16];
};

// The IV (SHA-256's), the key of the context-string hash.
__device__ __forceinline__ vb_b3_cv vb_b3_iv() {
    vb_b3_cv iv = {{0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au, 0x510E527Fu,
                    0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u}};
    return iv;
}

// The context key of "veribench 2026-11 row leaf v1": the first 8 output words of BLAKE3 of the
// context string under the IV with DERIVE_KEY_CONTEXT (blake3::hazmat::hash_derive_key_context).
// Pinned here so no thread rehashes the string; cuda-host's tests derive it from the string with
// vb_b3_compress below and compare it with the blake3 crate's.
#define VB_LEAF_KEY_0 0xCE281B07u
#define VB_LEAF_KEY_1 0x4CD8F0CEu
#define VB_LEAF_KEY_2 0x6BFDB45Au
#define VB_LEAF_KEY_3 0x4E37D8FCu
#define VB_LEAF_KEY_4 0x8CB48231u
#define VB_LEAF_KEY_5 0xE95F2D31u
#define VB_LEAF_KEY_6 0x285E48F3u
#define VB_LEAF_KEY_7 0x3583A5CFu

__device__ __forceinline__ vb_b3_cv vb_b3_leaf_key() {
    vb_b3_cv key = {{VB_LEAF_KEY_0, VB_LEAF_KEY_1, VB_LEAF_KEY_2, VB_LEAF_KEY_3, VB_LEAF_KEY_4,
                     VB_LEAF_KEY_5, VB_LEAF_KEY_6, VB_LEAF_KEY_7}};
    return key;
}

__device__ __forceinline__ vb_u32 vb_b3_rotr(vb_u32 x, vb_u32 r) {
    return (x >> r) | (x << (32u - r));
}

// The quarter-round G.
__device__ __forceinline__ void vb_b3_g(vb_u32& a, vb_u32& b, vb_u32& c, vb_u32& d, vb_u32 mx,
                                        vb_u32 my) {
    a = a + b + mx;
    d = vb_b3_rotr(d ^ a, 16);
    c = c + d;
    b = vb_b3_rotr(b ^ c, 12);
    a = a + b + my;
    d = vb_b3_rotr(d ^ a, 8);
    c = c + d;
    b = vb_b3_rotr(b ^ c, 7);
}

// The compression function, truncated to the chaining value (the first eight output words,
// v[i] ^ v[i + 8]), which is all a 32-byte output needs: seven rounds of column and diagonal
// G's, the message permuted between rounds.
__device__ __forceinline__ vb_b3_cv vb_b3_compress(const vb_b3_cv& cv, vb_b3_block m,
                                                   vb_u64 counter, vb_u32 block_len,
                                                   vb_u32 flags) {
    const int PERMUTATION[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
    const vb_b3_cv iv = vb_b3_iv();
    vb_u32 v0 = cv.w[0], v1 = cv.w[1], v2 = cv.w[2], v3 = cv.w[3];
    vb_u32 v4 = cv.w[4], v5 = cv.w[5], v6 = cv.w[6], v7 = cv.w[7];
    vb_u32 v8 = iv.w[0], v9 = iv.w[1], v10 = iv.w[2], v11 = iv.w[3];
    vb_u32 v12 = (vb_u32)counter, v13 = (vb_u32)(counter >> 32), v14 = block_len, v15 = flags;
#pragma unroll
    for (int r = 0; r < 7; ++r) {
        vb_b3_g(v0, v4, v8, v12, m.w[0], m.w[1]);
        vb_b3_g(v1, v5, v9, v13, m.w[2], m.w[3]);
        vb_b3_g(v2, v6, v10, v14, m.w[4], m.w[5]);
        vb_b3_g(v3, v7, v11, v15, m.w[6], m.w[7]);
        vb_b3_g(v0, v5, v10, v15, m.w[8], m.w[9]);
        vb_b3_g(v1, v6, v11, v12, m.w[10], m.w[11]);
        vb_b3_g(v2, v7, v8, v13, m.w[12], m.w[13]);
        vb_b3_g(v3, v4, v9, v14, m.w[14], m.w[15]);
        if (r < 6) {
            vb_b3_block p;
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                p.w[i] = m.w[PERMUTATION[i]];
            }
            m = p;
        }
    }
    vb_b3_cv out = {{v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14,
                     v7 ^ v15}};
    return out;
}

// A parent node: the compression of left ‖ right (counter 0, a full block) under `key`.
// `flags` adds the mode's flag and, for the top node, ROOT.
__device__ __forceinline__ vb_b3_cv vb_b3_parent(const vb_b3_cv& key, const vb_b3_cv& left,
                                                 const vb_b3_cv& right, vb_u32 flags) {
    vb_b3_block m;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        m.w[i] = left.w[i];
        m.w[8 + i] = right.w[i];
    }
    return vb_b3_compress(key, m, 0ull, 4u * VB_B3_BLOCK_WORDS, VB_B3_PARENT | flags);
}

// One leaf's message: row words in C, then the seed, then the row index. Row words beyond a
// leaf's 32-bit word count cannot occur: n is at most MAX_DIM (65536), far below 2^32 - 25.
struct vb_leaf_msg {
    const vb_u32* row;  // the row's first entry in C
    vb_u32 n;           // entries in the row
    vb_u32 seed[8];     // device seed words (only ever indexed by constants)
    vb_u32 index;       // the row's index in the product
};

// Words of the whole message.
__device__ __forceinline__ vb_u32 vb_leaf_words(vb_u32 n) {
    return n + VB_LEAF_TAIL_WORDS;
}

// Chunks of the whole message (never zero: the tail alone is 36 bytes).
__device__ __forceinline__ vb_u32 vb_leaf_chunk_count(vb_u32 n) {
    return (vb_leaf_words(n) + VB_B3_CHUNK_WORDS - 1u) / VB_B3_CHUNK_WORDS;
}

// Message word `at` (< n + 9). The tail is selected by comparisons, not an array index, so
// the seed stays in registers.
__device__ __forceinline__ vb_u32 vb_leaf_word(const vb_leaf_msg& msg, vb_u32 at) {
    if (at < msg.n) {
        return msg.row[at];
    }
    const vb_u32 t = at - msg.n;
    return t == 0u   ? msg.seed[0]
           : t == 1u ? msg.seed[1]
           : t == 2u ? msg.seed[2]
           : t == 3u ? msg.seed[3]
           : t == 4u ? msg.seed[4]
           : t == 5u ? msg.seed[5]
           : t == 6u ? msg.seed[6]
           : t == 7u ? msg.seed[7]
                     : msg.index;
}

// The block of `words` (1..16) message words from word `first`, zero-padded.
__device__ __forceinline__ vb_b3_block vb_leaf_block(const vb_leaf_msg& msg, vb_u32 first,
                                                     vb_u32 words) {
    vb_b3_block b;
    if (first + VB_B3_BLOCK_WORDS <= msg.n) {
        // Inside the row: plain loads (the common case, all but the row's last block).
#pragma unroll
        for (vb_u32 i = 0; i < VB_B3_BLOCK_WORDS; ++i) {
            b.w[i] = msg.row[first + i];
        }
    } else {
#pragma unroll
        for (vb_u32 i = 0; i < VB_B3_BLOCK_WORDS; ++i) {
            b.w[i] = i < words ? vb_leaf_word(msg, first + i) : 0u;
        }
    }
    return b;
}

// The chaining value of chunk `chunk` of the leaf message: its blocks compressed in order from
// the key, the chunk index as counter, CHUNK_START on the first block and CHUNK_END on the last.
// `root` is VB_B3_ROOT when the message is this single chunk (its CV is then the leaf), else 0.
__device__ __forceinline__ vb_b3_cv vb_leaf_chunk_cv(const vb_leaf_msg& msg, vb_u32 chunk,
                                                     vb_u32 root) {
    const vb_u32 total = vb_leaf_words(msg.n);
    const vb_u32 first = chunk * VB_B3_CHUNK_WORDS;
    const vb_u32 left = total - first;
    const vb_u32 len = left < VB_B3_CHUNK_WORDS ? left : VB_B3_CHUNK_WORDS;
    const vb_u32 blocks = (len + VB_B3_BLOCK_WORDS - 1u) / VB_B3_BLOCK_WORDS;
    vb_b3_cv cv = vb_b3_leaf_key();
    for (vb_u32 b = 0; b < blocks; ++b) {
        const vb_u32 done = b * VB_B3_BLOCK_WORDS;
        const vb_u32 words = len - done < VB_B3_BLOCK_WORDS ? len - done : VB_B3_BLOCK_WORDS;
        vb_u32 flags = VB_B3_DERIVE_KEY_MATERIAL;
        if (b == 0u) {
            flags |= VB_B3_CHUNK_START;
        }
        if (b + 1u == blocks) {
            flags |= VB_B3_CHUNK_END | root;
        }
        cv = vb_b3_compress(cv, vb_leaf_block(msg, first + done, words), (vb_u64)chunk,
                            4u * words, flags);
    }
    return cv;
}

__device__ __forceinline__ vb_b3_cv vb_b3_load_cv(const vb_u32* at) {
    vb_b3_cv cv;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        cv.w[i] = at[i];
    }
    return cv;
}

__device__ __forceinline__ void vb_b3_store_cv(vb_u32* at, const vb_b3_cv& cv) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        at[i] = cv.w[i];
    }
}

// The leaf from the `count` (>= 2) chunk CVs of its message, stored as 8 words each at `cvs`
// (overwritten). BLAKE3's tree puts the largest power of two of chunks that leaves at least one
// chunk on the right into the left subtree, recursively; that is exactly the tree of merging
// adjacent pairs level by level from the left, an odd last node moving up unchanged: both make
// node i of level L cover chunks [i·2^L, (i + 1)·2^L). Level by level, in place (node i of the
// next level is written after nodes 2i and 2i + 1 are read, and i <= 2i), the top merge ROOT.
__device__ __forceinline__ vb_b3_cv vb_leaf_merge(vb_u32* cvs, vb_u32 count) {
    const vb_b3_cv key = vb_b3_leaf_key();
    while (count > 2u) {
        const vb_u32 pairs = count / 2u;
        for (vb_u32 i = 0; i < pairs; ++i) {
            const vb_b3_cv parent =
                vb_b3_parent(key, vb_b3_load_cv(cvs + 16u * i), vb_b3_load_cv(cvs + 16u * i + 8u),
                             VB_B3_DERIVE_KEY_MATERIAL);
            vb_b3_store_cv(cvs + 8u * i, parent);
        }
        if (count % 2u == 1u) {
            vb_b3_store_cv(cvs + 8u * pairs, vb_b3_load_cv(cvs + 8u * (count - 1u)));
        }
        count = pairs + count % 2u;
    }
    return vb_b3_parent(key, vb_b3_load_cv(cvs), vb_b3_load_cv(cvs + 8u),
                        VB_B3_DERIVE_KEY_MATERIAL | VB_B3_ROOT);
}
