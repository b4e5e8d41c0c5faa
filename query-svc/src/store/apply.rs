//! Applying one event to every read table, inside the caller's transaction. The caller has
//! already checked that the event is its stream's next version (see `projector`).

use std::collections::{BTreeMap, HashMap, HashSet};

use shared::events::{CustomerEvent, OrderEvent};
use sqlx::PgConnection;

use crate::projection::{
    ProjectionError,
    analytics::{DayFigures, sales_day},
    customer_view::CustomerOrderDelta,
    event::{Event, Payload},
    order_view::{OrderChanged, OrderState},
    timeline,
};

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event itself is the problem: retrying it will fail again.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The read database failed: retry the batch.
    #[error("read database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Applies `event` to the read tables and records it as applied in `batch`.
pub async fn apply_event(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &Event,
) -> Result<Option<OrderChanged>, ApplyError> {
    let changed = match &event.payload {
        Payload::Order(order_event) => Some(apply_order(conn, event, order_event).await?),
        Payload::Customer(customer_event) => {
            apply_customer(conn, event, customer_event).await?;
            None
        }
    };
    batch.record_applied(event);
    Ok(changed)
}

/// Whether the database refused a statement for a reason that passes: a deadlock or a
/// serialization failure (SQLSTATE class 40), a lock or statement timeout, a shutdown or
/// cancel (57), too few resources (53), a lost connection (08). Retrying the batch later can
/// succeed; any other refusal (a constraint, bad data) would repeat, and is the event's fault.
pub fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.code().is_some_and(|code| {
        ["40", "53", "57", "08"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
    })
}

/// The bookkeeping of one transaction that applies events. It reads each touched stream's
/// last applied version once and keeps it, and it collects what was applied. That is written
/// by [`Batch::flush`] in three statements per batch rather than three per event. Call
/// `flush` before the transaction commits.
#[derive(Debug, Default)]
pub struct Batch {
    /// Without savepoints: the first failing event sends the whole batch back, to be applied
    /// again with savepoints (`careful`), where a failure is dead-lettered.
    pub careful: bool,
    last_versions: HashMap<StreamKey, i64>,
    /// Streams with an unresolved dead letter, when prefetched (None: ask per event).
    held: Option<HashSet<StreamKey>>,
    applied_versions: BTreeMap<StreamKey, i64>,
    /// Positions brought under the watermark, in commit order; the first `positions_written`
    /// of them are written already.
    positions: Vec<i64>,
    positions_written: usize,
    /// The last event brought under the watermark: the new watermark.
    checkpoint: Option<(i64, i64, chrono::DateTime<chrono::Utc>)>,
    /// Events dead-lettered in this transaction (counted in metrics once it commits).
    pub dead_lettered: u64,
}

/// A stream of one tenant.
pub type StreamKey = (uuid::Uuid, String);

impl Batch {
    pub fn new(careful: bool) -> Self {
        Self {
            careful,
            ..Self::default()
        }
    }

