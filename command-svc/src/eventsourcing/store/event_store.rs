//! The event store: optimistic-concurrency appends, command idempotency, stream and log reads.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::{
    connect::{begin_as_tenant, end_read_only},
    envelope::EventMetadata,
    events::EncodedEvent,
};
// Formatted SQL below only splices in constants (EVENT_COLUMNS, the claim statements); every
// value is a bind parameter.
use sqlx::{AssertSqlSafe, FromRow, PgExecutor, PgPool, Postgres, Row, Transaction};
use std::sync::LazyLock;
use uuid::Uuid;

/// A storage failure. Domain refusals never come from here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, not the expected {expected}")]
    Conflict {
        stream_id: String,
        expected: u64,
        actual: u64,
    },
    /// The database cannot be reached (down, restarting, pool exhausted): safe to retry.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let unavailable = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
            sqlx::Error::Database(db) => matches!(
                db.code().as_deref(),
                Some("57P01" | "57P02" | "57P03" | "53300")
            ),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

/// One event as stored, with its place in the stream and in the log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    /// `transaction_id::text`, parsed: sqlx has no xid8 type.
    #[sqlx(try_from = "String")]
    pub transaction_id: Xid8,
    pub tenant_id: Uuid,
    pub stream_id: String,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// A Postgres `xid8` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xid8(pub u64);

impl TryFrom<String> for Xid8 {
    type Error = std::num::ParseIntError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse().map(Xid8)
    }
}

/// A point in commit order: events strictly after it are (transaction_id, global_position) greater.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogCursor {
    pub transaction_id: Xid8,
    pub global_position: i64,
}

impl StoredEvent {
    /// The cursor just after this event.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }
}

/// Columns of [`StoredEvent`], in one place for every query that reads events.
const EVENT_COLUMNS: &str = "global_position, transaction_id::text AS transaction_id, tenant_id, \
     stream_id, aggregate_type, aggregate_id, stream_version, event_id, event_type, \
     schema_version, payload, metadata, recorded_at";

/// The stored reply of a command that already ran.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProcessedCommand {
    pub rpc: String,
    pub request: Vec<u8>,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub stream_version: i64,
    pub global_position: i64,
    pub events_appended: i32,
}

/// The client's idempotency key and the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct CommandRecord<'a> {
    pub command_id: Uuid,
    pub rpc: &'a str,
    pub request: &'a [u8],
}

/// Events to append to one stream, expected to be at `expected_version`.
#[derive(Debug)]
pub struct Append<'a> {
    pub tenant_id: Uuid,
    pub aggregate_type: &'a str,
    pub aggregate_id: Uuid,
    pub stream_id: &'a str,
    pub expected_version: u64,
    pub events: &'a [EncodedEvent],
    pub metadata: &'a EventMetadata,
    pub command: Option<CommandRecord<'a>>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The events are committed; `version` and `position` are those of the last one.
    Appended { version: u64, position: i64 },
    /// Another request with the same command id committed first; nothing was appended.
    AlreadyProcessed(ProcessedCommand),
}

/// A stream's latest snapshot.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Snapshot {
    pub stream_version: i64,
    pub state: Value,
}

/// What [`Session::load`] read in one round trip.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The stored reply, when the command id given already ran.
    pub processed: Option<ProcessedCommand>,
    /// The newest snapshot of the state schema asked for.
    pub snapshot: Option<Snapshot>,
    /// The events after the snapshot (from version 1 without one), oldest first, at most a page.
    pub events: Vec<StoredEvent>,
}

