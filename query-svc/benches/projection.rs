//! The projection of a batch of 1,000 order events (125 orders, each placed, discounted,
//! confirmed, paid, cooked, ready, out for delivery and delivered, interleaved as concurrent
//! orders are in the log):
//!
//! - `projection_pure` (no I/O): decoding the wire records into events (JSON, upcasting), folding
//!   them into order views, and everything else the page fold computes for each event besides
//!   its SQL (view JSON, timeline line, sales and customer deltas).
//! - `projection_postgres`: applying the batch to `read_model` as its projector does
//!   (`apply_records`), in one transaction: `generations::enter_serving`, the batch folded as one
//!   page and each read table written once (`runtime::page`; a batch that does not fit would go
//!   event by event through `Streams::apply`), then COMMIT. Every iteration applies fresh events (new order
//!   ids and global positions): the projector skips events it has already applied.
//!
//! The Postgres group needs Postgres at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), as a role that may create databases: it
//! creates `bench_proj_<uuid>`, migrates it like query-svc does, and drops it at the end. Without
//! Postgres it panics, it never skips.
//!
//! Run: `cargo bench -p query-svc --bench projection`

// A benchmark: a panic is a failed setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, hint::black_box, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use e2e::TestDatabase;
use query_svc::{
    projections::{
        event::{Event, Payload},
        order_timeline::describe,
        read_model::{
            ReadModel, analytics::DayFigures, customer_view::CustomerOrderDelta,
            order_view::OrderState,
        },
    },
    runtime::{
        consumer::apply_records,
        run::Delivery,
        streams::Streams,
        watermark::{self, LogPoint},
    },
    store::MIGRATOR,
};
use serde::Deserialize;
use shared::{
    auth::ServiceToken,
    envelope::stream_id,
    events::{
        CookingStarted, CustomerEvent, CustomerRegistered, DiscountApplied, DomainEvent,
        OrderConfirmed, OrderDelivered, OrderEvent, OrderOutForDelivery, OrderPlaced, OrderReady,
        PaymentProcessed,
    },
    proto::v1::{self as pb, event_log_service_client::EventLogServiceClient},
    values::{
        CustomerId, CustomerName, DiscountCode, DriverName, Email, ItemName, KitchenNotes, Money,
        OrderId, OrderLine, OrderLines, PaymentMethod, PaymentReference, PizzaSize, Quantity,
    },
};
use sqlx::PgPool;
use tokio::runtime::Runtime;
use tonic::transport::Channel;
use uuid::Uuid;

/// Events of one order's life (see [`order_life`]).
const EVENTS_PER_ORDER: usize = 8;
/// Orders per batch: 125 × 8 = 1,000 events.
const ORDERS_PER_BATCH: usize = 125;
const EVENTS_PER_BATCH: u64 = 1_000;
/// Customers the orders are spread over.
const CUSTOMERS: usize = 10;

/// Minutes after 2026-11-22 18:00 UTC: every order counts on the same sales day.
fn t(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap() + TimeDelta::minutes(minute)
}

fn money(cents: i64) -> Money {
    Money::from_cents(cents).unwrap()
}

/// A delivered order's life, in stream order: placed (two large Margheritas and a Diavola,
/// 40.48), discounted by 5.00, confirmed, paid, cooking, ready, out for delivery, delivered.
fn order_life(order_id: OrderId, customer_id: CustomerId, start: i64) -> Vec<OrderEvent> {
    let line = |name: &str, quantity, cents| OrderLine {
        name: ItemName::parse(name).unwrap(),
        size: PizzaSize::Large,
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: Money::positive_from_cents(cents).unwrap(),
    };
    let items =
        OrderLines::new(vec![line("Margherita", 2, 1299), line("Diavola", 1, 1450)]).unwrap();
    let at = |minute: i64| t(start + minute);
    let life = vec![
        OrderEvent::Placed(OrderPlaced {
            order_id,
            customer_id,
            subtotal: items.subtotal(),
            items,
            placed_at: at(0),
        }),
        OrderEvent::DiscountApplied(DiscountApplied {
            code: DiscountCode::parse("WELCOME").unwrap(),
            amount: money(500),
            applied_at: at(1),
        }),
        OrderEvent::Confirmed(OrderConfirmed {
            estimated_delivery: at(45),
            kitchen_notes: KitchenNotes::parse("extra basil").unwrap(),
            confirmed_at: at(2),
        }),
        OrderEvent::PaymentProcessed(PaymentProcessed {
            method: PaymentMethod::Card,
            amount: money(3548),
            reference: PaymentReference::parse("txn-42").unwrap(),
            paid_at: at(3),
        }),
        OrderEvent::CookingStarted(CookingStarted { started_at: at(3) }),
        OrderEvent::Ready(OrderReady { ready_at: at(20) }),
        OrderEvent::OutForDelivery(OrderOutForDelivery {
            driver_name: DriverName::parse("Luigi").unwrap(),
            departed_at: at(25),
        }),
        OrderEvent::Delivered(OrderDelivered {
            delivered_at: at(40),
        }),
    ];
    assert_eq!(life.len(), EVENTS_PER_ORDER);
    life
}

