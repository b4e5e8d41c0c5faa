//! The application layer: runs a command against an aggregate loaded from the store.
//!
//! load (snapshot + tail) → decide → append with the loaded version as the expected one. A
//! conflict is retried (bounded) when the client sent no expected version. A command id makes the
//! whole thing idempotent: the stored reply comes back and nothing is appended.

use std::sync::Arc;

use shared::{
    envelope::{EventMetadata, stream_id},
    events::{DomainEvent, EncodedEvent},
    values::{CommandId, TenantId},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{Aggregate, DomainError},
    store::{
        Append, AppendOutcome, Appended, CommandRecord, EventStore, ProcessedCommand, Session,
        StoreError,
    },
};

/// Why a command did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A business rule refused the command (the message names it).
    #[error("{message}")]
    Rejected { message: String, not_found: bool },
    #[error("stream is at version {actual}, not the expected {expected}")]
    Conflict { expected: u64, actual: u64 },
    #[error("command id reused for a different command")]
    CommandIdReused,
    #[error("database unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict {
                expected, actual, ..
            } => AppError::Conflict { expected, actual },
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                AppError::Unavailable
            }
            StoreError::Database(source) => {
                tracing::error!(error = %source, "database error");
                AppError::Internal
            }
        }
    }
}

/// Who sends the command and how it must be applied.
#[derive(Debug, Clone)]
pub struct CommandContext<'a> {
    pub tenant: TenantId,
    pub command_id: Option<CommandId>,
    pub expected_version: Option<u64>,
    /// The rpc name and encoded request: a retry with the same command id must match both.
    pub rpc: &'static str,
    pub request: &'a [u8],
    pub metadata: EventMetadata,
}

/// The reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub aggregate_id: Uuid,
    pub version: u64,
    pub position: u64,
    pub replayed: bool,
    pub events_appended: u32,
}

/// Runs commands. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    store: EventStore,
    snapshot_every: u64,
    max_conflict_retries: u32,
    appended: Arc<Notify>,
}

impl CommandHandler {
    /// `appended` is notified after every commit, so the relay wakes at once.
    pub fn new(store: EventStore, snapshot_every: u64, appended: Arc<Notify>) -> Self {
        Self {
            store,
            snapshot_every: snapshot_every.max(1),
            max_conflict_retries: 5,
            appended,
        }
    }