/// The Postgres event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction acting for `tenant` (row-level security applies). A command runs
    /// in one: its idempotency check, load and append see one snapshot and cost one BEGIN.
    pub async fn session(&self, tenant_id: Uuid) -> Result<Session, StoreError> {
        Ok(Session {
            tx: begin_as_tenant(&self.pool, tenant_id).await?,
            tenant_id,
        })
    }

    /// Appends `append.events` in a transaction of their own; see [`Session::append`].
    pub async fn append(&self, append: &Append<'_>) -> Result<AppendOutcome, StoreError> {
        let mut session = self.session(append.tenant_id).await?;
        match session.append(append).await? {
            Appended::Committable { version, position } => {
                session.commit().await?;
                Ok(AppendOutcome::Appended { version, position })
            }
            Appended::Conflict { actual } => Err(StoreError::Conflict {
                stream_id: append.stream_id.to_owned(),
                expected: append.expected_version,
                actual,
            }),
            Appended::CommandAlreadyRecorded(command_id) => {
                drop(session);
                self.already_processed(append.tenant_id, command_id).await
            }
        }
    }

    /// The reply stored for `command_id` by a concurrent request that committed first.
    pub async fn already_processed(
        &self,
        tenant_id: Uuid,
        command_id: Uuid,
    ) -> Result<AppendOutcome, StoreError> {
        match self.processed_command(tenant_id, command_id).await? {
            Some(existing) => Ok(AppendOutcome::AlreadyProcessed(existing)),
            None => Err(StoreError::Database(sqlx::Error::RowNotFound)),
        }
    }

    /// The stored reply of `command_id`, if it ran before.
    pub async fn processed_command(
        &self,
        tenant_id: Uuid,
        command_id: Uuid,
    ) -> Result<Option<ProcessedCommand>, StoreError> {
        let mut session = self.session(tenant_id).await?;
        let command = session.processed_command(command_id).await?;
        session.end_read_only();
        Ok(command)
    }

    /// The stream's current version and its events with `stream_version >= from_version`,
    /// oldest first, at most `limit`. The version is read first, so the events reach at least
    /// that far unless `limit` cut them short.
    pub async fn read_stream(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<(u64, Vec<StoredEvent>), StoreError> {
        let mut session = self.session(tenant_id).await?;
        let version = session.stream_version(stream_id).await?;
        let events = session.read_stream(stream_id, from_version, limit).await?;
        session.end_read_only();
        Ok((version, events))
    }

    /// Up to `limit` events after `after` in commit order; see [`read_all_on`].
    pub async fn read_all(
        &self,
        after: LogCursor,
        from_position: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_all_on(&self.pool, after, from_position, limit).await
    }

    /// The newest snapshot of a stream taken under `state_schema_version`; others are ignored.
    pub async fn load_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        state_schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut session = self.session(tenant_id).await?;
        let snapshot = session
            .load_snapshot(stream_id, state_schema_version)
            .await?;
        session.end_read_only();
        Ok(snapshot)
    }

    /// Stores a snapshot unless a newer one of the same schema is already there.
    pub async fn save_snapshot(
        &self,
        tenant_id: Uuid,
        stream_id: &str,
        state_schema_version: u32,
        stream_version: u64,
        state: &Value,
    ) -> Result<(), StoreError> {
        let mut session = self.session(tenant_id).await?;
        sqlx::query(
            "INSERT INTO snapshots (tenant_id, stream_id, state_schema_version, stream_version, state)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, stream_id) DO UPDATE
               SET state_schema_version = EXCLUDED.state_schema_version,
                   stream_version = EXCLUDED.stream_version,
                   state = EXCLUDED.state,
                   taken_at = now()
             WHERE snapshots.stream_version < EXCLUDED.stream_version
                OR snapshots.state_schema_version <> EXCLUDED.state_schema_version",
        )
        .bind(tenant_id)
        .bind(stream_id)
        .bind(i32::try_from(state_schema_version).unwrap_or(i32::MAX))
        .bind(to_i64(stream_version))
        .bind(state)
        .execute(&mut *session.tx)
        .await?;
        session.commit().await?;
        Ok(())
    }
}

/// What [`Session::append`] did; nothing is committed until [`Session::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The events are written; `version` and `position` are those of the last one.
    Committable { version: u64, position: i64 },
    /// The stream is at `actual`, not the expected version: nothing was written.
    Conflict { actual: u64 },
    /// Another request with this command id committed first: roll back and return its reply.
    CommandAlreadyRecorded(Uuid),
}

