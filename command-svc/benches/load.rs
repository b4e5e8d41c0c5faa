//! Loading an aggregate from Postgres: `CommandHandler::load::<Order>` of an order whose stream
//! holds 10,000 events,
//!
//! - `no_snapshot`: rebuilt from all 10,000 events (10 pages of 1,000, each decoded and evolved);
//! - `snapshot_at_10000`: read from a snapshot at version 10,000 (no event left to replay).
//!
//! Needs Postgres at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), as a
//! role that may create databases: the benchmark creates `bench_load_<uuid>`, migrates it like
//! command-svc does, and drops it at the end. Without Postgres it panics, it never skips.
//!
//! Run: `cargo bench -p command-svc --bench load`

// A benchmark: a panic is a failed setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use command_svc::{
    domain::order::Order,
    eventsourcing::{
        Aggregate,
        handler::CommandHandler,
        store::{Append, AppendOutcome, EventStore, MIGRATOR},
    },
};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use e2e::TestDatabase;
use shared::{
    envelope::{EventMetadata, stream_id},
    events::{DiscountApplied, DomainEvent, EncodedEvent, OrderEvent, OrderPlaced},
    values::{
        CustomerId, DiscountCode, ItemName, Money, OrderId, OrderLine, OrderLines, PizzaSize,
        Quantity, TenantId,
    },
};
use sqlx::PgPool;
use tokio::{runtime::Runtime, sync::Notify};
use uuid::Uuid;

/// Events in each benchmarked stream.
const EVENTS: u64 = 10_000;
/// Events per append (one transaction each) while seeding.
const APPEND_BATCH: usize = 1_000;

/// A database of the benchmark's own on the Postgres at `DATABASE_URL` (the end-to-end
/// harness's), migrated; drop it with `drop_database` at the end.
async fn bench_database() -> (TestDatabase, PgPool) {
    let database = TestDatabase::create()
        .await
        .expect("this benchmark needs Postgres at DATABASE_URL");
    let pool = database
        .migrated_pool(&MIGRATOR, 4)
        .await
        .expect("a migrated benchmark database");
    (database, pool)
}

fn t(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap() + TimeDelta::minutes(minute)
}

/// An order's 10,000 events: `OrderPlaced` (20 family pizzas at 25.00: 500.00), then 9,999
/// one-cent discounts under distinct codes. Discounts are the one event an order may repeat, and
/// these stay within the amount due, so the stream is one `decide` could have produced.
fn long_order(order_id: OrderId) -> Vec<OrderEvent> {
    let items = OrderLines::new(vec![OrderLine {
        name: ItemName::parse("Margherita").unwrap(),
        size: PizzaSize::Family,
        quantity: Quantity::new(20).unwrap(),
        unit_price: Money::positive_from_cents(2_500).unwrap(),
    }])
    .unwrap();
    let placed = OrderEvent::Placed(OrderPlaced {
        order_id,
        customer_id: CustomerId::from_uuid(Uuid::now_v7()),
        subtotal: items.subtotal(),
        items,
        placed_at: t(0),
    });
    let discounts = (1..EVENTS).map(|n| {
        OrderEvent::DiscountApplied(DiscountApplied {
            code: DiscountCode::parse(&format!("BENCH-{n:05}")).unwrap(),
            amount: Money::from_cents(1).unwrap(),
            applied_at: t(1),
        })
    });
    std::iter::once(placed).chain(discounts).collect()
}

/// Appends a new order stream of [`EVENTS`] events through the event store; returns its id.
async fn seed_order(store: &EventStore, tenant: TenantId) -> Uuid {
    let order_id = OrderId::generate();
    let encoded: Vec<EncodedEvent> = long_order(order_id)
        .iter()
        .map(DomainEvent::encode)
        .collect();
    let aggregate_id = order_id.as_uuid();
    let stream = stream_id(Order::TYPE, aggregate_id);
    let metadata = EventMetadata::default();
    let mut version = 0;
    for events in encoded.chunks(APPEND_BATCH) {
        let append = Append {
            tenant_id: tenant.as_uuid(),
            aggregate_type: Order::TYPE,
            aggregate_id,
            stream_id: &stream,
            expected_version: version,
            events,
            metadata: &metadata,
            command: None,
        };
        match store.append(&append).await.expect("appending events") {
            AppendOutcome::Appended {
                version: appended, ..
            } => version = appended,
            AppendOutcome::AlreadyProcessed(_) => unreachable!("no command id was given"),
        }
    }
    assert_eq!(version, EVENTS);
    aggregate_id
}

/// One load, checked: it must have reached the end of the stream.
async fn load(handler: &CommandHandler, tenant: TenantId, id: Uuid) -> Order {
    let (state, version) = handler
        .load::<Order>(tenant, id)
        .await
        .expect("loading the order");
    assert_eq!(version, EVENTS);
    state
}

fn load_order(c: &mut Criterion) {
    let runtime = Runtime::new().expect("a multi-thread tokio runtime");
    let (database, pool) = runtime.block_on(bench_database());
    let store = EventStore::new(pool.clone());
    // Snapshots are only taken by `execute`, which the benchmark never calls.
    let handler = CommandHandler::new(store.clone(), u64::MAX, Arc::new(Notify::new()));
    let tenant = TenantId::from_uuid(Uuid::now_v7());

    // Two orders of 10,000 events each; the second gets a snapshot at its last version, taken
    // from its state as loaded, the way the handler snapshots.
    let (without_snapshot, with_snapshot) = runtime.block_on(async {
        let without_snapshot = seed_order(&store, tenant).await;
        let with_snapshot = seed_order(&store, tenant).await;
        let state = load(&handler, tenant, with_snapshot).await;
        assert_eq!(state.discount_codes.len(), 9_999);
        let stream = stream_id(Order::TYPE, with_snapshot);
        store
            .save_snapshot(
                tenant.as_uuid(),
                &stream,
                Order::STATE_SCHEMA_VERSION,
                EVENTS,
                &serde_json::to_value(&state).expect("the order state serializes"),
            )
            .await
            .expect("saving the snapshot");
        // The handler falls back to the events, silently, on a snapshot it cannot read: make
        // sure this one is read back whole, as the state at the stream's last version.
        let snapshot = store
            .load_snapshot(tenant.as_uuid(), &stream, Order::STATE_SCHEMA_VERSION)
            .await
            .expect("reading the snapshot")
            .expect("the snapshot was saved");
        assert_eq!(u64::try_from(snapshot.stream_version).unwrap(), EVENTS);
        assert_eq!(
            serde_json::from_value::<Order>(snapshot.state).unwrap(),
            state
        );
        assert_eq!(load(&handler, tenant, with_snapshot).await, state);
        (without_snapshot, with_snapshot)
    });

    let mut group = c.benchmark_group("load_order");
    // A load without a snapshot takes tens of milliseconds: few samples, one flat batch each.
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let handler = &handler;
    group.bench_function(BenchmarkId::new("10000_events", "no_snapshot"), |b| {
        b.to_async(&runtime)
            .iter(|| load(handler, tenant, without_snapshot))
    });
    group.bench_function(BenchmarkId::new("10000_events", "snapshot_at_10000"), |b| {
        b.to_async(&runtime)
            .iter(|| load(handler, tenant, with_snapshot))
    });
    group.finish();
    runtime
        .block_on(database.drop_database())
        .expect("dropping the benchmark database");
}

criterion_group!(benches, load_order);
criterion_main!(benches);
