//! Applying events stream by stream, strictly in version order, whoever delivers them: the
//! JetStream consumer, an operator retrying a dead letter, or a rebuild reading the whole log.
//!
//! For each event: a duplicate (version <= last applied) is skipped; a hole (version > last + 1:
//! a lost or reordered message) is filled at once from command-svc's ReadStream; a stream held
//! behind a dead letter applies nothing until the dead letter is resolved.

use futures::StreamExt as _;
use prost::Message as _;
use shared::{
    auth::TENANT_HEADER,
    proto::v1::{self as pb, event_log_service_client::EventLogServiceClient},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Changes, Projection, ProjectionError,
    page::{self, Page},
    progress::Batch,
    stream_key,
    watermark::LogPoint,
};

/// command-svc's EventLogService, each call carrying query-svc's service token (role
/// `event-reader`) when authentication is on.
pub type EventLogClient = EventLogServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        shared::auth::ServiceToken,
    >,
>;

/// Events read from command-svc per ReadStream call when catching a stream up.
const CATCH_UP_PAGE: u32 = 500;

/// A failure that is not the event's fault: the caller retries the whole transaction.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("read database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("command-svc event log: {0}")]
    Backfill(String),
    /// A stream moved under the batch (an operator's catch-up at the same moment).
    #[error("{0}")]
    StreamMoved(String),
}

/// What became of one event.
#[derive(Debug)]
pub enum Step {
    /// Applied: what the projection returned.
    Applied(Changes),
    /// Not an event the projection handles, a duplicate, held behind a dead letter, or
    /// dead-lettered now: nothing more to do.
    Skipped,
    /// The event failed and has attempts left: deliver it again later.
    RetryLater,
}

/// Applies events to the tables the connection's `search_path` names.
#[derive(Debug, Clone)]
pub struct Streams {
    command_svc: EventLogClient,
}

impl Streams {
    pub fn new(command_svc: EventLogClient) -> Self {
        Self { command_svc }
    }

    /// Applies `record` if it is its stream's next version (filling a hole first). The
    /// `attempts`-th failure out of `max_attempts` dead-letters it and holds its stream.
    pub async fn apply(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        batch: &mut Batch,
        record: &pb::EventRecord,
        attempts: i64,
        max_attempts: i64,
    ) -> Result<Step, Transient> {
        if !projection.handles(&record.aggregate_type) {
            return Ok(Step::Skipped);
        }
        let Some((tenant, stream, version)) = stream_key(record) else {
            tracing::error!(event_id = %record.event_id, "event without a valid tenant or version skipped");
            return Ok(Step::Skipped);
        };
        let key = (tenant, stream);
        if batch.may_be_held(&key) && held_behind_dead_letter(conn, tenant, &key.1, version).await?
        {
            return Ok(Step::Skipped);
        }
        let stream = key.1;
        let last = batch.last_version(conn, tenant, &stream).await?;
        if version <= last {
            return Ok(Step::Skipped);
        }
        if version > last + 1 {
            let missing = u32::try_from(version - last - 1).unwrap_or(u32::MAX);
            tracing::info!(stream = %stream, from = last + 1, count = missing, "filling a hole from command-svc");
            if !self
                .apply_from_log(conn, projection, batch, record, last, Some(missing))
                .await?
            {
                // A missing version was dead-lettered: this one now waits behind it.
                held_behind_dead_letter(conn, tenant, &stream, version).await?;
                return Ok(Step::Skipped);
            }
        }
        match apply_one(conn, projection, batch, record).await? {
            Ok(changes) => Ok(Step::Applied(changes)),
            Err(error) if attempts >= max_attempts => {
                dead_letter(conn, record, &error, attempts).await?;
                batch.record_dead_letter((tenant, stream));
                Ok(Step::Skipped)
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %record.event_id, attempts, "event failed; will retry");
                Ok(Step::RetryLater)
            }
        }
    }

    /// Applies every version of `record`'s stream after the last applied one, as command-svc
    /// has them now: how a stream catches up once its dead letter is resolved.
    pub async fn catch_up(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        batch: &mut Batch,
        record: &pb::EventRecord,
    ) -> Result<(), Transient> {
        let Some((tenant, stream, _)) = stream_key(record) else {
            return Ok(());
        };
        let last = batch.last_version(conn, tenant, &stream).await?;
        self.apply_from_log(conn, projection, batch, record, last, None)
            .await?;
        Ok(())
    }

    /// Reads `record`'s stream from command-svc after version `last` (`count` events, or to its
    /// end) and applies them. An event among them that fails is dead-lettered at once: it did
    /// not come through NATS, so there is no redelivery to wait for. Returns false if so.
    async fn apply_from_log(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        batch: &mut Batch,
        record: &pb::EventRecord,
        mut last: i64,
        count: Option<u32>,
    ) -> Result<bool, Transient> {
        let mut remaining = count;
        loop {
            let page = remaining.map_or(CATCH_UP_PAGE, |n| n.min(CATCH_UP_PAGE));
            if page == 0 {
                return Ok(true);
            }
            let response = self.read_stream(record, last + 1, page).await?;
            if remaining.is_some() && response.events.len() < page as usize {
                return Err(Transient::Backfill(format!(
                    "{} returned {} events after version {last}, {page} expected",
                    record.stream_id,
                    response.events.len()
                )));
            }
            for event in &response.events {
                if let Err(error) = apply_one(conn, projection, batch, event).await? {
                    dead_letter(conn, event, &error, 1).await?;
                    if let Some((tenant, stream, _)) = stream_key(event) {
                        batch.record_dead_letter((tenant, stream));
                    }
                    return Ok(false);
                }
                last += 1;
            }
            remaining = remaining.map(|n| n - page);
            if remaining.is_none() && (response.end_of_stream || response.events.is_empty()) {
                return Ok(true);
            }
        }
    }

    /// Up to `max_count` events of the whole log after `after`, in commit order (command-svc's
    /// ReadAll): how a gap in the JetStream delivery is filled, and how a rebuild reads.
    pub async fn read_log(
        &self,
        after: LogPoint,
        max_count: u32,
    ) -> Result<Vec<pb::EventRecord>, Transient> {
        let backfill = |status: tonic::Status| Transient::Backfill(status.message().to_owned());
        let mut events = self
            .command_svc
            .clone()
            .read_all(pb::ReadAllRequest {
                start: Some(pb::read_all_request::Start::After(pb::LogCursor {
                    transaction_id: after.transaction_id,
                    global_position: u64::try_from(after.global_position).unwrap_or(0),
                })),
                max_count,
                follow: false,
            })
            .await
            .map_err(backfill)?
            .into_inner();
        let mut records = Vec::with_capacity(max_count as usize);
        while let Some(record) = events.next().await {
            records.push(record.map_err(backfill)?);
        }
        Ok(records)
    }

    async fn read_stream(
        &self,
        record: &pb::EventRecord,
        from_version: i64,
        max_count: u32,
    ) -> Result<pb::ReadStreamResponse, Transient> {
        let mut request = tonic::Request::new(pb::ReadStreamRequest {
            aggregate_type: record.aggregate_type.clone(),
            aggregate_id: record.aggregate_id.clone(),
            from_version: u64::try_from(from_version).unwrap_or(1),
            max_count,
        });
        let tenant = record
            .tenant_id
            .parse()
            .map_err(|_| Transient::Backfill("tenant id is not valid metadata".into()))?;
        request.metadata_mut().insert(TENANT_HEADER, tenant);
        self.command_svc
            .clone()
            .read_stream(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| Transient::Backfill(status.message().to_owned()))
    }
}