    /// Loads an aggregate: the latest snapshot of the current state schema, plus the events after it.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, %id), err(Debug))]
    pub async fn load<A: Aggregate>(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(A, u64), AppError> {
        let mut session = self.store.session(tenant.as_uuid()).await?;
        let loaded = load_in::<A>(&mut session, &stream_id(A::TYPE, id)).await?;
        session.commit().await?;
        Ok(loaded)
    }

    /// Runs `command` against aggregate `id`: idempotency check, load, decide and append in
    /// one transaction (one connection, one BEGIN/COMMIT), retried on a version conflict.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, %id, rpc = ctx.rpc), err(Debug))]
    pub async fn execute<A: Aggregate>(
        &self,
        ctx: &CommandContext<'_>,
        id: Uuid,
        command: &A::Command,
    ) -> Result<CommandOutcome, AppError> {
        let tenant = ctx.tenant.as_uuid();
        let stream = stream_id(A::TYPE, id);
        let mut attempt = 0;
        loop {
            let mut session = self.store.session(tenant).await?;
            if let Some(command_id) = ctx.command_id {
                if let Some(done) = session.processed_command(command_id.as_uuid()).await? {
                    return replay(ctx, done);
                }
            }
            let (state, version) = load_in::<A>(&mut session, &stream).await?;
            if let Some(expected) = ctx.expected_version {
                if expected != version {
                    return Err(AppError::Conflict {
                        expected,
                        actual: version,
                    });
                }
            }
            let events = state.decide(command).map_err(|error| AppError::Rejected {
                message: error.to_string(),
                not_found: error.is_not_found(),
            })?;
            if events.is_empty() {
                let position = session.last_position(&stream).await?;
                session.commit().await?;
                return Ok(CommandOutcome {
                    aggregate_id: id,
                    version,
                    position: u64::try_from(position).unwrap_or(0),
                    replayed: false,
                    events_appended: 0,
                });
            }
            let encoded: Vec<EncodedEvent> = events.iter().map(DomainEvent::encode).collect();
            let append = Append {
                tenant_id: tenant,
                aggregate_type: A::TYPE,
                aggregate_id: id,
                stream_id: &stream,
                expected_version: version,
                events: &encoded,
                metadata: &ctx.metadata,
                command: ctx.command_id.map(|c| CommandRecord {
                    command_id: c.as_uuid(),
                    rpc: ctx.rpc,
                    request: ctx.request,
                }),
            };
            match session.append(&append).await? {
                Appended::Committable {
                    version: new_version,
                    position,
                } => {
                    session.commit().await?;
                    self.appended.notify_one();
                    if new_version / self.snapshot_every > version / self.snapshot_every {
                        let state = events.iter().fold(state, A::evolve);
                        self.snapshot_in_background::<A>(tenant, stream, new_version, state);
                    }
                    return Ok(CommandOutcome {
                        aggregate_id: id,
                        version: new_version,
                        position: u64::try_from(position).unwrap_or(0),
                        replayed: false,
                        events_appended: u32::try_from(events.len()).unwrap_or(u32::MAX),
                    });
                }
                Appended::CommandAlreadyRecorded(command_id) => {
                    drop(session);
                    return match self.store.already_processed(tenant, command_id).await? {
                        AppendOutcome::AlreadyProcessed(done) => replay(ctx, done),
                        AppendOutcome::Appended { .. } => Err(AppError::Internal),
                    };
                }
                Appended::Conflict { actual }
                    if ctx.expected_version.is_none() && attempt < self.max_conflict_retries =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, actual, "version conflict, reloading");
                }
                Appended::Conflict { actual } => {
                    return Err(AppError::Conflict {
                        expected: version,
                        actual,
                    });
                }
            }
        }
    }

    /// Snapshots are a cache: taken after the reply, failures only logged.
    fn snapshot_in_background<A: Aggregate>(
        &self,
        tenant: Uuid,
        stream: String,
        version: u64,
        state: A,
    ) {
        let store = self.store.clone();
        tokio::spawn(async move {
            let Ok(state) = serde_json::to_value(&state) else {
                return;
            };
            if let Err(error) = store
                .save_snapshot(tenant, &stream, A::STATE_SCHEMA_VERSION, version, &state)
                .await
            {
                tracing::warn!(%error, stream, version, "snapshot not saved");
            }
        });
    }
}

/// The stored reply if the request is the same one; otherwise the id was reused.
fn replay(ctx: &CommandContext<'_>, done: ProcessedCommand) -> Result<CommandOutcome, AppError> {
    if done.rpc != ctx.rpc || done.request != ctx.request {
        return Err(AppError::CommandIdReused);
    }
    Ok(CommandOutcome {
        aggregate_id: done.aggregate_id,
        version: u64::try_from(done.stream_version).unwrap_or(0),
        position: u64::try_from(done.global_position).unwrap_or(0),
        replayed: true,
        events_appended: 0,
    })
}

/// Loads an aggregate inside `session`: the latest snapshot of the current state schema, plus
/// the events after it, a page at a time (a short page is the last).
async fn load_in<A: Aggregate>(session: &mut Session, stream: &str) -> Result<(A, u64), AppError> {
    const PAGE: u32 = 1000;
    let (mut state, mut version) = match session
        .load_snapshot(stream, A::STATE_SCHEMA_VERSION)
        .await?
    {
        Some(snapshot) => match serde_json::from_value::<A>(snapshot.state) {
            Ok(state) => (state, u64::try_from(snapshot.stream_version).unwrap_or(0)),
            // An unreadable snapshot is only a cache miss: rebuild from the events.
            Err(error) => {
                tracing::warn!(%error, stream, "ignoring unreadable snapshot");
                (A::default(), 0)
            }
        },
        None => (A::default(), 0),
    };
    loop {
        let page = session.read_stream(stream, version + 1, PAGE).await?;
        let full_page = page.len() >= PAGE as usize;
        for stored in page {
            let event = A::Event::decode(
                &stored.event_type,
                u32::try_from(stored.schema_version).unwrap_or(0),
                stored.payload,
            )
            .map_err(|error| {
                tracing::error!(%error, stream, version = stored.stream_version, "undecodable event");
                AppError::Internal
            })?;
            state = state.evolve(&event);
            version = u64::try_from(stored.stream_version).unwrap_or(version);
        }
        if !full_page {
            return Ok((state, version));
        }
    }
}
