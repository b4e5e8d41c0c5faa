//! `order_timeline`: every event of every order as a readable line with its metadata, for
//! GetOrderTimeline. A projection of its own: a line depends on its event alone, so it needs
//! no other row, and it keeps flowing while `read_model` holds an order behind a dead letter.

pub mod describe;

use chrono::{DateTime, Utc};
use futures::{FutureExt as _, future::BoxFuture};
use shared::{
    events::{DomainEvent as _, OrderEvent},
    proto::v1 as pb,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::event::{Payload, decode_all};
use crate::runtime::{Changes, Projection, ProjectionError};

/// One `order_timeline` row: an order event, described, with its metadata (as written, and as
/// GetOrderTimeline reads it).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimelineRow {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub version: i64,
    pub global_position: i64,
    pub event_type: String,
    pub description: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub details: serde_json::Value,
}

/// The projection.
#[derive(Debug, Default)]
pub struct OrderTimeline;

impl OrderTimeline {
    pub const NAME: &str = "order_timeline";
}

impl Projection for OrderTimeline {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[OrderEvent::AGGREGATE_TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["order_timeline"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        records: &'a [&'a pb::EventRecord],
    ) -> BoxFuture<'a, Result<Result<Changes, ProjectionError>, sqlx::Error>> {
        async move {
            let rows = match decode_all(records)
                .and_then(|events| events.iter().map(line).collect::<Result<Vec<_>, _>>())
            {
                Ok(rows) => rows,
                Err(error) => return Ok(Err(error)),
            };
            write(conn, &rows).await?;
            Ok(Ok(Box::new(()) as Changes))
        }
        .boxed()
    }
}

/// The line of one order event. An order's stream starts with its placing, and only there.
fn line(event: &super::event::Event) -> Result<TimelineRow, ProjectionError> {
    let Payload::Order(order_event) = &event.payload else {
        return Err(ProjectionError(format!(
            "{} is not an order event",
            event.event_type
        )));
    };
    let placing = matches!(order_event, OrderEvent::Placed(placed)
        if placed.order_id.as_uuid() == event.aggregate_id);
    if placing != (event.stream_version == 1) {
        return Err(ProjectionError(if placing {
            format!("order {} placed again", event.aggregate_id)
        } else {
            format!(
                "{} for order {} that was never placed",
                event.event_type, event.aggregate_id
            )
        }));
    }
    let metadata = &event.metadata;
    Ok(TimelineRow {
        tenant_id: event.tenant_id,
        order_id: event.aggregate_id,
        version: event.stream_version,
        global_position: event.global_position,
        event_type: event.event_type.clone(),
        description: describe::describe(order_event),
        occurred_at: event.occurred_at(),
        recorded_at: event.recorded_at,
        actor: metadata.actor.clone(),
        command_id: metadata.command_id.clone(),
        correlation_id: metadata.correlation_id.clone(),
        causation_id: metadata.causation_id.clone(),
        details: serde_json::from_str(&event.payload_json).unwrap_or(serde_json::Value::Null),
    })
}

async fn write(conn: &mut PgConnection, rows: &[TimelineRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
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
