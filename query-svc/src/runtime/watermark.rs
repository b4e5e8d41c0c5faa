//! The projection's watermark: the point in the relay's commit order up to which every event is
//! done (applied, skipped as held behind a dead letter, or dead-lettered). It is contiguous: a
//! batch moves it only over events that follow it without a gap, filling any gap from the log
//! first (`runtime::run`). It lives in `projector_state` and moves in the transaction that
//! applies the events, so it never claims an event the read tables do not hold.
//!
//! Every event under the watermark has a row in `applied_events`, and no event above it does:
//! "position P is there" is exactly "every event published up to and including P is done",
//! which is what a read with `min_position = P` waits for.

use sqlx::{PgConnection, PgPool};

/// A point in the relay's commit order: transaction id first, then global position. The
/// default, (0, 0), lies before every event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPoint {
    pub transaction_id: u64,
    pub global_position: i64,
}

impl LogPoint {
    pub fn of(record: &shared::proto::v1::EventRecord) -> Self {
        Self {
            transaction_id: record.transaction_id,
            global_position: i64::try_from(record.global_position).unwrap_or(i64::MAX),
        }
    }
}

/// The watermark of the tables the connection's `search_path` names (the serving generation,
/// or a rebuild's).
pub async fn load(conn: &mut PgConnection) -> Result<LogPoint, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_transaction_id, last_position FROM projector_state WHERE id = 1",
    )
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or_else(LogPoint::default, |(transaction_id, global_position)| {
            LogPoint {
                transaction_id: u64::try_from(transaction_id).unwrap_or(0),
                global_position,
            }
        }),
    )
}

/// Whether every event published up to and including the one at `position` (in the relay's
/// commit order) is done in projection `name`: its `applied_events` holds exactly the events
/// under its watermark.
pub async fn covered(pool: &PgPool, name: &str, position: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {name}.applied_events WHERE global_position = $1)"
    )))
    .bind(position)
    .fetch_one(pool)
    .await
}

/// The position of projection `name`'s watermark (0 before the first event), to say how far
/// behind a reader is.
pub async fn position(pool: &PgPool, name: &str) -> Result<i64, sqlx::Error> {
    let position: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT last_position FROM {name}.projector_state WHERE id = 1"
    )))
    .fetch_optional(pool)
    .await?;
    Ok(position.unwrap_or(0))
}
