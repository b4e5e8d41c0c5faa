//! Operating the projections: their status and lag, resolving dead letters, rebuilding them.
//! `grpc::admin_service` is the gRPC face of this module. Generic: every projection the
//! runtime hosts is operated the same way, by name.

pub mod health;

use prost::Message as _;
use shared::proto::v1 as pb;
use sqlx::PgPool;

use crate::runtime::{
    dead_letters::{self, DeadLetterRow},
    generations,
    host::{Hosted, Hosts},
    lag::{Lag, LagProbe},
    progress::{Batch, set_last_version},
    rebuild::{RebuildError, RebuildStarted, Rebuilder},
    stream_key,
    streams::{Streams, Transient},
    watermark,
};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("command-svc: {0}")]
    CommandSvc(String),
}

impl From<RebuildError> for AdminError {
    fn from(error: RebuildError) -> Self {
        match error {
            RebuildError::Transient(error) => error.into(),
            error @ (RebuildError::NotMigrated(_) | RebuildError::SwapRefused) => {
                Self::FailedPrecondition(error.to_string())
            }
        }
    }
}

impl From<Transient> for AdminError {
    fn from(error: Transient) -> Self {
        match error {
            Transient::Database(error) => Self::Database(error),
            Transient::Backfill(message) => Self::CommandSvc(message),
            Transient::StreamMoved(message) => Self::FailedPrecondition(message),
        }
    }
}

/// What the projection is doing, as ListProjections reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    CatchingUp,
    Stalled,
    Stopped,
}

/// A backlog whose oldest event is older than this counts as catching up rather than running.
const CATCHING_UP_AFTER_SECONDS: f64 = 1.0;

/// One projection's status.
#[derive(Debug, Clone)]
pub struct ProjectionStatus {
    pub row: generations::ProjectionRow,
    pub state: State,
    pub checkpoint_position: i64,
    pub lag: Lag,
    pub dead_letters: i64,
    pub rebuilding: bool,
}

/// The outcome of a retry.
#[derive(Debug)]
pub enum Retried {
    Applied,
    FailedAgain(Box<DeadLetterRow>),
}

#[derive(Debug, Clone)]
pub struct Admin {
    pool: PgPool,
    hosts: Hosts,
    streams: Streams,
    lag: LagProbe,
    rebuilder: Rebuilder,
}

impl Admin {
    pub fn new(
        pool: PgPool,
        hosts: Hosts,
        streams: Streams,
        lag: LagProbe,
        rebuilder: Rebuilder,
    ) -> Self {
        Self {
            pool,
            hosts,
            streams,
            lag,
            rebuilder,
        }
    }

    /// Whether `name` is a projection this service hosts.
    pub fn is_projection(&self, name: &str) -> bool {
        self.hosts.get(name).is_some()
    }

    fn hosted(&self, name: &str) -> Result<&Hosted, AdminError> {
        self.hosts
            .get(name)
            .ok_or_else(|| AdminError::NotFound(format!("projection {name:?} not found")))
    }

    /// Starts rebuilding projection `name` (see [`Rebuilder::start`]).
    pub async fn rebuild(&self, name: &str) -> Result<RebuildStarted, AdminError> {
        let hosted = self.hosted(name)?;
        Ok(self.rebuilder.start(hosted.projection.clone()).await?)
    }

    /// Unresolved dead letters with id > `after`, oldest first, of projection `only` or of all.
    pub async fn dead_letters(
        &self,
        only: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<DeadLetterRow>, AdminError> {
        let names: Vec<&str> = match only {
            Some(name) => vec![self.hosted(name)?.projection.name()],
            None => self.names(),
        };
        Ok(dead_letters::pending(&self.pool, &names, after, limit).await?)
    }

    fn names(&self) -> Vec<&'static str> {
        self.hosts.iter().map(|h| h.projection.name()).collect()
    }