/// Makes wire records as the relay publishes them, each batch with new order ids and with global
/// positions and transaction ids after every earlier one.
#[derive(Debug)]
struct Workload {
    tenant: Uuid,
    customers: Vec<CustomerId>,
    last_position: u64,
    orders_made: i64,
}

impl Workload {
    fn new() -> Self {
        Self {
            tenant: Uuid::now_v7(),
            customers: (0..CUSTOMERS)
                .map(|_| CustomerId::from_uuid(Uuid::now_v7()))
                .collect(),
            last_position: 0,
            orders_made: 0,
        }
    }

    /// The next record of the log. Each event gets its own transaction id: only their order
    /// matters to the projector.
    fn record<E: DomainEvent>(
        &mut self,
        aggregate_id: Uuid,
        version: u64,
        event: &E,
    ) -> pb::EventRecord {
        self.last_position += 1;
        let encoded = event.encode();
        pb::EventRecord {
            global_position: self.last_position,
            transaction_id: self.last_position,
            tenant_id: self.tenant.to_string(),
            stream_id: stream_id(E::AGGREGATE_TYPE, aggregate_id),
            aggregate_type: E::AGGREGATE_TYPE.to_owned(),
            aggregate_id: aggregate_id.to_string(),
            stream_version: version,
            event_id: Uuid::now_v7().to_string(),
            event_type: encoded.event_type.to_owned(),
            schema_version: encoded.schema_version,
            payload_json: encoded.payload.to_string(),
            metadata: Some(pb::EventMetadata {
                actor: "bench".to_owned(),
                ..Default::default()
            }),
            recorded_at: Some(prost_types::Timestamp {
                seconds: Utc::now().timestamp(),
                nanos: 0,
            }),
        }
    }

    /// `CustomerRegistered` of every customer, so the orders find their names.
    fn registrations(&mut self) -> Vec<pb::EventRecord> {
        let customers = self.customers.clone();
        customers
            .into_iter()
            .zip(1..)
            .map(|(customer_id, n)| {
                let registered = CustomerEvent::Registered(CustomerRegistered {
                    customer_id,
                    name: CustomerName::parse(&format!("Customer {n}")).unwrap(),
                    email: Email::parse(&format!("customer{n}@example.com")).unwrap(),
                    registered_at: t(-60),
                });
                self.record(customer_id.as_uuid(), 1, &registered)
            })
            .collect()
    }

    /// 1,000 events of 125 new orders, interleaved: every order's first event, then every
    /// order's second, and so on (each stream's versions stay in order).
    fn order_batch(&mut self) -> Vec<pb::EventRecord> {
        let lives: Vec<(Uuid, Vec<OrderEvent>)> = (0..ORDERS_PER_BATCH)
            .map(|n| {
                let order_id = OrderId::generate();
                let customer_id = self.customers[n % CUSTOMERS];
                self.orders_made += 1;
                // Spread over the evening; the sales day stays the same.
                let start = self.orders_made % 300;
                (order_id.as_uuid(), order_life(order_id, customer_id, start))
            })
            .collect();
        let mut records = Vec::with_capacity(ORDERS_PER_BATCH * EVENTS_PER_ORDER);
        for (step, version) in (0..EVENTS_PER_ORDER).zip(1..) {
            for (order_id, life) in &lives {
                records.push(self.record(*order_id, version, &life[step]));
            }
        }
        records
    }
}

/// The order views after `events`, folded in memory.
fn fold_views(events: &[Event]) -> HashMap<Uuid, OrderState> {
    let mut views = HashMap::new();
    for event in events {
        let Payload::Order(order_event) = &event.payload else {
            continue;
        };
        if let OrderEvent::Placed(placed) = order_event {
            views.insert(
                event.aggregate_id,
                OrderState::placed(placed, event.global_position),
            );
        } else {
            views
                .get_mut(&event.aggregate_id)
                .expect("an order event after its OrderPlaced")
                .apply(order_event, event.stream_version, event.global_position)
                .expect("the event applies");
        }
    }
    views
}

