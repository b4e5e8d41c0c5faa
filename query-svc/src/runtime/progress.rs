//! The bookkeeping of a transaction that applies events: each touched stream's last applied
//! version (`stream_progress`, read once and written once per batch), which streams wait behind
//! a dead letter, and the events brought under the watermark (`applied_events`,
//! `projector_state`; see `runtime::watermark`).

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::PgConnection;

use shared::proto::v1 as pb;

use super::stream_key;

/// Whether the database refused a statement for a reason that passes: a deadlock or a
/// serialization failure (SQLSTATE class 40), a lock or statement timeout, a shutdown or
/// cancel (57), too few resources (53), a lost connection (08). Retrying the batch later can
/// succeed; any other refusal (a constraint, bad data) would repeat, and is the event's fault.
pub fn is_transient(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.code().is_some_and(|code| {
        ["40", "53", "57", "08"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
    })
}

/// The bookkeeping of one transaction that applies events. It reads each touched stream's
/// last applied version once and keeps it, and it collects what was applied. That is written
/// by [`Batch::flush`] in three statements per batch rather than three per event. Call
/// `flush` before the transaction commits.
#[derive(Debug, Default)]
pub struct Batch {
    last_versions: HashMap<StreamKey, i64>,
    /// Streams with an unresolved dead letter, when prefetched (None: ask per event).
    held: Option<HashSet<StreamKey>>,
    /// Streams that got a dead letter in this transaction.
    held_now: HashSet<StreamKey>,
    applied_versions: BTreeMap<StreamKey, i64>,
    /// Positions brought under the watermark, in commit order.
    positions: Vec<i64>,
    /// The last event brought under the watermark: the new watermark.
    checkpoint: Option<(i64, i64, chrono::DateTime<chrono::Utc>)>,
    /// Events dead-lettered in this transaction (counted in metrics once it commits).
    pub dead_lettered: u64,
}

/// A stream of one tenant.
pub type StreamKey = (uuid::Uuid, String);

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the last applied versions of `keys`, and which of them wait behind a dead
    /// letter, in one query.
    pub async fn prefetch(
        &mut self,
        conn: &mut PgConnection,
        keys: &[StreamKey],
    ) -> Result<(), sqlx::Error> {
        let held = self.held.get_or_insert_with(HashSet::new);
        if keys.is_empty() {
            return Ok(());
        }
        let (tenants, streams): (Vec<uuid::Uuid>, Vec<&str>) =
            keys.iter().map(|(t, s)| (*t, s.as_str())).unzip();
        let rows: Vec<(uuid::Uuid, String, i64, bool)> = sqlx::query_as(
            "SELECT k.tenant_id, k.stream_id, coalesce(p.last_version, 0),
                    EXISTS (SELECT 1 FROM dead_letters d
                            WHERE d.tenant_id = k.tenant_id AND d.stream_id = k.stream_id
                              AND d.status = 'PENDING')
             FROM unnest($1::uuid[], $2::text[]) AS k(tenant_id, stream_id)
             LEFT JOIN stream_progress p USING (tenant_id, stream_id)",
        )
        .bind(&tenants)
        .bind(&streams)
        .fetch_all(&mut *conn)
        .await?;
        for (tenant, stream, version, is_held) in rows {
            if is_held {
                held.insert((tenant, stream.clone()));
            }
            self.last_versions.insert((tenant, stream), version);
        }
        Ok(())
    }

    /// After [`Self::prefetch`]: the stream's last applied version, and whether it waits
    /// behind a dead letter.
    pub fn prefetched(&self, key: &StreamKey) -> Option<(i64, bool)> {
        let held = self.held.as_ref()?.contains(key) || self.held_now.contains(key);
        Some((*self.last_versions.get(key)?, held))
    }

    /// Whether a stream may have an unresolved dead letter: true when not prefetched, and
    /// for a stream that got a dead letter in this transaction.
    pub fn may_be_held(&self, key: &StreamKey) -> bool {
        self.held_now.contains(key) || self.held.as_ref().is_none_or(|held| held.contains(key))
    }

    /// Counts a dead letter written for `key`'s stream in this transaction.
    pub fn record_dead_letter(&mut self, key: StreamKey) {
        self.dead_lettered += 1;
        self.held_now.insert(key);
    }

    /// The last version applied of a stream (0 if none).
    pub async fn last_version(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: uuid::Uuid,
        stream_id: &str,
    ) -> Result<i64, sqlx::Error> {
        let key = (tenant_id, stream_id.to_owned());
        if let Some(version) = self.last_versions.get(&key) {
            return Ok(*version);
        }
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT last_version FROM stream_progress WHERE tenant_id = $1 AND stream_id = $2",
        )
        .bind(tenant_id)
        .bind(stream_id)
        .fetch_optional(&mut *conn)
        .await?;
        let version = version.unwrap_or(0);
        self.last_versions.insert(key, version);
        Ok(version)
    }

    /// Marks `record` applied: its version is its stream's last.
    pub fn record_applied(&mut self, record: &pb::EventRecord) {
        if let Some((tenant, stream, version)) = stream_key(record) {
            let key = (tenant, stream);
            self.last_versions.insert(key.clone(), version);
            self.applied_versions.insert(key, version);
        }
    }

    /// Moves the watermark over `record`, the event right after it in commit order, whatever
    /// became of it (applied, a duplicate, held, dead-lettered). Only the run of a batch
    /// (`runtime::run`) calls this: an event applied out of commit order (a stream caught up
    /// after its dead letter is resolved) has its version recorded, not its position.
    pub fn record_done(&mut self, record: &pb::EventRecord) {
        let position = i64::try_from(record.global_position).unwrap_or(i64::MAX);
        self.positions.push(position);
        let recorded_at = record
            .recorded_at
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .unwrap_or_default();
        self.checkpoint = Some((
            position,
            i64::try_from(record.transaction_id).unwrap_or(i64::MAX),
            recorded_at,
        ));
    }

    /// Positions brought under the watermark since the last flush, in commit order.
    pub fn done_positions(&self) -> &[i64] {
        &self.positions
    }

    /// Writes what was applied since the last flush, in one statement.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.applied_versions.is_empty()
            && self.positions.is_empty()
            && self.checkpoint.is_none()
        {
            return Ok(());
        }
        let mut tenants = Vec::with_capacity(self.applied_versions.len());
        let mut streams = Vec::with_capacity(self.applied_versions.len());
        let mut versions = Vec::with_capacity(self.applied_versions.len());
        for ((tenant, stream), version) in std::mem::take(&mut self.applied_versions) {
            tenants.push(tenant);
            streams.push(stream);
            versions.push(version);
        }
        let checkpoint = self.checkpoint.take();
        sqlx::query(
            "WITH progress AS (
                 INSERT INTO stream_progress (tenant_id, stream_id, last_version)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])
                 ON CONFLICT (tenant_id, stream_id) DO UPDATE SET last_version = EXCLUDED.last_version
             ), applied AS (
                 INSERT INTO applied_events (global_position)
                 SELECT unnest($4::bigint[]) ON CONFLICT DO NOTHING
             ), watermark AS (
                 INSERT INTO projector_state (id, last_position, last_transaction_id,
                                              last_event_recorded_at)
                 SELECT 1, $5, $6, $7 WHERE $5::bigint IS NOT NULL
                 ON CONFLICT (id) DO UPDATE SET last_position = EXCLUDED.last_position,
                     last_transaction_id = EXCLUDED.last_transaction_id,
                     last_event_recorded_at = EXCLUDED.last_event_recorded_at, updated_at = now()
             )
             SELECT 1",
        )
        .bind(&tenants)
        .bind(&streams)
        .bind(&versions)
        .bind(std::mem::take(&mut self.positions))
        .bind(checkpoint.map(|c| c.0))
        .bind(checkpoint.map(|c| c.1))
        .bind(checkpoint.map(|c| c.2))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

pub async fn set_last_version(
    conn: &mut PgConnection,
    tenant_id: uuid::Uuid,
    stream_id: &str,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stream_progress (tenant_id, stream_id, last_version) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, stream_id) DO UPDATE SET last_version = EXCLUDED.last_version",
    )
    .bind(tenant_id)
    .bind(stream_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
