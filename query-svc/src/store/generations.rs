//! Generations of the read model. The serving generation's tables live in `public`, where the
//! projector writes and queries read with unqualified names. A rebuild fills copies of them in
//! the schema `rebuild` and then, in one transaction, moves the serving tables out and the
//! rebuilt ones in: readers see the old generation or the new one, never a mix.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// The one projection query-svc runs: every read table, applied together in one transaction per
/// batch under one checkpoint (so an order view and its customer can never disagree).
pub const READ_MODEL: &str = "read_model";

/// The schema a rebuild fills.
pub const REBUILD_SCHEMA: &str = "rebuild";

/// Every table of a generation: all of migration 0001's, and any later migration's that hold
/// derived data. A test checks that no other table is in `public`.
pub const GENERATION_TABLES: &[&str] = &[
    "stream_progress",
    "applied_events",
    "projector_state",
    "customer_views",
    "order_views",
    "order_history",
    "order_timeline",
    "daily_sales",
    "daily_item_sales",
    "dead_letters",
];

/// Advisory lock keys (two-int form): ('QSVC', n).
const LOCK_CLASS: i32 = 0x5153_5643;
/// Held shared by every transaction that writes the serving generation, exclusively by the swap.
const SERVING_LOCK: i32 = 1;
/// Held for the whole of a rebuild, on its own connection: at most one rebuild at a time.
const REBUILD_LOCK: i32 = 2;
/// Held by each projector batch (after the serving lock): one batch at a time.
const PROJECTOR_LOCK: i32 = 3;

/// Waits while a swap is in progress and keeps one from starting until the transaction ends.
/// Take it first in a transaction that writes the serving tables, so the tables it resolves by
/// name are the ones that serve when it commits.
pub async fn hold_serving(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(LOCK_CLASS)
        .bind(SERVING_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Serializes the projector's batches across replicas (and the admin rpcs that apply events),
/// until the transaction ends: each batch starts from the watermark the one before it left, so
/// a gap it sees is a real one (events lost or held by a consumer that died), not a
/// neighbour's batch still in flight. Take it right after [`hold_serving`].
pub async fn hold_projector(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(PROJECTOR_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the serving lock exclusively, for the swap.
pub async fn hold_serving_exclusively(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(SERVING_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims the right to rebuild for as long as `conn` lives; false if another rebuild holds it.
pub async fn try_claim_rebuild(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(REBUILD_LOCK)
        .fetch_one(conn)
        .await
}

/// Whether some session (of any replica) is rebuilding now.
pub async fn rebuild_running(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'advisory' AND granted
                          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2)",
    )
    .bind(LOCK_CLASS)
    .bind(REBUILD_LOCK)
    .fetch_one(pool)
    .await
}

/// A projection's row in `projections`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectionRow {
    pub name: String,
    pub generation: i32,
    pub rebuild_generation: Option<i32>,
    pub rebuild_position: Option<i64>,
    pub rebuild_target: Option<i64>,
    pub rebuild_started_at: Option<DateTime<Utc>>,
}

pub async fn projections(pool: &PgPool) -> Result<Vec<ProjectionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, generation, rebuild_generation, rebuild_position, rebuild_target,
                rebuild_started_at
         FROM public.projections ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

/// Records a rebuild of `name` into `generation` as started.
pub async fn start_rebuild(
    conn: &mut PgConnection,
    name: &str,
    generation: i32,
    target: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE public.projections SET rebuild_generation = $2, rebuild_position = 0,
             rebuild_target = $3, rebuild_started_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .bind(generation)
    .bind(target)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn record_rebuild_progress(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
    target: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE public.projections SET rebuild_position = $2, rebuild_target = GREATEST($3, $2)
         WHERE name = $1",
    )
    .bind(name)
    .bind(position)
    .bind(target)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the rebuild of `name` (finished or abandoned).
pub async fn end_rebuild(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE public.projections SET rebuild_generation = NULL, rebuild_position = NULL,
             rebuild_target = NULL, rebuild_started_at = NULL
         WHERE name = $1",
    )
    .bind(name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates the schema `rebuild` with empty copies of every generation table (columns,
/// defaults, constraints, indexes, row-level security). Dead letter ids continue from the serving generation's, so
/// an id never names two dead letters.
pub async fn create_rebuild_schema(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {REBUILD_SCHEMA}")))
        .execute(&mut *conn)
        .await?;
    for table in GENERATION_TABLES {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)"
        )))
        .execute(&mut *conn)
        .await?;
    }
    // LIKE copies no policies: give the new tables the tenant wall (migration 0003).
    sqlx::query("SELECT protect_tenant_tables($1)")
        .bind(REBUILD_SCHEMA)
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "SELECT setval(pg_get_serial_sequence('{REBUILD_SCHEMA}.dead_letters', 'id'),
                       GREATEST((SELECT max(id) FROM public.dead_letters), 1))"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes the unqualified table names of the rest of this transaction name the rebuild's tables.
pub async fn write_to_rebuild(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL search_path TO {REBUILD_SCHEMA}"
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Swaps the rebuilt tables in: the serving ones move to `retired_<generation>` (dropped by
/// [`drop_retired`] after the commit) and the rebuilt ones into `public`. Call with the serving
/// lock held exclusively, in the transaction that also bumps the generation.
pub async fn swap_in_rebuild(
    conn: &mut PgConnection,
    name: &str,
    retired_generation: i32,
) -> Result<String, sqlx::Error> {
    let retired = format!("retired_{retired_generation}");
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {retired} CASCADE"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {retired}")))
        .execute(&mut *conn)
        .await?;
    for table in GENERATION_TABLES {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE public.{table} SET SCHEMA {retired}"
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {REBUILD_SCHEMA}.{table} SET SCHEMA public"
        )))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {REBUILD_SCHEMA}")))
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE public.projections SET generation = generation + 1, rebuilt_at = now(),
             rebuild_generation = NULL, rebuild_position = NULL, rebuild_target = NULL,
             rebuild_started_at = NULL
         WHERE name = $1",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    Ok(retired)
}

pub async fn drop_retired(conn: &mut PgConnection, retired: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {retired} CASCADE"
    )))
    .execute(conn)
    .await?;
    Ok(())
}
