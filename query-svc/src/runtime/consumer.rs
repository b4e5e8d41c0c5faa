//! The projector of one projection: consumes the event stream with its own durable pull
//! consumer and applies each batch in one read-database transaction, acknowledging only after
//! COMMIT.
//!
//! A batch is applied in commit order after the projection's watermark ([`super::run`]); per
//! stream, versions are applied strictly in order ([`super::streams`]). An event a projection
//! cannot apply is retried (redelivered) a few times, then dead-lettered; its stream is held
//! while other streams keep flowing.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use shared::{
    envelope::headers,
    proto::v1 as pb,
    trace_context::{TRACEPARENT, TraceParent},
};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Projection, generations,
    run::{self, Delivery},
    streams::{Streams, Transient},
    watermark::LogPoint,
};

/// How long a message whose batch failed waits before redelivery.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Projector settings, shared by the projectors of every projection.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    pub stream: String,
    pub subject_prefix: String,
    /// The durable consumers' names start with this: `<consumer>-<projection name>`.
    pub consumer: String,
    pub batch_size: usize,
}

impl ProjectorSettings {
    /// The durable consumer of `projection`.
    pub fn consumer_of(&self, projection: &str) -> String {
        format!("{}-{projection}", self.consumer)
    }
}

/// What the rest of the service learns from a projection's projector.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What each committed batch of this process brought under the watermark: read-your-writes
    /// waiters wait on it.
    pub coverage: watch::Receiver<Coverage>,
    /// Whether the projector is attached to its consumer and applying events.
    pub consuming: watch::Receiver<bool>,
}

/// The latest committed batch of this process, as read-your-writes waiters see it.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Batches committed so far: a waiter that sees this jump by more than one missed one.
    pub batches: u64,
    /// Positions the batch brought under the watermark, sorted.
    pub positions: Arc<[i64]>,
}

#[derive(Debug)]
pub struct Projector {
    projection: Arc<dyn Projection>,
    pool: PgPool,
    nats: async_nats::Client,
    streams: Streams,
    settings: ProjectorSettings,
    coverage: watch::Sender<Coverage>,
    consuming: watch::Sender<bool>,
}

impl Projector {
    pub fn new(
        projection: Arc<dyn Projection>,
        pool: PgPool,
        nats: async_nats::Client,
        streams: Streams,
        settings: ProjectorSettings,
    ) -> (Self, Progress) {
        let (coverage, coverage_rx) = watch::channel(Coverage::default());
        let (consuming, consuming_rx) = watch::channel(false);
        let progress = Progress {
            coverage: coverage_rx,
            consuming: consuming_rx,
        };
        (
            Self {
                projection,
                pool,
                nats,
                streams,
                settings,
                coverage,
                consuming,
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
                    tracing::warn!(
                        %error,
                        projection = self.projection.name(),
                        retry_in = ?backoff,
                        "projector interrupted"
                    );
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            // At most a second: once the fault heals, the projector is back within a second.
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        tracing::info!(projection = self.projection.name(), "projector stopped");
    }

    async fn consumer(
        &self,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
        let jetstream = jetstream::new(self.nats.clone());
        let stream = jetstream.get_stream(&self.settings.stream).await?;
        let name = self.settings.consumer_of(self.projection.name());
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{}.>", self.settings.subject_prefix),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        Ok(stream.get_or_create_consumer(&name, config).await?)
    }

    async fn consume(&self, stop: &CancellationToken) -> Result<(), async_nats::Error> {
        let consumer = self.consumer().await?;
        let mut messages = consumer.messages().await?;
        tracing::info!(
            projection = self.projection.name(),
            consumer = %self.settings.consumer_of(self.projection.name()),
            "projector consuming"
        );
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
        let deliveries: Vec<Delivery> = batch.iter().map(delivery).collect();
        match apply_records(
            &self.pool,
            self.projection.as_ref(),
            &self.streams,
            &deliveries,
        )
        .await
        {
            Ok(outcome) => {
                for (message, done) in batch.iter().zip(&outcome.done) {
                    let ack = if *done {
                        message.ack().await
                    } else {
                        message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await
                    };
                    if let Err(error) = ack {
                        // Redelivered after ack_wait and skipped as a duplicate: harmless.
                        tracing::debug!(%error, "ack failed");
                    }
                }
                let positions: Arc<[i64]> = outcome.covered.into();
                self.coverage.send_modify(|coverage| {
                    coverage.batches += 1;
                    coverage.positions = positions;
                });
                if !outcome.changes.is_empty() {
                    self.projection.committed(outcome.changes);
                }
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    projection = self.projection.name(),
                    events = batch.len(),
                    "batch not applied; will be redelivered"
                );
                for message in &batch {
                    let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                }
            }
        }
    }
}

/// A JetStream message as the projector reads it.
fn delivery(message: &jetstream::Message) -> Delivery {
    let record = match pb::EventRecord::decode(message.payload.as_ref()) {
        Ok(record) => Some(record),
        Err(error) => {
            // Not ours (the relay only publishes EventRecords); nothing to project.
            tracing::error!(%error, subject = %message.subject, "undecodable message skipped");
            None
        }
    };
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
    };
    let previous = (|| {
        Some(LogPoint {
            transaction_id: header(headers::PREVIOUS_TRANSACTION_ID)?.parse().ok()?,
            global_position: header(headers::PREVIOUS_POSITION)?.parse().ok()?,
        })
    })();
    Delivery {
        record,
        previous,
        attempts: message.info().map_or(1, |info| info.delivered),
        trace_parent: TraceParent::from_header(header(TRACEPARENT)),
    }
}

/// Applies `deliveries` to the serving tables of `projection` in one transaction: its schema,
/// serving and projector locks (one batch at a time across replicas,
/// [`generations::enter_serving`]), the run after the watermark ([`run::apply_in_order`]), then
/// COMMIT.
pub async fn apply_records(
    pool: &PgPool,
    projection: &dyn Projection,
    streams: &Streams,
    deliveries: &[Delivery],
) -> Result<run::Outcome, Transient> {
    let mut tx = pool.begin().await?;
    generations::enter_serving(&mut tx, projection.name()).await?;
    let outcome = run::apply_in_order(&mut tx, projection, streams, deliveries).await?;
    tx.commit().await?;
    let name = projection.name();
    tracing::debug!(
        projection = name,
        deliveries = deliveries.len(),
        applied = outcome.applied,
        skipped = outcome.skipped,
        watermark = outcome.watermark.global_position,
        "batch committed"
    );
    metrics::counter!("pizzeria_projection_events_applied_total", "projection" => name)
        .increment(outcome.applied as u64);
    metrics::counter!("pizzeria_projection_dead_letters_total", "projection" => name)
        .increment(outcome.dead_lettered);
    metrics::counter!("pizzeria_projection_events_skipped_total", "projection" => name)
        .increment(outcome.skipped as u64);
    metrics::histogram!("pizzeria_projection_batch_size", "projection" => name)
        .record(deliveries.len() as f64);
    metrics::gauge!("pizzeria_projection_checkpoint_position", "projection" => name)
        .set(outcome.watermark.global_position as f64);
    Ok(outcome)
}
