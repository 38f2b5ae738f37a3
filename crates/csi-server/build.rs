//! Generates the CSI v1 protobuf types plus gRPC server and client code
//! from `proto/csi.proto`, using the protoc bundled by `protoc-bin-vendored`
//! so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    let proto_file = proto_dir.join("csi.proto");

    println!("cargo:rerun-if-changed={}", proto_file.display());
    println!("cargo:rerun-if-changed=build.rs");

    // Point prost-build at the vendored protoc directly instead of
    // mutating the process environment (PROTOC).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    // Provides google/protobuf/{descriptor,timestamp,wrappers}.proto.
    let wkt_include = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &[proto_file], &[proto_dir, wkt_include])?;

    Ok(())
}
