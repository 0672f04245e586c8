//! Generates the prost/tonic code and the proto3-JSON serde impls from `proto/`, using the
//! vendored protoc so no system package is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("portico_descriptor.bin");
    let protos = [
        "proto/portico/v1/resources.proto",
        "proto/portico/v1/discovery.proto",
        "proto/portico/v1/admin.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        // Ordered maps make encoding deterministic, so every replica sends the same bytes.
        .btree_map(".")
        // Their Debug is written by hand (`secret.rs`), so no `{:?}` shows secret material.
        .skip_debug([".portico.v1.Secret", ".portico.v1.TlsSecret"])
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(config, &protos, &["proto"])?;

    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        .build(&[".portico.v1"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
