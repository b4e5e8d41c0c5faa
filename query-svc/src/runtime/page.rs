//! Handing a page of events to a projection: the one way events are applied. The runtime checks
//! that every event is its stream's next version and that no stream waits behind a dead letter,
//! runs the projection's [`Projection::apply`] in a savepoint, and records what was applied. A
//! page that does not fit, or that holds an event that fails, writes nothing; the caller then
//! applies it event by event, each a page of one, where the failing event is found and
//! dead-lettered (`runtime::streams`).

use std::collections::{BTreeSet, HashMap};

use shared::proto::v1 as pb;
use sqlx::{Acquire as _, PgConnection};

use super::{
    Changes, Projection, ProjectionError,
    progress::{Batch, StreamKey, is_transient},
    stream_key,
};

/// What became of a page.
#[derive(Debug)]
pub enum Page {
    /// Written, and recorded in the batch: what the projection returned.
    Applied(Changes),
    /// Not every stream is at its next version, or one waits behind a dead letter: nothing
    /// written. Go event by event.
    DoesNotFit,
    /// An event cannot be applied (the projection refused it, or the database refused a row
    /// for a reason that will not pass): nothing written. In a page of one, the event's fault.
    Failed(ProjectionError),
}

/// Applies `records` (in commit order, all of aggregate types `projection` handles) as one
/// page, recording them in `batch`. An `Err` is the database's failure (retry the batch).
pub async fn apply(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch: &mut Batch,
    records: &[&pb::EventRecord],
) -> Result<Page, sqlx::Error> {
    if records.is_empty() {
        return Ok(Page::Applied(Box::new(())));
    }
    if !in_version_order(conn, batch, records).await? {
        return Ok(Page::DoesNotFit);
    }
    // In a savepoint: a page refused (by the projection, or a row by the database) leaves the
    // transaction usable for the event-by-event path, which finds the event to dead-letter.
    let mut page = conn.begin().await?;
    let changes = match projection.apply(&mut page, records).await {
        Ok(Ok(changes)) => changes,
        Ok(Err(error)) => {
            tracing::debug!(%error, projection = projection.name(), "page refused");
            page.rollback().await?;
            return Ok(Page::Failed(error));
        }
        Err(sqlx::Error::Database(error)) if !is_transient(error.as_ref()) => {
            tracing::debug!(%error, projection = projection.name(), "the database refused a page");
            page.rollback().await?;
            return Ok(Page::Failed(ProjectionError(format!(
                "read database refused the event: {error}"
            ))));
        }
        Err(error) => return Err(error),
    };
    page.commit().await?;
    for record in records {
        batch.record_applied(record);
    }
    Ok(Page::Applied(changes))
}

/// Whether every record is its stream's next version and no stream waits behind a dead letter.
async fn in_version_order(
    conn: &mut PgConnection,
    batch: &mut Batch,
    records: &[&pb::EventRecord],
) -> Result<bool, sqlx::Error> {
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        let Some((tenant, stream, version)) = stream_key(record) else {
            return Ok(false);
        };
        events.push(((tenant, stream), version));
    }
    let keys: BTreeSet<&StreamKey> = events.iter().map(|(key, _)| key).collect();
    let unknown: Vec<StreamKey> = keys
        .iter()
        .filter(|key| batch.prefetched(key).is_none())
        .map(|key| (*key).clone())
        .collect();
    if !unknown.is_empty() {
        batch.prefetch(conn, &unknown).await?;
    }
    let mut last: HashMap<&StreamKey, i64> = HashMap::with_capacity(keys.len());
    for key in keys {
        match batch.prefetched(key) {
            Some((version, false)) => last.insert(key, version),
            _ => return Ok(false),
        };
    }
    for (key, version) in &events {
        let Some(last) = last.get_mut(key) else {
            return Ok(false);
        };
        if *version != *last + 1 {
            return Ok(false);
        }
        *last = *version;
    }
    Ok(true)
}
