//! The contract both services read.
//!
//! - [`proto`]: code generated from `proto/` (messages, clients, servers, descriptor set).
//! - [`values`]: validated value types (ids, money, names, codes).
//! - [`events`]: the domain events with stable type names and schema versions.
//! - [`upcasting`]: reads older stored event shapes as the current ones.
//! - [`envelope`]: what travels with an event (stream, version, position, metadata).
//! - [`auth`] and [`admission`]: who may call, and which calls a server takes on.
//! - [`config`] and [`service`]: the settings every service takes and what its `main` does.
//! - [`telemetry`], [`trace_context`], [`metrics`], [`health`] and [`shutdown`]: process
//!   plumbing shared by both binaries.

pub mod admission;
pub mod auth;
pub mod codec;
pub mod config;
pub mod connect;
pub mod envelope;
pub mod events;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod proto;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;
pub mod upcasting;
pub mod values;
