//! `training_plans`: the projection of the training plan events into one document per plan
//! (`plans`) and one row per event (`plan_events`). A page is applied with one read of the plans
//! it touches and one write per table; the runtime does the rest (ordering, holes, duplicates,
//! dead letters, watermark, rebuild).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::{FutureExt as _, future::BoxFuture};
use shared::{
    events::{DomainEvent as _, TrainingPlanEvent},
    proto::v1 as pb,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::plan::{self, Place, PlanDoc};
use crate::runtime::{Changes, Projection, ProjectionError};

/// The projection.
#[derive(Debug, Default)]
pub struct TrainingPlans;

impl TrainingPlans {
    pub const NAME: &str = "training_plans";
}

impl Projection for TrainingPlans {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[TrainingPlanEvent::AGGREGATE_TYPE]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["plans", "plan_events"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        records: &'a [&'a pb::EventRecord],
    ) -> BoxFuture<'a, Result<Result<Changes, ProjectionError>, sqlx::Error>> {
        async move {
            let events = match records
                .iter()
                .map(|r| PlanEvent::try_from(*r))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(events) => events,
                Err(error) => return Ok(Err(error)),
            };
            let mut docs = load(conn, &events).await?;
            let mut lines = Vec::with_capacity(events.len());
            for event in &events {
                let key = (event.tenant_id, event.plan_id);
                let place = Place {
                    version: event.version,
                    position: event.position,
                };
                match plan::fold(docs.remove(&key), event.plan_id, &event.event, place) {
                    Ok(doc) => docs.insert(key, doc),
                    Err(error) => return Ok(Err(ProjectionError(error))),
                };
                lines.push(event.line());
            }
            write_plans(conn, &docs).await?;
            write_lines(conn, &lines).await?;
            Ok(Ok(Box::new(()) as Changes))
        }
        .boxed()
    }
}

/// A training plan event with its place in the log.
struct PlanEvent {
    tenant_id: Uuid,
    plan_id: Uuid,
    version: i64,
    position: i64,
    recorded_at: DateTime<Utc>,
    metadata: pb::EventMetadata,
    event: TrainingPlanEvent,
}

impl TryFrom<&pb::EventRecord> for PlanEvent {
    type Error = ProjectionError;

    fn try_from(record: &pb::EventRecord) -> Result<Self, ProjectionError> {
        let bad = |what: &str| {
            ProjectionError(format!(
                "event {} (position {}): {what}",
                record.event_id, record.global_position
            ))
        };
        let payload =
            serde_json::from_str(&record.payload_json).map_err(|_| bad("payload is not JSON"))?;
        let event = TrainingPlanEvent::decode(&record.event_type, record.schema_version, payload)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            tenant_id: Uuid::try_parse(&record.tenant_id)
                .map_err(|_| bad("tenant_id is not a UUID"))?,
            plan_id: Uuid::try_parse(&record.aggregate_id)
                .map_err(|_| bad("aggregate_id is not a UUID"))?,
            version: i64::try_from(record.stream_version)
                .map_err(|_| bad("stream_version out of range"))?,
            position: i64::try_from(record.global_position)
                .map_err(|_| bad("global_position out of range"))?,
            recorded_at: record
                .recorded_at
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
                .ok_or_else(|| bad("recorded_at is missing"))?,
            metadata: record.metadata.clone().unwrap_or_default(),
            event,
        })
    }
}

/// A `plan_events` row.
struct Line {
    tenant_id: Uuid,
    plan_id: Uuid,
    version: i64,
    position: i64,
    event_type: &'static str,
    schema_version: i32,
    description: String,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    actor: String,
    command_id: String,
    details: serde_json::Value,
}

impl PlanEvent {
    fn line(&self) -> Line {
        let encoded = self.event.encode();
        Line {
            tenant_id: self.tenant_id,
            plan_id: self.plan_id,
            version: self.version,
            position: self.position,
            event_type: encoded.event_type,
            schema_version: i32::try_from(encoded.schema_version).unwrap_or(i32::MAX),
            description: plan::describe(&self.event),
            occurred_at: self.event.occurred_at(),
            recorded_at: self.recorded_at,
            actor: self.metadata.actor.clone(),
            command_id: self.metadata.command_id.clone(),
            details: encoded.payload,
        }
    }
}

type Docs = HashMap<(Uuid, Uuid), PlanDoc>;

/// The stored documents of the plans the page touches.
async fn load(conn: &mut PgConnection, events: &[PlanEvent]) -> Result<Docs, sqlx::Error> {
    let (tenants, plans): (Vec<Uuid>, Vec<Uuid>) =
        events.iter().map(|e| (e.tenant_id, e.plan_id)).unzip();
    let rows: Vec<(Uuid, Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT p.tenant_id, p.plan_id, p.doc FROM plans p
         JOIN unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, plan_id) USING (tenant_id, plan_id)",
    )
    .bind(&tenants)
    .bind(&plans)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(tenant, plan, doc)| {
            let doc = serde_json::from_value(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            Ok(((tenant, plan), doc))
        })
        .collect()
}

async fn write_plans(conn: &mut PgConnection, docs: &Docs) -> Result<(), sqlx::Error> {
    if docs.is_empty() {
        return Ok(());
    }
    let mut encoded = Vec::with_capacity(docs.len());
    for doc in docs.values() {
        encoded.push(serde_json::to_value(doc).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
    }
    sqlx::query(
        "INSERT INTO plans (tenant_id, plan_id, athlete_id, status, created_at, version, doc)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
                              $5::timestamptz[], $6::bigint[], $7::jsonb[])
         ON CONFLICT (tenant_id, plan_id) DO UPDATE
         SET status = excluded.status, version = excluded.version, doc = excluded.doc",
    )
    .bind(docs.keys().map(|(tenant, _)| *tenant).collect::<Vec<_>>())
    .bind(docs.values().map(|d| d.plan_id).collect::<Vec<_>>())
    .bind(docs.values().map(|d| d.athlete_id).collect::<Vec<_>>())
    .bind(docs.values().map(PlanDoc::status_name).collect::<Vec<_>>())
    .bind(docs.values().map(|d| d.created_at).collect::<Vec<_>>())
    .bind(docs.values().map(|d| d.version).collect::<Vec<_>>())
    .bind(&encoded)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_lines(conn: &mut PgConnection, lines: &[Line]) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO plan_events (tenant_id, plan_id, version, global_position, event_type,
             schema_version, description, occurred_at, recorded_at, actor, command_id, details)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::text[],
             $6::integer[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[],
             $11::text[], $12::jsonb[])",
    )
    .bind(lines.iter().map(|l| l.tenant_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.plan_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.version).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.position).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.event_type).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.schema_version).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|l| l.description.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|l| l.occurred_at).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.recorded_at).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.actor.as_str()).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|l| l.command_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|l| &l.details).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