/// One transaction acting for one tenant. Dropping it rolls back.
#[derive(Debug)]
pub struct Session {
    tx: Transaction<'static, Postgres>,
    tenant_id: Uuid,
}

impl Session {
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    /// Ends a session that only read, without waiting for a round trip (see
    /// [`end_read_only`]).
    pub fn end_read_only(self) {
        end_read_only(self.tx);
    }

    /// Writes `append.events` after checking the stream is at `append.expected_version`, in one
    /// statement (one round trip): claim the stream's next versions, insert the events, record
    /// the command id. Both inserts read the claim's row, so nothing is written when the claim
    /// fails, and the claim is the transaction's first write: it assigns the xid, so a later
    /// writer of the same stream always has a larger one (the relay's commit order relies on it).
    #[tracing::instrument(skip_all, fields(stream = append.stream_id, expected = append.expected_version, n = append.events.len()), err)]
    pub async fn append(&mut self, append: &Append<'_>) -> Result<Appended, StoreError> {
        let count = u64::try_from(append.events.len()).unwrap_or(u64::MAX);
        let new_version = append.expected_version.saturating_add(count);
        let statement = if append.expected_version == 0 {
            &*APPEND_TO_NEW_STREAM
        } else {
            &*APPEND_TO_STREAM
        };

        let metadata = serde_json::to_value(append.metadata).unwrap_or(Value::Null);
        let mut versions = Vec::with_capacity(append.events.len());
        let mut ids = Vec::with_capacity(append.events.len());
        let mut types = Vec::with_capacity(append.events.len());
        let mut schema_versions = Vec::with_capacity(append.events.len());
        let mut payloads = Vec::with_capacity(append.events.len());
        for (offset, event) in (1u64..).zip(append.events) {
            versions.push(to_i64(append.expected_version.saturating_add(offset)));
            ids.push(Uuid::now_v7());
            types.push(event.event_type);
            schema_versions.push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
            payloads.push(event.payload.clone());
        }
        let (claimed, position, recorded): (bool, Option<i64>, bool) =
            sqlx::query_as(AssertSqlSafe(statement.as_str()))
                .bind(append.tenant_id)
                .bind(append.stream_id)
                .bind(append.aggregate_type)
                .bind(append.aggregate_id)
                .bind(to_i64(append.expected_version))
                .bind(to_i64(new_version))
                .bind(&versions)
                .bind(&ids)
                .bind(&types)
                .bind(&schema_versions)
                .bind(&payloads)
                .bind(&metadata)
                .bind(append.command.map(|c| c.command_id))
                .bind(append.command.map(|c| c.rpc))
                .bind(append.command.map(|c| c.request))
                .bind(i32::try_from(count).unwrap_or(i32::MAX))
                .fetch_one(&mut *self.tx)
                .await?;
        if !claimed {
            // Read committed: this statement sees the write that beat ours.
            let actual = self.stream_version(append.stream_id).await?;
            return Ok(Appended::Conflict { actual });
        }
        if let Some(command) = append.command {
            if !recorded {
                // The same command id committed concurrently (e.g. on another stream, because a
                // retried PlaceOrder without an order id drew a new id).
                return Ok(Appended::CommandAlreadyRecorded(command.command_id));
            }
        }
        Ok(Appended::Committable {
            version: new_version,
            position: position.unwrap_or(0),
        })
    }

