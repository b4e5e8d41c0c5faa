//! Code generated from `proto/`: messages, clients and servers, one module per package.
//!
//! The .proto comments are the API reference; prost copies them onto these types.

#![allow(missing_docs, missing_debug_implementations, clippy::all)]

/// Package `pizzeria.v1`.
pub mod v1 {
    tonic::include_proto!("pizzeria.v1");
}

/// Package `training.v1`: the training plans context.
pub mod training {
    pub mod v1 {
        tonic::include_proto!("training.v1");
    }
}

/// Encoded `FileDescriptorSet` of every .proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("pizzeria_descriptor");

/// A time as a protobuf `Timestamp`.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}