/// Applies one record: a page of one, in a savepoint, so that a failing event leaves the
/// transaction usable (and can be dead-lettered). `Ok(Err(_))` is the event's fault; `Err(_)`
/// is the database's.
async fn apply_one(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch: &mut Batch,
    record: &pb::EventRecord,
) -> Result<Result<Changes, ProjectionError>, Transient> {
    match page::apply(conn, projection, batch, &[record]).await? {
        Page::Applied(changes) => Ok(Ok(changes)),
        Page::Failed(error) => Ok(Err(error)),
        // The caller checked the version and the hold; only a race with an operator's
        // catch-up gets here. Try again with the batch.
        Page::DoesNotFit => Err(Transient::StreamMoved(format!(
            "{} changed while its event at version {} was applied",
            record.stream_id, record.stream_version
        ))),
    }
}

/// Whether the stream waits behind an unresolved dead letter; if so, counts `version` among the
/// events held. The UPDATE locks that dead letter, so an operator resolving it at this moment is
/// waited for, and the event is then applied (or found a duplicate of the stream's catch-up),
/// never acknowledged unapplied.
async fn held_behind_dead_letter(
    conn: &mut PgConnection,
    tenant: Uuid,
    stream: &str,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let held: Option<i64> = sqlx::query_scalar(
        "UPDATE dead_letters SET held_version = GREATEST(held_version, $3)
         WHERE tenant_id = $1 AND stream_id = $2 AND status = 'PENDING'
         RETURNING id",
    )
    .bind(tenant)
    .bind(stream)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

pub(crate) async fn dead_letter(
    conn: &mut PgConnection,
    record: &pb::EventRecord,
    error: &ProjectionError,
    attempts: i64,
) -> Result<(), sqlx::Error> {
    let Some((tenant, stream, version)) = stream_key(record) else {
        return Ok(());
    };
    tracing::error!(%error, event_id = %record.event_id, stream = %stream, "event dead-lettered; its stream is held");
    sqlx::query(
        "INSERT INTO dead_letters (tenant_id, stream_id, stream_version, global_position, event_id,
             event_type, error, attempts, record, held_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $3)",
    )
    .bind(tenant)
    .bind(stream)
    .bind(version)
    .bind(i64::try_from(record.global_position).unwrap_or(i64::MAX))
    .bind(&record.event_id)
    .bind(&record.event_type)
    .bind(error.to_string())
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(record.encode_to_vec())
    .execute(conn)
    .await?;
    Ok(())
}
