//! The relay: publishes committed events to NATS JetStream, in commit order, each exactly once in
//! the stream, surviving restarts of itself, of Postgres and of NATS.
//!
//! The event table is the outbox. The relay
//! - holds a session advisory lock on a dedicated connection, so one relay per database publishes
//!   (other replicas stand by and take over when that connection dies);
//! - reads with [`read_all_on`]: `(transaction_id, global_position)` order, only transactions
//!   below the snapshot xmin, so an event that commits late with a lower position is not skipped;
//! - publishes each event with `Nats-Expected-Last-Sequence` (the sequence of the message before
//!   it), so a publish lands only right after the event before it: an ambiguous publish that did
//!   land is never stored twice, and a failed one in a pipelined batch rejects every later one
//!   instead of letting it overtake. JetStream's `Nats-Msg-Id` de-duplication is not used: it
//!   adds nothing to that check, and a "duplicate" acknowledgement moves the relay's cursor
//!   without moving the stream (the fault tests saw that spread a misordering);
//! - keeps its checkpoint in NATS: on start and after any error it reads the stream's last message
//!   and resumes after that message's (`Es-Txid`, `Es-Pos`), so whatever NATS lost is re-published
//!   from Postgres by construction;
//! - wakes on in-process commits, with a periodic poll for other replicas' commits.

mod jetstream;

use std::{sync::Arc, time::Duration};

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::eventsourcing::store::{LogCursor, StoreError, Xid8, read_all_on};

use jetstream::Publisher;
pub use jetstream::{EventStreamSettings, event_headers};

/// Advisory lock key of the relay ("PIZZRELY"); advisory locks are per database.
const RELAY_LOCK_KEY: i64 = 0x5049_5a5a_5245_4c59;
/// How often a standby relay retries the lock.
const STANDBY_RETRY: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// At most a second: once the fault heals, the relay is publishing again within a second (a
/// retry costs one connection attempt).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Relay tuning, from the command-svc configuration.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub stream: EventStreamSettings,
    pub batch_size: u32,
    pub poll_interval: Duration,
}

/// Why the relay stopped leading for a moment; it backs off and starts over from NATS's view.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(#[source] async_nats::Error),
    #[error(
        "message {sequence} of the stream has no valid {} / {} headers: is something else publishing on the event subjects?",
        shared::envelope::headers::TRANSACTION_ID,
        shared::envelope::headers::POSITION
    )]
    ForeignMessage { sequence: u64 },
    #[error(
        "JetStream acknowledged a publish as a duplicate of message {sequence}: is something else publishing on the event subjects?"
    )]
    UnexpectedDuplicate { sequence: u64 },
    #[error(
        "the stream's last sequence is {actual}, not {expected}: it lost messages or has another writer"
    )]
    StreamMoved { expected: u64, actual: u64 },
    #[error(
        "the stream's last event (xid {}, position {}) is not in the database: NATS is ahead of Postgres \
         (restored or failed-over database?); not publishing until an operator resolves it",
        .0.transaction_id.0,
        .0.global_position
    )]
    StreamAheadOfDatabase(LogCursor),
}

/// The relay of one command-svc process. Run it with [`Relay::run`].
#[derive(Debug)]
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    settings: RelaySettings,
    appended: Arc<Notify>,
}

