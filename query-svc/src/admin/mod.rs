//! Operating the projection: its status and lag, resolving dead letters, rebuilding it.
//! `grpc::admin_service` is the gRPC face of this module.

pub mod health;
pub mod lag;
pub mod rebuild;

use prost::Message as _;
use shared::proto::v1 as pb;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    projection::event::stream_key,
    projector::streams::{Streams, Transient},
    store::{
        dead_letters::{self, DeadLetterRow},
        generations::{self, READ_MODEL},
        progress::{Batch, set_last_version},
    },
};
use lag::{Lag, LagProbe};
use rebuild::Rebuilder;

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
    streams: Streams,
    lag: LagProbe,
    consuming: watch::Receiver<bool>,
    rebuilder: Rebuilder,
}

impl Admin {
    pub fn new(
        pool: PgPool,
        streams: Streams,
        lag: LagProbe,
        consuming: watch::Receiver<bool>,
        rebuilder: Rebuilder,
    ) -> Self {
        Self {
            pool,
            streams,
            lag,
            consuming,
            rebuilder,
        }
    }

    pub fn rebuilder(&self) -> &Rebuilder {
        &self.rebuilder
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Status of every projection. An unreachable NATS leaves the lag unknown (zero) and the
    /// state STOPPED, since the projector cannot be consuming then either.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>, AdminError> {
        let rows = generations::projections(&self.pool).await?;
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT last_position FROM projector_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        let dead_letters = dead_letters::count_pending(&self.pool).await?;
        let rebuilding = generations::rebuild_running(&self.pool).await?;
        let measured = self.lag.measure().await;
        if let Err(error) = &measured {
            tracing::warn!(%error, "cannot measure projection lag");
        }
        let consuming = *self.consuming.borrow() && measured.is_ok();
        let lag = measured.unwrap_or_default();
        let state = if !consuming {
            State::Stopped
        } else if dead_letters > 0 {
            State::Stalled
        } else if lag.seconds > CATCHING_UP_AFTER_SECONDS {
            State::CatchingUp
        } else {
            State::Running
        };
        Ok(rows
            .into_iter()
            .map(|row| ProjectionStatus {
                row,
                state,
                checkpoint_position: checkpoint.unwrap_or(0),
                lag,
                dead_letters,
                rebuilding,
            })
            .collect())
    }

    /// Applies a dead-lettered event again, re-read from command-svc (so a fix of the event's
    /// data or of the projection's code both count), then the events held behind it.
    pub async fn retry(&self, id: i64) -> Result<Retried, AdminError> {
        let mut tx = self.pool.begin().await?;
        generations::hold_serving(&mut tx).await?;
        // One writer of the serving tables at a time: no deadlock with a projector batch over
        // the customer rows both touch.
        generations::hold_projector(&mut tx).await?;
        let (dead, record) = lock_pending(&mut tx, id).await?;
        dead_letters::resolve(&mut tx, id, "RETRIED", None).await?;
        let mut bookkeeping = Batch::new();
        self.streams
            .catch_up(&mut tx, &mut bookkeeping, &record)
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
                tracing::info!(id, event_id = %dead.event_id, "dead letter retried and applied");
                Ok(Retried::Applied)
            }
            Some((_, error)) => {
                // Failed again: forget this attempt, keep the original dead letter up to date.
                tx.rollback().await?;
                let mut tx = self.pool.begin().await?;
                dead_letters::failed_again(&mut tx, id, &error).await?;
                tx.commit().await?;
                let row = dead_letters::get(&self.pool, id)
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
        let mut tx = self.pool.begin().await?;
        generations::hold_serving(&mut tx).await?;
        // One writer of the serving tables at a time: no deadlock with a projector batch over
        // the customer rows both touch.
        generations::hold_projector(&mut tx).await?;
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
            .catch_up(&mut tx, &mut bookkeeping, &record)
            .await?;
        bookkeeping.flush(&mut tx).await?;
        tx.commit().await?;
        tracing::warn!(id, event_id = %dead.event_id, reason, "dead letter skipped");
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

/// The projection names the admin rpcs accept.
pub fn is_projection(name: &str) -> bool {
    name == READ_MODEL
}