    /// Everything a command reads, in one statement (one round trip): the stored reply of
    /// `command_id` if it ran before, the newest snapshot of `state_schema_version`, and up to
    /// `limit` events after it. Returns one row per event; the reply and the snapshot ride on
    /// the first row only (a LEFT JOIN keeps that row when there are no events).
    pub async fn load(
        &mut self,
        stream_id: &str,
        state_schema_version: u32,
        command_id: Option<Uuid>,
        limit: u32,
    ) -> Result<Loaded, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(LOAD.as_str()))
            .bind(self.tenant_id)
            .bind(stream_id)
            .bind(i32::try_from(state_schema_version).unwrap_or(i32::MAX))
            .bind(command_id)
            .bind(i64::from(limit))
            .fetch_all(&mut *self.tx)
            .await?;
        let mut loaded = Loaded::default();
        for row in &rows {
            if loaded.processed.is_none() {
                if let Some(rpc) = row.try_get::<Option<String>, _>("done_rpc")? {
                    loaded.processed = Some(ProcessedCommand {
                        rpc,
                        request: row.try_get("done_request")?,
                        aggregate_type: row.try_get("done_aggregate_type")?,
                        aggregate_id: row.try_get("done_aggregate_id")?,
                        stream_version: row.try_get("done_stream_version")?,
                        global_position: row.try_get("done_global_position")?,
                        events_appended: row.try_get("done_events_appended")?,
                    });
                }
            }
            if loaded.snapshot.is_none() {
                if let Some(state) = row.try_get::<Option<Value>, _>("snapshot_state")? {
                    loaded.snapshot = Some(Snapshot {
                        stream_version: row.try_get("snapshot_version")?,
                        state,
                    });
                }
            }
            if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
                loaded.events.push(StoredEvent::from_row(row)?);
            }
        }
        Ok(loaded)
    }

    /// The stored reply of `command_id`, if it ran before.
    pub async fn processed_command(
        &mut self,
        command_id: Uuid,
    ) -> Result<Option<ProcessedCommand>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT rpc, request, aggregate_type, aggregate_id, stream_version, global_position,
                    events_appended
             FROM processed_commands WHERE tenant_id = $1 AND command_id = $2",
        )
        .bind(self.tenant_id)
        .bind(command_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// The current version of a stream (0 if it does not exist).
    pub async fn stream_version(&mut self, stream_id: &str) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM streams WHERE tenant_id = $1 AND stream_id = $2",
        )
        .bind(self.tenant_id)
        .bind(stream_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(version.map_or(0, to_u64))
    }

    /// Events of one stream with `stream_version >= from_version`, oldest first, at most `limit`.
    pub async fn read_stream(
        &mut self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE tenant_id = $1 AND stream_id = $2 AND stream_version >= $3
             ORDER BY stream_version LIMIT $4"
        )))
        .bind(self.tenant_id)
        .bind(stream_id)
        .bind(to_i64(from_version))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// The newest snapshot of a stream taken under `state_schema_version`; others are ignored.
    pub async fn load_snapshot(
        &mut self,
        stream_id: &str,
        state_schema_version: u32,
    ) -> Result<Option<Snapshot>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT stream_version, state FROM snapshots
             WHERE tenant_id = $1 AND stream_id = $2 AND state_schema_version = $3",
        )
        .bind(self.tenant_id)
        .bind(stream_id)
        .bind(i32::try_from(state_schema_version).unwrap_or(i32::MAX))
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Global position of the stream's last event (0 if none): the consistency token of a
    /// command that appended nothing.
    pub async fn last_position(&mut self, stream_id: &str) -> Result<i64, StoreError> {
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT max(global_position) FROM events WHERE tenant_id = $1 AND stream_id = $2",
        )
        .bind(self.tenant_id)
        .bind(stream_id)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(position.unwrap_or(0))
    }
}

/// Up to `limit` events after `after` in commit order, only from transactions that have all
/// ended (below the snapshot xmin), so a reader resuming from the last cursor never skips an
/// event that commits late with a lower position. `from_position` filters out older events.
/// Takes any executor so the relay can read on the connection that holds its lock.
pub async fn read_all_on<'e>(
    executor: impl PgExecutor<'e>,
    after: LogCursor,
    from_position: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           AND global_position >= $3
         -- Qualified: the bare name would sort by the text column of the SELECT list, putting
         -- xid 1000 before xid 999.
         ORDER BY events.transaction_id, events.global_position
         LIMIT $4"
    )))
    .bind(after.transaction_id.0.to_string())
    .bind(after.global_position)
    .bind(from_position)
    .bind(i64::from(limit))
    .fetch_all(executor)
    .await?)
}

