// Row leaves (protocol SPEC, `leaf_hash`) on the GPU: BLAKE3 in derive_key mode over
// row bytes ‖ device seed ‖ u32_le(row index), with u32 arithmetic only.
//
// A row of n entries is a message of n + 9 little-endian words, so BLAKE3's block words are the
// product's words as they are: the entries, the eight seed words, the row index, then zero
// padding in the last block. Two passes:
// - `leaf_chunks`: one invocation per (row, 1 KiB chunk) compresses its chunk's blocks and writes
//   the chunk's chaining value to `cvs`; when a row is a single chunk, that chunk is BLAKE3's
//   root and the invocation writes the leaf itself (flag ROOT on its last block).
// - `leaf_merge`: one invocation per row of two or more chunks merges its chunk chaining values
//   as BLAKE3's tree does (the left subtree holds the largest power of two of chunks that leaves
//   the right one non-empty), with the incremental stack of the reference implementation, and
//   writes the root's first 32 bytes: the leaf.
// Every compression is keyed with the context key of the leaf context and flagged
// DERIVE_KEY_MATERIAL; the host computes that key (`blake3::hazmat`) and passes it in.
//
// Work items are flattened over a 2-D dispatch, as in generator.wgsl, because a dispatch
// dimension is capped at 65535 workgroups.

struct LeafParams {
    // BLAKE3 derive_key context key of the leaf context, words 0..4 and 4..8.
    key: array<vec4<u32>, 2>,
    // The device seed as eight little-endian words.
    seed: array<vec4<u32>, 2>,
    // Entries per row.
    n: u32,
    // Rows in this dispatch; row r of `c` is hashed with index `first_row + r`.
    rows: u32,
    first_row: u32,
    // 1 KiB chunks per row message: ceil((n + 9) / 256).
    chunks: u32,
}

@group(0) @binding(0) var<uniform> p: LeafParams;
@group(0) @binding(1) var<storage, read> c: array<u32>;
// Chunk chaining values, 8 words per (row, chunk); unused when rows are single chunks.
@group(0) @binding(2) var<storage, read_write> cvs: array<u32>;
// 8 words per row.
@group(0) @binding(3) var<storage, read_write> leaves: array<u32>;

const WG: u32 = 64u;
// Words per chunk and per block.
const CHUNK_WORDS: u32 = 256u;
const BLOCK_WORDS: u32 = 16u;
// BLAKE3 domain flags.
const CHUNK_START: u32 = 1u;
const CHUNK_END: u32 = 2u;
const PARENT: u32 = 4u;
const ROOT: u32 = 8u;
const DERIVE_KEY_MATERIAL: u32 = 64u;
// Deep enough for 2^32 chunks; a row has at most 2^22 (a binding holds at most 2^30 words).
const STACK: u32 = 32u;

const IV_LO: vec4<u32> = vec4<u32>(0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au);
const IV_HI: vec4<u32> = vec4<u32>(0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u);

