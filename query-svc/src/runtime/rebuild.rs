//! Rebuilding a projection with no downtime: a new generation of its tables is filled from
//! position 0 through command-svc's ReadAll while the serving generation keeps answering
//! queries and applying new events; once the new one has caught up, one transaction swaps them.
//!
//! Why nothing is lost or applied twice at the swap: the swap transaction first takes the
//! serving lock exclusively, so no projector batch is in flight; then it reads ReadAll to its
//! end into the new generation. Every event the serving generation had applied came through
//! NATS, and the relay publishes only what ReadAll already returns, so the new generation has
//! it too. Events it has that the serving one had not yet applied arrive from NATS afterwards
//! and are at or below the new generation's watermark: done already.
//!
//! The rebuild applies each page through the projector's own code ([`run::apply_in_order`]),
//! as a run that follows the rebuild's watermark: the same rules, the same fold.

use std::{sync::Arc, time::Duration};

use shared::proto::v1 as pb;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::{
    Projection, generations,
    lag::LagProbe,
    run,
    run::Delivery,
    streams::{Streams, Transient},
    watermark::LogPoint,
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

/// Why a rebuild did not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Transient(#[from] Transient),
    /// The projection has no row in `projections`: its migration did not run.
    #[error("projection {0} is not in the read database")]
    NotMigrated(String),
    #[error("could not swap the rebuilt tables in: readers kept them locked")]
    SwapRefused,
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(Transient::Database(error))
    }
}

#[derive(Debug, Clone)]
pub struct Rebuilder {
    pool: PgPool,
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
        streams: Streams,
        lag: LagProbe,
        stop: CancellationToken,
        page_size: u32,
    ) -> Self {
        Self {
            pool,
            streams,
            lag,
            stop,
            page_size,
        }
    }

    /// Starts a rebuild of `projection` in the background, or reports the one already running
    /// (in any replica).
    pub async fn start(
        &self,
        projection: Arc<dyn Projection>,
    ) -> Result<RebuildStarted, RebuildError> {
        let name = projection.name();
        // The claim lives as long as this connection: a dead process releases it.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let rows = generations::projections(&self.pool).await?;
        let row = rows
            .iter()
            .find(|row| row.name == name)
            .ok_or_else(|| RebuildError::NotMigrated(name.to_owned()))?;
        if !generations::try_claim_rebuild(&mut conn, name).await? {
            return Ok(RebuildStarted {
                generation: row.rebuild_generation.unwrap_or(row.generation + 1),
                already_running: true,
            });
        }
        let generation = row.generation + 1;
        let target = self.lag.head_position().await;
        generations::create_rebuild_schema(&mut conn, projection.as_ref()).await?;
        generations::start_rebuild(&mut conn, name, generation, target).await?;
        tracing::info!(
            projection = name,
            generation,
            target,
            "projection rebuild started"
        );
        let rebuilder = self.clone();
        tokio::spawn(async move {
            let stop = rebuilder.stop.clone();
            let result = tokio::select! {
                () = stop.cancelled() => None,
                result = rebuilder.run(&mut conn, projection.as_ref(), generation) => Some(result),
            };
            match result {
                None => {
                    tracing::warn!(projection = name, generation, "rebuild stopped by shutdown")
                }
                Some(Ok(())) => {
                    tracing::info!(
                        projection = name,
                        generation,
                        "projection rebuilt; readers switched over"
                    );
                }
                Some(Err(error)) => {
                    tracing::error!(%error, projection = name, generation, "projection rebuild failed");
                    let _ = generations::end_rebuild(&mut conn, name).await;
                }
            }
        });
        Ok(RebuildStarted {
            generation,
            already_running: false,
        })
    }

    async fn run(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        generation: i32,
    ) -> Result<(), RebuildError> {
        let name = projection.name();
        let mut cursor = LogPoint::default();
        // Catch up in the background, one page per transaction, reading the next page from
        // command-svc while the last one is applied.
        let mut records = self.read_page(cursor).await?;
        loop {
            let full = records.len() == self.page_size as usize;
            let after = records.last().map_or(cursor, LogPoint::of);
            let mut tx = conn.begin().await?;
            generations::write_to_rebuild(&mut tx, name).await?;
            let read_next = async {
                if full {
                    self.read_page(after).await.map(Some)
                } else {
                    Ok(None)
                }
            };
            let (page, next) = tokio::join!(
                self.apply_records(&mut tx, projection, cursor, records),
                read_next
            );
            let page = page?;
            cursor = after;
            let target = self.lag.head_position().await;
            generations::record_rebuild_progress(&mut tx, name, cursor.global_position, target)
                .await?;
            tx.commit().await?;
            count_dead_letters(page.dead_lettered);
            match next? {
                Some(next) => records = next,
                None => break,
            }
        }
        // Caught up: the last stretch and the swap, in one transaction.
        for attempt in 1..=SWAP_ATTEMPTS {
            match self.swap(conn, projection, &mut cursor, generation).await {
                Ok(retired) => {
                    generations::drop_retired(conn, &retired).await?;
                    return Ok(());
                }
                Err(RebuildError::Transient(Transient::Database(sqlx::Error::Database(error))))
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
        Err(RebuildError::SwapRefused)
    }

    async fn swap(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        cursor: &mut LogPoint,
        generation: i32,
    ) -> Result<String, RebuildError> {
        let name = projection.name();
        let mut tx = conn.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await?;
        generations::hold_serving_exclusively(&mut tx, name).await?;
        generations::write_to_rebuild(&mut tx, name).await?;
        let mut last_stretch = *cursor;
        let mut dead_lettered = 0;
        loop {
            let page = self
                .apply_page(&mut tx, projection, &mut last_stretch)
                .await?;
            dead_lettered += page.dead_lettered;
            if page.read < self.page_size as usize {
                break;
            }
        }
        let retired = generations::swap_in_rebuild(&mut tx, projection, generation - 1).await?;
        tx.commit().await?;
        count_dead_letters(dead_lettered);
        *cursor = last_stretch;
        Ok(retired)
    }

    /// Reads up to a page of the log after `cursor` and applies it.
    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        cursor: &mut LogPoint,
    ) -> Result<Page, RebuildError> {
        let records = self.read_page(*cursor).await?;
        let after = records.last().map_or(*cursor, LogPoint::of);
        let page = self
            .apply_records(conn, projection, *cursor, records)
            .await?;
        *cursor = after;
        Ok(page)
    }

    /// Up to a page of the log after `after`, in commit order.
    async fn read_page(&self, after: LogPoint) -> Result<Vec<pb::EventRecord>, RebuildError> {
        Ok(self.streams.read_log(after, self.page_size).await?)
    }

    /// Applies a page read from the log after `after` as the projector applies a batch: a run
    /// after the rebuild's watermark, folded when it fits, else event by event, where a
    /// failure is dead-lettered at once (nothing redelivers it).
    async fn apply_records(
        &self,
        conn: &mut PgConnection,
        projection: &dyn Projection,
        after: LogPoint,
        records: Vec<pb::EventRecord>,
    ) -> Result<Page, RebuildError> {
        let read = records.len();
        let deliveries = Delivery::read_from_log(after, records);
        let outcome = run::apply_in_order(conn, projection, &self.streams, &deliveries).await?;
        Ok(Page {
            read,
            dead_lettered: outcome.dead_lettered,
        })
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
