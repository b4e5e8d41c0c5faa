//! The projector: consumes the event stream with a durable pull consumer and applies each batch
//! in one read-database transaction, acknowledging only after COMMIT.
//!
//! Per stream it applies versions strictly in order: a duplicate (version <= last applied) is
//! skipped; a hole (version > last + 1: a lost or reordered message) is filled at once by reading
//! the missing versions from command-svc's ReadStream, never by waiting. An event a projection
//! cannot apply is retried (redelivered) a few times, then dead-lettered; its stream is held
//! while other streams keep flowing.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use shared::{
    grpc::TENANT_HEADER,
    proto::v1::{self as pb, event_log_service_client::EventLogServiceClient},
};
use sqlx::{Acquire as _, PgConnection, PgPool};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    projection::{
        ProjectionError,
        event::{Event, stream_key},
    },
    store::apply::{ApplyError, OrderChanged, apply_event, last_version},
};

/// Deliveries of one event before it goes to the dead letters.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long a message whose batch failed waits before redelivery.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Projector settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    pub stream: String,
    pub subject_prefix: String,
    pub consumer: String,
    pub batch_size: usize,
}

/// What the rest of the service learns from the projector.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Bumped after every committed batch: read-your-writes waiters re-check on it.
    pub applied: watch::Receiver<u64>,
    /// Order views as they change, for WatchOrders.
    pub changes: broadcast::Sender<Arc<OrderChanged>>,
}

/// A failure that is not the event's fault: the whole batch is retried.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("read database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("command-svc ReadStream: {0}")]
    Backfill(String),
}

enum Step {
    Applied(Option<Box<OrderChanged>>),
    /// Duplicate, or held behind a dead letter: nothing to do, acknowledge.
    Skipped,
    /// The event failed and has retries left: stop the batch here and redeliver it.
    RetryLater,
}

