//! Generates the gRPC code of `proto/consensus.proto` with the vendored `protoc` (no system
//! protoc is needed to build).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC right after.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_protos(&["proto/consensus.proto"], &["proto"])?;
    Ok(())
}
