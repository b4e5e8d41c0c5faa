//! command-svc: validates commands against event-sourced aggregates, appends the resulting events
//! to Postgres and relays them, in commit order, to NATS JetStream.
//!
//! - [`eventsourcing`]: the write core, no pizzeria in it: the `Aggregate` trait, the command
//!   handler (load, decide, append, with retries and idempotency), the Postgres event store and
//!   the relay to NATS JetStream.
//! - [`domain`]: the pizzeria's pure aggregates (state, commands, decide, evolve).
//! - [`grpc`]: CommandService and EventLogService adapters and the error → status mapping.
//! - [`config`]: flags and environment.
//! - [`startup`]: [`startup::App`], the one entry point `main` and the tests share.

pub mod config;
pub mod domain;
pub mod eventsourcing;
pub mod grpc;
pub mod startup;
