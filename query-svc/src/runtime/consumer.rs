//! The projector: consumes the event stream with one durable pull consumer and applies each
//! batch to every hosted projection in one read-database transaction, acknowledging only after
//! COMMIT.
//!
//! Each projection applies the batch after its own watermark ([`super::run`]), in its own schema
//! with its own bookkeeping; per stream, versions are applied strictly in order
//! ([`super::streams`]). A message is acknowledged once every projection is done with it. An
//! event a projection cannot apply is retried (redelivered) a few times, then dead-lettered in
//! that projection; its stream is held there while other streams, and the other projections,
//! keep flowing.
//!
//! Why one consumer and one transaction for all projections rather than one each: every
//! projection sees every event (its watermark is over the whole log, so a token means the same
//! everywhere), and a transaction per projection per batch would multiply the read side's
//! commits (and fsyncs) by the number of projections for the same events.

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

/// Projector settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    pub stream: String,
    pub subject_prefix: String,
    /// The durable consumer, shared by replicas.
    pub consumer: String,
    pub batch_size: usize,
}

/// What the rest of the service learns from the projector about one projection.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What each committed batch of this process brought under the projection's watermark:
    /// read-your-writes waiters wait on it.
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
    /// The projections, each with the sender its waiters watch.
    projections: Vec<(Arc<dyn Projection>, watch::Sender<Coverage>)>,
    pool: PgPool,
    nats: async_nats::Client,
    streams: Streams,
    settings: ProjectorSettings,
    consuming: watch::Sender<bool>,
}

impl Projector {
    /// The projector of `projections`, and each one's progress (in the same order).
    pub fn new(
        projections: Vec<Arc<dyn Projection>>,
        pool: PgPool,
        nats: async_nats::Client,
        streams: Streams,
        settings: ProjectorSettings,
    ) -> (Self, Vec<Progress>) {
        let (consuming, consuming_rx) = watch::channel(false);
        let mut progress = Vec::with_capacity(projections.len());
        let projections = projections
            .into_iter()
            .map(|projection| {
                let (coverage, coverage_rx) = watch::channel(Coverage::default());
                progress.push(Progress {
                    coverage: coverage_rx,
                    consuming: consuming_rx.clone(),
                });
                (projection, coverage)
            })
            .collect();
        (
            Self {
                projections,
                pool,
                nats,
                streams,
                settings,
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
                    tracing::warn!(%error, retry_in = ?backoff, "projector interrupted");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            // At most a second: once the fault heals, the projector is back within a second.
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        tracing::info!("projector stopped");
    }

    async fn consumer(
        &self,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
        let jetstream = jetstream::new(self.nats.clone());
        let stream = jetstream.get_stream(&self.settings.stream).await?;
        let name = &self.settings.consumer;
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{}.>", self.settings.subject_prefix),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        Ok(stream.get_or_create_consumer(name, config).await?)
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

    /// Applies a batch to every projection in one transaction, then acks (or naks what must
    /// come again for any projection).
    async fn process(&self, batch: Vec<jetstream::Message>) {
        let deliveries: Vec<Delivery> = batch.iter().map(delivery).collect();
        let projections: Vec<&dyn Projection> =
            self.projections.iter().map(|(p, _)| p.as_ref()).collect();
        match apply_to_all(&self.pool, &projections, &self.streams, &deliveries).await {
            Ok(outcomes) => {
                for (index, message) in batch.iter().enumerate() {
                    let done = outcomes.iter().all(|outcome| outcome.done[index]);
                    let ack = if done {
                        message.ack().await
                    } else {
                        message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await
                    };
                    if let Err(error) = ack {
                        // Redelivered after ack_wait and found done: harmless.
                        tracing::debug!(%error, "ack failed");
                    }
                }
                for ((projection, coverage), outcome) in self.projections.iter().zip(outcomes) {
                    let positions: Arc<[i64]> = outcome.covered.into();
                    coverage.send_modify(|coverage| {
                        coverage.batches += 1;
                        coverage.positions = positions;
                    });
                    if !outcome.changes.is_empty() {
                        projection.committed(outcome.changes);
                    }
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

/// Applies `deliveries` to the serving tables of every projection in one transaction: for
/// each, its schema, serving and projector locks (one batch at a time across replicas,
/// [`generations::enter_serving`], taken in the same order by every batch) and the run after
/// its watermark ([`run::apply_in_order`]); then COMMIT. The outcomes are in the order given.
pub async fn apply_to_all(
    pool: &PgPool,
    projections: &[&dyn Projection],
    streams: &Streams,
    deliveries: &[Delivery],
) -> Result<Vec<run::Outcome>, Transient> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(projections.len());
    for projection in projections {
        generations::enter_serving(&mut tx, projection.name()).await?;
        outcomes.push(run::apply_in_order(&mut tx, *projection, streams, deliveries).await?);
    }
    tx.commit().await?;
    for (projection, outcome) in projections.iter().zip(&outcomes) {
        record_metrics(projection.name(), deliveries.len(), outcome);
    }
    Ok(outcomes)
}

/// [`apply_to_all`] for one projection.
pub async fn apply_records(
    pool: &PgPool,
    projection: &dyn Projection,
    streams: &Streams,
    deliveries: &[Delivery],
) -> Result<run::Outcome, Transient> {
    let mut outcomes = apply_to_all(pool, &[projection], streams, deliveries).await?;
    Ok(outcomes.remove(0))
}

fn record_metrics(name: &'static str, deliveries: usize, outcome: &run::Outcome) {
    tracing::debug!(
        projection = name,
        deliveries,
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
        .record(deliveries as f64);
    metrics::gauge!("pizzeria_projection_checkpoint_position", "projection" => name)
        .set(outcome.watermark.global_position as f64);
}
