//! Row-level security on the event store, checked with raw SQL: a transaction acting for one
//! tenant sees, writes and changes that tenant's rows only, whatever its queries ask for.

use std::sync::Arc;

use chrono::Utc;
use command_svc::{
    domain::customer::{Customer, CustomerCommand},
    eventsourcing::{
        handler::{CommandContext, CommandHandler},
        store::EventStore,
    },
};
use shared::{
    connect::begin_as_tenant,
    envelope::EventMetadata,
    values::{CommandId, CustomerId, CustomerName, Email, TenantId},
};
use sqlx::PgPool;
use tokio::sync::Notify;

async fn register(handler: &CommandHandler, tenant: TenantId) -> CustomerId {
    let id = CustomerId::generate();
    let ctx = CommandContext {
        tenant,
        command_id: Some(CommandId::generate()),
        expected_version: None,
        rpc: "RegisterCustomer",
        request: b"",
        metadata: EventMetadata::default(),
    };
    let command = CustomerCommand::RegisterCustomer {
        customer_id: id,
        name: CustomerName::parse("Ada").unwrap(),
        email: Email::parse("ada@example.com").unwrap(),
        registered_at: Utc::now(),
    };
    handler
        .execute::<Customer>(&ctx, id.into(), &command)
        .await
        .unwrap();
    id
}

async fn count(tx: &mut sqlx::PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(tx)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "./migrations")]
async fn a_tenant_transaction_sees_and_writes_only_its_own_rows(pool: PgPool) {
    let handler = CommandHandler::new(EventStore::new(pool.clone()), 100, Arc::new(Notify::new()));
    let (a, b) = (TenantId::generate(), TenantId::generate());
    register(&handler, a).await;
    register(&handler, a).await;
    let bs_customer = register(&handler, b).await;

    // The login role (the tables' owner; the relay and ReadAll) sees everything.
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(count(&mut conn, "events").await, 3);
    drop(conn);

    let mut tx = begin_as_tenant(&pool, a.as_uuid()).await.unwrap();
    for (table, expected) in [("events", 2), ("streams", 2), ("processed_commands", 2)] {
        assert_eq!(count(&mut tx, table).await, expected, "{table} as tenant a");
    }
    // Asking for b's rows by name finds nothing.
    let bs: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(bs, 0);
    // Changing b's stream changes nothing.
    let changed = sqlx::query("UPDATE streams SET version = 99 WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 0);
    tx.rollback().await.unwrap();

    // Writing a row of another tenant is refused by the policy.
    let mut tx = begin_as_tenant(&pool, a.as_uuid()).await.unwrap();
    let refused = sqlx::query(
        "INSERT INTO streams (tenant_id, stream_id, aggregate_type, version) VALUES ($1, 'x', 'order', 1)",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("row-level security"),
        "{refused}"
    );
    tx.rollback().await.unwrap();

    // Nothing is deletable, even of one's own tenant (the log is append-only).
    let mut tx = begin_as_tenant(&pool, a.as_uuid()).await.unwrap();
    let refused = sqlx::query("DELETE FROM events")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    tx.rollback().await.unwrap();

    // The tenant role with no tenant named sees no rows at all.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE pizzeria_tenant")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count(&mut tx, "events").await, 0);
    tx.rollback().await.unwrap();

    // The settings end with the transaction: the pooled connection is the owner again, and b's
    // customer is intact.
    let mut conn = pool.acquire().await.unwrap();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(role, "pizzeria_tenant");
    let version: i64 = sqlx::query_scalar("SELECT version FROM streams WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(version, 1, "customer {bs_customer:?} untouched");
}
