//! command-svc: validates commands against event-sourced aggregates, appends the resulting events
//! to Postgres and relays them, in commit order, to NATS JetStream.
//!
//! - [`domain`]: pure aggregates (state, commands, decide, evolve).
//! - [`app`]: runs a command: load, decide, append, with retries and idempotency.
//! - [`store`]: the Postgres event store and its migrations.
//! - [`relay`]: publishes committed events to NATS JetStream in commit order.
//! - [`grpc`]: CommandService and EventLogService adapters and the error → status mapping.
//! - [`config`]: flags and environment.
//! - [`startup`]: [`startup::App`], the one entry point `main` and the tests share.

pub mod app;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod relay;
pub mod startup;
pub mod store;
