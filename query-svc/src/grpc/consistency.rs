//! Read-your-writes, the same for every projection and every query service: a read with
//! `min_position = P` answers once every event published up to and including P (in commit
//! order) is done in the projection it reads, or UNAVAILABLE when that takes too long; a read
//! of one aggregate held behind a dead letter answers UNAVAILABLE rather than a stale view.

use std::time::Duration;

use sqlx::PgPool;
use tonic::{Request, Status};
use uuid::Uuid;

use super::db;
use crate::runtime::{dead_letters, host::Hosts, watermark};

/// How often a waiting read asks the database again, for batches it cannot see in memory
/// (another replica's, or a rebuild's swap).
const RECHECK_EVERY: Duration = Duration::from_millis(200);

/// Read-your-writes for every query service: waits for a projection to cover a token. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct ReadYourWrites {
    pool: PgPool,
    hosts: Hosts,
    max_wait: Duration,
}

impl ReadYourWrites {
    /// `max_wait` bounds how long a `min_position` read waits.
    pub fn new(pool: PgPool, hosts: Hosts, max_wait: Duration) -> Self {
        Self {
            pool,
            hosts,
            max_wait,
        }
    }

    /// Read-your-writes: waits until every event published up to and including the one at
    /// `min_position` is done in `projection` (under its watermark), bounded by the call's
    /// deadline and the server maximum; then UNAVAILABLE.
    ///
    /// One query when the read starts; after that it waits in memory on the batches this
    /// process commits (each says which positions it covered), and asks the database again
    /// only if it missed a batch or every [`RECHECK_EVERY`].
    pub async fn wait_for<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
    ) -> Result<(), Status> {
        if min_position == 0 {
            return Ok(());
        }
        let Some(hosted) = self.hosts.get(projection) else {
            tracing::error!(projection, "a query reads a projection that is not hosted");
            return Err(Status::internal("internal error"));
        };
        let position = i64::try_from(min_position).unwrap_or(i64::MAX);
        let wait = deadline(request).map_or(self.max_wait, |d| d.min(self.max_wait));
        let mut coverage = hosted.progress.coverage.clone();
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(wait, async {
            loop {
                let mut seen = coverage.borrow_and_update().batches;
                if watermark::covered(&self.pool, projection, position)
                    .await
                    .map_err(db)?
                {
                    return Ok::<(), Status>(());
                }
                let recheck = tokio::time::sleep(RECHECK_EVERY);
                tokio::pin!(recheck);
                loop {
                    tokio::select! {
                        changed = coverage.changed() => {
                            if changed.is_err() {
                                // The projector is gone: only the database can tell.
                                (&mut recheck).await;
                                break;
                            }
                            let latest = coverage.borrow_and_update();
                            if latest.positions.binary_search(&position).is_ok() {
                                return Ok(());
                            }
                            let missed = latest.batches != seen + 1;
                            seen = latest.batches;
                            if missed {
                                break;
                            }
                        }
                        () = &mut recheck => break,
                    }
                }
            }
        })
        .await;
        let outcome = if matches!(waited, Ok(Ok(()))) {
            "reached"
        } else {
            "not_reached"
        };
        metrics::histogram!("pizzeria_read_your_writes_wait_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match waited {
            Ok(result) => result,
            Err(_) => {
                let reached = watermark::position(&self.pool, projection)
                    .await
                    .map_err(db)?;
                Err(Status::unavailable(format!(
                    "projection {projection} has not reached position {min_position} yet (every \
                     event up to position {reached} in commit order is applied); retry later"
                )))
            }
        }
    }

    /// [`Self::wait_for`], for a read of one aggregate: once the position is reached, a stream
    /// held behind a dead letter answers UNAVAILABLE rather than a view that misses events
    /// the caller may have written (the hold lasts until an operator retries or skips the dead
    /// letter, so the message says so). Reads without `min_position` are not checked.
    pub async fn wait_for_aggregate<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
        tenant: Uuid,
        aggregate_type: &str,
        id: Uuid,
    ) -> Result<(), Status> {
        if min_position == 0 {
            return Ok(());
        }
        self.wait_for(request, projection, min_position).await?;
        let stream = shared::envelope::stream_id(aggregate_type, id);
        match dead_letters::held_at(&self.pool, projection, tenant, &stream)
            .await
            .map_err(db)?
        {
            None => Ok(()),
            Some(version) => Err(Status::unavailable(format!(
                "{aggregate_type} {id} is held at version {version}: that event could not be \
                 projected and waits in the dead letters, so its view is not current; retry \
                 after an operator retries or skips it (ProjectionAdminService)"
            ))),
        }
    }
}

/// The call's remaining time from its `grpc-timeout` header, if any.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let raw = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}