    /// Reads the last applied versions of `keys`, and which of them wait behind a dead
    /// letter, in two queries.
    pub async fn prefetch(
        &mut self,
        conn: &mut PgConnection,
        keys: &[StreamKey],
    ) -> Result<(), sqlx::Error> {
        let (tenants, streams): (Vec<uuid::Uuid>, Vec<&str>) =
            keys.iter().map(|(t, s)| (*t, s.as_str())).unzip();
        let rows: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(
            "SELECT k.tenant_id, k.stream_id, coalesce(p.last_version, 0)
             FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, stream_id)
             LEFT JOIN stream_progress p USING (tenant_id, stream_id)",
        )
        .bind(&tenants)
        .bind(&streams)
        .fetch_all(&mut *conn)
        .await?;
        for (tenant, stream, version) in rows {
            self.last_versions.insert((tenant, stream), version);
        }
        let held: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT DISTINCT d.tenant_id, d.stream_id
             FROM dead_letters d JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, stream_id)
               USING (tenant_id, stream_id)
             WHERE d.status = 'PENDING'",
        )
        .bind(&tenants)
        .bind(&streams)
        .fetch_all(&mut *conn)
        .await?;
        self.held.get_or_insert_with(HashSet::new).extend(held);
        Ok(())
    }

    /// After [`Self::prefetch`]: the stream's last applied version, and whether it waits
    /// behind a dead letter.
    pub fn prefetched(&self, key: &StreamKey) -> Option<(i64, bool)> {
        let held = self.held.as_ref()?.contains(key);
        Some((*self.last_versions.get(key)?, held))
    }

    /// Whether a stream may have an unresolved dead letter: true when not prefetched, and
    /// always in a careful batch, which can dead-letter events itself.
    pub fn may_be_held(&self, key: &StreamKey) -> bool {
        self.careful || self.held.as_ref().is_none_or(|held| held.contains(key))
    }

    /// The last version applied of a stream (0 if none).
    pub async fn last_version(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: uuid::Uuid,
        stream_id: &str,
    ) -> Result<i64, sqlx::Error> {
        let key = (tenant_id, stream_id.to_owned());
        if let Some(version) = self.last_versions.get(&key) {
            return Ok(*version);
        }
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT last_version FROM stream_progress WHERE tenant_id = $1 AND stream_id = $2",
        )
        .bind(tenant_id)
        .bind(stream_id)
        .fetch_optional(&mut *conn)
        .await?;
        let version = version.unwrap_or(0);
        self.last_versions.insert(key, version);
        Ok(version)
    }

    /// Marks `event` applied: its version is its stream's last.
    pub fn record_applied(&mut self, event: &Event) {
        let key = (event.tenant_id, event.stream_id.clone());
        self.last_versions.insert(key.clone(), event.stream_version);
        self.applied_versions.insert(key, event.stream_version);
    }

    /// Moves the watermark over `record`, the event right after it in commit order, whatever
    /// became of it (applied, a duplicate, held, dead-lettered). Only the run of a batch
    /// (`projector::run`) calls this: an event applied out of commit order (a stream caught up
    /// after its dead letter is resolved) has its version recorded, not its position.
    pub fn record_done(&mut self, record: &shared::proto::v1::EventRecord) {
        let position = i64::try_from(record.global_position).unwrap_or(i64::MAX);
        self.positions.push(position);
        let recorded_at = record
            .recorded_at
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .unwrap_or_default();
        self.checkpoint = Some((
            position,
            i64::try_from(record.transaction_id).unwrap_or(i64::MAX),
            recorded_at,
        ));
    }

    /// Positions brought under the watermark so far, in commit order.
    pub fn done_positions(&self) -> &[i64] {
        &self.positions
    }

    /// Writes what was applied since the last flush.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.applied_versions.is_empty() {
            let mut tenants = Vec::with_capacity(self.applied_versions.len());
            let mut streams = Vec::with_capacity(self.applied_versions.len());
            let mut versions = Vec::with_capacity(self.applied_versions.len());
            for ((tenant, stream), version) in std::mem::take(&mut self.applied_versions) {
                tenants.push(tenant);
                streams.push(stream);
                versions.push(version);
            }
            sqlx::query(
                "INSERT INTO stream_progress (tenant_id, stream_id, last_version)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])
                 ON CONFLICT (tenant_id, stream_id) DO UPDATE SET last_version = EXCLUDED.last_version",
            )
            .bind(&tenants)
            .bind(&streams)
            .bind(&versions)
            .execute(&mut *conn)
            .await?;
        }
        if self.positions.len() > self.positions_written {
            sqlx::query(
                "INSERT INTO applied_events (global_position)
                 SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
            )
            .bind(&self.positions[self.positions_written..])
            .execute(&mut *conn)
            .await?;
            self.positions_written = self.positions.len();
        }
        if let Some((position, transaction_id, recorded_at)) = self.checkpoint.take() {
            sqlx::query(
                "INSERT INTO projector_state (id, last_position, last_transaction_id, last_event_recorded_at)
                 VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET last_position = EXCLUDED.last_position,
                     last_transaction_id = EXCLUDED.last_transaction_id,
                     last_event_recorded_at = EXCLUDED.last_event_recorded_at, updated_at = now()",
            )
            .bind(position)
            .bind(transaction_id)
            .bind(recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

pub async fn set_last_version(
    conn: &mut PgConnection,
    tenant_id: uuid::Uuid,
    stream_id: &str,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stream_progress (tenant_id, stream_id, last_version) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, stream_id) DO UPDATE SET last_version = EXCLUDED.last_version",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn json(state: &OrderState) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(state).map_err(|e| ProjectionError(format!("cannot encode view: {e}")))
}

async fn apply_order(
    conn: &mut PgConnection,
    event: &Event,
    order_event: &OrderEvent,
) -> Result<OrderChanged, ApplyError> {
    let tenant = event.tenant_id;
    let row: Option<(serde_json::Value, String, String)> = sqlx::query_as(
        "SELECT state, customer_name, customer_email FROM order_views
         WHERE tenant_id = $1 AND order_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(event.aggregate_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (before, after, name, email) = match (row, order_event) {
        (None, OrderEvent::Placed(placed)) => {
            let customer: Option<(String, String)> = sqlx::query_as(
                "SELECT name, email FROM customer_views WHERE tenant_id = $1 AND customer_id = $2",
            )
            .bind(tenant)
            .bind(placed.customer_id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
            let (name, email) = customer.unwrap_or_default();
            let state = OrderState::placed(placed, event.global_position);
            (None, state, name, email)
        }
        (None, _) => {
            return Err(ProjectionError(format!(
                "{} for order {} that was never placed",
                event.event_type, event.aggregate_id
            ))
            .into());
        }
        (Some((state, name, email)), _) => {
            let before: OrderState = serde_json::from_value(state)
                .map_err(|e| ProjectionError(format!("stored view unreadable: {e}")))?;
            let mut after = before.clone();
            after.apply(order_event, event.stream_version, event.global_position)?;
            (Some(before), after, name, email)
        }
    };
    let state_json = json(&after)?;
    write_order(
        conn,
        event,
        order_event,
        &after,
        (&name, &email),
        &state_json,
    )
    .await?;
    add_figures(conn, tenant, before.as_ref(), &after, event).await?;
    Ok(OrderChanged {
        tenant_id: tenant,
        state: after,
        customer_name: name,
        customer_email: email,
        event_type: event.event_type.clone(),
    })
}

pub(crate) fn payment_str(state: &OrderState) -> &'static str {
    match state.payment_status {
        crate::projection::order_view::Payment::Unpaid => "UNPAID",
        crate::projection::order_view::Payment::Paid => "PAID",
        crate::projection::order_view::Payment::Refunded => "REFUNDED",
    }
}

/// Writes what one order event changes in the order tables, in one statement (one round
/// trip): the view, its history row, its timeline entry.
async fn write_order(
    conn: &mut PgConnection,
    event: &Event,
    order_event: &OrderEvent,
    after: &OrderState,
    (customer_name, customer_email): (&str, &str),
    state_json: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let details: serde_json::Value =
        serde_json::from_str(&event.payload_json).unwrap_or(serde_json::Value::Null);
    sqlx::query(
        "WITH history AS (
             INSERT INTO order_history (tenant_id, order_id, version, occurred_at, state)
             VALUES ($1, $2, $12, $15, $14)),
         timeline AS (
             INSERT INTO order_timeline (tenant_id, order_id, version, global_position,
                 event_type, description, occurred_at, recorded_at, actor, command_id,
                 correlation_id, causation_id, details)
             VALUES ($1, $16, $17, $18, $19, $20, $15, $21, $22, $23, $24, $25, $26))
         INSERT INTO order_views (tenant_id, order_id, customer_id, customer_name, customer_email,
             status, payment_status, item_count, total_cents, placed_at, last_updated, version,
             position, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (tenant_id, order_id) DO UPDATE SET
             status = EXCLUDED.status, payment_status = EXCLUDED.payment_status,
             item_count = EXCLUDED.item_count, total_cents = EXCLUDED.total_cents,
             last_updated = EXCLUDED.last_updated, version = EXCLUDED.version,
             position = EXCLUDED.position, state = EXCLUDED.state",
    )
    .bind(event.tenant_id)
    .bind(after.order_id)
    .bind(after.customer_id)
    .bind(customer_name)
    .bind(customer_email)
    .bind(after.status.as_str())
    .bind(payment_str(after))
    .bind(i32::try_from(after.item_count()).unwrap_or(i32::MAX))
    .bind(after.total_cents())
    .bind(after.placed_at)
    .bind(after.last_updated)
    .bind(after.version)
    .bind(after.position)
    .bind(state_json)
    .bind(event.occurred_at())
    .bind(event.aggregate_id)
    .bind(event.stream_version)
    .bind(event.global_position)
    .bind(&event.event_type)
    .bind(timeline::describe(order_event))
    .bind(event.recorded_at)
    .bind(&event.metadata.actor)
    .bind(&event.metadata.command_id)
    .bind(&event.metadata.correlation_id)
    .bind(&event.metadata.causation_id)
    .bind(details)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds what one order event changes to the figures, in one statement, or none when nothing
/// changed: the day's sales, the day's sales per pizza (when the order is placed: lines are
/// fixed then, counted once per name over all sizes), and the customer's order figures.
async fn add_figures(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    before: Option<&OrderState>,
    after: &OrderState,
    event: &Event,
) -> Result<(), sqlx::Error> {
    let day = sales_day(after);
    let sales = DayFigures::of(after).minus(before.map(DayFigures::of).unwrap_or_default());
    let mut per_name: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    if before.is_none() {
        for line in &after.items {
            let entry = per_name.entry(line.name.as_str()).or_default();
            entry.0 += i64::from(line.quantity);
            entry.1 += line.total_cents();
        }
    }
    let customer = CustomerOrderDelta::between(before, after);
    if sales.is_zero() && per_name.is_empty() && customer.is_zero() {
        return Ok(());
    }
    let names: Vec<&str> = per_name.keys().copied().collect();
    let quantities: Vec<i64> = per_name.values().map(|(q, _)| *q).collect();
    let revenues: Vec<i64> = per_name.values().map(|(_, r)| *r).collect();
    let (last_order_id, last_order_at) = customer.placed.unzip();
    // A customer row normally exists (an order needs a registered customer); if the
    // registration has not been applied yet, the row starts empty and registration fills it.
    sqlx::query(concat!(
        "WITH sales AS (
             INSERT INTO daily_sales AS d (tenant_id, day, orders, confirmed, cancelled,
                 delivered, gross_cents, discount_cents, paid_cents, refunded_cents, items_sold)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE $12",
        add_to_daily_sales!(),
        "),
         items AS (
             INSERT INTO daily_item_sales AS i (tenant_id, day, name, quantity, revenue_cents)
             SELECT $1, $2, n, q, r
             FROM unnest($13::text[], $14::bigint[], $15::bigint[]) AS t(n, q, r)
             ON CONFLICT (tenant_id, day, name) DO UPDATE SET
                 quantity = i.quantity + EXCLUDED.quantity,
                 revenue_cents = i.revenue_cents + EXCLUDED.revenue_cents)
         INSERT INTO customer_views AS c (tenant_id, customer_id, name, email, order_count,
             cancelled_order_count, lifetime_spend_cents, last_order_id, last_order_at,
             last_updated)
         SELECT $1, $16, '', '', $17, $18, $19, $20, $21, $22 WHERE $23
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET",
        add_customer_figures!()
    ))
    .bind(tenant)
    .bind(day)
    .bind(sales.orders)
    .bind(sales.confirmed)
    .bind(sales.cancelled)
    .bind(sales.delivered)
    .bind(sales.gross_cents)
    .bind(sales.discount_cents)
    .bind(sales.paid_cents)
    .bind(sales.refunded_cents)
    .bind(sales.items_sold)
    .bind(!sales.is_zero())
    .bind(&names)
    .bind(&quantities)
    .bind(&revenues)
    .bind(after.customer_id)
    .bind(i32::try_from(customer.orders).unwrap_or(0))
    .bind(i32::try_from(customer.cancelled).unwrap_or(0))
    .bind(customer.spend_cents)
    .bind(last_order_id)
    .bind(last_order_at)
    .bind(event.occurred_at())
    .bind(!customer.is_zero())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn apply_customer(
    conn: &mut PgConnection,
    event: &Event,
    customer_event: &CustomerEvent,
) -> Result<(), ApplyError> {
    let tenant = event.tenant_id;
    let customer = event.aggregate_id;
    match customer_event {
        CustomerEvent::Registered(e) => {
            sqlx::query(
                "INSERT INTO customer_views (tenant_id, customer_id, name, email, registered_at,
                     last_updated, version)
                 VALUES ($1, $2, $3, $4, $5, $5, $6)
                 ON CONFLICT (tenant_id, customer_id) DO UPDATE SET name = EXCLUDED.name,
                     email = EXCLUDED.email, registered_at = EXCLUDED.registered_at,
                     version = EXCLUDED.version,
                     last_updated = GREATEST(customer_views.last_updated, EXCLUDED.last_updated)",
            )
            .bind(tenant)
            .bind(customer)
            .bind(e.name.as_str())
            .bind(e.email.as_str())
            .bind(e.registered_at)
            .bind(event.stream_version)
            .execute(&mut *conn)
            .await?;
        }
        CustomerEvent::Renamed(e) => {
            update_customer(conn, event, "name", e.name.as_str()).await?;
        }
        CustomerEvent::EmailChanged(e) => {
            update_customer(conn, event, "email", e.email.as_str()).await?;
        }
    }
    // Keep the copies in every order view of the customer current.
    sqlx::query(
        "UPDATE order_views o SET customer_name = c.name, customer_email = c.email
         FROM customer_views c
         WHERE c.tenant_id = $1 AND c.customer_id = $2
           AND o.tenant_id = c.tenant_id AND o.customer_id = c.customer_id",
    )
    .bind(tenant)
    .bind(customer)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn update_customer(
    conn: &mut PgConnection,
    event: &Event,
    column: &'static str,
    value: &str,
) -> Result<(), ApplyError> {
    // `column` is one of two constants above, never input.
    let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE customer_views SET {column} = $3, version = $4,
             last_updated = GREATEST(last_updated, $5)
         WHERE tenant_id = $1 AND customer_id = $2"
    )))
    .bind(event.tenant_id)
    .bind(event.aggregate_id)
    .bind(value)
    .bind(event.stream_version)
    .bind(event.occurred_at())
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ProjectionError(format!(
            "{} for customer {} who was never registered",
            event.event_type, event.aggregate_id
        ))
        .into());
    }
    Ok(())
}
