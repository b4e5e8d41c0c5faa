//! Reads of the `training_plans` tables, one function per question TrainingPlanQueryService
//! answers, each in a transaction acting for the caller's tenant only (row-level security).

use chrono::{DateTime, Utc};
use shared::{
    connect::{begin_as_tenant, end_read_only},
    events::{DomainEvent as _, TrainingPlanEvent},
    proto::{timestamp, training::v1 as pb},
};
use sqlx::PgPool;
use uuid::Uuid;

use super::plan::{self, Place, PlanDoc};

fn decode(doc: serde_json::Value) -> Result<PlanDoc, sqlx::Error> {
    serde_json::from_value(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// GetPlan.
pub async fn plan(
    pool: &PgPool,
    tenant: Uuid,
    plan_id: Uuid,
) -> Result<Option<pb::PlanView>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let doc: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT doc FROM training_plans.plans WHERE tenant_id = $1 AND plan_id = $2",
    )
    .bind(tenant)
    .bind(plan_id)
    .fetch_optional(&mut *tx)
    .await?;
    end_read_only(tx);
    doc.map(|doc| Ok(decode(doc)?.view())).transpose()
}

/// Which point of a plan's past to show.
#[derive(Debug, Clone, Copy)]
pub enum AsOf {
    Version(i64),
    Time(DateTime<Utc>),
}

/// GetPlanAsOf: the plan's stored events up to that point, folded again.
pub async fn plan_as_of(
    pool: &PgPool,
    tenant: Uuid,
    plan_id: Uuid,
    as_of: AsOf,
) -> Result<Option<pb::PlanView>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let (version, at) = match as_of {
        AsOf::Version(version) => (Some(version), None),
        AsOf::Time(at) => (None, Some(at)),
    };
    // Up to the last version that occurred at or before `at`.
    let rows: Vec<(i64, i64, String, i32, serde_json::Value)> = sqlx::query_as(
        "SELECT version, global_position, event_type, schema_version, details
         FROM training_plans.plan_events
         WHERE tenant_id = $1 AND plan_id = $2
           AND version <= coalesce($3, (SELECT max(version) FROM training_plans.plan_events
                                        WHERE tenant_id = $1 AND plan_id = $2
                                          AND occurred_at <= $4))
         ORDER BY version",
    )
    .bind(tenant)
    .bind(plan_id)
    .bind(version)
    .bind(at)
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    let mut doc = None;
    for (version, position, event_type, schema_version, details) in rows {
        let event = TrainingPlanEvent::decode(
            &event_type,
            u32::try_from(schema_version).unwrap_or(0),
            details,
        )
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let place = Place { version, position };
        doc = Some(
            plan::fold(doc, plan_id, &event, place).map_err(|e| sqlx::Error::Decode(e.into()))?,
        );
    }
    Ok(doc.map(|doc| doc.view()))
}

/// GetPlanTimeline.
pub async fn timeline(
    pool: &PgPool,
    tenant: Uuid,
    plan_id: Uuid,
) -> Result<Option<pb::PlanTimeline>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        i64,
        String,
        String,
        DateTime<Utc>,
        DateTime<Utc>,
        String,
        String,
        serde_json::Value,
    )> = sqlx::query_as(
        "SELECT version, global_position, event_type, description, occurred_at, recorded_at,
                actor, command_id, details
         FROM training_plans.plan_events WHERE tenant_id = $1 AND plan_id = $2
         ORDER BY version",
    )
    .bind(tenant)
    .bind(plan_id)
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    if rows.is_empty() {
        return Ok(None);
    }
    let entries = rows
        .into_iter()
        .map(
            |(
                version,
                position,
                event_type,
                description,
                occurred,
                recorded,
                actor,
                command,
                details,
            )| {
                pb::PlanTimelineEntry {
                    version: u64::try_from(version).unwrap_or(0),
                    global_position: u64::try_from(position).unwrap_or(0),
                    event_type,
                    description,
                    occurred_at: Some(timestamp(occurred)),
                    recorded_at: Some(timestamp(recorded)),
                    actor,
                    command_id: command,
                    details_json: details.to_string(),
                }
            },
        )
        .collect();
    Ok(Some(pb::PlanTimeline {
        plan_id: plan_id.to_string(),
        entries,
    }))
}

/// Filters and position of a ListAthletePlans page.
#[derive(Debug, Clone)]
pub struct PlanFilter {
    pub athlete_id: Uuid,
    pub status: Option<&'static str>,
    /// Keyset: plans strictly after this (created_at, plan_id) in newest-first order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// ListAthletePlans: up to `limit` plans, newest created first, each with its stored
/// `created_at` (the keyset: the document's own time has more precision than the column).
pub async fn athlete_plans(
    pool: &PgPool,
    tenant: Uuid,
    filter: &PlanFilter,
    limit: u32,
) -> Result<Vec<(DateTime<Utc>, PlanDoc)>, sqlx::Error> {
    let mut tx = begin_as_tenant(pool, tenant).await?;
    let (after_at, after_id) = filter.after.unzip();
    let rows: Vec<(DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT created_at, doc FROM training_plans.plans
         WHERE tenant_id = $1 AND athlete_id = $2
           AND ($3::text IS NULL OR status = $3)
           AND ($4::timestamptz IS NULL OR (created_at, plan_id) < ($4, $5))
         ORDER BY created_at DESC, plan_id DESC
         LIMIT $6",
    )
    .bind(tenant)
    .bind(filter.athlete_id)
    .bind(filter.status)
    .bind(after_at)
    .bind(after_id)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    end_read_only(tx);
    rows.into_iter()
        .map(|(created_at, doc)| Ok((created_at, decode(doc)?)))
        .collect()
}