#[derive(Debug)]
pub struct Projector {
    pool: PgPool,
    nats: async_nats::Client,
    command_svc: EventLogServiceClient<Channel>,
    settings: ProjectorSettings,
    applied: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<OrderChanged>>,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        command_svc: Channel,
        settings: ProjectorSettings,
    ) -> (Self, Progress) {
        let (applied, applied_rx) = watch::channel(0);
        let (changes, _) = broadcast::channel(1024);
        let progress = Progress {
            applied: applied_rx,
            changes: changes.clone(),
        };
        (
            Self {
                pool,
                nats,
                command_svc: EventLogServiceClient::new(command_svc),
                settings,
                applied,
                changes,
            },
            progress,
        )
    }

    /// Consumes until `stop` is cancelled, re-subscribing after any failure.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.consume(&stop).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "projector interrupted");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tracing::info!("projector stopped");
    }

    async fn consumer(
        &self,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
        let jetstream = jetstream::new(self.nats.clone());
        let stream = jetstream.get_stream(&self.settings.stream).await?;
        let config = pull::Config {
            durable_name: Some(self.settings.consumer.clone()),
            filter_subject: format!("{}.>", self.settings.subject_prefix),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        Ok(stream
            .get_or_create_consumer(&self.settings.consumer, config)
            .await?)
    }

    async fn consume(&self, stop: &CancellationToken) -> Result<(), async_nats::Error> {
        let consumer = self.consumer().await?;
        let mut messages = consumer.messages().await?;
        tracing::info!(consumer = %self.settings.consumer, "projector consuming");
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(first) = first else {
                return Err("message stream ended".into());
            };
            let mut batch = vec![first?];
            // Take whatever else is already here, without waiting: low latency, real batches.
            while batch.len() < self.settings.batch_size {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    _ => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Applies a batch in one transaction, then acks (or naks what must come again).
    async fn process(&self, batch: Vec<jetstream::Message>) {
        match self.apply_batch(&batch).await {
            Ok((applied, changes)) => {
                for (index, message) in batch.iter().enumerate() {
                    let ack = if index < applied {
                        message.ack().await
                    } else {
                        message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await
                    };
                    if let Err(error) = ack {
                        // Redelivered after ack_wait and skipped as a duplicate: harmless.
                        tracing::debug!(%error, "ack failed");
                    }
                }
                self.applied.send_modify(|n| *n += 1);
                for change in changes {
                    let _ = self.changes.send(Arc::new(change));
                }
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "batch not applied; will be redelivered");
                for message in &batch {
                    let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                }
            }
        }
    }

    /// Returns how many messages of the batch are done (the rest are to be redelivered) and the
    /// order views that changed.
    async fn apply_batch(
        &self,
        batch: &[jetstream::Message],
    ) -> Result<(usize, Vec<OrderChanged>), Transient> {
        let mut tx = self.pool.begin().await?;
        let mut changes = Vec::new();
        let mut done = 0;
        for message in batch {
            let attempts = message.info().map_or(1, |info| info.delivered);
            let record = match pb::EventRecord::decode(message.payload.as_ref()) {
                Ok(record) => record,
                Err(error) => {
                    // Not ours (the relay only publishes EventRecords); nothing to project.
                    tracing::error!(%error, subject = %message.subject, "undecodable message skipped");
                    done += 1;
                    continue;
                }
            };
            match self.apply_record(&mut tx, &record, attempts).await? {
                Step::Applied(change) => changes.extend(change.map(|c| *c)),
                Step::Skipped => {}
                Step::RetryLater => break,
            }
            done += 1;
        }
        tx.commit().await?;
        Ok((done, changes))
    }

    async fn apply_record(
        &self,
        conn: &mut PgConnection,
        record: &pb::EventRecord,
        attempts: i64,
    ) -> Result<Step, Transient> {
        let Some((tenant, stream, version)) = stream_key(record) else {
            tracing::error!(event_id = %record.event_id, "event without a valid tenant or version skipped");
            return Ok(Step::Skipped);
        };
        if is_held(conn, tenant, &stream).await? {
            return Ok(Step::Skipped);
        }
        let last = last_version(conn, tenant, &stream).await?;
        if version <= last {
            return Ok(Step::Skipped);
        }
        if version > last + 1 {
            self.fill_gap(conn, record, last).await?;
            if is_held(conn, tenant, &stream).await? {
                return Ok(Step::Skipped);
            }
        }
        match apply_in_savepoint(conn, record).await? {
            Ok(change) => Ok(Step::Applied(change.map(Box::new))),
            Err(error) if attempts >= MAX_ATTEMPTS => {
                dead_letter(conn, record, &error, attempts).await?;
                Ok(Step::Skipped)
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %record.event_id, attempts, "event failed; will retry");
                Ok(Step::RetryLater)
            }
        }
    }

    /// Applies the versions between `last` and the record's from command-svc. An event among them
    /// that cannot be applied is dead-lettered at once (it never came through NATS to retry).
    async fn fill_gap(
        &self,
        conn: &mut PgConnection,
        record: &pb::EventRecord,
        last: i64,
    ) -> Result<(), Transient> {
        let missing = record
            .stream_version
            .saturating_sub(u64::try_from(last).unwrap_or(0) + 1);
        tracing::info!(stream = %record.stream_id, from = last + 1, count = missing, "filling a hole from command-svc");
        let mut request = tonic::Request::new(pb::ReadStreamRequest {
            aggregate_type: record.aggregate_type.clone(),
            aggregate_id: record.aggregate_id.clone(),
            from_version: u64::try_from(last + 1).unwrap_or(1),
            max_count: u32::try_from(missing).unwrap_or(u32::MAX),
        });
        let tenant = record
            .tenant_id
            .parse()
            .map_err(|_| Transient::Backfill("tenant id is not valid metadata".into()))?;
        request.metadata_mut().insert(TENANT_HEADER, tenant);
        let events = self
            .command_svc
            .clone()
            .read_stream(request)
            .await
            .map_err(|status| Transient::Backfill(status.message().to_owned()))?
            .into_inner()
            .events;
        if u64::try_from(events.len()).unwrap_or(0) < missing {
            return Err(Transient::Backfill(format!(
                "{} returned {} of {missing} missing events",
                record.stream_id,
                events.len()
            )));
        }
        for missing in &events {
            if let Err(error) = apply_in_savepoint(conn, missing).await? {
                dead_letter(conn, missing, &error, 1).await?;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Decodes and applies one record inside a savepoint, so a failing event leaves the batch's
/// transaction usable. `Ok(Err(_))` is the event's fault; `Err(_)` is the database's.
async fn apply_in_savepoint(
    conn: &mut PgConnection,
    record: &pb::EventRecord,
) -> Result<Result<Option<OrderChanged>, ProjectionError>, Transient> {
    let event = match Event::try_from(record) {
        Ok(event) => event,
        Err(error) => return Ok(Err(error)),
    };
    let mut savepoint = conn.begin().await?;
    match apply_event(&mut savepoint, &event).await {
        Ok(change) => {
            savepoint.commit().await?;
            Ok(Ok(change))
        }
        Err(ApplyError::Projection(error)) => {
            savepoint.rollback().await?;
            Ok(Err(error))
        }
        // A constraint or data error repeats on every retry: the event's fault. A lost
        // connection or a shutdown is not.
        Err(ApplyError::Database(sqlx::Error::Database(error))) => {
            savepoint.rollback().await?;
            Ok(Err(ProjectionError(format!(
                "read database refused the event: {error}"
            ))))
        }
        Err(ApplyError::Database(error)) => Err(Transient::Database(error)),
    }
}

async fn is_held(
    conn: &mut PgConnection,
    tenant: uuid::Uuid,
    stream: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM dead_letters
                        WHERE tenant_id = $1 AND stream_id = $2 AND status = 'PENDING')",
    )
    .bind(tenant)
    .bind(stream)
    .fetch_one(conn)
    .await
}

async fn dead_letter(
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
             event_type, error, attempts, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
