//! `read_model`: the pizzeria's orders (views and their history), customers (figures from
//! their orders, name and email copied into their order views) and sales analytics. One
//! projection, because they are one fold: a customer's figures and a day's sales are the
//! change an order event makes to the order's view, and a view carries its customer's name.
//!
//! Applying a page: read the rows it touches, fold it in memory ([`fold`], where every rule
//! lives), write each table once. About a dozen statements a page, whatever its length.

pub mod analytics;
pub mod customer_view;
pub mod fold;
pub mod order_view;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use futures::{FutureExt as _, future::BoxFuture};
use shared::{
    events::{CustomerEvent, DomainEvent as _, OrderEvent},
    proto::v1 as pb,
};
use sqlx::PgConnection;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::event::{Event, Payload, decode_all};
use crate::runtime::{Changes, Projection, ProjectionError};
use fold::{CustomerKey, CustomerRow, OrderKey, OrderRow, PageFold};
use order_view::{OrderChanged, OrderState, Payment};

/// The tables of `read_model` (migration 0001, in the schema `read_model` since 0004).
const TABLES: &[&str] = &[
    "customer_views",
    "order_views",
    "order_history",
    "daily_sales",
    "daily_item_sales",
];

/// The projection, with the order views that change, for WatchOrders.
#[derive(Debug)]
pub struct ReadModel {
    changes: broadcast::Sender<Arc<OrderChanged>>,
}

impl Default for ReadModel {
    fn default() -> Self {
        Self {
            changes: broadcast::channel(1024).0,
        }
    }
}

impl ReadModel {
    pub const NAME: &str = "read_model";

    /// Order views as committed batches change them.
    pub fn changes(&self) -> broadcast::Sender<Arc<OrderChanged>> {
        self.changes.clone()
    }
}

impl Projection for ReadModel {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[OrderEvent::AGGREGATE_TYPE, CustomerEvent::AGGREGATE_TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        records: &'a [&'a pb::EventRecord],
    ) -> BoxFuture<'a, Result<Result<Changes, ProjectionError>, sqlx::Error>> {
        async move {
            let events = match decode_all(records) {
                Ok(events) => events,
                Err(error) => return Ok(Err(error)),
            };
            let mut fold = match load(conn, &events).await? {
                Ok(fold) => fold,
                Err(error) => return Ok(Err(error)),
            };
            for event in &events {
                if let Err(error) = fold.apply(event) {
                    return Ok(Err(error));
                }
            }
            write(conn, &fold).await?;
            Ok(Ok(Box::new(fold.changes) as Changes))
        }
        .boxed()
    }

    fn committed(&self, changes: Vec<Changes>) {
        for page in changes {
            if let Ok(page) = page.downcast::<Vec<OrderChanged>>() {
                for change in *page {
                    // No watcher: nothing to do.
                    let _ = self.changes.send(Arc::new(change));
                }
            }
        }
    }
}

/// The rows of the page's orders and customers, locked; an error if a stored view is
/// unreadable.
async fn load(
    conn: &mut PgConnection,
    events: &[Event],
) -> Result<Result<PageFold, ProjectionError>, sqlx::Error> {
    let mut order_keys = BTreeSet::new();
    let mut customer_keys = BTreeSet::new();
    for event in events {
        match &event.payload {
            Payload::Order(order_event) => {
                order_keys.insert((event.tenant_id, event.aggregate_id));
                if let OrderEvent::Placed(placed) = order_event {
                    customer_keys.insert((event.tenant_id, placed.customer_id.as_uuid()));
                }
            }
            Payload::Customer(_) => {
                customer_keys.insert((event.tenant_id, event.aggregate_id));
            }
        }
    }
    let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = order_keys.iter().copied().unzip();
    let rows: Vec<(Uuid, Uuid, serde_json::Value, String, String)> = sqlx::query_as(
        "SELECT o.tenant_id, o.order_id, o.state, o.customer_name, o.customer_email
         FROM order_views o
         JOIN unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, order_id) USING (tenant_id, order_id)
         ORDER BY o.tenant_id, o.order_id
         FOR UPDATE OF o",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut orders: HashMap<OrderKey, OrderRow> = HashMap::with_capacity(rows.len());
    for (tenant, order_id, state, customer_name, customer_email) in rows {
        let state = match serde_json::from_value::<OrderState>(state) {
            Ok(state) => state,
            Err(error) => {
                return Ok(Err(ProjectionError(format!(
                    "stored view of order {order_id} unreadable: {error}"
                ))));
            }
        };
        customer_keys.insert((tenant, state.customer_id));
        orders.insert(
            (tenant, order_id),
            OrderRow {
                state,
                customer_name,
                customer_email,
            },
        );
    }

    let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = customer_keys.iter().copied().unzip();
    type Row = (
        Uuid,
        Uuid,
        String,
        String,
        i32,
        i32,
        i64,
        Option<Uuid>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.tenant_id, c.customer_id, c.name, c.email, c.order_count,
             c.cancelled_order_count, c.lifetime_spend_cents, c.last_order_id, c.last_order_at,
             c.registered_at, c.last_updated, c.version
         FROM customer_views c
         JOIN unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, customer_id)
           USING (tenant_id, customer_id)
         ORDER BY c.tenant_id, c.customer_id
         FOR UPDATE OF c",
    )
    .bind(&tenants)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let customers: HashMap<CustomerKey, CustomerRow> = rows
        .into_iter()
        .map(|row| {
            let key = (row.0, row.1);
            let customer = CustomerRow {
                name: row.2,
                email: row.3,
                order_count: row.4,
                cancelled_order_count: row.5,
                lifetime_spend_cents: row.6,
                last_order_id: row.7,
                last_order_at: row.8,
                registered_at: row.9,
                last_updated: row.10,
                version: row.11,
            };
            (key, customer)
        })
        .collect();
    Ok(Ok(PageFold::new(orders, customers)))
}

