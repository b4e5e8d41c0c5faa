//! CPU cost of the write-side domain, with no database and no I/O:
//!
//! - `order_aggregate`: `decide` of one command, `decide` + `evolve` of a delivered order's whole
//!   life, and `evolve` alone (folding the life's events into a default order).
//! - `order_replay`: folding a 1,000-event stream (an order placed, then 999 discounts).
//! - `event_codec`: encoding events to their stored form, decoding them back, and decoding an
//!   old-schema `OrderPlaced` (v1, upcast on read) against a current one (v2).
//!
//! Run: `cargo bench -p command-svc --bench aggregate`

// A benchmark: a panic is a failed setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use command_svc::{
    domain::order::{Order, OrderCommand},
    eventsourcing::{Aggregate, execute},
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use shared::{
    events::upcasters::ORDER_UPCASTERS,
    events::{DiscountApplied, DomainEvent, EncodedEvent, OrderEvent},
    values::{
        CustomerId, DiscountCode, DriverName, ItemName, KitchenNotes, Money, OrderId, OrderLine,
        OrderLines, PaymentMethod, PaymentReference, PizzaSize, Quantity,
    },
};

/// Events in the long stream of `order_replay`.
const REPLAYED_EVENTS: usize = 1_000;

/// Minutes after 2026-11-22 18:00 UTC: commands carry their time, the domain reads no clock.
fn t(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap() + TimeDelta::minutes(minute)
}

fn money(cents: i64) -> Money {
    Money::from_cents(cents).unwrap()
}

/// Two large Margheritas at 12.99 and one Diavola at 14.50: subtotal 40.48.
fn items() -> OrderLines {
    let line = |name: &str, quantity, cents| OrderLine {
        name: ItemName::parse(name).unwrap(),
        size: PizzaSize::Large,
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: Money::positive_from_cents(cents).unwrap(),
    };
    OrderLines::new(vec![line("Margherita", 2, 1299), line("Diavola", 1, 1450)]).unwrap()
}

fn place() -> OrderCommand {
    OrderCommand::PlaceOrder {
        order_id: OrderId::parse("0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e").unwrap(),
        customer_id: CustomerId::parse("0190b8f6-0000-7000-8000-000000000001").unwrap(),
        items: items(),
        placed_at: t(0),
    }
}

/// The commands of a delivered order's life: place, confirm, pay (which starts cooking), ready,
/// out for delivery, delivered. They produce 7 events.
fn life_commands() -> Vec<OrderCommand> {
    vec![
        place(),
        OrderCommand::ConfirmOrder {
            estimated_delivery: t(45),
            kitchen_notes: KitchenNotes::parse("extra basil").unwrap(),
            confirmed_at: t(2),
        },
        OrderCommand::ProcessPayment {
            method: PaymentMethod::Card,
            amount: money(4048),
            reference: PaymentReference::parse("txn-42").unwrap(),
            paid_at: t(3),
        },
        OrderCommand::MarkReady { at: t(20) },
        OrderCommand::SendOutForDelivery {
            driver_name: DriverName::parse("Luigi").unwrap(),
            at: t(25),
        },
        OrderCommand::MarkDelivered { at: t(40) },
    ]
}

/// Runs every command through `decide` and `evolve`, as the command handler does.
fn run_life(commands: &[OrderCommand]) -> (Order, Vec<OrderEvent>) {
    commands.iter().fold(
        (Order::default(), Vec::new()),
        |(state, mut log), command| {
            let (state, events) = execute(state, command).expect("a legal command");
            log.extend(events);
            (state, log)
        },
    )
}

/// `count` one-cent discounts under distinct codes: a legal (if unusual) run of events on one
/// order, since each stays within the amount due.
fn discounts(count: usize) -> Vec<OrderEvent> {
    (0..count)
        .map(|n| {
            OrderEvent::DiscountApplied(DiscountApplied {
                code: DiscountCode::parse(&format!("BENCH-{n:05}")).unwrap(),
                amount: money(1),
                applied_at: t(1),
            })
        })
        .collect()
}

/// A placed order that has had `count` discounts applied.
fn placed_with_discounts(count: usize) -> Order {
    let placed = Order::default().decide(&place()).unwrap();
    Order::replay(placed.iter().chain(&discounts(count)))
}

