//! Where a projection's tables live, and their generations. The serving generation of
//! projection `p` lives in the schema `p`, where its consumer writes and queries read. A
//! rebuild fills copies of its tables in the schema `p__rebuild` and then, in one transaction,
//! moves the serving tables out and the rebuilt ones in: readers see the old generation or the
//! new one, never a mix. The runtime's bookkeeping ([`BOOKKEEPING_TABLES`]) sits beside the
//! projection's own tables and moves with them.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::Projection;

/// The runtime's tables in every projection's schema (migration 0004's
/// `create_projection_schema`).
pub const BOOKKEEPING_TABLES: &[&str] = &[
    "stream_progress",
    "applied_events",
    "projector_state",
    "dead_letters",
];

/// Every table of a generation of `projection`: the runtime's and its own.
pub fn generation_tables(projection: &dyn Projection) -> Vec<&'static str> {
    let mut tables = BOOKKEEPING_TABLES.to_vec();
    tables.extend_from_slice(projection.tables());
    tables
}

/// Whether `name` can name a projection (and so a schema, unquoted).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && name.len() <= 40
}

/// The schema a rebuild of `name` fills.
pub fn rebuild_schema(name: &str) -> String {
    format!("{name}__rebuild")
}

/// Advisory lock classes (two-int form: class, `hashtext(projection name)`): 'QSV' and a kind.
/// Held shared by every transaction that writes the serving generation, exclusively by the swap.
const SERVING_LOCK: i32 = 0x5153_5601;
/// Held for the whole of a rebuild, on its own connection: at most one rebuild at a time.
const REBUILD_LOCK: i32 = 0x5153_5602;
/// Held by each consumer batch (after the serving lock): one batch at a time.
const PROJECTOR_LOCK: i32 = 0x5153_5603;

/// Starts writing the serving generation of `name` in this transaction: names resolve to its
/// schema, a swap in progress is waited for and kept from starting until the transaction ends
/// (so the tables it resolves by name are the ones that serve when it commits), and the
/// batches of all replicas and the admin rpcs that apply events go one at a time. Each batch
/// starts from the watermark the one before it left, so a gap it sees is a real one (events
/// lost or held by a consumer that died), not a neighbour's batch still in flight. One round
/// trip; take it first.
pub async fn enter_serving(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('search_path', $1, true),
                pg_advisory_xact_lock_shared($2, hashtext($1)),
                pg_advisory_xact_lock($3, hashtext($1))",
    )
    .bind(name)
    .bind(SERVING_LOCK)
    .bind(PROJECTOR_LOCK)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the serving lock of `name` exclusively, for the swap.
pub async fn hold_serving_exclusively(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(SERVING_LOCK)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims the right to rebuild `name` for as long as `conn` lives; false if another rebuild
/// holds it.
pub async fn try_claim_rebuild(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(REBUILD_LOCK)
        .bind(name)
        .fetch_one(conn)
        .await
}

/// Whether some session (of any replica) is rebuilding `name` now.
pub async fn rebuild_running(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'advisory' AND granted
                          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND classid = $1::int::oid AND objid = hashtext($2)::oid AND objsubid = 2)",
    )
    .bind(REBUILD_LOCK)
    .bind(name)
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

/// Creates the schema a rebuild of `projection` fills, with empty copies of every generation
/// table (columns, defaults, constraints, indexes, row-level security). Dead letter ids come from
/// one sequence for all projections and generations, so an id never names two dead letters.
pub async fn create_rebuild_schema(
    conn: &mut PgConnection,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let (serving, rebuild) = (projection.name(), rebuild_schema(projection.name()));
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {rebuild} CASCADE"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {rebuild}")))
        .execute(&mut *conn)
        .await?;
    for table in generation_tables(projection) {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {rebuild}.{table} (LIKE {serving}.{table} INCLUDING ALL)"
        )))
        .execute(&mut *conn)
        .await?;
    }
    // LIKE copies no policies: give the new tables the tenant wall (migration 0003).
    sqlx::query("SELECT protect_tenant_tables($1)")
        .bind(&rebuild)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the unqualified table names of the rest of this transaction name the tables a
/// rebuild of `name` fills.
pub async fn write_to_rebuild(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(rebuild_schema(name))
        .execute(conn)
        .await?;
    Ok(())
}

/// Swaps the rebuilt tables in: the serving ones move to `<name>__retired_<generation>`
/// (dropped by [`drop_retired`] after the commit) and the rebuilt ones into the serving
/// schema. Call with the serving lock held exclusively, in the transaction that also bumps the
/// generation.
pub async fn swap_in_rebuild(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    retired_generation: i32,
) -> Result<String, sqlx::Error> {
    let name = projection.name();
    let rebuild = rebuild_schema(name);
    let retired = format!("{name}__retired_{retired_generation}");
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {retired} CASCADE"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {retired}")))
        .execute(&mut *conn)
        .await?;
    for table in generation_tables(projection) {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {name}.{table} SET SCHEMA {retired}"
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {rebuild}.{table} SET SCHEMA {name}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {rebuild}")))
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
