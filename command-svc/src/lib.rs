//! command-svc: validates commands against event-sourced aggregates, appends the resulting events
//! to Postgres and relays them, in commit order, to NATS JetStream.
//!
//! - [`domain`]: pure aggregates (state, commands, decide, evolve).
//! - [`config`]: flags and environment.
//! - [`startup`]: [`startup::App`], the one entry point `main` and the tests share.

pub mod config;
pub mod domain;
pub mod startup;