fn decide_and_evolve(c: &mut Criterion) {
    let commands = life_commands();
    let (delivered, life) = run_life(&commands);
    assert_eq!(life.len(), 7, "a delivered order's life has 7 events");
    assert_eq!(Order::replay(&life), delivered);

    let mut group = c.benchmark_group("order_aggregate");

    let empty = Order::default();
    let place_order = place();
    group.bench_function("decide_place_order", |b| {
        b.iter(|| black_box(&empty).decide(black_box(&place_order)))
    });

    // Refusing a repeated code scans the codes already applied: the cost grows with them.
    let discount = OrderCommand::ApplyDiscount {
        code: DiscountCode::parse("NEW-CODE").unwrap(),
        amount: money(1),
        applied_at: t(2),
    };
    for applied in [0, 100, 1_000] {
        let state = placed_with_discounts(applied);
        group.bench_with_input(
            BenchmarkId::new("decide_apply_discount", applied),
            &state,
            |b, state| b.iter(|| black_box(state).decide(black_box(&discount))),
        );
    }

    group.bench_function("decide_evolve_order_life", |b| {
        b.iter(|| run_life(black_box(&commands)))
    });

    group.bench_function("evolve_order_life", |b| {
        b.iter(|| Order::replay(black_box(&life)))
    });
    group.finish();

    // An order placed, then 999 discounts: every event is one `evolve` (each clones its code).
    let placed = Order::default().decide(&place()).unwrap();
    let long_stream: Vec<OrderEvent> = placed
        .into_iter()
        .chain(discounts(REPLAYED_EVENTS - 1))
        .collect();
    assert_eq!(long_stream.len(), REPLAYED_EVENTS);

    let mut group = c.benchmark_group("order_replay");
    group.throughput(Throughput::Elements(
        u64::try_from(REPLAYED_EVENTS).unwrap(),
    ));
    group.bench_function("replay_1000_events", |b| {
        b.iter(|| Order::replay(black_box(&long_stream)))
    });
    group.finish();
}

/// `OrderPlaced` exactly as the Python prototype stored it (schema v1: decimal-string prices, no
/// sizes), the same order as [`items`] apart from the sizes.
fn order_placed_v1() -> Value {
    json!({
        "order_id": "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e",
        "customer_id": "0190b8f6-0000-7000-8000-000000000001",
        "items": [
            {"name": "Margherita", "quantity": 2, "price": "12.99"},
            {"name": "Diavola", "quantity": 1, "price": "14.50"}
        ],
        "total_amount": "40.48",
        "placed_at": "2026-11-22T18:00:00Z"
    })
}

fn decode(encoded: &EncodedEvent) -> OrderEvent {
    OrderEvent::decode(
        encoded.event_type,
        encoded.schema_version,
        encoded.payload.clone(),
    )
    .unwrap()
}

fn codec(c: &mut Criterion) {
    let (_, life) = run_life(&life_commands());
    let encoded: Vec<EncodedEvent> = life.iter().map(DomainEvent::encode).collect();
    let decoded: Vec<OrderEvent> = encoded.iter().map(decode).collect();
    assert_eq!(decoded, life, "events round-trip through their stored form");

    let mut group = c.benchmark_group("event_codec");

    group.bench_function("encode_order_life", |b| {
        b.iter(|| {
            black_box(&life)
                .iter()
                .map(DomainEvent::encode)
                .collect::<Vec<_>>()
        })
    });
    // `decode` takes the payload by value, as the store hands it over: the copies are made in
    // the untimed setup.
    group.bench_function("decode_order_life", |b| {
        b.iter_batched(
            || encoded.clone(),
            |stored| {
                stored
                    .into_iter()
                    .map(|e| OrderEvent::decode(e.event_type, e.schema_version, e.payload))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    // The same order stored under both schemas: v2 is what v1 decodes (upcasts) to, re-encoded.
    let v1 = order_placed_v1();
    let v2 = OrderEvent::decode("OrderPlaced", 1, v1.clone())
        .unwrap()
        .encode();
    assert_eq!((v2.event_type, v2.schema_version), ("OrderPlaced", 2));
    for (label, version, payload) in [("v1_upcast", 1, &v1), ("v2_current", 2, &v2.payload)] {
        group.bench_with_input(
            BenchmarkId::new("decode_order_placed", label),
            payload,
            |b, payload| {
                b.iter_batched(
                    || payload.clone(),
                    |payload| OrderEvent::decode("OrderPlaced", version, payload).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    // The upcast step alone (JSON to JSON, before deserializing into the event struct).
    group.bench_function("upcast_order_placed_v1_to_v2", |b| {
        b.iter_batched(
            || v1.clone(),
            |payload| {
                ORDER_UPCASTERS
                    .upcast("OrderPlaced", 1, 2, payload)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decide_and_evolve, codec);
criterion_main!(benches);
