//! Rebuilding the read model with no downtime: a new generation of its tables is filled from
//! position 0 through command-svc's ReadAll while the serving generation keeps answering
//! queries and applying new events; once the new one has caught up, one transaction swaps them.
//!
//! Why nothing is lost or applied twice at the swap: the swap transaction first takes the
//! serving lock exclusively, so no projector batch is in flight; then it reads ReadAll to its
//! end into the new generation. Every event the serving generation had applied came through
//! NATS, and the relay publishes only what ReadAll already returns, so the new generation has
//! it too. Events it has that the serving one had not yet applied arrive from NATS afterwards
//! and are skipped as duplicates by the new generation's stream_progress.

use std::time::Duration;

use futures::StreamExt as _;
use shared::proto::v1::{self as pb, read_all_request::Start};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{AdminError, lag::LagProbe};
use crate::{
    projection::event::Event,
    projector::streams::{EventLogClient, Streams},
    store::{
        apply::Batch,
        apply_page,
        generations::{self, READ_MODEL},
    },
};

/// How long the swap may wait for readers holding the serving tables before it tries again.
const SWAP_LOCK_TIMEOUT: &str = "5s";
const SWAP_ATTEMPTS: u32 = 5;

/// A rebuild that was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildStarted {
    pub generation: i32,
    pub already_running: bool,
}

#[derive(Debug, Clone)]
pub struct Rebuilder {
    pool: PgPool,
    command_svc: EventLogClient,
    streams: Streams,
    lag: LagProbe,
    stop: CancellationToken,
    /// Events read and applied per rebuild transaction.
    page_size: u32,
}

impl Rebuilder {
    /// `stop` ends a running rebuild (at shutdown); a later RebuildProjection starts over.
    pub fn new(
        pool: PgPool,
        command_svc: EventLogClient,
        lag: LagProbe,
        stop: CancellationToken,
        page_size: u32,
    ) -> Self {
        Self {
            pool,
            streams: Streams::new(command_svc.clone()),
            command_svc,
            lag,
            stop,
            page_size,
        }
    }

    /// Starts a rebuild in the background, or reports the one already running (in any replica).
    pub async fn start(&self) -> Result<RebuildStarted, AdminError> {
        // The claim lives as long as this connection: a dead process releases it.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let rows = generations::projections(&self.pool).await?;
        let row = rows
            .iter()
            .find(|row| row.name == READ_MODEL)
            .ok_or_else(|| AdminError::NotFound(format!("projection {READ_MODEL} not found")))?;
        if !generations::try_claim_rebuild(&mut conn).await? {
            return Ok(RebuildStarted {
                generation: row.rebuild_generation.unwrap_or(row.generation + 1),
                already_running: true,
            });
        }
        let generation = row.generation + 1;
        let target = self.head_position().await;
        generations::create_rebuild_schema(&mut conn).await?;
        generations::start_rebuild(&mut conn, READ_MODEL, generation, target).await?;
        tracing::info!(generation, target, "projection rebuild started");
        let rebuilder = self.clone();
        tokio::spawn(async move {
            let stop = rebuilder.stop.clone();
            let result = tokio::select! {
                () = stop.cancelled() => None,
                result = rebuilder.run(&mut conn, generation) => Some(result),
            };
            match result {
                None => tracing::warn!(generation, "rebuild stopped by shutdown"),
                Some(Ok(())) => {
                    tracing::info!(generation, "projection rebuilt; readers switched over");
                }
                Some(Err(error)) => {
                    tracing::error!(%error, generation, "projection rebuild failed");
                    let _ = generations::end_rebuild(&mut conn, READ_MODEL).await;
                }
            }
        });
        Ok(RebuildStarted {
            generation,
            already_running: false,
        })
    }

    async fn head_position(&self) -> i64 {
        self.lag.measure().await.map_or(0, |lag| {
            i64::try_from(lag.head_position).unwrap_or(i64::MAX)
        })
    }

