//! The read database: its migrations (one schema per projection, `runtime::generations`) and
//! the queries QueryService answers from the pizzeria's tables (`queries`).

pub mod queries;

/// Embedded migrations of the read database, run at start-up under sqlx's advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
