//! Reads of the pizzeria's read tables, one function per question the API answers. Each
//! tenant's read runs in a transaction acting for that tenant only (row-level security,
//! migration 0003). Tables are named with their projection's schema (migration 0004).

use chrono::{DateTime, NaiveDate, Utc};
use shared::connect::{begin_as_tenant, end_read_only};
use sqlx::PgPool;
use uuid::Uuid;

use crate::projections::read_model::order_view::OrderState;

/// An order view with its customer's current name and email.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub state: OrderState,
    pub customer_name: String,
    pub customer_email: String,
}

fn decode(state: serde_json::Value) -> Result<OrderState, sqlx::Error> {
    serde_json::from_value(state).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn order_row(
    (state, customer_name, customer_email): (serde_json::Value, String, String),
) -> Result<OrderRow, sqlx::Error> {
    Ok(OrderRow {
        state: decode(state)?,
        customer_name,
        customer_email,
    })
}

pub async fn order(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let row: Option<(serde_json::Value, String, String)> = sqlx::query_as(
        "SELECT state, customer_name, customer_email FROM read_model.order_views
         WHERE tenant_id = $1 AND order_id = $2",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    end_read_only(tx);
    row.map(order_row).transpose()
}

/// Which point of an order's past to show.
#[derive(Debug, Clone, Copy)]
pub enum AsOf {
    Version(i64),
    Time(DateTime<Utc>),
}

pub async fn order_as_of(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
    as_of: AsOf,
) -> Result<Option<OrderRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let (version, at) = match as_of {
        AsOf::Version(version) => (Some(version), None),
        AsOf::Time(at) => (None, Some(at)),
    };
    let row: Option<(serde_json::Value, String, String)> = sqlx::query_as(
        "SELECT h.state, v.customer_name, v.customer_email
         FROM read_model.order_history h JOIN read_model.order_views v USING (tenant_id, order_id)
         WHERE h.tenant_id = $1 AND h.order_id = $2
           AND ($3::bigint IS NULL OR h.version <= $3)
           AND ($4::timestamptz IS NULL OR h.occurred_at <= $4)
         ORDER BY h.version DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(order_id)
    .bind(version)
    .bind(at)
    .fetch_optional(&mut *tx)
    .await?;
    end_read_only(tx);
    row.map(order_row).transpose()
}

/// Filters and position of a ListOrders page.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<&'static str>,
    pub placed_from: Option<DateTime<Utc>>,
    pub placed_to: Option<DateTime<Utc>>,
    /// Keyset: orders strictly after this (placed_at, order_id) in newest-first order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderSummaryRow {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub customer_name: String,
    pub status: String,
    pub payment_status: String,
    pub item_count: i32,
    pub total_cents: i64,
    pub placed_at: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

pub async fn list_orders(
    pool: &PgPool,
    tenant: Uuid,
    filter: &OrderFilter,
    limit: u32,
) -> Result<Vec<OrderSummaryRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let (after_at, after_id) = filter.after.unzip();
    let rows = sqlx::query_as(
        "SELECT order_id, customer_id, customer_name, status, payment_status, item_count,
                total_cents, placed_at, last_updated
         FROM read_model.order_views
         WHERE tenant_id = $1
           AND ($2::uuid IS NULL OR customer_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::timestamptz IS NULL OR placed_at >= $4)
           AND ($5::timestamptz IS NULL OR placed_at < $5)
           AND ($6::timestamptz IS NULL OR (placed_at, order_id) < ($6, $7))
         ORDER BY placed_at DESC, order_id DESC
         LIMIT $8",
    )
    .bind(tenant)
    .bind(filter.customer_id)
    .bind(filter.status)
    .bind(filter.placed_from)
    .bind(filter.placed_to)
    .bind(after_at)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(rows)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    pub order_count: i32,
    pub cancelled_order_count: i32,
    pub lifetime_spend_cents: i64,
    pub last_order_id: Option<Uuid>,
    pub last_order_at: Option<DateTime<Utc>>,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_updated: DateTime<Utc>,
    pub version: i64,
}

/// A registered customer (rows made only by order events, before registration, do not count).
pub async fn customer(
    pool: &PgPool,
    tenant: Uuid,
    customer_id: Uuid,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT customer_id, name, email, order_count, cancelled_order_count, lifetime_spend_cents,
                last_order_id, last_order_at, registered_at, last_updated, version
         FROM read_model.customer_views WHERE tenant_id = $1 AND customer_id = $2 AND version > 0",
    )
    .bind(tenant)
    .bind(customer_id)
    .fetch_optional(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(rows)
}

/// The timeline's rows are the projection's own row type.
pub use crate::projections::order_timeline::TimelineRow;

pub async fn timeline(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
) -> Result<Vec<TimelineRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT tenant_id, order_id, version, global_position, event_type, description,
                occurred_at, recorded_at, actor, command_id, correlation_id, causation_id, details
         FROM order_timeline.order_timeline WHERE tenant_id = $1 AND order_id = $2 ORDER BY version",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(rows)
}

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct DayRow {
    pub day: NaiveDate,
    pub orders: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    pub delivered: i64,
    pub gross_cents: i64,
    pub discount_cents: i64,
    pub paid_cents: i64,
    pub refunded_cents: i64,
    pub items_sold: i64,
}

pub async fn daily_sales(
    pool: &PgPool,
    tenant: Uuid,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DayRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT day, orders, confirmed, cancelled, delivered, gross_cents, discount_cents,
                paid_cents, refunded_cents, items_sold
         FROM read_model.daily_sales WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(rows)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRow {
    pub name: String,
    pub quantity: i64,
    pub revenue_cents: i64,
}

pub async fn top_items(
    pool: &PgPool,
    tenant: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    limit: u32,
) -> Result<Vec<ItemRow>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT name, sum(quantity)::bigint AS quantity, sum(revenue_cents)::bigint AS revenue_cents
         FROM read_model.daily_item_sales WHERE tenant_id = $1 AND day BETWEEN $2 AND $3
         GROUP BY name ORDER BY quantity DESC, revenue_cents DESC, name LIMIT $4",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(rows)
}
