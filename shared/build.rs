//! Generates the gRPC code and the file descriptor set (for server reflection) from `../proto`.
//!
//! protox is a pure-Rust .proto compiler, so a fresh machine needs no system `protoc`. Every
//! `.proto` file under `../proto` is compiled (one folder per package, `name/v1/`), so a new
//! bounded context's API is picked up by adding its file; `src/proto.rs` includes each package.

use std::{
    env,
    path::{Path, PathBuf},
};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let mut files = Vec::new();
    find_protos(&proto_root, &mut files)?;
    files.sort();

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

/// Every `.proto` file under `dir`.
fn find_protos(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
