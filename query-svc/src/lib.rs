//! query-svc: consumes the event log from NATS JetStream, projects it into read tables and serves
//! queries over gRPC.
//!
//! - [`config`]: flags and environment.
//! - [`startup`]: [`startup::App`], the one entry point `main` and the tests share.

pub mod config;
pub mod startup;
