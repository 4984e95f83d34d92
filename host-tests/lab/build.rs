//! Compiles `proto/mesh/test/v1/echo.proto` (the upstreams' gRPC Echo service) with tonic-prost-build, using
//! the protoc shipped by `protoc-bin-vendored` so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through this variable; a build script runs single-threaded.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/mesh/test/v1/echo.proto"], &["proto"])?;
    Ok(())
}
