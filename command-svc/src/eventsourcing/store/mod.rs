//! Postgres persistence of the write side: events, stream versions, processed commands,
//! snapshots. Knows nothing about orders: it stores encoded events of any aggregate.

mod event_store;
mod record;

pub use event_store::*;

/// Embedded migrations, run at start-up under an advisory lock so replicas don't race.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
