//! The read database: applying pages of events to the read tables (`apply_page`, the one way
//! events are applied), the bookkeeping around it (`progress`, `watermark`, `dead_letters`,
//! `generations`), and reading the tables (`queries`).

pub mod apply_page;
pub mod dead_letters;
pub mod generations;
pub mod progress;
pub mod queries;
pub mod watermark;

/// Embedded migrations of the read model, run at start-up under sqlx's advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
