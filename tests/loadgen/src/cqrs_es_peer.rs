//! The peer: the same order life through cqrs-es + postgres-es, in process, on the same
//! Postgres, set up as its README shows (event-sourced store, no snapshots, one events table).
//! It gets the same rules as our order aggregate at the same cost (a few comparisons), so the
//! difference is in how commands reach the database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use postgres_es::{PostgresCqrs, postgres_cqrs};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::stats::{Progress, Tally};

/// cqrs-es's schema (its `db/init.sql`, without the sample rows).
const SCHEMA: &str = "
CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE snapshots (
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    #[default]
    None,
    Pending,
    Confirmed,
    Ready,
    OutForDelivery,
    Delivered,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Order {
    status: Status,
    total_cents: i64,
    paid: bool,
}

#[derive(Debug)]
enum OrderCommand {
    Place {
        customer_id: String,
        quantity: u32,
        unit_price_cents: i64,
    },
    Confirm,
    Pay {
        amount_cents: i64,
    },
    Ready,
    OutForDelivery {
        driver: String,
    },
    Delivered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed {
        customer_id: String,
        total_cents: i64,
    },
    Confirmed,
    Paid {
        amount_cents: i64,
    },
    Ready,
    OutForDelivery {
        driver: String,
    },
    Delivered,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            OrderEvent::Placed { .. } => "OrderPlaced",
            OrderEvent::Confirmed => "OrderConfirmed",
            OrderEvent::Paid { .. } => "PaymentProcessed",
            OrderEvent::Ready => "OrderReady",
            OrderEvent::OutForDelivery { .. } => "OrderOutForDelivery",
            OrderEvent::Delivered => "OrderDelivered",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// A business rule's refusal.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refused {}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        command: OrderCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Refused> {
        let event = match (command, self.status) {
            (
                OrderCommand::Place {
                    customer_id,
                    quantity,
                    unit_price_cents,
                },
                Status::None,
            ) => OrderEvent::Placed {
                customer_id,
                total_cents: i64::from(quantity) * unit_price_cents,
            },
            (OrderCommand::Confirm, Status::Pending) => OrderEvent::Confirmed,
            (OrderCommand::Pay { amount_cents }, _) if !self.paid => {
                if amount_cents != self.total_cents {
                    return Err(Refused("amount does not match the total"));
                }
                OrderEvent::Paid { amount_cents }
            }
            (OrderCommand::Ready, Status::Confirmed) if self.paid => OrderEvent::Ready,
            (OrderCommand::OutForDelivery { driver }, Status::Ready) => {
                OrderEvent::OutForDelivery { driver }
            }
            (OrderCommand::Delivered, Status::OutForDelivery) => OrderEvent::Delivered,
            _ => return Err(Refused("not allowed in this state")),
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::Placed { total_cents, .. } => {
                self.status = Status::Pending;
                self.total_cents = total_cents;
            }
            OrderEvent::Confirmed => self.status = Status::Confirmed,
            OrderEvent::Paid { .. } => self.paid = true,
            OrderEvent::Ready => self.status = Status::Ready,
            OrderEvent::OutForDelivery { .. } => self.status = Status::OutForDelivery,
            OrderEvent::Delivered => self.status = Status::Delivered,
        }
    }
}

/// Runs `clients` tasks taking orders through their life for `warmup` + `duration`, on the
/// empty database at `database_url` (its tables are created here). The pool has
/// `pool_size` connections, like our command-svc's.
pub async fn run(
    database_url: &str,
    clients: usize,
    pool_size: u32,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Tally, Duration)> {
    let pool = sqlx08::postgres::PgPoolOptions::new()
        .max_connections(pool_size)
        .connect(database_url)
        .await?;
    sqlx08::raw_sql(SCHEMA).execute(&pool).await?;
    let cqrs: Arc<PostgresCqrs<Order>> = Arc::new(postgres_cqrs(pool.clone(), Vec::new(), ()));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + warmup;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (cqrs, stop, done) = (cqrs.clone(), stop.clone(), done.clone());
        tasks.spawn(async move {
            let mut tally = Tally::default();
            let customer_id = uuid::Uuid::now_v7().to_string();
            while !stop.load(Ordering::Relaxed) {
                let order = uuid::Uuid::now_v7().to_string();
                for command in [
                    OrderCommand::Place {
                        customer_id: customer_id.clone(),
                        quantity: 2,
                        unit_price_cents: 1299,
                    },
                    OrderCommand::Confirm,
                    OrderCommand::Pay {
                        amount_cents: 2 * 1299,
                    },
                    OrderCommand::Ready,
                    OrderCommand::OutForDelivery {
                        driver: "Luigi".into(),
                    },
                    OrderCommand::Delivered,
                ] {
                    let started = Instant::now();
                    let result = cqrs.execute(&order, command).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(()) if started >= measure_from => {
                            tally.record("command", started.elapsed());
                        }
                        Ok(()) => {}
                        Err(error) => {
                            tally.error("command", error);
                            break;
                        }
                    }
                }
            }
            tally
        });
    }
    let mut progress = Progress::new();
    let end = measure_from + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.tick("cqrs-es commands", done.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    progress.finish();
    let elapsed = measure_from.elapsed();
    let mut tally = Tally::default();
    while let Some(task) = tasks.join_next().await {
        tally.add(&task?);
    }
    pool.close().await;
    Ok((tally, elapsed))
}
