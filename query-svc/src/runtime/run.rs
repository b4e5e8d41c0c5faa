//! Applying a batch in the relay's commit order, from the projection's watermark on
//! (`runtime::watermark`). The projector and a rebuild both come through [`apply_in_order`].
//!
//! A batch is laid out as a *run*: the events that follow the watermark without a gap.
//! - A delivery at or below the watermark is done already (a redelivery, or an event a gap fill
//!   brought in earlier): it is acknowledged and nothing else happens, so duplicates never knock
//!   a batch off its fast path.
//! - Each message names the event published before it (`Es-Prev-Txid`/`Es-Prev-Pos`). When that
//!   is the run's last event, the message joins the run. Otherwise the events in between are
//!   missing from this batch (held by a consumer that died until JetStream redelivers them, or
//!   lost), and they are read from command-svc's ReadAll in one call and join the run first.
//!   A restarted projector therefore resumes without stream-by-stream hole fills.
//! - The run is applied, folded as one page (`runtime::page`). A run that does not fit (a
//!   stream held behind a dead letter, an event that fails) goes event by event, each a page
//!   of one in a savepoint, where a failing event is retried or dead-lettered. The watermark
//!   moves to the run's last event done, in the same transaction.

use std::borrow::Cow;

use shared::{
    proto::v1 as pb,
    trace_context::{self, TraceParent},
};
use sqlx::PgConnection;
use tracing::Instrument as _;

use super::{
    Changes, Projection,
    page::{self, Page},
    progress::{Batch, StreamKey},
    stream_key,
    streams::{Step, Streams, Transient},
    watermark::{self, LogPoint},
};

/// Deliveries of one event before it goes to the dead letters.
pub const MAX_ATTEMPTS: i64 = 5;
/// One message to project.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its event; None for a message that is not one.
    pub record: Option<pb::EventRecord>,
    /// The event published just before it, as the relay says (`Es-Prev-Txid`/`Es-Prev-Pos`);
    /// None if the message does not say, which makes the projector read the log to be sure.
    pub previous: Option<LogPoint>,
    /// How many times JetStream has delivered it.
    pub attempts: i64,
    /// The relay's publish span (the message's `traceparent` header), continued here.
    pub trace_parent: Option<TraceParent>,
}

impl Delivery {
    /// `records` as read from the log (ReadAll, in commit order) after `after`, each naming the
    /// one before it, delivered for the last time (a failure dead-letters at once).
    pub fn read_from_log(after: LogPoint, records: Vec<pb::EventRecord>) -> Vec<Self> {
        let mut previous = after;
        records
            .into_iter()
            .map(|record| {
                let delivery = Self {
                    previous: Some(previous),
                    attempts: MAX_ATTEMPTS,
                    trace_parent: None,
                    record: Some(record),
                };
                previous = delivery.record.as_ref().map_or(previous, LogPoint::of);
                delivery
            })
            .collect()
    }
}

/// At most this many events are read from the log to fill the gaps of one batch; deliveries
/// beyond are redelivered and find the watermark moved on.
const FILL_LIMIT: usize = 10_000;
/// Events per ReadAll call when filling.
const FILL_PAGE: u32 = 2_000;

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per delivery, in the order given: done (acknowledge) or to come again (nak).
    pub done: Vec<bool>,
    /// What the projection returned for each page it applied, for [`Projection::committed`].
    pub changes: Vec<Changes>,
    /// Positions the batch brought under the watermark, sorted.
    pub covered: Vec<i64>,
    /// The watermark after the batch.
    pub watermark: LogPoint,
    /// Events applied, and done without being applied (duplicates, held, dead-lettered).
    pub applied: usize,
    pub skipped: usize,
    /// Events dead-lettered by the batch.
    pub dead_lettered: u64,
}

/// One event of a run: delivered by JetStream, or read from the log to fill a gap.
#[derive(Debug)]
struct RunEvent<'a> {
    record: Cow<'a, pb::EventRecord>,
    /// Deliveries so far; a filled event counts as delivered for the last time, since nothing
    /// will redeliver it (a failure dead-letters it at once).
    attempts: i64,
    trace_parent: Option<TraceParent>,
}

/// Where each delivery of a batch stands in its run.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// At or below the watermark, or not an event at all: acknowledge.
    Done,
    /// The run's `n`th event.
    InRun(usize),
    /// Beyond what this batch could reach: to come again.
    Later,
}

