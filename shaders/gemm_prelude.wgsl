// Shared declarations of the two GEMM shaders, gemm_f32.wgsl and gemm_int8.wgsl: each is
// compiled as this prelude followed by its own text (`GemmKernel::source` in
// kernels/src/wgpu/tiles.rs), so the tiling parameters and the uniform block exist once.
//
// Tiling: a workgroup of WG_X × WG_Y invocations computes a BM × BN tile of C, BM = WG_Y · TM and
// BN = WG_X · TN, each invocation a TM × TN register block. K is walked TILE_K at a time: the
// workgroup cooperatively stages a BM × TILE_K slice of A and a TILE_K × BN slice of B in
// workgroup memory, then every invocation runs TILE_K rank-1 updates from it, so each global
// load feeds TN (A) or TM (B) multiply-adds. Invocation (x, y) owns rows y + i·WG_Y and columns
// x + j·WG_X: neighbouring invocations touch neighbouring columns, so B reads from workgroup
// memory and C stores are contiguous, and A reads are broadcasts.
//
// WG_X, WG_Y and TILE_K are pipeline-overridable constants (WGSL allows them in workgroup array
// sizes and @workgroup_size). TM and TN size per-invocation arrays, which WGSL requires to be
// const-expressions, so the Rust side substitutes the two marked `const` lines before compiling
// (once per tile configuration).

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
const TM: u32 = 4u; // @tile TM
const TN: u32 = 4u; // @tile TN

override BM: u32 = WG_Y * TM;
override BN: u32 = WG_X * TN;
// A's tile is stored transposed (k-major) with one word of padding per k so the transposing
// stores of the cooperative load do not all hit one memory bank.
override A_STRIDE: u32 = BM + 1u;

struct GemmParams {
    m: u32,
    k: u32,
    n: u32,
    // Test-only fault injection (Rust `Fault`): 1 = skip the last K tile. 0 in production.
    fault: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
