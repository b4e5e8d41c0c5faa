//! Applying events to the read tables, the one way they are applied: read the rows a page of
//! events touches, fold the page in memory (`projection::page`, where every rule lives), write
//! each read table once. About twenty statements a page, whatever its length. A page that
//! does not fit (a stream not at its next version, or held behind a dead letter) or that holds
//! an event that fails writes nothing; the caller then applies the page event by event, each a
//! page of one in a savepoint, where the failing event is found and dead-lettered
//! (`projector::streams`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{Acquire as _, PgConnection};
use uuid::Uuid;

use super::progress::{Batch, StreamKey, is_transient};
use crate::projection::{
    ProjectionError,
    event::{Event, Payload},
    order_view::{OrderChanged, OrderState, Payment},
    page::{CustomerKey, CustomerRow, OrderKey, OrderRow, PageFold},
};
use shared::events::OrderEvent;

/// What became of a page.
#[derive(Debug)]
pub enum Page {
    /// Written, and recorded in the batch: the order views that changed.
    Applied(Vec<OrderChanged>),
    /// Not every stream is at its next version, or one waits behind a dead letter: nothing
    /// written. Go event by event.
    DoesNotFit,
    /// An event cannot be applied (the fold refused it, a stored view is unreadable, or the
    /// database refused a row for a reason that will not pass): nothing written. In a page of
    /// one, the event's fault.
    Failed(ProjectionError),
}

/// Applies `events` (in commit order) as one page, recording them in `batch`. An `Err` is the
/// database's failure (retry the batch); a page that is refused is [`Page::DoesNotFit`] or
/// [`Page::Failed`], with nothing written.
pub async fn apply(
    conn: &mut PgConnection,
    batch: &mut Batch,
    events: &[Event],
) -> Result<Page, sqlx::Error> {
    if events.is_empty() {
        return Ok(Page::Applied(Vec::new()));
    }
    if !in_version_order(conn, batch, events).await? {
        return Ok(Page::DoesNotFit);
    }
    let mut fold = match load(conn, events).await? {
        Ok(fold) => fold,
        Err(error) => return Ok(Page::Failed(error)),
    };
    for event in events {
        if let Err(error) = fold.apply(event) {
            tracing::debug!(%error, event_id = %event.event_id, "page refused an event");
            return Ok(Page::Failed(error));
        }
    }
    // In a savepoint: a row the database refuses (a constraint) leaves the transaction usable
    // for the event-by-event path, which finds the event to dead-letter.
    let mut writes = conn.begin().await?;
    match write(&mut writes, &fold).await {
        Ok(()) => writes.commit().await?,
        Err(sqlx::Error::Database(error)) if !is_transient(error.as_ref()) => {
            tracing::debug!(%error, "the database refused a page");
            writes.rollback().await?;
            return Ok(Page::Failed(ProjectionError(format!(
                "read database refused the event: {error}"
            ))));
        }
        Err(error) => return Err(error),
    }
    for event in events {
        batch.record_applied(event);
    }
    Ok(Page::Applied(fold.changes))
}

/// Whether every event is its stream's next version and no stream waits behind a dead letter.
async fn in_version_order(
    conn: &mut PgConnection,
    batch: &mut Batch,
    events: &[Event],
) -> Result<bool, sqlx::Error> {
    let keys: BTreeSet<StreamKey> = events
        .iter()
        .map(|e| (e.tenant_id, e.stream_id.clone()))
        .collect();
    let keys: Vec<StreamKey> = keys.into_iter().collect();
    let unknown: Vec<StreamKey> = keys
        .iter()
        .filter(|key| batch.prefetched(key).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        batch.prefetch(conn, &unknown).await?;
    }
    let mut last: HashMap<StreamKey, i64> = HashMap::with_capacity(keys.len());
    for key in keys {
        match batch.prefetched(&key) {
            Some((version, false)) => last.insert(key, version),
            _ => return Ok(false),
        };
    }
    for event in events {
        let Some(version) = last.get_mut(&(event.tenant_id, event.stream_id.clone())) else {
            return Ok(false);
        };
        if event.stream_version != *version + 1 {
            return Ok(false);
        }
        *version = event.stream_version;
    }
    Ok(true)
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
    write_timeline(conn, fold).await?;
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

async fn write_timeline(conn: &mut PgConnection, fold: &PageFold) -> Result<(), sqlx::Error> {
    if fold.timeline.is_empty() {
        return Ok(());
    }
    let rows = &fold.timeline;
    sqlx::query(
        "INSERT INTO order_timeline (tenant_id, order_id, version, global_position, event_type,
             description, occurred_at, recorded_at, actor, command_id, correlation_id,
             causation_id, details)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::text[],
             $6::text[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[],
             $11::text[], $12::text[], $13::jsonb[])",
    )
    .bind(rows.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.order_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.global_position).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.description.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.actor.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.command_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.correlation_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.causation_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| &r.details).collect::<Vec<_>>())
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