impl Relay {
    /// `appended` is notified after every commit of this process.
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        settings: RelaySettings,
        appended: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            publisher: Publisher::new(nats, settings.stream.clone()),
            settings,
            appended,
        }
    }

    /// Publishes until `stop` is cancelled; a batch in flight is finished first.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        while let Some(mut lock) = self.acquire_lock(&stop).await {
            tracing::info!(stream = %self.settings.stream.name, "relay is the active publisher");
            match self.lead(&mut lock, &stop, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    metrics::counter!("pizzeria_relay_errors_total").increment(1);
                    tracing::warn!(%error, retry_in = ?backoff, "relay interrupted; will resync from NATS");
                }
            }
            // Give up the lock while backing off, so a healthier replica may take over.
            let _ = lock.close().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        tracing::info!("relay stopped");
    }

    /// Waits until this relay holds the lock (on a connection of its own, outside the pool, so
    /// the lock lives exactly as long as that session), or `stop` is cancelled.
    async fn acquire_lock(&self, stop: &CancellationToken) -> Option<PgConnection> {
        let mut announced_standby = false;
        loop {
            match self.try_lock().await {
                Ok(Some(connection)) => return Some(connection),
                Ok(None) if !announced_standby => {
                    tracing::info!("another relay holds the lock; standing by");
                    announced_standby = true;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "relay cannot reach the database"),
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(STANDBY_RETRY) => {}
            }
        }
    }

    async fn try_lock(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        let mut connection = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?;
        if locked {
            Ok(Some(connection))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Publishes while holding the lock. Returns `Ok` only when stopped; any error ends the
    /// lead so the caller can back off and resync. Every read goes through the lock connection,
    /// so losing it (and with it the lock) surfaces here at once.
    async fn lead(
        &self,
        lock: &mut PgConnection,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), RelayError> {
        self.publisher.ensure_stream().await?;
        let mut resume = self.publisher.resume_point().await?;
        if resume.cursor == LogCursor::default() && resume.stream_emptied {
            // NATS holds no message to resume from though it once did (purged, or aged out by a
            // retention limit): fall back to the checkpoint recorded in Postgres.
            resume.cursor = load_checkpoint(lock).await?;
        } else if resume.cursor != LogCursor::default()
            && !event_exists(lock, resume.cursor).await?
        {
            return Err(RelayError::StreamAheadOfDatabase(resume.cursor));
        }
        let mut cursor = resume.cursor;
        let mut last_sequence = resume.last_sequence;
        tracing::info!(
            after_transaction_id = cursor.transaction_id.0,
            after_position = cursor.global_position,
            last_sequence,
            "relay resuming"
        );
        loop {
            let batch = read_all_on(&mut *lock, cursor, 0, self.settings.batch_size).await?;
            if batch.is_empty() {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = self.appended.notified() => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {
                        // Idle: make sure the stream still ends where we left it. A NATS that
                        // restarted without its tail (lost writes, restored storage) is only
                        // noticed here when no new event would hit the expected-sequence check.
                        let actual = self.publisher.last_sequence().await?;
                        if actual != last_sequence {
                            return Err(RelayError::StreamMoved { expected: last_sequence, actual });
                        }
                    }
                }
                continue;
            }
            let outcome = self
                .publisher
                .publish_batch(&batch, &mut cursor, &mut last_sequence)
                .await;
            let published = batch.iter().take_while(|e| e.cursor() <= cursor).count();
            metrics::counter!("pizzeria_relay_published_total").increment(published as u64);
            metrics::histogram!("pizzeria_relay_batch_size").record(batch.len() as f64);
            save_checkpoint(lock, cursor).await?;
            outcome?;
            tracing::debug!(
                events = batch.len(),
                last_position = cursor.global_position,
                "relay published a batch"
            );
            *backoff = MIN_BACKOFF;
            if stop.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Sets `pizzeria_relay_lag_events` and `pizzeria_relay_lag_seconds`: the committed events
/// after the relay's last published one (as `relay_state` records it) in commit order, and the
/// age of the oldest of them. Counting stops at [`LAG_COUNT_LIMIT`], so a huge backlog costs
/// one bounded index scan every health check.
pub async fn sample_lag(pool: &PgPool) {
    let lag: Result<(i64, Option<f64>), sqlx::Error> = sqlx::query_as(
        "WITH published AS (
             SELECT coalesce((SELECT last_transaction_id FROM relay_state WHERE id = 1),
                             '0'::xid8) AS transaction_id,
                    coalesce((SELECT last_position FROM relay_state WHERE id = 1), 0) AS position),
         backlog AS (
             SELECT e.recorded_at FROM events e, published p
             WHERE (e.transaction_id, e.global_position) > (p.transaction_id, p.position)
             ORDER BY e.transaction_id, e.global_position
             LIMIT $1)
         SELECT count(*), extract(epoch FROM now() - min(recorded_at))::float8 FROM backlog",
    )
    .bind(LAG_COUNT_LIMIT)
    .fetch_one(pool)
    .await;
    match lag {
        Ok((events, seconds)) => {
            metrics::gauge!("pizzeria_relay_lag_events").set(events as f64);
            metrics::gauge!("pizzeria_relay_lag_seconds").set(seconds.unwrap_or(0.0).max(0.0));
        }
        Err(error) => tracing::debug!(%error, "relay lag not measured"),
    }
}

/// Where [`sample_lag`] stops counting.
const LAG_COUNT_LIMIT: i64 = 100_000;

/// Whether the event at `cursor` is in the database.
async fn event_exists(
    connection: &mut PgConnection,
    cursor: LogCursor,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events
                        WHERE global_position = $1 AND transaction_id = $2::text::xid8)",
    )
    .bind(cursor.global_position)
    .bind(cursor.transaction_id.0.to_string())
    .fetch_one(connection)
    .await?)
}

/// The last published event as recorded in `relay_state`: for operators (relay lag) and as the
/// resume point when NATS holds no message to resume from.
async fn load_checkpoint(connection: &mut PgConnection) -> Result<LogCursor, StoreError> {
    let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT last_transaction_id::text, last_position FROM relay_state WHERE id = 1",
    )
    .fetch_optional(connection)
    .await?;
    Ok(match row {
        Some((Some(xid), Some(position))) => LogCursor {
            transaction_id: Xid8::try_from(xid).unwrap_or_default(),
            global_position: position,
        },
        _ => LogCursor::default(),
    })
}

async fn save_checkpoint(
    connection: &mut PgConnection,
    cursor: LogCursor,
) -> Result<(), StoreError> {
    if cursor == LogCursor::default() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO relay_state (id, last_transaction_id, last_position, updated_at)
         VALUES (1, $1::text::xid8, $2, now())
         ON CONFLICT (id) DO UPDATE
           SET last_transaction_id = EXCLUDED.last_transaction_id,
               last_position = EXCLUDED.last_position,
               updated_at = EXCLUDED.updated_at",
    )
    .bind(cursor.transaction_id.0.to_string())
    .bind(cursor.global_position)
    .execute(connection)
    .await?;
    Ok(())
}