    async fn run(&self, conn: &mut PgConnection, generation: i32) -> Result<(), AdminError> {
        let mut cursor = None;
        // Catch up in the background, one page per transaction, reading the next page from
        // command-svc while the last one is applied.
        let mut records = self.read_page(cursor).await?;
        loop {
            let full = records.len() == self.page_size as usize;
            let after = records.last().map(cursor_of).or(cursor);
            let mut tx = conn.begin().await?;
            generations::write_to_rebuild(&mut tx).await?;
            let read_next = async {
                if full {
                    self.read_page(after).await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let (page, next) = tokio::join!(self.apply_records(&mut tx, &records), read_next);
            let page = page?;
            cursor = after;
            let position = cursor
                .as_ref()
                .map_or(0, |c| i64::try_from(c.global_position).unwrap_or(i64::MAX));
            let target = self.head_position().await;
            generations::record_rebuild_progress(&mut tx, READ_MODEL, position, target).await?;
            tx.commit().await?;
            count_dead_letters(page.dead_lettered);
            match next? {
                Some(next) => records = next,
                None => break,
            }
        }
        // Caught up: the last stretch and the swap, in one transaction.
        for attempt in 1..=SWAP_ATTEMPTS {
            match self.swap(conn, &mut cursor, generation).await {
                Ok(retired) => {
                    generations::drop_retired(conn, &retired).await?;
                    return Ok(());
                }
                Err(AdminError::Database(sqlx::Error::Database(error)))
                    if error.code().as_deref() == Some("55P03") && attempt < SWAP_ATTEMPTS =>
                {
                    tracing::warn!(
                        attempt,
                        "readers held the tables past the lock timeout; swap retried"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => return Err(error),
            }
        }
        Err(AdminError::FailedPrecondition(
            "could not swap the rebuilt tables in".into(),
        ))
    }

    async fn swap(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Option<pb::LogCursor>,
        generation: i32,
    ) -> Result<String, AdminError> {
        let mut tx = conn.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await?;
        generations::hold_serving_exclusively(&mut tx).await?;
        generations::write_to_rebuild(&mut tx).await?;
        let mut last_stretch = *cursor;
        let mut dead_lettered = 0;
        loop {
            let page = self.apply_page(&mut tx, &mut last_stretch).await?;
            dead_lettered += page.dead_lettered;
            if page.read < self.page_size as usize {
                break;
            }
        }
        let retired = generations::swap_in_rebuild(&mut tx, READ_MODEL, generation - 1).await?;
        tx.commit().await?;
        count_dead_letters(dead_lettered);
        *cursor = last_stretch;
        Ok(retired)
    }

    /// Reads up to a page of the log after `cursor` and applies it.
    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        cursor: &mut Option<pb::LogCursor>,
    ) -> Result<Page, AdminError> {
        let records = self.read_page(*cursor).await?;
        let page = self.apply_records(conn, &records).await?;
        if let Some(last) = records.last() {
            *cursor = Some(cursor_of(last));
        }
        Ok(page)
    }

    /// Up to a page of the log after `after` (from the start if None), in commit order.
    async fn read_page(
        &self,
        after: Option<pb::LogCursor>,
    ) -> Result<Vec<pb::EventRecord>, AdminError> {
        let start = Some(match after {
            Some(after) => Start::After(after),
            None => Start::FromPosition(0),
        });
        let mut events = self
            .command_svc
            .clone()
            .read_all(pb::ReadAllRequest {
                start,
                max_count: self.page_size,
                follow: false,
            })
            .await
            .map_err(|status| AdminError::CommandSvc(status.message().to_owned()))?
            .into_inner();
        let mut records = Vec::with_capacity(self.page_size as usize);
        while let Some(record) = events.next().await {
            records.push(
                record.map_err(|status| AdminError::CommandSvc(status.message().to_owned()))?,
            );
        }
        Ok(records)
    }

    /// Applies a page read from the log (in commit order, so every stream arrives in version
    /// order). Folded and written at once when the whole page fits; otherwise event by event,
    /// where a failure is dead-lettered at once (there is no redelivery here), hence
    /// savepoints.
    async fn apply_records(
        &self,
        conn: &mut PgConnection,
        records: &[pb::EventRecord],
    ) -> Result<Page, AdminError> {
        let mut bookkeeping = Batch::new(true);
        let decoded: Option<Vec<Event>> = records
            .iter()
            .map(|record| Event::try_from(record).ok())
            .collect();
        let folded = match &decoded {
            Some(events) => apply_page::try_apply(conn, &mut bookkeeping, events)
                .await?
                .is_some(),
            None => false,
        };
        if !folded {
            for record in records {
                self.streams
                    .apply(conn, &mut bookkeeping, record, 1, 1)
                    .await
                    .map_err(AdminError::from)?;
            }
        }
        bookkeeping.flush(conn).await?;
        Ok(Page {
            read: records.len(),
            dead_lettered: bookkeeping.dead_lettered,
        })
    }
}

/// Where the log continues after `record`.
fn cursor_of(record: &pb::EventRecord) -> pb::LogCursor {
    pb::LogCursor {
        transaction_id: record.transaction_id,
        global_position: record.global_position,
    }
}

/// What [`Rebuilder::apply_page`] did.
#[derive(Debug, Default)]
struct Page {
    /// Events read from the log.
    read: usize,
    /// Of those, how many were dead-lettered (counted in the metrics once committed).
    dead_lettered: u64,
}

/// Counts a committed page's dead letters. A series of its own: a rebuild dead-letters again
/// what the serving generation already holds, which is no new failure to alert on.
fn count_dead_letters(dead_lettered: u64) {
    metrics::counter!("pizzeria_rebuild_dead_letters_total").increment(dead_lettered);
}