    /// The projection holding dead letter `id`.
    async fn owner(&self, id: i64) -> Result<&Hosted, AdminError> {
        let names = self.names();
        let name = dead_letters::owner(&self.pool, &names, id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("dead letter {id} not found")))?;
        self.hosted(name)
    }

    /// Status of every projection, ordered by name. An unreachable NATS leaves the lag
    /// unknown (zero) and the state STOPPED, since the projectors cannot be consuming then
    /// either.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>, AdminError> {
        let rows = generations::projections(&self.pool).await?;
        // One consumer feeds every projection: one measurement is each one's lag.
        let measured = self.lag.measure().await;
        if let Err(error) = &measured {
            tracing::warn!(%error, "cannot measure projection lag");
        }
        let consumer_lag = measured.as_ref().copied().unwrap_or_default();
        let mut statuses = Vec::with_capacity(rows.len());
        for row in rows {
            // A row of a projection this version does not host (a rollback) is not listed.
            let Some(hosted) = self.hosts.get(&row.name) else {
                continue;
            };
            let name = hosted.projection.name();
            let checkpoint = watermark::position(&self.pool, name).await?;
            let lag = consumer_lag.of_projection(&self.pool, name).await?;
            let dead_letters = dead_letters::count_pending(&self.pool, name).await?;
            let rebuilding = generations::rebuild_running(&self.pool, name).await?;
            let consuming = *hosted.progress.consuming.borrow() && measured.is_ok();
            let state = if !consuming {
                State::Stopped
            } else if dead_letters > 0 {
                State::Stalled
            } else if lag.seconds > CATCHING_UP_AFTER_SECONDS {
                State::CatchingUp
            } else {
                State::Running
            };
            statuses.push(ProjectionStatus {
                row,
                state,
                checkpoint_position: checkpoint,
                lag,
                dead_letters,
                rebuilding,
            });
        }
        Ok(statuses)
    }

    /// Applies a dead-lettered event again, re-read from command-svc (so a fix of the event's
    /// data or of the projection's code both count), then the events held behind it.
    pub async fn retry(&self, id: i64) -> Result<Retried, AdminError> {
        let projection = self.owner(id).await?.projection.as_ref();
        let name = projection.name();
        let mut tx = self.pool.begin().await?;
        // One writer of the serving tables at a time: no deadlock with a projector batch over
        // the rows both touch.
        generations::enter_serving(&mut tx, name).await?;
        let (dead, record) = lock_pending(&mut tx, id).await?;
        dead_letters::resolve(&mut tx, id, "RETRIED", None).await?;
        let mut bookkeeping = Batch::new();
        self.streams
            .catch_up(&mut tx, projection, &mut bookkeeping, &record)
            .await?;
        bookkeeping.flush(&mut tx).await?;
        let Some((tenant, stream, version)) = stream_key(&record) else {
            return Err(AdminError::FailedPrecondition(
                "the dead letter's event has no valid stream".into(),
            ));
        };
        match dead_letters::pending_at(&mut tx, &stream, version, tenant).await? {
            None => {
                tx.commit().await?;
                tracing::info!(
                    id,
                    projection = name,
                    event_id = %dead.event_id,
                    "dead letter retried and applied"
                );
                Ok(Retried::Applied)
            }
            Some((_, error)) => {
                // Failed again: forget this attempt, keep the original dead letter up to date.
                tx.rollback().await?;
                let mut tx = self.pool.begin().await?;
                generations::enter_serving(&mut tx, name).await?;
                dead_letters::failed_again(&mut tx, id, &error).await?;
                tx.commit().await?;
                let row = dead_letters::get(&self.pool, name, id)
                    .await?
                    .ok_or_else(|| AdminError::NotFound(format!("dead letter {id} not found")))?;
                Ok(Retried::FailedAgain(Box::new(row)))
            }
        }
    }

    /// Gives up on a dead-lettered event: its stream continues after it. (Its position is under
    /// the watermark already, or will be once the projector reaches it: a dead letter never
    /// holds the watermark back.)
    pub async fn skip(&self, id: i64, reason: &str) -> Result<(), AdminError> {
        let projection = self.owner(id).await?.projection.as_ref();
        let name = projection.name();
        let mut tx = self.pool.begin().await?;
        // One writer of the serving tables at a time: no deadlock with a projector batch over
        // the rows both touch.
        generations::enter_serving(&mut tx, name).await?;
        let (dead, record) = lock_pending(&mut tx, id).await?;
        let Some((tenant, stream, version)) = stream_key(&record) else {
            return Err(AdminError::FailedPrecondition(
                "the dead letter's event has no valid stream".into(),
            ));
        };
        dead_letters::resolve(&mut tx, id, "SKIPPED", Some(reason)).await?;
        set_last_version(&mut tx, tenant, &stream, version).await?;
        let mut bookkeeping = Batch::new();
        self.streams
            .catch_up(&mut tx, projection, &mut bookkeeping, &record)
            .await?;
        bookkeeping.flush(&mut tx).await?;
        tx.commit().await?;
        tracing::warn!(id, projection = name, event_id = %dead.event_id, reason, "dead letter skipped");
        Ok(())
    }
}

/// Locks dead letter `id` and checks that it is unresolved.
async fn lock_pending(
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<(DeadLetterRow, pb::EventRecord), AdminError> {
    let dead = dead_letters::lock(conn, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("dead letter {id} not found")))?;
    if dead.status != "PENDING" {
        return Err(AdminError::FailedPrecondition(format!(
            "dead letter {id} is already resolved ({})",
            dead.status.to_lowercase()
        )));
    }
    let record = pb::EventRecord::decode(dead.record.as_slice()).map_err(|_| {
        AdminError::FailedPrecondition(format!("dead letter {id} holds no readable event"))
    })?;
    Ok((dead, record))
}
