//! query-svc: consumes the event log from NATS JetStream, projects it into read tables and serves
//! queries over gRPC.
//!
//! - [`projection`]: pure folds from events to views (order, customer, timeline, analytics).
//! - [`store`]: the read database: applying events, reading views; migrations.
//! - [`projector`]: the durable JetStream consumer, exactly-once application, hole filling,
//!   dead letters.
//! - [`admin`]: operating the projection: status and lag, dead letters, zero-downtime rebuild,
//!   health.
//! - [`grpc`]: the QueryService and ProjectionAdminService adapters.
//! - [`config`]: flags and environment.
//! - [`startup`]: [`startup::App`], the one entry point `main` and the tests share.

pub mod admin;
pub mod config;
pub mod grpc;
pub mod projection;
pub mod projector;
pub mod startup;
pub mod store;