/// Applies `deliveries` after the watermark of the tables the connection's `search_path`
/// names, inside the caller's transaction, and moves the watermark. The caller holds the
/// locks that make it the only writer of that watermark (`generations::hold_projector`, or a
/// rebuild's own tables) and commits.
pub async fn apply_in_order(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    streams: &Streams,
    deliveries: &[Delivery],
) -> Result<Outcome, Transient> {
    let start = watermark::load(conn).await?;
    let (run, fates) = lay_out(streams, start, deliveries).await?;
    let mut bookkeeping = Batch::new();
    let keys: Vec<StreamKey> = run
        .iter()
        .filter(|event| projection.handles(&event.record.aggregate_type))
        .filter_map(|event| stream_key(&event.record))
        .map(|(tenant, stream, _)| (tenant, stream))
        .collect();
    bookkeeping.prefetch(conn, &keys).await?;
    let (done_in_run, applied, changes) =
        apply_run(conn, projection, streams, &mut bookkeeping, &run).await?;
    let mut covered = bookkeeping.done_positions().to_vec();
    covered.sort_unstable();
    bookkeeping.flush(conn).await?;
    let duplicates = fates.iter().filter(|f| matches!(f, Fate::Done)).count();
    let watermark = run[..done_in_run]
        .last()
        .map_or(start, |event| LogPoint::of(&event.record));
    Ok(Outcome {
        done: fates
            .iter()
            .map(|fate| match fate {
                Fate::Done => true,
                Fate::InRun(n) => *n < done_in_run,
                Fate::Later => false,
            })
            .collect(),
        changes,
        covered,
        watermark,
        applied,
        skipped: done_in_run - applied + duplicates,
        dead_lettered: bookkeeping.dead_lettered,
    })
}

/// The run of `deliveries` after `start`, gaps filled from the log, and each delivery's fate.
async fn lay_out<'a>(
    streams: &Streams,
    start: LogPoint,
    deliveries: &'a [Delivery],
) -> Result<(Vec<RunEvent<'a>>, Vec<Fate>), Transient> {
    let mut fates = vec![Fate::Done; deliveries.len()];
    let mut order: Vec<(LogPoint, usize)> = deliveries
        .iter()
        .enumerate()
        .filter_map(|(index, delivery)| Some((LogPoint::of(delivery.record.as_ref()?), index)))
        .collect();
    order.sort_unstable();
    let mut run: Vec<RunEvent<'a>> = Vec::with_capacity(order.len());
    let mut last = start;
    let mut fill_budget = FILL_LIMIT;
    for (at, (point, index)) in order.iter().copied().enumerate() {
        let delivery = &deliveries[index];
        let Some(record) = delivery.record.as_ref() else {
            continue;
        };
        if point <= start {
            continue; // done already
        }
        if point == last {
            // The same message twice in one batch: it shares the fate of the first.
            fates[index] = Fate::InRun(run.len() - 1);
            continue;
        }
        if delivery.previous != Some(last) {
            // Filled up to `point`, or short of it when the budget ran out.
            if !fill(streams, last, point, &mut fill_budget, &mut run).await? {
                tracing::info!(
                    after_position = last.global_position,
                    "gap larger than one batch fills; the rest of the batch comes again"
                );
                for (_, later) in &order[at..] {
                    fates[*later] = Fate::Later;
                }
                break;
            }
        }
        fates[index] = Fate::InRun(run.len());
        run.push(RunEvent {
            record: Cow::Borrowed(record),
            attempts: delivery.attempts,
            trace_parent: delivery.trace_parent,
        });
        last = point;
    }
    Ok((run, fates))
}

/// Appends to `run` the events of the log strictly between `after` and `until`, reading at
/// most `budget` of them. Returns whether it reached `until`.
async fn fill<'a>(
    streams: &Streams,
    after: LogPoint,
    until: LogPoint,
    budget: &mut usize,
    run: &mut Vec<RunEvent<'a>>,
) -> Result<bool, Transient> {
    let mut last = after;
    let mut filled = 0_usize;
    loop {
        if *budget == 0 {
            return Ok(false);
        }
        let page = u32::try_from(*budget).unwrap_or(FILL_PAGE).min(FILL_PAGE);
        let records = streams.read_log(last, page).await?;
        if records.is_empty() {
            // The relay published `until`, so the log holds it: ReadAll is behind (another
            // server's horizon). Not the event's fault; try the batch again.
            return Err(Transient::Backfill(format!(
                "the log ends before position {} that NATS delivered",
                until.global_position
            )));
        }
        for record in records {
            let point = LogPoint::of(&record);
            if point >= until {
                if filled > 0 {
                    tracing::info!(
                        after_position = after.global_position,
                        events = filled,
                        "gap in the delivery filled from the log"
                    );
                    metrics::counter!("pizzeria_projection_gap_fills_total").increment(1);
                    metrics::counter!("pizzeria_projection_gap_filled_events_total")
                        .increment(filled as u64);
                }
                return Ok(true);
            }
            last = point;
            filled += 1;
            *budget -= 1;
            run.push(RunEvent {
                record: Cow::Owned(record),
                attempts: MAX_ATTEMPTS,
                trace_parent: None,
            });
        }
    }
}