/// Writes the folded page: each table once, customers before the order views that copy them.
async fn write(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    write_customers(conn, fold).await?;
    write_orders(conn, fold).await?;
    write_history(conn, fold).await?;
    write_sales(conn, fold).await?;
    if !fold.customer_events.is_empty() {
        // Every order view of a customer an event changed copies its name and email, those
        // outside the page included.
        let (tenants, ids): (Vec<Uuid>, Vec<Uuid>) = fold.customer_events.iter().copied().unzip();
        sqlx::query(
            "UPDATE order_views o SET customer_name = c.name, customer_email = c.email
             FROM customer_views c
             JOIN unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, customer_id)
               USING (tenant_id, customer_id)
             WHERE o.tenant_id = c.tenant_id AND o.customer_id = c.customer_id",
        )
        .bind(&tenants)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The upsert of customer rows, up to its `DO UPDATE SET`.
macro_rules! upsert_customers {
    () => {
        "INSERT INTO customer_views AS c (tenant_id, customer_id, name, email, order_count,
             cancelled_order_count, lifetime_spend_cents, last_order_id, last_order_at,
             registered_at, last_updated, version)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[],
             $6::int[], $7::bigint[], $8::uuid[], $9::timestamptz[], $10::timestamptz[],
             $11::timestamptz[], $12::bigint[])
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET "
    };
}

/// Writes the customers the page changed. A row that was there when the page was read is
/// locked, and is written as folded. A row the page creates may have been created meanwhile by
/// another transaction (another replica's batch, an operator's retry): the page's figures are
/// added to it, and its name, email, registration and version are the page's only if the page
/// holds an event of the customer's own stream.
async fn write_customers(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    let (loaded, created): (Vec<&CustomerKey>, Vec<&CustomerKey>) = fold
        .changed_customers
        .iter()
        .partition(|key| fold.customers_loaded.contains(*key));
    if !loaded.is_empty() {
        let query = sqlx::query(concat!(
            upsert_customers!(),
            "name = EXCLUDED.name, email = EXCLUDED.email, order_count = EXCLUDED.order_count,
             cancelled_order_count = EXCLUDED.cancelled_order_count,
             lifetime_spend_cents = EXCLUDED.lifetime_spend_cents,
             last_order_id = EXCLUDED.last_order_id, last_order_at = EXCLUDED.last_order_at,
             registered_at = EXCLUDED.registered_at, last_updated = EXCLUDED.last_updated,
             version = EXCLUDED.version"
        ));
        bind_customers(query, &customer_rows(fold, &loaded))
            .execute(&mut *conn)
            .await?;
    }
    if !created.is_empty() {
        // A row created here has version 0 unless an event of the customer's stream set it.
        let query = sqlx::query(concat!(
            upsert_customers!(),
            "name = CASE WHEN EXCLUDED.version > 0 THEN EXCLUDED.name ELSE c.name END,
             email = CASE WHEN EXCLUDED.version > 0 THEN EXCLUDED.email ELSE c.email END,
             registered_at = CASE WHEN EXCLUDED.version > 0 THEN EXCLUDED.registered_at
                                  ELSE c.registered_at END,
             version = CASE WHEN EXCLUDED.version > 0 THEN EXCLUDED.version ELSE c.version END,",
            "order_count = c.order_count + EXCLUDED.order_count,
             cancelled_order_count = c.cancelled_order_count + EXCLUDED.cancelled_order_count,
             lifetime_spend_cents = c.lifetime_spend_cents + EXCLUDED.lifetime_spend_cents,
             last_order_id = CASE WHEN EXCLUDED.last_order_at IS NOT NULL
                                   AND (c.last_order_at IS NULL
                                        OR EXCLUDED.last_order_at >= c.last_order_at)
                                  THEN EXCLUDED.last_order_id ELSE c.last_order_id END,
             last_order_at = GREATEST(c.last_order_at, EXCLUDED.last_order_at),
             last_updated = GREATEST(c.last_updated, EXCLUDED.last_updated)"
        ));
        bind_customers(query, &customer_rows(fold, &created))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn customer_rows<'a>(
    fold: &'a PageFold,
    keys: &[&'a CustomerKey],
) -> Vec<(&'a CustomerKey, &'a CustomerRow)> {
    keys.iter()
        .filter_map(|key| fold.customers.get(*key).map(|row| (*key, row)))
        .collect()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_customers<'q>(query: Query<'q>, rows: &[(&'q CustomerKey, &'q CustomerRow)]) -> Query<'q> {
    query
        .bind(rows.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|(k, _)| k.1).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, c)| c.name.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, c)| c.email.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, c)| c.order_count).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, c)| c.cancelled_order_count)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, c)| c.lifetime_spend_cents)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, c)| c.last_order_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, c)| c.last_order_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(_, c)| c.registered_at)
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, c)| c.last_updated).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.version).collect::<Vec<_>>())
}