/// What the page fold (`projections::read_model::fold`) computes for each order event besides its SQL: the stored view
/// read back from JSON, the view after the event and its JSON (written to the current view and
/// the history), the timeline line, and the deltas of the day's sales and of the customer.
/// Views are kept as JSON here, as the `state` column keeps them.
fn view_rows(events: &[Event]) -> usize {
    let mut stored: HashMap<Uuid, serde_json::Value> = HashMap::new();
    for event in events {
        let Payload::Order(order_event) = &event.payload else {
            continue;
        };
        let before = stored
            .get(&event.aggregate_id)
            .map(|state| OrderState::deserialize(state).expect("the stored view reads back"));
        let after = match (&before, order_event) {
            (None, OrderEvent::Placed(placed)) => OrderState::placed(placed, event.global_position),
            (Some(before), _) => {
                let mut after = before.clone();
                after
                    .apply(order_event, event.stream_version, event.global_position)
                    .expect("the event applies");
                after
            }
            (None, _) => panic!("an order event before its OrderPlaced"),
        };
        let state_json = serde_json::to_value(&after).expect("the view encodes");
        let description = describe::describe(order_event);
        let sales =
            DayFigures::of(&after).minus(before.as_ref().map(DayFigures::of).unwrap_or_default());
        let customer = CustomerOrderDelta::between(before.as_ref(), &after);
        black_box((&description, sales, customer));
        stored.insert(event.aggregate_id, state_json);
    }
    stored.len()
}

fn pure(c: &mut Criterion) {
    let records = Workload::new().order_batch();
    let events: Vec<Event> = records
        .iter()
        .map(Event::try_from)
        .collect::<Result<_, _>>()
        .expect("every record decodes");
    assert_eq!(events.len(), 1_000);
    assert_eq!(fold_views(&events).len(), ORDERS_PER_BATCH);
    assert_eq!(view_rows(&events), ORDERS_PER_BATCH);

    let mut group = c.benchmark_group("projection_pure");
    group.throughput(Throughput::Elements(EVENTS_PER_BATCH));
    group.bench_function("decode_1000_records", |b| {
        b.iter(|| {
            black_box(&records)
                .iter()
                .map(Event::try_from)
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
    });
    group.bench_function("fold_1000_events", |b| {
        b.iter(|| fold_views(black_box(&events)))
    });
    group.bench_function("view_rows_1000_events", |b| {
        b.iter(|| view_rows(black_box(&events)))
    });
    group.finish();
}

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

/// The read model's watermark: where the next batch's records follow on.
async fn after_watermark(pool: &PgPool) -> LogPoint {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(ReadModel::NAME)
        .execute(&mut *tx)
        .await
        .unwrap();
    watermark::load(&mut tx).await.unwrap()
}

/// Applies `records` as the projector applies a batch (without savepoints, the fast path).
/// Every record must be applied (not skipped as a duplicate, held or retried), or the
/// benchmark would time less work than it claims.
async fn apply_batch(pool: &PgPool, streams: &Streams, records: Vec<pb::EventRecord>) {
    let count = records.len();
    let after = after_watermark(pool).await;
    let records = Delivery::read_from_log(after, records);
    let outcome = apply_records(pool, &ReadModel::default(), streams, &records)
        .await
        .expect("applying the batch");
    assert_eq!(
        outcome.applied, count,
        "not every record of the batch was applied"
    );
}

fn postgres(c: &mut Criterion) {
    let runtime = Runtime::new().expect("a multi-thread tokio runtime");
    let (database, pool) = runtime.block_on(bench_database());
    let pool = &pool;
    let mut workload = Workload::new();
    let streams = runtime.block_on(async {
        // command-svc is only asked for missing versions, and every batch here is gap-free: the
        // client must exist but is never called (a call would fail the run).
        let command_svc = Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let streams = Streams::new(EventLogServiceClient::with_interceptor(
            command_svc,
            ServiceToken::default(),
        ));
        apply_batch(pool, &streams, workload.registrations()).await;
        streams
    });
    let streams = &streams;

    let mut group = c.benchmark_group("projection_postgres");
    // A batch takes on the order of a second: the fewest samples criterion allows, flat.
    group
        .throughput(Throughput::Elements(EVENTS_PER_BATCH))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(30));
    group.bench_function("apply_batch_1000_events", |b| {
        b.to_async(&runtime).iter_batched(
            || workload.order_batch(),
            |records| apply_batch(pool, streams, records),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    runtime
        .block_on(database.drop_database())
        .expect("dropping the benchmark database");
}

criterion_group!(benches, pure, postgres);
criterion_main!(benches);
