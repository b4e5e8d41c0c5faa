//! Reading and resolving dead letters (written by `runtime::streams`). Each projection has its
//! own, in its schema; ids are unique across all of them (one sequence).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// A dead letter as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    /// The projection that could not apply the event.
    pub projection: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub global_position: i64,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub attempts: i32,
    pub record: Vec<u8>,
    pub status: String,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// Later events of the stream that arrived while it was held.
    pub held_events: i64,
}

/// The columns of a dead letter row; `projection` is the projection's name as SQL.
fn columns(projection: &str) -> String {
    format!("id, {projection} AS projection, {COLUMNS}")
}

const COLUMNS: &str = "stream_id, stream_version, global_position, event_id, event_type, error,
     attempts, record, status, first_failed_at, last_failed_at,
     GREATEST(COALESCE(held_version, stream_version) - stream_version, 0) AS held_events";

/// Unresolved dead letters of the projections `names` with id > `after`, oldest first.
pub async fn pending(
    pool: &PgPool,
    names: &[&str],
    after: i64,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // Names are checked identifiers (`generations::is_valid_name`), never input.
    let union: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                "SELECT {} FROM {name}.dead_letters WHERE status = 'PENDING' AND id > $1",
                columns(&format!("'{name}'::text"))
            )
        })
        .collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM ({}) d ORDER BY id LIMIT $2",
        union.join(" UNION ALL ")
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Unresolved dead letters of projection `name`.
pub async fn count_pending(pool: &PgPool, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {name}.dead_letters WHERE status = 'PENDING'"
    )))
    .fetch_one(pool)
    .await
}

/// Which of the projections `names` holds dead letter `id`.
pub async fn owner<'a>(
    pool: &PgPool,
    names: &[&'a str],
    id: i64,
) -> Result<Option<&'a str>, sqlx::Error> {
    for name in names {
        let found: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {name}.dead_letters WHERE id = $1)"
        )))
        .bind(id)
        .fetch_one(pool)
        .await?;
        if found {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// The dead letter `id`, locked until the transaction ends (the projector waits on the lock
/// before it decides the stream is held).
pub async fn lock(conn: &mut PgConnection, id: i64) -> Result<Option<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM dead_letters WHERE id = $1 FOR UPDATE",
        columns("current_schema()::text")
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Dead letter `id` of projection `name`.
pub async fn get(pool: &PgPool, name: &str, id: i64) -> Result<Option<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {name}.dead_letters WHERE id = $1",
        columns(&format!("'{name}'::text"))
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Resolves a dead letter: `RETRIED` or `SKIPPED`, with the operator's reason for a skip.
pub async fn resolve(
    conn: &mut PgConnection,
    id: i64,
    status: &str,
    resolution: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET status = $2, resolution = $3, resolved_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(resolution)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records one more failed attempt of a dead letter.
pub async fn failed_again(
    conn: &mut PgConnection,
    id: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dead_letters SET error = $2, attempts = attempts + 1, last_failed_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// The unresolved dead letter of a stream at `version`, if any: how a retry learns that the
/// event failed again while the stream was caught up.
pub async fn pending_at(
    conn: &mut PgConnection,
    stream_id: &str,
    version: i64,
    tenant_id: uuid::Uuid,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, error FROM dead_letters
         WHERE tenant_id = $1 AND stream_id = $2 AND stream_version = $3 AND status = 'PENDING'",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// The version of the stream's event that waits in projection `name`'s dead letters, if the
/// stream is held there: its later events are not applied until an operator retries or skips
/// it.
pub async fn held_at(
    pool: &PgPool,
    name: &str,
    tenant: uuid::Uuid,
    stream_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT stream_version FROM {name}.dead_letters
         WHERE tenant_id = $1 AND stream_id = $2 AND status = 'PENDING'"
    )))
    .bind(tenant)
    .bind(stream_id)
    .fetch_optional(pool)
    .await
}
