//! The write core of event sourcing, with no domain in it: the [`Aggregate`] trait, the command
//! handler that runs a command against any aggregate (load from snapshot and tail, decide,
//! append with optimistic concurrency and idempotent command ids, retry), the Postgres event
//! store and the relay that publishes committed events to NATS JetStream in commit order.
//!
//! - [`aggregate`]: the [`Aggregate`] and [`DomainError`] traits.
//! - [`handler`]: [`handler::CommandHandler`], load → decide → append.
//! - [`store`]: the Postgres event store (events, streams, processed commands, snapshots) and
//!   its migrations.
//! - [`relay`]: publishes committed events to NATS JetStream in commit order.

pub mod aggregate;
pub mod handler;
pub mod relay;
pub mod store;

pub use aggregate::{Aggregate, DomainError, execute};
