//! Snapshot + tail equals a full replay; snapshots of another schema, or unreadable ones, are
//! ignored; long streams load page by page.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use command_svc::{
    domain::customer::{Customer, CustomerCommand},
    eventsourcing::{
        Aggregate,
        handler::{CommandContext, CommandHandler},
        store::{Append, EventStore},
    },
};
use shared::{
    envelope::{EventMetadata, stream_id},
    events::{CustomerEvent, CustomerRegistered, CustomerRenamed, DomainEvent},
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

/// A stream longer than a load page, then an unreadable snapshot of the current schema: both
/// load to the full replay (the page loop, and the fallback that rereads from version 1).
#[sqlx::test(migrations = "./migrations")]
async fn a_long_stream_loads_in_pages_and_an_unreadable_snapshot_is_a_cache_miss(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let handler = CommandHandler::new(store.clone(), 1_000_000, Arc::new(Notify::new()));
    let id = CustomerId::generate();
    let mut events = vec![CustomerEvent::Registered(CustomerRegistered {
        customer_id: id,
        name: CustomerName::parse("Name 0").unwrap(),
        email: Email::parse("a@example.com").unwrap(),
        registered_at: Utc::now(),
    })];
    // 2,500 events: two full pages of 1,000 and a short one.
    events.extend((1..2_500).map(|i| {
        CustomerEvent::Renamed(CustomerRenamed {
            name: CustomerName::parse(&format!("Name {i}")).unwrap(),
            renamed_at: Utc::now(),
        })
    }));
    let encoded: Vec<_> = events.iter().map(DomainEvent::encode).collect();
    let stream = stream_id(Customer::TYPE, id.into());
    store
        .append(&Append {
            tenant_id: ctx().tenant.as_uuid(),
            aggregate_type: Customer::TYPE,
            aggregate_id: id.into(),
            stream_id: &stream,
            expected_version: 0,
            events: &encoded,
            metadata: &EventMetadata::default(),
            command: None,
        })
        .await
        .unwrap();
    let (loaded, version) = handler
        .load::<Customer>(ctx().tenant, id.into())
        .await
        .unwrap();
    assert_eq!(version, 2_500);
    assert_eq!(loaded, Customer::replay(&events));
    assert_eq!(loaded.profile.unwrap().name.as_str(), "Name 2499");

    sqlx::query(
        "INSERT INTO snapshots (tenant_id, stream_id, state_schema_version, stream_version, state)
         VALUES ($1, $2, $3, 2000, '\"not a customer\"')",
    )
    .bind(ctx().tenant.as_uuid())
    .bind(&stream)
    .bind(i32::try_from(Customer::STATE_SCHEMA_VERSION).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let (reloaded, version) = handler
        .load::<Customer>(ctx().tenant, id.into())
        .await
        .unwrap();
    assert_eq!(version, 2_500);
    assert_eq!(reloaded, Customer::replay(&events));
}