/// [`Session::append`]'s statement for a stream at version $5 > 0.
static APPEND_TO_STREAM: LazyLock<String> = LazyLock::new(|| {
    append_statement(
        "UPDATE streams SET version = $6
         WHERE tenant_id = $1 AND stream_id = $2 AND version = $5
         RETURNING 1",
    )
});

/// [`Session::append`]'s statement for a new stream ($5 = 0).
static APPEND_TO_NEW_STREAM: LazyLock<String> = LazyLock::new(|| {
    append_statement(
        "INSERT INTO streams (tenant_id, stream_id, aggregate_type, version)
         VALUES ($1, $2, $3, $6) ON CONFLICT DO NOTHING
         RETURNING 1",
    )
});

/// The append around `claim`, a write that returns one row when the stream was at the expected
/// version and none otherwise. $7..$11 are the events' columns as arrays, $12 their metadata,
/// $13..$15 the command record (NULL without a command id), $16 the number of events.
fn append_statement(claim: &str) -> String {
    format!(
        "WITH claimed AS ({claim}),
         inserted AS (
             INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id,
                                 stream_version, event_id, event_type, schema_version, payload,
                                 metadata)
             SELECT $1, $2, $3, $4, v, id, t, s, p, $12
             FROM claimed, unnest($7::bigint[], $8::uuid[], $9::text[], $10::int[], $11::jsonb[])
                  AS e(v, id, t, s, p)
             ORDER BY v
             RETURNING global_position),
         recorded AS (
             INSERT INTO processed_commands (tenant_id, command_id, rpc, request, aggregate_type,
                 aggregate_id, stream_version, global_position, events_appended)
             SELECT $1, $13::uuid, $14::text, $15::bytea, $3, $4, $6,
                    coalesce((SELECT max(global_position) FROM inserted), 0), $16
             FROM claimed WHERE $13::uuid IS NOT NULL
             ON CONFLICT (tenant_id, command_id) DO NOTHING
             RETURNING 1)
         SELECT EXISTS (SELECT FROM claimed),
                (SELECT max(global_position) FROM inserted),
                EXISTS (SELECT FROM recorded)"
    )
}

/// [`Session::load`]'s statement: $1 tenant, $2 stream, $3 state schema, $4 command id (or
/// NULL), $5 page size.
static LOAD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH snapshot AS (
             SELECT stream_version, state FROM snapshots
             WHERE tenant_id = $1 AND stream_id = $2 AND state_schema_version = $3),
         done AS (
             SELECT * FROM processed_commands WHERE tenant_id = $1 AND command_id = $4),
         tail AS (
             SELECT {EVENT_COLUMNS}, row_number() OVER (ORDER BY stream_version) AS n FROM events
             WHERE tenant_id = $1 AND stream_id = $2
               AND stream_version > coalesce((SELECT stream_version FROM snapshot), 0)
             ORDER BY stream_version LIMIT $5)
         SELECT tail.*,
                CASE WHEN first THEN snapshot.stream_version END AS snapshot_version,
                CASE WHEN first THEN snapshot.state END AS snapshot_state,
                CASE WHEN first THEN done.rpc END AS done_rpc,
                CASE WHEN first THEN done.request END AS done_request,
                done.aggregate_type AS done_aggregate_type,
                done.aggregate_id AS done_aggregate_id,
                done.stream_version AS done_stream_version,
                done.global_position AS done_global_position,
                done.events_appended AS done_events_appended
         FROM (SELECT) AS one
         LEFT JOIN tail ON true
         LEFT JOIN snapshot ON true
         LEFT JOIN done ON true
         CROSS JOIN LATERAL (SELECT coalesce(tail.n, 1) = 1 AS first) AS f
         ORDER BY tail.stream_version"
    )
});
