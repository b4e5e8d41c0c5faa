//! The application layer: runs a command against an aggregate loaded from the store.
//!
//! load (snapshot + tail) → decide → append with the loaded version as the expected one. A
//! conflict is retried (bounded) when the client sent no expected version. A command id makes the
//! whole thing idempotent: the stored reply comes back and nothing is appended.

use std::{sync::Arc, time::Instant};

use shared::{
    envelope::{EventMetadata, stream_id},
    events::{DomainEvent, EncodedEvent},
    values::{CommandId, TenantId},
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    aggregate::{Aggregate, DomainError},
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
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, %id), err(level = "info"))]
    pub async fn load<A: Aggregate>(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(A, u64), AppError> {
        let mut session = self.store.session(tenant.as_uuid()).await?;
        let loaded = load_in::<A>(&mut session, &stream_id(A::TYPE, id), None).await?;
        session.end_read_only();
        match loaded {
            Load::State(state, version) => Ok((state, version)),
            Load::AlreadyProcessed(_) => Err(AppError::Internal),
        }
    }

    /// Runs `command` against aggregate `id`: idempotency check, load, decide and append in
    /// one transaction (one connection, one BEGIN/COMMIT), retried on a version conflict.
    /// Counts the outcome in `pizzeria_commands_total{command, outcome}`.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, %id, rpc = ctx.rpc), err(level = "info"))]
    pub async fn execute<A: Aggregate>(
        &self,
        ctx: &CommandContext<'_>,
        id: Uuid,
        command: &A::Command,
    ) -> Result<CommandOutcome, AppError> {
        let result = self.try_execute::<A>(ctx, id, command).await;
        let outcome = match &result {
            Ok(done) if done.replayed => "replayed",
            Ok(done) if done.events_appended == 0 => "unchanged",
            Ok(done) => {
                metrics::counter!("pizzeria_events_appended_total", "aggregate" => A::TYPE)
                    .increment(u64::from(done.events_appended));
                "accepted"
            }
            Err(AppError::Rejected { .. }) => "rejected",
            Err(AppError::Conflict { .. }) => "conflict",
            Err(AppError::CommandIdReused) => "command_id_reused",
            Err(AppError::Unavailable) => "unavailable",
            Err(AppError::Internal) => "error",
        };
        metrics::counter!("pizzeria_commands_total", "command" => ctx.rpc, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn try_execute<A: Aggregate>(
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
            let command_id = ctx.command_id.map(|c| c.as_uuid());
            let (state, version) = match load_in::<A>(&mut session, &stream, command_id).await? {
                Load::AlreadyProcessed(done) => return replay(ctx, done),
                Load::State(state, version) => (state, version),
            };
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
                session.end_read_only();
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
            let appending = Instant::now();
            match session.append(&append).await? {
                Appended::Committable {
                    version: new_version,
                    position,
                } => {
                    session.commit().await?;
                    metrics::histogram!("pizzeria_append_duration_seconds")
                        .record(appending.elapsed().as_secs_f64());
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
                    metrics::counter!("pizzeria_optimistic_conflicts_total", "retried" => "true")
                        .increment(1);
                    attempt += 1;
                    tracing::debug!(attempt, actual, "version conflict, reloading");
                }
                Appended::Conflict { actual } => {
                    metrics::counter!("pizzeria_optimistic_conflicts_total", "retried" => "false")
                        .increment(1);
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

/// What [`load_in`] found.
enum Load<A> {
    /// The command id already ran: its stored reply.
    AlreadyProcessed(ProcessedCommand),
    /// The aggregate's state and version.
    State(A, u64),
}

/// Loads an aggregate inside `session`: the latest snapshot of the current state schema, plus
/// the events after it. The first page comes in one round trip with the snapshot and, given a
/// command id, its stored reply; a full page means there may be more.
async fn load_in<A: Aggregate>(
    session: &mut Session,
    stream: &str,
    command_id: Option<Uuid>,
) -> Result<Load<A>, AppError> {
    const PAGE: u32 = 1000;
    let loaded = session
        .load(stream, A::STATE_SCHEMA_VERSION, command_id, PAGE)
        .await?;
    if let Some(done) = loaded.processed {
        return Ok(Load::AlreadyProcessed(done));
    }
    let mut page = loaded.events;
    let (mut state, mut version) = match loaded.snapshot {
        Some(snapshot) => match serde_json::from_value::<A>(snapshot.state) {
            Ok(state) => (state, u64::try_from(snapshot.stream_version).unwrap_or(0)),
            // An unreadable snapshot is only a cache miss: rebuild from the events.
            Err(error) => {
                tracing::warn!(%error, stream, "ignoring unreadable snapshot");
                page = session.read_stream(stream, 1, PAGE).await?;
                (A::default(), 0)
            }
        },
        None => (A::default(), 0),
    };
    loop {
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
            return Ok(Load::State(state, version));
        }
        page = session.read_stream(stream, version + 1, PAGE).await?;
    }
}
