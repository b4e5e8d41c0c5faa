//! `pizzeria.v1.EventLogService`: raw events for readers that rebuild or fill holes.

use std::time::Duration;

use shared::{
    envelope::stream_id,
    proto::v1::{self as pb, event_log_service_server::EventLogService, read_all_request::Start},
    values::ValueError,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{fields::FieldViolation, status::invalid};
use crate::eventsourcing::store::{EventStore, LogCursor, StoredEvent, Xid8};

const DEFAULT_MAX_COUNT: u32 = 1_000;
const MAX_COUNT: u32 = 10_000;
const READ_ALL_PAGE: u32 = 500;
/// How often a following ReadAll looks for new commits once caught up.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Serves the event log over an [`EventStore`].
#[derive(Debug, Clone)]
pub struct EventLogApi {
    store: EventStore,
    /// The aggregate types whose streams ReadStream reads, as registered at start-up.
    aggregate_types: &'static [&'static str],
}

impl EventLogApi {
    pub fn new(store: EventStore, aggregate_types: &'static [&'static str]) -> Self {
        Self {
            store,
            aggregate_types,
        }
    }
}

/// Whose stream ReadStream reads: the token's tenant; or, for an `event-reader` service token
/// that names none (query-svc filling a hole), the tenant in `x-tenant-id`.
fn stream_tenant<T>(request: &Request<T>) -> Result<shared::values::TenantId, Status> {
    let caller = shared::grpc::caller(request)?;
    if let Some(tenant) = caller.tenant_claim() {
        return Ok(tenant);
    }
    caller.require(shared::auth::EVENT_READER)?;
    shared::auth::tenant_header(request.metadata().as_ref())?
        .ok_or_else(|| Status::invalid_argument("x-tenant-id names the stream's tenant"))
}

fn violation(field: &str, error: &ValueError) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        description: error.to_string(),
    }
}

#[tonic::async_trait]
impl EventLogService for EventLogApi {
    async fn read_stream(
        &self,
        request: Request<pb::ReadStreamRequest>,
    ) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let tenant = stream_tenant(&request)?.as_uuid();
        let request = request.into_inner();
        let mut violations = Vec::new();
        if !self
            .aggregate_types
            .contains(&request.aggregate_type.as_str())
        {
            let known: Vec<String> = self
                .aggregate_types
                .iter()
                .map(|t| format!("{t:?}"))
                .collect();
            violations.push(FieldViolation {
                field: "aggregate_type".into(),
                description: format!("must be {}", known.join(" or ")),
            });
        }
        let id = match Uuid::try_parse(&request.aggregate_id) {
            Ok(id) => Some(id),
            Err(_) => {
                violations.push(violation("aggregate_id", &ValueError::InvalidUuid));
                None
            }
        };
        let Some(id) = id.filter(|_| violations.is_empty()) else {
            return Err(invalid(violations));
        };
        let stream = stream_id(&request.aggregate_type, id);
        let limit = match request.max_count {
            0 => DEFAULT_MAX_COUNT,
            n => n.min(MAX_COUNT),
        };
        let (current, events) = self
            .store
            .read_stream(tenant, &stream, request.from_version.max(1), limit)
            .await
            .map_err(crate::eventsourcing::handler::AppError::from)?;
        let last = events
            .last()
            .map_or(0, |e| u64::try_from(e.stream_version).unwrap_or(0));
        Ok(Response::new(pb::ReadStreamResponse {
            end_of_stream: events.is_empty() || last >= current,
            events: events.into_iter().map(StoredEvent::into_record).collect(),
            stream_version: current,
        }))
    }

    type ReadAllStream = ReceiverStream<Result<pb::EventRecord, Status>>;

    async fn read_all(
        &self,
        request: Request<pb::ReadAllRequest>,
    ) -> Result<Response<Self::ReadAllStream>, Status> {
        // Every tenant's events: a service role.
        shared::grpc::caller(&request)?.require(shared::auth::EVENT_READER)?;
        let request = request.into_inner();
        let (mut cursor, from_position) = match request.start {
            None => (LogCursor::default(), 0),
            Some(Start::FromPosition(position)) => (
                LogCursor::default(),
                i64::try_from(position).unwrap_or(i64::MAX),
            ),
            Some(Start::After(after)) => (
                LogCursor {
                    transaction_id: Xid8(after.transaction_id),
                    global_position: i64::try_from(after.global_position).unwrap_or(i64::MAX),
                },
                0,
            ),
        };
        let mut remaining = match request.max_count {
            0 => u64::MAX,
            n => u64::from(n),
        };
        let store = self.store.clone();
        let (sender, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            while remaining > 0 {
                let page_size =
                    u32::try_from(remaining.min(u64::from(READ_ALL_PAGE))).unwrap_or(READ_ALL_PAGE);
                let page = match store.read_all(cursor, from_position, page_size).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender
                            .send(Err(
                                crate::eventsourcing::handler::AppError::from(error).into()
                            ))
                            .await;
                        return;
                    }
                };
                if page.is_empty() {
                    if !request.follow || sender.is_closed() {
                        return;
                    }
                    tokio::time::sleep(FOLLOW_POLL).await;
                    continue;
                }
                for event in page {
                    cursor = event.cursor();
                    remaining -= 1;
                    if sender.send(Ok(event.into_record())).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
