//! The projector: consumes the event stream with a durable pull consumer and applies each batch
//! in one read-database transaction, acknowledging only after COMMIT.
//!
//! Per stream it applies versions strictly in order ([`streams`]). An event a projection cannot
//! apply is retried (redelivered) a few times, then dead-lettered; its stream is held while
//! other streams keep flowing.

pub mod streams;

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use shared::proto::v1 as pb;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    projection::event::stream_key,
    store::{
        apply::{Batch, OrderChanged, StreamKey},
        generations,
    },
};
use streams::{Step, Streams, Transient};

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
    /// Bumps `applied` for events applied outside the projector (a dead letter retried or skipped).
    pub notify_applied: watch::Sender<u64>,
    /// Order views as they change, for WatchOrders.
    pub changes: broadcast::Sender<Arc<OrderChanged>>,
    /// Whether the projector is attached to its consumer and applying events.
    pub consuming: watch::Receiver<bool>,
}

#[derive(Debug)]
pub struct Projector {
    pool: PgPool,
    nats: async_nats::Client,
    streams: Streams,
    settings: ProjectorSettings,
    applied: watch::Sender<u64>,
    consuming: watch::Sender<bool>,
    changes: broadcast::Sender<Arc<OrderChanged>>,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        command_svc: streams::EventLogClient,
        settings: ProjectorSettings,
    ) -> (Self, Progress) {
        let (applied, applied_rx) = watch::channel(0);
        let (changes, _) = broadcast::channel(1024);
        let (consuming, consuming_rx) = watch::channel(false);
        let progress = Progress {
            applied: applied_rx,
            notify_applied: applied.clone(),
            changes: changes.clone(),
            consuming: consuming_rx,
        };
        (
            Self {
                pool,
                nats,
                streams: Streams::new(command_svc),
                settings,
                applied,
                consuming,
                changes,
            },
            progress,
        )
    }

    /// Consumes until `stop` is cancelled, re-subscribing after any failure.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let consumed = self.consume(&stop).await;
            self.consuming.send_replace(false);
            match consumed {
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
        self.consuming.send_replace(true);
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
        let applied = match self.apply_batch(&batch, false).await {
            Err(Transient::RetryCarefully) => self.apply_batch(&batch, true).await,
            other => other,
        };
        match applied {
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
    /// order views that changed. Applied first without savepoints (`careful` false): if an
    /// event fails, the caller applies the batch again with them.
    async fn apply_batch(
        &self,
        batch: &[jetstream::Message],
        careful: bool,
    ) -> Result<(usize, Vec<OrderChanged>), Transient> {
        let records: Vec<Option<pb::EventRecord>> = batch
            .iter()
            .map(|message| match pb::EventRecord::decode(message.payload.as_ref()) {
                Ok(record) => Some(record),
                Err(error) => {
                    // Not ours (the relay only publishes EventRecords); nothing to project.
                    tracing::error!(%error, subject = %message.subject, "undecodable message skipped");
                    None
                }
            })
            .collect();
        let records: Vec<(Option<pb::EventRecord>, i64)> = records
            .into_iter()
            .zip(batch)
            .map(|(record, message)| (record, message.info().map_or(1, |info| info.delivered)))
            .collect();
        apply_records(&self.pool, &self.streams, &records, careful).await
    }
}

/// Applies `records` (each with its delivery count; None for a message that is not an event)
/// in one transaction: the serving lock, the streams' versions read in one query, each record
/// through [`Streams::apply`], the bookkeeping written once. Returns how many records are done
/// (the rest are to be redelivered) and the order views that changed.
pub async fn apply_records(
    pool: &PgPool,
    streams: &Streams,
    records: &[(Option<pb::EventRecord>, i64)],
    careful: bool,
) -> Result<(usize, Vec<OrderChanged>), Transient> {
    let mut tx = pool.begin().await?;
    generations::hold_serving(&mut tx).await?;
    let mut bookkeeping = Batch::new(careful);
    let keys: Vec<StreamKey> = records
        .iter()
        .filter_map(|(record, _)| record.as_ref().and_then(stream_key))
        .map(|(tenant, stream, _)| (tenant, stream))
        .collect();
    bookkeeping.prefetch(&mut tx, &keys).await?;
    let mut changes = Vec::new();
    let mut done = 0;
    for (record, attempts) in records {
        let Some(record) = record else {
            done += 1;
            continue;
        };
        match streams
            .apply(&mut tx, &mut bookkeeping, record, *attempts, MAX_ATTEMPTS)
            .await?
        {
            Step::Applied(change) => changes.extend(change.map(|c| *c)),
            Step::Skipped => {}
            Step::RetryLater => break,
        }
        done += 1;
    }
    bookkeeping.flush(&mut tx).await?;
    tx.commit().await?;
    Ok((done, changes))
}
