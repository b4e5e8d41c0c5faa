//! `training.v1.TrainingPlanQueryService`: each handler parses its request (every bad field
//! reported), waits for the read-your-writes token on `training_plans` ([`ReadYourWrites`]) and
//! answers with what [`super::queries`] returns.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use shared::{
    events::{DomainEvent as _, TrainingPlanEvent},
    grpc::{FieldViolation, invalid, tenant},
    proto::training::v1::{
        self as pb, get_plan_as_of_request::AsOf as PbAsOf,
        training_plan_query_service_server::TrainingPlanQueryService,
    },
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    TrainingPlans,
    plan::status_name,
    queries::{self, AsOf, PlanFilter},
};
use crate::grpc::{consistency::ReadYourWrites, db};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

/// Serves TrainingPlanQueryService.
#[derive(Debug, Clone)]
pub struct TrainingPlanQueryApi {
    pool: PgPool,
    consistency: ReadYourWrites,
}

impl TrainingPlanQueryApi {
    pub fn new(pool: PgPool, consistency: ReadYourWrites) -> Self {
        Self { pool, consistency }
    }

    /// Waits for the token on `training_plans`; a plan held behind a dead letter answers
    /// UNAVAILABLE.
    async fn wait_for_plan<T>(
        &self,
        request: &Request<T>,
        min_position: u64,
        tenant: Uuid,
        plan_id: Uuid,
    ) -> Result<(), Status> {
        self.consistency
            .wait_for_aggregate(
                request,
                TrainingPlans::NAME,
                min_position,
                tenant,
                TrainingPlanEvent::AGGREGATE_TYPE,
                plan_id,
            )
            .await
    }
}

fn uuid(raw: &str, field: &str, violations: &mut Vec<FieldViolation>) -> Option<Uuid> {
    let parsed = Uuid::try_parse(raw).ok();
    if parsed.is_none() {
        violations.push(FieldViolation::new(field, "must be a UUID"));
    }
    parsed
}

fn plan_id(raw: &str) -> Result<Uuid, Status> {
    let mut violations = Vec::new();
    uuid(raw, "plan_id", &mut violations).ok_or_else(|| invalid(violations))
}

fn not_found(id: Uuid) -> Status {
    Status::not_found(format!("training plan {id} not found"))
}

/// The page token: the last plan of the page, and the filters it was issued for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PageToken {
    created_at: DateTime<Utc>,
    plan_id: Uuid,
    filters: String,
}

impl PageToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).ok()?).ok()
    }
}

/// ListAthletePlans, parsed.
fn list_query(request: &pb::ListAthletePlansRequest) -> Result<(PlanFilter, u32), Status> {
    let mut violations = Vec::new();
    let athlete_id = uuid(&request.athlete_id, "athlete_id", &mut violations);
    let status = match pb::PlanStatus::try_from(request.status) {
        Ok(pb::PlanStatus::Unspecified) => None,
        Ok(status) => Some(status_name(status)),
        Err(_) => {
            violations.push(FieldViolation::new("status", "unknown plan status"));
            None
        }
    };
    let filters = format!("{}|{}", request.athlete_id, request.status);
    let mut after = None;
    if !request.page_token.is_empty() {
        match PageToken::decode(&request.page_token) {
            Some(token) if token.filters == filters => {
                after = Some((token.created_at, token.plan_id))
            }
            Some(_) => violations.push(FieldViolation::new(
                "page_token",
                "was issued for other filters",
            )),
            None => violations.push(FieldViolation::new(
                "page_token",
                "is not a valid page token",
            )),
        }
    }
    let Some(athlete_id) = athlete_id.filter(|_| violations.is_empty()) else {
        return Err(invalid(violations));
    };
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    Ok((
        PlanFilter {
            athlete_id,
            status,
            after,
        },
        page_size,
    ))
}

#[tonic::async_trait]
impl TrainingPlanQueryService for TrainingPlanQueryApi {
    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let id = plan_id(&request.get_ref().plan_id)?;
        self.wait_for_plan(&request, request.get_ref().min_position, tenant, id)
            .await?;
        let view = queries::plan(&self.pool, tenant, id)
            .await
            .map_err(db)?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(view))
    }

    async fn list_athlete_plans(
        &self,
        request: Request<pb::ListAthletePlansRequest>,
    ) -> Result<Response<pb::ListAthletePlansResponse>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let (filter, page_size) = list_query(request.get_ref())?;
        self.consistency
            .wait_for(
                &request,
                TrainingPlans::NAME,
                request.get_ref().min_position,
            )
            .await?;
        // One more than asked tells whether another page follows.
        let mut rows = queries::athlete_plans(&self.pool, tenant, &filter, page_size + 1)
            .await
            .map_err(db)?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_page_token = match rows.last() {
            Some((created_at, last)) if more => PageToken {
                created_at: *created_at,
                plan_id: last.plan_id,
                filters: format!(
                    "{}|{}",
                    request.get_ref().athlete_id,
                    request.get_ref().status
                ),
            }
            .encode(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAthletePlansResponse {
            plans: rows.iter().map(|(_, doc)| doc.summary()).collect(),
            next_page_token,
        }))
    }

    async fn get_plan_as_of(
        &self,
        request: Request<pb::GetPlanAsOfRequest>,
    ) -> Result<Response<pb::PlanView>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let r = request.get_ref();
        let mut violations = Vec::new();
        let id = uuid(&r.plan_id, "plan_id", &mut violations);
        let as_of = match &r.as_of {
            Some(PbAsOf::Version(version)) => {
                Some(AsOf::Version(i64::try_from(*version).unwrap_or(i64::MAX)))
            }
            Some(PbAsOf::At(at)) => {
                let time = u32::try_from(at.nanos)
                    .ok()
                    .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos));
                if time.is_none() {
                    violations.push(FieldViolation::new("at", "is not a valid timestamp"));
                }
                time.map(AsOf::Time)
            }
            None => {
                violations.push(FieldViolation::new("as_of", "set version or at"));
                None
            }
        };
        let (Some(id), Some(as_of)) = (id, as_of) else {
            return Err(invalid(violations));
        };
        self.wait_for_plan(&request, r.min_position, tenant, id)
            .await?;
        let view = queries::plan_as_of(&self.pool, tenant, id, as_of)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                Status::not_found(format!("training plan {id} did not exist at that point"))
            })?;
        Ok(Response::new(view))
    }

    async fn get_plan_timeline(
        &self,
        request: Request<pb::GetPlanTimelineRequest>,
    ) -> Result<Response<pb::PlanTimeline>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let id = plan_id(&request.get_ref().plan_id)?;
        self.wait_for_plan(&request, request.get_ref().min_position, tenant, id)
            .await?;
        let timeline = queries::timeline(&self.pool, tenant, id)
            .await
            .map_err(db)?
            .ok_or_else(|| not_found(id))?;
        Ok(Response::new(timeline))
    }
}
