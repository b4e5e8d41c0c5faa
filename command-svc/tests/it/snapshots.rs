//! Snapshot + tail equals a full replay, and snapshots of another schema are ignored.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use command_svc::{
    app::{CommandContext, CommandHandler},
    domain::{
        Aggregate,
        customer::{Customer, CustomerCommand},
    },
    store::EventStore,
};
use shared::{
    envelope::EventMetadata,
    events::{CustomerEvent, DomainEvent},
    values::{CustomerId, CustomerName, Email, TenantId},
};
use sqlx::PgPool;
use tokio::sync::Notify;

fn ctx() -> CommandContext<'static> {
    CommandContext {
        tenant: TenantId::from_uuid(uuid::Uuid::nil()),
        command_id: None,
        expected_version: None,
        rpc: "test",
        request: b"",
        metadata: EventMetadata::default(),
    }
}

async fn snapshot_version(pool: &PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT stream_version FROM snapshots")
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn full_replay(pool: &PgPool) -> Customer {
    let rows: Vec<(String, i32, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, schema_version, payload FROM events ORDER BY stream_version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let events: Vec<CustomerEvent> = rows
        .into_iter()
        .map(|(t, v, p)| CustomerEvent::decode(&t, u32::try_from(v).unwrap(), p).unwrap())
        .collect();
    Customer::replay(&events)
}

#[sqlx::test(migrations = "./migrations")]
async fn snapshot_plus_tail_equals_full_replay(pool: PgPool) {
    let handler = CommandHandler::new(EventStore::new(pool.clone()), 100, Arc::new(Notify::new()));
    let id = CustomerId::generate();
    let register = CustomerCommand::RegisterCustomer {
        customer_id: id,
        name: CustomerName::parse("Name 0").unwrap(),
        email: Email::parse("a@example.com").unwrap(),
        registered_at: Utc::now(),
    };
    handler
        .execute::<Customer>(&ctx(), id.into(), &register)
        .await
        .unwrap();
    // 349 renames: 350 events, several snapshot intervals and a tail of 50.
    for i in 1..350 {
        let rename = CustomerCommand::RenameCustomer {
            name: CustomerName::parse(&format!("Name {i}")).unwrap(),
            at: Utc::now(),
        };
        handler
            .execute::<Customer>(&ctx(), id.into(), &rename)
            .await
            .unwrap();
    }
    // Snapshots are written in the background: wait for the one at 300.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while snapshot_version(&pool).await != Some(300) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot at version 300"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (loaded, version) = handler
        .load::<Customer>(ctx().tenant, id.into())
        .await
        .unwrap();
    assert_eq!(version, 350);
    assert_eq!(loaded, full_replay(&pool).await);
    assert_eq!(loaded.profile.unwrap().name.as_str(), "Name 349");

    // A snapshot from another state schema (or corrupted) is ignored, not trusted.
    sqlx::query("UPDATE snapshots SET state_schema_version = $1, state = '{\"junk\": true}'")
        .bind(i32::try_from(Customer::STATE_SCHEMA_VERSION + 1).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    let (reloaded, version) = handler
        .load::<Customer>(ctx().tenant, id.into())
        .await
        .unwrap();
    assert_eq!(version, 350);
    assert_eq!(reloaded, full_replay(&pool).await);
}
