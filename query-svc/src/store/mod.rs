//! The read database: applying events to the read tables, and reading them.

pub mod apply;
pub mod apply_page;
pub mod dead_letters;
pub mod generations;
pub mod queries;

/// Embedded migrations of the read model, run at start-up under sqlx's advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
