//! Compiles `harness/harness.cpp` — the host shim, then the real `kernels/cuda/*.cu` sources —
//! into a static library with the system C++ compiler.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let kernels = manifest.join("../kernels/cuda");
    let harness = manifest.join("harness");
    // A directory here makes Cargo rerun the script when any file under it changes.
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", harness.display());
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .include(&harness)
        .include(&kernels)
        .file(harness.join("harness.cpp"))
        // The kernels' `#pragma unroll` is NVRTC's; the host compiler may ignore it.
        .flag_if_supported("-Wno-unknown-pragmas")
        // One IEEE operation per source operation, as NVRTC is told (fmad=false).
        .flag_if_supported("-ffp-contract=off")
        // The harness hands the kernels Rust u32 buffers they store i8, u16 and f32 into.
        .flag_if_supported("-fno-strict-aliasing")
        .compile("veribench_cuda_host");
}
