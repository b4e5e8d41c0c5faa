//! Generates the gRPC code and the file descriptor set (for server reflection) from `../proto`.
//!
//! protox is a pure-Rust .proto compiler, so a fresh machine needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files: Vec<PathBuf> = ["common", "command", "event_log", "query", "admin"]
        .iter()
        .map(|name| proto_root.join(format!("pizzeria/v1/{name}.proto")))
        .collect();

    // compile_fds emits no rerun-if-changed of its own.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let descriptors = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("pizzeria_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Parse errors are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::ProtobufCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
