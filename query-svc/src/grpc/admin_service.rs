//! `pizzeria.v1.ProjectionAdminService`: the operator's view of the projections.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use shared::{
    grpc::{FieldViolation, invalid},
    proto::{
        timestamp,
        v1::{self as pb, projection_admin_service_server::ProjectionAdminService},
    },
};
use tonic::{Request, Response, Status};

use super::db;
use crate::{
    admin::{Admin, AdminError, ProjectionStatus, Retried, State},
    runtime::dead_letters::DeadLetterRow,
};

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct AdminApi {
    admin: Admin,
}

impl AdminApi {
    pub fn new(admin: Admin) -> Self {
        Self { admin }
    }
}

fn status(error: AdminError) -> Status {
    match error {
        AdminError::NotFound(message) => Status::not_found(message),
        AdminError::FailedPrecondition(message) => Status::failed_precondition(message),
        AdminError::Database(error) => db(error),
        AdminError::CommandSvc(message) => {
            tracing::warn!(%message, "command-svc unavailable to the admin api");
            Status::unavailable("command-svc is unavailable to re-read the events; retry")
        }
    }
}

fn unknown_projection(name: &str) -> Status {
    Status::not_found(format!("projection {name:?} not found"))
}

fn projection_status(status: ProjectionStatus) -> pb::ProjectionStatus {
    let state = match status.state {
        State::Running => pb::ProjectionState::Running,
        State::CatchingUp => pb::ProjectionState::CatchingUp,
        State::Stalled => pb::ProjectionState::Stalled,
        State::Stopped => pb::ProjectionState::Stopped,
    };
    let row = &status.row;
    let rebuild = match (status.rebuilding, row.rebuild_generation) {
        (true, Some(generation)) => Some(pb::RebuildProgress {
            generation: u32::try_from(generation).unwrap_or(0),
            position: u64::try_from(row.rebuild_position.unwrap_or(0)).unwrap_or(0),
            target_position: u64::try_from(row.rebuild_target.unwrap_or(0)).unwrap_or(0),
            started_at: row.rebuild_started_at.map(timestamp),
        }),
        _ => None,
    };
    pb::ProjectionStatus {
        name: row.name.clone(),
        generation: u32::try_from(row.generation).unwrap_or(0),
        state: state as i32,
        checkpoint_position: u64::try_from(status.checkpoint_position).unwrap_or(0),
        head_position: status.lag.head_position,
        lag_events: status.lag.events,
        lag_seconds: status.lag.seconds,
        dead_letters: u64::try_from(status.dead_letters).unwrap_or(0),
        rebuild,
    }
}

fn dead_letter(row: DeadLetterRow) -> pb::DeadLetter {
    pb::DeadLetter {
        id: u64::try_from(row.id).unwrap_or(0),
        projection: row.projection,
        stream_id: row.stream_id,
        stream_version: u64::try_from(row.stream_version).unwrap_or(0),
        global_position: u64::try_from(row.global_position).unwrap_or(0),
        event_id: row.event_id,
        event_type: row.event_type,
        error: row.error,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        first_failed_at: Some(timestamp(row.first_failed_at)),
        last_failed_at: Some(timestamp(row.last_failed_at)),
        held_events: u64::try_from(row.held_events).unwrap_or(0),
    }
}

/// The ListDeadLetters page token: the last id of the page and the filter it was issued for.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageToken {
    after: i64,
    projection: String,
}

fn dead_letter_id(id: u64) -> Result<i64, Status> {
    i64::try_from(id)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| invalid(vec![FieldViolation::new("id", "must be a dead letter id")]))
}

#[tonic::async_trait]
impl ProjectionAdminService for AdminApi {
    async fn list_projections(
        &self,
        request: Request<pb::ListProjectionsRequest>,
    ) -> Result<Response<pb::ListProjectionsResponse>, Status> {
        require_admin(&request)?;
        let projections = self.admin.projections().await.map_err(status)?;
        Ok(Response::new(pb::ListProjectionsResponse {
            projections: projections.into_iter().map(projection_status).collect(),
        }))
    }

