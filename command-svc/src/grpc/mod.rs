//! gRPC adapters: convert requests, call the application, map errors to statuses.

pub mod command_service;
pub mod commands;
pub mod convert;
pub mod event_log_service;
pub mod fields;
pub mod status;
pub mod training;

pub use shared::grpc::tenant;
