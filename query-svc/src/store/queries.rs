//! Reads of the pizzeria's read tables, one function per question the API answers, each
//! returning the view QueryService sends (the handlers parse, wait for the token and delegate
//! here). Each tenant's read runs in a transaction acting for that tenant only (row-level
//! security, migration 0003). Tables are named with their projection's schema (migration 0004).

use chrono::{DateTime, NaiveDate, Utc};
use shared::{
    connect::{begin_as_tenant, end_read_only},
    proto::{timestamp, v1 as pb},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::projections::read_model::{
    analytics::{average_order_value, confirmation_rate},
    order_view::{OrderState, Status as OrderStatus},
};

fn decode(state: serde_json::Value) -> Result<OrderState, sqlx::Error> {
    serde_json::from_value(state).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The view of a stored order state with its customer's current name and email.
fn order_view(
    (state, customer_name, customer_email): (serde_json::Value, String, String),
) -> Result<pb::OrderView, sqlx::Error> {
    Ok(decode(state)?.to_proto(&customer_name, &customer_email))
}

/// GetOrder.
pub async fn order(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
) -> Result<Option<pb::OrderView>, sqlx::Error> {
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
    row.map(order_view).transpose()
}

/// Which point of an order's past to show.
#[derive(Debug, Clone, Copy)]
pub enum AsOf {
    Version(i64),
    Time(DateTime<Utc>),
}

/// GetOrderAsOf.
pub async fn order_as_of(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
    as_of: AsOf,
) -> Result<Option<pb::OrderView>, sqlx::Error> {
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
    row.map(order_view).transpose()
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

impl From<OrderSummaryRow> for pb::OrderSummary {
    fn from(row: OrderSummaryRow) -> Self {
        Self {
            order_id: row.order_id.to_string(),
            customer_id: row.customer_id.to_string(),
            customer_name: row.customer_name,
            status: OrderStatus::parse(&row.status)
                .map_or(pb::OrderStatus::Unspecified, OrderStatus::to_proto)
                as i32,
            payment_status: match row.payment_status.as_str() {
                "PAID" => pb::PaymentStatus::Paid,
                "REFUNDED" => pb::PaymentStatus::Refunded,
                _ => pb::PaymentStatus::Unpaid,
            } as i32,
            item_count: u32::try_from(row.item_count).unwrap_or(0),
            total_cents: row.total_cents,
            placed_at: Some(timestamp(row.placed_at)),
            last_updated: Some(timestamp(row.last_updated)),
        }
    }
}

/// A ListOrders page: the rows, whose last one's (placed_at, order_id) is the next page's
/// keyset; each becomes a `pb::OrderSummary`.
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
struct CustomerRow {
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

/// GetCustomer: a registered customer (rows made only by order events, before registration,
/// do not count).
pub async fn customer(
    pool: &PgPool,
    tenant: Uuid,
    customer_id: Uuid,
) -> Result<Option<pb::CustomerView>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let row: Option<CustomerRow> = sqlx::query_as(
        "SELECT customer_id, name, email, order_count, cancelled_order_count, lifetime_spend_cents,
                last_order_id, last_order_at, registered_at, last_updated, version
         FROM read_model.customer_views WHERE tenant_id = $1 AND customer_id = $2 AND version > 0",
    )
    .bind(tenant)
    .bind(customer_id)
    .fetch_optional(&mut *tx)
    .await?;
    end_read_only(tx);
    Ok(row.map(|row| pb::CustomerView {
        customer_id: row.customer_id.to_string(),
        name: row.name,
        email: row.email,
        order_count: u32::try_from(row.order_count).unwrap_or(0),
        cancelled_order_count: u32::try_from(row.cancelled_order_count).unwrap_or(0),
        lifetime_spend_cents: row.lifetime_spend_cents,
        last_order_id: row.last_order_id.map(|id| id.to_string()),
        last_order_at: row.last_order_at.map(timestamp),
        registered_at: row.registered_at.map(timestamp),
        last_updated: Some(timestamp(row.last_updated)),
        version: u64::try_from(row.version).unwrap_or(0),
    }))
}

/// The timeline's rows are the projection's own row type.
pub use crate::projections::order_timeline::TimelineRow;

/// GetOrderTimeline: None for an order with no events (never placed, or another tenant's).
pub async fn timeline(
    pool: &PgPool,
    tenant: Uuid,
    order_id: Uuid,
) -> Result<Option<pb::OrderTimeline>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let rows: Vec<TimelineRow> = sqlx::query_as(
        "SELECT tenant_id, order_id, version, global_position, event_type, description,
                occurred_at, recorded_at, actor, command_id, correlation_id, causation_id, details
         FROM order_timeline.order_timeline WHERE tenant_id = $1 AND order_id = $2 ORDER BY version",
    )
    .bind(tenant)
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    if rows.is_empty() {
        return Ok(None);
    }
    let entries = rows
        .into_iter()
        .map(|row| pb::TimelineEntry {
            version: u64::try_from(row.version).unwrap_or(0),
            global_position: u64::try_from(row.global_position).unwrap_or(0),
            event_type: row.event_type,
            description: row.description,
            occurred_at: Some(timestamp(row.occurred_at)),
            recorded_at: Some(timestamp(row.recorded_at)),
            actor: row.actor,
            command_id: row.command_id,
            correlation_id: row.correlation_id,
            causation_id: row.causation_id,
            details_json: row.details.to_string(),
        })
        .collect();
    Ok(Some(pb::OrderTimeline {
        order_id: order_id.to_string(),
        entries,
    }))
}

#[derive(Debug, Clone, Default, sqlx::FromRow)]
struct DayRow {
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

async fn daily_sales(
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
struct ItemRow {
    pub name: String,
    pub quantity: i64,
    pub revenue_cents: i64,
}

async fn top_items(
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

/// GetSalesAnalytics over the days `from` to `to` (UTC, inclusive): per-day figures (a day
/// without orders reads as zeros), totals, and the `limit` best-selling pizzas.
pub async fn sales_analytics(
    pool: &PgPool,
    tenant: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    limit: u32,
) -> Result<pb::SalesAnalytics, sqlx::Error> {
    let days = daily_sales(pool, tenant, from, to).await?;
    let items = top_items(pool, tenant, from, to, limit).await?;

    let mut totals = DayRow::default();
    let mut daily = Vec::new();
    let mut by_day = days.into_iter().peekable();
    for day in from.iter_days().take_while(|d| *d <= to) {
        let row = match by_day.peek() {
            Some(row) if row.day == day => by_day.next().unwrap_or_default(),
            _ => DayRow {
                day,
                ..Default::default()
            },
        };
        totals.orders += row.orders;
        totals.confirmed += row.confirmed;
        totals.cancelled += row.cancelled;
        totals.delivered += row.delivered;
        totals.gross_cents += row.gross_cents;
        totals.discount_cents += row.discount_cents;
        totals.paid_cents += row.paid_cents;
        totals.refunded_cents += row.refunded_cents;
        totals.items_sold += row.items_sold;
        daily.push(pb::DailySales {
            date: day.format("%Y-%m-%d").to_string(),
            orders: u64::try_from(row.orders).unwrap_or(0),
            confirmed: u64::try_from(row.confirmed).unwrap_or(0),
            cancelled: u64::try_from(row.cancelled).unwrap_or(0),
            gross_revenue_cents: row.gross_cents,
            discount_cents: row.discount_cents,
            net_revenue_cents: row.paid_cents - row.refunded_cents,
        });
    }
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(pb::SalesAnalytics {
        from_date: from.format("%Y-%m-%d").to_string(),
        to_date: to.format("%Y-%m-%d").to_string(),
        total_orders: count(totals.orders),
        confirmed_orders: count(totals.confirmed),
        cancelled_orders: count(totals.cancelled),
        delivered_orders: count(totals.delivered),
        confirmation_rate: confirmation_rate(totals.confirmed, totals.orders),
        gross_revenue_cents: totals.gross_cents,
        discount_cents: totals.discount_cents,
        net_revenue_cents: totals.paid_cents - totals.refunded_cents,
        refunded_cents: totals.refunded_cents,
        average_order_value_cents: average_order_value(
            totals.gross_cents,
            totals.discount_cents,
            totals.orders,
        ),
        total_items_sold: count(totals.items_sold),
        top_items: items
            .into_iter()
            .map(|item| pb::ItemSales {
                name: item.name,
                quantity: count(item.quantity),
                revenue_cents: item.revenue_cents,
            })
            .collect(),
        daily,
    })
}