    async fn rebuild_projection(
        &self,
        request: Request<pb::RebuildProjectionRequest>,
    ) -> Result<Response<pb::RebuildProjectionResponse>, Status> {
        require_admin(&request)?;
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(invalid(vec![FieldViolation::new("name", "is required")]));
        }
        if !self.admin.is_projection(&name) {
            return Err(unknown_projection(&name));
        }
        let started = self.admin.rebuild(&name).await.map_err(status)?;
        Ok(Response::new(pb::RebuildProjectionResponse {
            name,
            generation: u32::try_from(started.generation).unwrap_or(0),
            already_running: started.already_running,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        require_admin(&request)?;
        let request = request.into_inner();
        if !request.projection.is_empty() && !self.admin.is_projection(&request.projection) {
            return Err(unknown_projection(&request.projection));
        }
        let after = if request.page_token.is_empty() {
            0
        } else {
            let token = URL_SAFE_NO_PAD
                .decode(&request.page_token)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<PageToken>(&bytes).ok());
            match token {
                Some(token) if token.projection == request.projection => token.after,
                Some(_) => {
                    return Err(invalid(vec![FieldViolation::new(
                        "page_token",
                        "was issued for another projection filter",
                    )]));
                }
                None => {
                    return Err(invalid(vec![FieldViolation::new(
                        "page_token",
                        "is not a valid page token",
                    )]));
                }
            }
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // One more than the page tells whether there is a next page.
        let only = Some(request.projection.as_str()).filter(|name| !name.is_empty());
        let mut rows = self
            .admin
            .dead_letters(only, after, i64::from(page_size) + 1)
            .await
            .map_err(status)?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            let token = PageToken {
                after: rows.last().map_or(after, |row| row.id),
                projection: request.projection,
            };
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(dead_letter).collect(),
            next_page_token,
        }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<pb::RetryDeadLetterRequest>,
    ) -> Result<Response<pb::RetryDeadLetterResponse>, Status> {
        require_admin(&request)?;
        let id = dead_letter_id(request.into_inner().id)?;
        let reply = match self.admin.retry(id).await.map_err(status)? {
            Retried::Applied => pb::RetryDeadLetterResponse {
                applied: true,
                dead_letter: None,
            },
            Retried::FailedAgain(row) => pb::RetryDeadLetterResponse {
                applied: false,
                dead_letter: Some(dead_letter(*row)),
            },
        };
        Ok(Response::new(reply))
    }

    async fn skip_dead_letter(
        &self,
        request: Request<pb::SkipDeadLetterRequest>,
    ) -> Result<Response<pb::SkipDeadLetterResponse>, Status> {
        require_admin(&request)?;
        let request = request.into_inner();
        let mut violations = Vec::new();
        let id = i64::try_from(request.id).ok().filter(|id| *id > 0);
        if id.is_none() {
            violations.push(FieldViolation::new("id", "must be a dead letter id"));
        }
        let reason = request.reason.trim();
        if reason.is_empty() || request.reason.chars().count() > MAX_REASON_CHARS {
            violations.push(FieldViolation::new(
                "reason",
                format!("must be 1 to {MAX_REASON_CHARS} characters"),
            ));
        } else if reason.contains('\0') {
            violations.push(FieldViolation::new("reason", "must not contain NUL"));
        }
        let Some(id) = id.filter(|_| violations.is_empty()) else {
            return Err(invalid(violations));
        };
        self.admin.skip(id, reason).await.map_err(status)?;
        Ok(Response::new(pb::SkipDeadLetterResponse { id: request.id }))
    }
}

/// Every ProjectionAdminService rpc needs the `admin` role (held by every caller while
/// authentication is off).
fn require_admin<T>(request: &Request<T>) -> Result<(), Status> {
    shared::grpc::caller(request)?.require(shared::auth::ADMIN)
}