// A chaining value (or the first 32 bytes of an output), words 0..4 and 4..8.
struct Cv {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// The 4 × 4 state as rows; G runs on the four columns (or diagonals) at once.
struct State {
    a: vec4<u32>,
    b: vec4<u32>,
    c: vec4<u32>,
    d: vec4<u32>,
}

fn rotr(x: vec4<u32>, r: u32) -> vec4<u32> {
    return (x >> vec4<u32>(r)) | (x << vec4<u32>(32u - r));
}

fn g(s: State, mx: vec4<u32>, my: vec4<u32>) -> State {
    var t = s;
    t.a = t.a + t.b + mx;
    t.d = rotr(t.d ^ t.a, 16u);
    t.c = t.c + t.d;
    t.b = rotr(t.b ^ t.c, 12u);
    t.a = t.a + t.b + my;
    t.d = rotr(t.d ^ t.a, 8u);
    t.c = t.c + t.d;
    t.b = rotr(t.b ^ t.c, 7u);
    return t;
}

// BLAKE3's message permutation: word i of the next round is word PERMUTATION[i] of this one.
fn permute(m: array<u32, 16>) -> array<u32, 16> {
    return array<u32, 16>(
        m[2], m[6], m[3], m[10], m[7], m[0], m[4], m[13],
        m[1], m[11], m[12], m[5], m[9], m[14], m[15], m[8],
    );
}

// The compression function, truncated to the 8 words a chaining value (or a 32-byte root
// output) needs. The counter's high word is always 0 here.
fn compress(cv: Cv, block: array<u32, 16>, counter: u32, len: u32, flags: u32) -> Cv {
    var m = block;
    var s = State(cv.lo, cv.hi, IV_LO, vec4<u32>(counter, 0u, len, flags));
    for (var round = 0u; round < 7u; round++) {
        s = g(s, vec4<u32>(m[0], m[2], m[4], m[6]), vec4<u32>(m[1], m[3], m[5], m[7]));
        // Diagonals: rotate rows b, c, d left by 1, 2, 3 lanes, then back.
        s.b = s.b.yzwx;
        s.c = s.c.zwxy;
        s.d = s.d.wxyz;
        s = g(s, vec4<u32>(m[8], m[10], m[12], m[14]), vec4<u32>(m[9], m[11], m[13], m[15]));
        s.b = s.b.wxyz;
        s.c = s.c.zwxy;
        s.d = s.d.yzwx;
        m = permute(m);
    }
    return Cv(s.a ^ s.c, s.b ^ s.d);
}

fn key() -> Cv {
    return Cv(p.key[0], p.key[1]);
}

// Word `w` of row `row`'s message (0 past its end: block padding).
fn message_word(row: u32, w: u32) -> u32 {
    if w < p.n {
        return c[row * p.n + w];
    }
    let s = w - p.n;
    if s < 8u {
        return p.seed[s / 4u][s % 4u];
    }
    if s == 8u {
        return p.first_row + row;
    }
    return 0u;
}

// Chunk `chunk` of row `row`; `root` when it is the row's only chunk.
fn chunk_output(row: u32, chunk: u32, root: bool) -> Cv {
    let total = p.n + 9u;
    let first = chunk * CHUNK_WORDS;
    let words = min(CHUNK_WORDS, total - first);
    let blocks = (words + BLOCK_WORDS - 1u) / BLOCK_WORDS;
    var cv = key();
    for (var b = 0u; b < blocks; b++) {
        let start = first + b * BLOCK_WORDS;
        var block: array<u32, 16>;
        if start + BLOCK_WORDS <= p.n {
            // Entries only: the common case, straight loads.
            let base = row * p.n + start;
            for (var i = 0u; i < BLOCK_WORDS; i++) {
                block[i] = c[base + i];
            }
        } else {
            for (var i = 0u; i < BLOCK_WORDS; i++) {
                block[i] = message_word(row, start + i);
            }
        }
        var flags = DERIVE_KEY_MATERIAL;
        if b == 0u {
            flags |= CHUNK_START;
        }
        if b + 1u == blocks {
            flags |= CHUNK_END;
            if root {
                flags |= ROOT;
            }
        }
        let len = 4u * min(BLOCK_WORDS, words - b * BLOCK_WORDS);
        cv = compress(cv, block, chunk, len, flags);
    }
    return cv;
}

fn parent(left: Cv, right: Cv, flags: u32) -> Cv {
    let block = array<u32, 16>(
        left.lo.x, left.lo.y, left.lo.z, left.lo.w, left.hi.x, left.hi.y, left.hi.z, left.hi.w,
        right.lo.x, right.lo.y, right.lo.z, right.lo.w, right.hi.x, right.hi.y, right.hi.z, right.hi.w,
    );
    return compress(key(), block, 0u, 64u, PARENT | DERIVE_KEY_MATERIAL | flags);
}

fn store_leaf(row: u32, v: Cv) {
    let at = row * 8u;
    for (var i = 0u; i < 4u; i++) {
        leaves[at + i] = v.lo[i];
        leaves[at + 4u + i] = v.hi[i];
    }
}

fn store_cv(slot: u32, v: Cv) {
    let at = slot * 8u;
    for (var i = 0u; i < 4u; i++) {
        cvs[at + i] = v.lo[i];
        cvs[at + 4u + i] = v.hi[i];
    }
}

fn load_cv(slot: u32) -> Cv {
    let at = slot * 8u;
    return Cv(
        vec4<u32>(cvs[at], cvs[at + 1u], cvs[at + 2u], cvs[at + 3u]),
        vec4<u32>(cvs[at + 4u], cvs[at + 5u], cvs[at + 6u], cvs[at + 7u]),
    );
}

// Flat work-item index over a 2-D grid of 1-D workgroups.
fn item(wid: vec3<u32>, nwg: vec3<u32>, lidx: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lidx;
}

@compute @workgroup_size(64, 1, 1)
fn leaf_chunks(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let id = item(wid, nwg, lidx);
    if id >= p.rows * p.chunks {
        return;
    }
    let row = id / p.chunks;
    let chunk = id % p.chunks;
    if p.chunks == 1u {
        store_leaf(row, chunk_output(row, 0u, true));
    } else {
        store_cv(id, chunk_output(row, chunk, false));
    }
}

@compute @workgroup_size(64, 1, 1)
fn leaf_merge(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lidx: u32,
) {
    let row = item(wid, nwg, lidx);
    if row >= p.rows || p.chunks < 2u {
        return;
    }
    let first = row * p.chunks;
    // Subtree roots still waiting for a right sibling, as in the reference `Hasher`: after
    // chunk t (1-based), one merge per trailing zero bit of t.
    var stack: array<Cv, STACK>;
    var depth = 0u;
    for (var t = 1u; t < p.chunks; t++) {
        var cv = load_cv(first + t - 1u);
        var total = t;
        while (total & 1u) == 0u && depth > 0u {
            depth -= 1u;
            cv = parent(stack[depth], cv, 0u);
            total >>= 1u;
        }
        stack[depth] = cv;
        depth += 1u;
    }
    // The last chunk, then the waiting subtrees right to left; the last merge is the root.
    var out = load_cv(first + p.chunks - 1u);
    while depth > 1u {
        depth -= 1u;
        out = parent(stack[depth], out, 0u);
    }
    store_leaf(row, parent(stack[0], out, ROOT));
}