/// Applies the run in order: the events the projection handles as one page when it fits, else
/// event by event (each a page of one in a savepoint). Returns how many of its events are done
/// (the run stops at an event that fails and has attempts left), how many of those were
/// applied, and what the projection returned.
async fn apply_run(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    streams: &Streams,
    bookkeeping: &mut Batch,
    run: &[RunEvent<'_>],
) -> Result<(usize, usize, Vec<Changes>), Transient> {
    // One span per event, which ends when the batch commits: an event is projected then.
    let spans: Vec<tracing::Span> = run.iter().map(project_span).collect();
    let handled: Vec<&pb::EventRecord> = run
        .iter()
        .map(|event| event.record.as_ref())
        .filter(|record| projection.handles(&record.aggregate_type))
        .collect();
    if let Page::Applied(changes) = page::apply(conn, projection, bookkeeping, &handled).await? {
        for event in run {
            bookkeeping.record_done(&event.record);
        }
        let changes = if handled.is_empty() {
            Vec::new()
        } else {
            vec![changes]
        };
        return Ok((run.len(), handled.len(), changes));
    }
    let mut changes = Vec::new();
    let (mut done, mut applied) = (0, 0);
    for (event, span) in run.iter().zip(&spans) {
        match streams
            .apply(
                conn,
                projection,
                bookkeeping,
                &event.record,
                event.attempts,
                MAX_ATTEMPTS,
            )
            .instrument(span.clone())
            .await?
        {
            Step::Applied(change) => {
                changes.push(change);
                applied += 1;
            }
            Step::Skipped => {}
            Step::RetryLater => break,
        }
        bookkeeping.record_done(&event.record);
        done += 1;
    }
    Ok((done, applied, changes))
}

/// The span of one event's projection, continuing the trace of the call that appended it.
fn project_span(event: &RunEvent<'_>) -> tracing::Span {
    let record = event.record.as_ref();
    let span = tracing::info_span!(
        "projection.apply",
        otel.name = "project event",
        otel.kind = "consumer",
        event_type = record.event_type.as_str(),
        stream = record.stream_id.as_str(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // Messages from a relay that sent no header, and events read from the log, still carry
    // the appending call's context.
    let parent = event.trace_parent.or_else(|| {
        TraceParent::from_header(record.metadata.as_ref().map(|m| m.traceparent.as_str()))
    });
    trace_context::start_span(&span, parent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::auth::ServiceToken;
    use shared::proto::v1::event_log_service_client::EventLogServiceClient;

    /// Streams whose command-svc is never reached: a test that needs a fill fails loudly.
    fn unreachable_log() -> Streams {
        let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
        Streams::new(EventLogServiceClient::with_interceptor(
            channel,
            ServiceToken::default(),
        ))
    }

    fn point(position: i64) -> LogPoint {
        LogPoint {
            transaction_id: 100 + u64::try_from(position).unwrap_or(0),
            global_position: position,
        }
    }

    /// The event at `position`, delivered naming `previous` as the one before it.
    fn delivery(position: i64, previous: i64) -> Delivery {
        let at = point(position);
        Delivery {
            record: Some(pb::EventRecord {
                global_position: u64::try_from(position).unwrap_or(0),
                transaction_id: at.transaction_id,
                ..Default::default()
            }),
            previous: Some(if previous == 0 {
                LogPoint::default()
            } else {
                point(previous)
            }),
            attempts: 1,
            trace_parent: None,
        }
    }

    fn positions(run: &[RunEvent<'_>]) -> Vec<i64> {
        run.iter()
            .map(|event| LogPoint::of(&event.record).global_position)
            .collect()
    }

    #[tokio::test]
    async fn a_batch_in_any_order_is_laid_out_in_commit_order_after_the_watermark() {
        // Delivered out of order, with a redelivery of what the watermark covers already and
        // the same message twice.
        let deliveries = [
            delivery(4, 3),
            delivery(2, 1),
            delivery(3, 2),
            delivery(1, 0),
            delivery(3, 2),
            delivery(5, 4),
        ];
        let (run, fates) = lay_out(&unreachable_log(), point(1), &deliveries)
            .await
            .expect("no gap, so command-svc is not asked");
        assert_eq!(positions(&run), [2, 3, 4, 5]);
        let fates: Vec<String> = fates.iter().map(|f| format!("{f:?}")).collect();
        assert_eq!(
            fates,
            [
                "InRun(2)", "InRun(0)", "InRun(1)", "Done", "InRun(1)", "InRun(3)"
            ]
        );
    }

    #[tokio::test]
    async fn a_gap_is_read_from_the_log_and_a_log_out_of_reach_retries_the_batch() {
        // Position 3 names 2 as its predecessor, which the watermark (1) has not reached.
        let deliveries = [delivery(3, 2)];
        let error = lay_out(&unreachable_log(), point(1), &deliveries)
            .await
            .expect_err("the gap needs command-svc");
        assert!(matches!(error, Transient::Backfill(_)), "{error}");
    }

    #[tokio::test]
    async fn a_batch_wholly_under_the_watermark_is_done_with_an_empty_run() {
        let deliveries = [delivery(2, 1), delivery(1, 0)];
        let (run, fates) = lay_out(&unreachable_log(), point(2), &deliveries)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(run.is_empty());
        assert!(fates.iter().all(|f| matches!(f, Fate::Done)));
    }
}
