// Host stand-ins for the CUDA built-ins kernels/cuda/*.cu use, so the real kernel sources
// compile as C++17 and run on the CPU (harness.cpp). Each definition has the device
// semantics the kernels rely on; nothing here is approximate.

#pragma once

#include <cstdint>
#include <cstring>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(threads)

// CUDA's uint4 is 16-byte aligned; the host kernels only need the four words (the harness's
// buffers are Rust `u32` slices, 4-byte aligned).
struct uint4 {
    unsigned int x, y, z, w;
};

inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    uint4 v = {x, y, z, w};
    return v;
}

// Funnel shift left: the high word of (hi:lo) << (shift & 31).
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
    const uint64_t both = ((uint64_t)hi << 32) | lo;
    return (unsigned int)((both << (shift & 31u)) >> 32);
}

inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// Round to nearest even: the host's default rounding mode (never changed by the harness).
inline float __int2float_rn(int v) {
    return (float)v;
}

// A single IEEE binary32 multiply (SSE on x86-64; built with -ffp-contract=off).
inline float __fmul_rn(float a, float b) {
    return a * b;
}

struct vbh_dim3 {
    unsigned int x, y, z;
};

// The launch's built-in indices, per host thread (tests run launches concurrently).
extern thread_local vbh_dim3 blockIdx;
extern thread_local vbh_dim3 threadIdx;
extern thread_local vbh_dim3 blockDim;
extern thread_local vbh_dim3 gridDim;
