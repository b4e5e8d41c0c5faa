//! Row-level security on the read tables, checked with raw SQL: a transaction acting for one
//! tenant reads that tenant's rows only and writes nothing; a rebuild's new tables get the same
//! wall before they are swapped in.

use query_svc::{
    runtime::generations::{create_rebuild_schema, generation_tables, rebuild_schema},
    store::queries,
};
use shared::connect::begin_as_tenant;
use sqlx::PgPool;
use uuid::Uuid;

async fn customer(pool: &PgPool, tenant: Uuid, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO read_model.customer_views (tenant_id, customer_id, name, email, last_updated, version)
         VALUES ($1, $2, $3, 'x@example.com', now(), 1)",
    )
    .bind(tenant)
    .bind(id)
    .bind(name)
    .execute(pool)
    .await
    .unwrap();
    id
}

#[sqlx::test(migrations = "./migrations")]
async fn a_tenant_transaction_reads_only_its_own_rows_and_writes_none(pool: PgPool) {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let alice = customer(&pool, a, "Alice").await;
    let bob = customer(&pool, b, "Bob").await;

    // Through the read functions: b's customer is not there for a.
    assert!(queries::customer(&pool, a, alice).await.unwrap().is_some());
    assert!(queries::customer(&pool, a, bob).await.unwrap().is_none());

    let mut tx = begin_as_tenant(&pool, a).await.unwrap();
    // Even asking for every row, or for b's by name.
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM read_model.customer_views")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, ["Alice"]);
    let bs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM read_model.customer_views WHERE tenant_id = $1")
            .bind(b)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(bs, 0);
    tx.rollback().await.unwrap();

    // Reads only: no write of its own tenant's rows either.
    assert_denied(
        &pool,
        a,
        "UPDATE read_model.customer_views SET name = 'Eve'",
    )
    .await;
    // Bookkeeping without a tenant column is closed to the tenant role.
    assert_denied(&pool, a, "SELECT count(*) FROM read_model.applied_events").await;
}

/// `sql`, run acting for `tenant`, is refused for want of a privilege.
async fn assert_denied(pool: &PgPool, tenant: Uuid, sql: &'static str) {
    let mut tx = begin_as_tenant(pool, tenant).await.unwrap();
    let refused = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{sql}: {refused}"
    );
    tx.rollback().await.unwrap();
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rebuilds_tables_carry_the_same_wall(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let (registry, _) = query_svc::startup::registry();
    for projection in registry.iter() {
        let name = projection.name();
        create_rebuild_schema(&mut conn, projection.as_ref())
            .await
            .unwrap();
        let tenant_tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND column_name = 'tenant_id' ORDER BY 1",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        // Its own tables and the stream progress and dead letters.
        assert!(tenant_tables.len() >= 3, "{name}: {tenant_tables:?}");
        for table in generation_tables(projection.as_ref()) {
            let tenant_scoped = tenant_tables.iter().any(|t| t == table);
            for schema in [name.to_owned(), rebuild_schema(name)] {
                let (secured, policies): (bool, i64) = sqlx::query_as(
                    "SELECT c.relrowsecurity,
                            (SELECT count(*) FROM pg_policies p
                             WHERE p.schemaname = $1 AND p.tablename = $2)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = $2",
                )
                .bind(&schema)
                .bind(table)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
                assert_eq!(secured, tenant_scoped, "{schema}.{table} row security");
                assert_eq!(
                    policies,
                    i64::from(tenant_scoped),
                    "{schema}.{table} policies"
                );
            }
        }
    }
}