async fn write_orders(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    if fold.changed_orders.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&OrderKey, &OrderRow)> = fold
        .changed_orders
        .iter()
        .filter_map(|key| fold.orders.get(key).map(|row| (key, row)))
        .collect();
    let mut states = Vec::with_capacity(rows.len());
    for (_, row) in &rows {
        states
            .push(serde_json::to_value(&row.state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
    }
    // A conflict keeps the copied name and email, which follow the customer (see `write`).
    sqlx::query(
        "INSERT INTO order_views (tenant_id, order_id, customer_id, customer_name, customer_email,
             status, payment_status, item_count, total_cents, placed_at, last_updated, version,
             position, state)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::int[], $9::bigint[], $10::timestamptz[],
             $11::timestamptz[], $12::bigint[], $13::bigint[], $14::jsonb[])
         ON CONFLICT (tenant_id, order_id) DO UPDATE SET
             status = EXCLUDED.status, payment_status = EXCLUDED.payment_status,
             item_count = EXCLUDED.item_count, total_cents = EXCLUDED.total_cents,
             last_updated = EXCLUDED.last_updated, version = EXCLUDED.version,
             position = EXCLUDED.position, state = EXCLUDED.state",
    )
    .bind(rows.iter().map(|(k, _)| k.0).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.order_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.customer_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.customer_name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.customer_email.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| payment_str(&o.state))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| i32::try_from(o.state.item_count()).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.total_cents())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.placed_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.last_updated)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.version)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, o)| o.state.position)
            .collect::<Vec<_>>(),
    )
    .bind(states)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_history(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    if fold.history.is_empty() {
        return Ok(());
    }
    let rows = &fold.history;
    sqlx::query(
        "INSERT INTO order_history (tenant_id, order_id, version, occurred_at, state)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[],
             $5::jsonb[])",
    )
    .bind(rows.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| &r.state).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds the page's figures to the day's sales and the day's sales per pizza.
async fn write_sales(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    if !fold.sales.is_empty() {
        let rows: Vec<_> = fold.sales.iter().collect();
        sqlx::query(concat!(
            "INSERT INTO daily_sales AS d (tenant_id, day, orders, confirmed, cancelled,
                 delivered, gross_cents, discount_cents, paid_cents, refunded_cents, items_sold)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::bigint[],
                 $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                 $10::bigint[], $11::bigint[])",
            " ON CONFLICT (tenant_id, day) DO UPDATE SET
                 orders = d.orders + EXCLUDED.orders,
                 confirmed = d.confirmed + EXCLUDED.confirmed,
                 cancelled = d.cancelled + EXCLUDED.cancelled,
                 delivered = d.delivered + EXCLUDED.delivered,
                 gross_cents = d.gross_cents + EXCLUDED.gross_cents,
                 discount_cents = d.discount_cents + EXCLUDED.discount_cents,
                 paid_cents = d.paid_cents + EXCLUDED.paid_cents,
                 refunded_cents = d.refunded_cents + EXCLUDED.refunded_cents,
                 items_sold = d.items_sold + EXCLUDED.items_sold"
        ))
        .bind(rows.iter().map(|((t, _), _)| *t).collect::<Vec<_>>())
        .bind(rows.iter().map(|((_, d), _)| *d).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, f)| f.orders).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, f)| f.confirmed).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, f)| f.cancelled).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, f)| f.delivered).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, f)| f.gross_cents).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, f)| f.discount_cents)
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, f)| f.paid_cents).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, f)| f.refunded_cents)
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, f)| f.items_sold).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !fold.item_sales.is_empty() {
        let rows: Vec<_> = fold.item_sales.iter().collect();
        sqlx::query(
            "INSERT INTO daily_item_sales AS i (tenant_id, day, name, quantity, revenue_cents)
             SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::bigint[], $5::bigint[])
             ON CONFLICT (tenant_id, day, name) DO UPDATE SET
                 quantity = i.quantity + EXCLUDED.quantity,
                 revenue_cents = i.revenue_cents + EXCLUDED.revenue_cents",
        )
        .bind(rows.iter().map(|((t, _, _), _)| *t).collect::<Vec<_>>())
        .bind(rows.iter().map(|((_, d, _), _)| *d).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|((_, _, n), _)| n.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, (q, _))| *q).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, (_, r))| *r).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The `payment_status` column of an order view.
fn payment_str(state: &OrderState) -> &'static str {
    match state.payment_status {
        Payment::Unpaid => "UNPAID",
        Payment::Paid => "PAID",
        Payment::Refunded => "REFUNDED",
    }
}
