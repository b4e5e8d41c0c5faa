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
use shared::{
    proto::v1 as pb,
    trace_context::{self, TRACEPARENT, TraceParent},
};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    projection::{
        event::{Event, stream_key},
        order_view::OrderChanged,
    },
    store::{
        apply::{Batch, StreamKey},
        apply_page, generations,
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
        const FIRST_RETRY: Duration = Duration::from_millis(100);
        /// Consuming this long before a failure makes it a new outage.
        const HEALTHY_SPELL: Duration = Duration::from_secs(30);
        let mut backoff = FIRST_RETRY;
        loop {
            let started = tokio::time::Instant::now();
            let consumed = self.consume(&stop).await;
            // A failure after a spell of consuming is a new outage: start the backoff again,
            // rather than waiting the longest delay an outage hours ago reached. One right after
            // subscribing is the same outage going on.
            if self.consuming.send_replace(false) && started.elapsed() >= HEALTHY_SPELL {
                backoff = FIRST_RETRY;
            }
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
        let deliveries: Vec<Delivery> = records
            .into_iter()
            .zip(batch)
            .map(|(record, message)| Delivery {
                record,
                attempts: message.info().map_or(1, |info| info.delivered),
                trace_parent: TraceParent::from_header(
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(TRACEPARENT))
                        .map(|v| v.as_str()),
                ),
            })
            .collect();
        apply_records(&self.pool, &self.streams, &deliveries, careful).await
    }
}

/// One message to project.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its event; None for a message that is not one.
    pub record: Option<pb::EventRecord>,
    /// How many times JetStream has delivered it.
    pub attempts: i64,
    /// The relay's publish span (the message's `traceparent` header), continued here.
    pub trace_parent: Option<TraceParent>,
}

/// Batches at least this long are first offered to [`apply_page::try_apply`], which writes
/// each table once per batch. Below it the event-by-event path takes fewer round trips.
const FOLD_AT_LEAST: usize = 8;

/// Applies `records` in one transaction: the serving lock, the streams' versions read in one
/// query, the records (folded as one page when the batch fits, else each through
/// [`Streams::apply`]), each in a span continuing its trace, the bookkeeping written once.
/// Returns how many records are done (the rest are to be redelivered) and the order views that
/// changed.
pub async fn apply_records(
    pool: &PgPool,
    streams: &Streams,
    records: &[Delivery],
    careful: bool,
) -> Result<(usize, Vec<OrderChanged>), Transient> {
    let mut tx = pool.begin().await?;
    generations::hold_serving(&mut tx).await?;
    let mut bookkeeping = Batch::new(careful);
    let keys: Vec<StreamKey> = records
        .iter()
        .filter_map(|delivery| delivery.record.as_ref().and_then(stream_key))
        .map(|(tenant, stream, _)| (tenant, stream))
        .collect();
    bookkeeping.prefetch(&mut tx, &keys).await?;
    // One span per event, which ends when the batch commits: an event is projected then.
    let spans: Vec<Option<tracing::Span>> = records
        .iter()
        .map(|delivery| {
            let record = delivery.record.as_ref()?;
            Some(project_span(delivery, record))
        })
        .collect();

    if !careful && records.len() >= FOLD_AT_LEAST {
        let events: Option<Vec<Event>> = records
            .iter()
            .map(|delivery| Event::try_from(delivery.record.as_ref()?).ok())
            .collect();
        if let Some(events) = events {
            if let Some(changes) = apply_page::try_apply(&mut tx, &mut bookkeeping, &events).await?
            {
                bookkeeping.flush(&mut tx).await?;
                tx.commit().await?;
                drop(spans);
                let checkpoint = events.iter().map(|e| e.global_position).max();
                tracing::debug!(
                    events = events.len(),
                    ?checkpoint,
                    "batch folded and committed"
                );
                count_committed(records.len(), events.len(), 0, &bookkeeping, checkpoint);
                return Ok((records.len(), changes));
            }
        }
    }

    let mut changes = Vec::new();
    let (mut done, mut applied, mut checkpoint) = (0, 0, None);
    for (delivery, span) in records.iter().zip(&spans) {
        let (Some(record), Some(span)) = (&delivery.record, span) else {
            done += 1;
            continue;
        };
        match streams
            .apply(
                &mut tx,
                &mut bookkeeping,
                record,
                delivery.attempts,
                MAX_ATTEMPTS,
            )
            .instrument(span.clone())
            .await?
        {
            Step::Applied(change) => {
                changes.extend(change.map(|c| *c));
                applied += 1;
            }
            Step::Skipped => {}
            Step::RetryLater => break,
        }
        let position = i64::try_from(record.global_position).unwrap_or(i64::MAX);
        checkpoint = checkpoint.max(Some(position));
        done += 1;
    }
    bookkeeping.flush(&mut tx).await?;
    tx.commit().await?;
    drop(spans);
    tracing::debug!(
        events = records.len(),
        applied,
        done,
        careful,
        ?checkpoint,
        "batch applied event by event and committed"
    );
    count_committed(
        records.len(),
        applied,
        done - applied,
        &bookkeeping,
        checkpoint,
    );
    Ok((done, changes))
}

/// The span of one event's projection, continuing the trace of the call that appended it.
fn project_span(delivery: &Delivery, record: &pb::EventRecord) -> tracing::Span {
    let span = tracing::info_span!(
        "projection.apply",
        otel.name = "project event",
        otel.kind = "consumer",
        event_type = record.event_type.as_str(),
        stream = record.stream_id.as_str(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // Messages from a relay that sent no header still carry the appending call's context.
    let parent = delivery.trace_parent.or_else(|| {
        TraceParent::from_header(record.metadata.as_ref().map(|m| m.traceparent.as_str()))
    });
    trace_context::start_span(&span, parent);
    span
}

/// The metrics of a committed batch: counted once committed, so a batch tried twice (fast,
/// then carefully) counts once.
fn count_committed(
    batch_size: usize,
    applied: usize,
    skipped: usize,
    bookkeeping: &Batch,
    checkpoint: Option<i64>,
) {
    metrics::counter!("pizzeria_projection_events_applied_total").increment(applied as u64);
    metrics::counter!("pizzeria_projection_dead_letters_total")
        .increment(bookkeeping.dead_lettered);
    metrics::counter!("pizzeria_projection_events_skipped_total").increment(skipped as u64);
    metrics::histogram!("pizzeria_projection_batch_size").record(batch_size as f64);
    if let Some(checkpoint) = checkpoint {
        metrics::gauge!("pizzeria_projection_checkpoint_position").set(checkpoint as f64);
    }
}
