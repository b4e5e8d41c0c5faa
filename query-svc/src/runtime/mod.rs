//! The projection runtime: everything that turns the event log into read tables without knowing
//! what the events mean. A read model implements [`Projection`] (the events it handles, the
//! tables it owns, how it applies a page of events) and is registered by name at start-up; the
//! runtime gives each one its own durable consumer, watermark, per-stream progress, dead letters,
//! generation and zero-downtime rebuild.
//!
//! - [`consumer`]: the durable JetStream consumer of one projection, a batch per transaction.
//! - [`page`]: a page of events handed to a projection, in a savepoint, versions checked.
//! - [`run`]: a batch laid out in commit order after the watermark, gaps filled from the log.
//! - [`streams`]: per stream, versions applied strictly in order; hole fills and dead letters.
//! - [`progress`], [`watermark`], [`dead_letters`]: the bookkeeping each projection keeps beside
//!   its tables.
//! - [`host`]: the projections a process hosts, with their projectors' progress.
//! - [`lag`]: how far a projection is behind the head of the log, on JetStream.
//! - [`generations`]: where a projection's tables live (its own schema), the locks, the swap.
//! - [`rebuild`]: a new generation filled from the log while the old one serves.
//!
//! Each projection's tables, bookkeeping included, live in a Postgres schema named after it. A
//! projection's code uses unqualified table names; the runtime points `search_path` at the
//! serving schema or at a rebuild's.

pub mod consumer;
pub mod dead_letters;
pub mod generations;
pub mod host;
pub mod lag;
pub mod page;
pub mod progress;
pub mod rebuild;
pub mod run;
pub mod streams;
pub mod watermark;

use std::{any::Any, fmt, sync::Arc};

use futures::future::BoxFuture;
use shared::proto::v1 as pb;
use sqlx::PgConnection;

/// An event a projection cannot apply: a deterministic failure that retrying the same event
/// will not fix (the event goes to the dead letters after bounded retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProjectionError(pub String);

/// What a projection hands itself from an applied page to [`Projection::committed`] once the
/// transaction commits (for example, the views that changed, for live watchers). Opaque to
/// the runtime.
pub type Changes = Box<dyn Any + Send>;

/// A read model the runtime hosts.
///
/// `apply` is given events in commit order, each its stream's next version (the runtime has
/// checked versions, holds and duplicates). It loads the rows they touch, folds the events in
/// memory and writes each table once, using unqualified table names: the runtime has pointed
/// `search_path` at the generation being written, and runs it in a savepoint of the batch's
/// transaction. `Ok(Err(_))` means an event cannot be applied (nothing it wrote counts); the
/// runtime then applies the page event by event, each a page of one, to find the event and
/// dead-letter it. A database error that is not transient counts as the event's fault too.
pub trait Projection: fmt::Debug + Send + Sync + 'static {
    /// Its name: the schema of its tables, part of its consumer's name, what the admin rpcs
    /// take. Lowercase ASCII letters, digits and underscores, starting with a letter.
    fn name(&self) -> &'static str;

    /// The aggregate types whose events it applies. Events of other types pass its watermark
    /// untouched.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// The tables it owns in its schema (created by its migrations): what a rebuild copies and
    /// swaps, beside the runtime's own bookkeeping tables.
    fn tables(&self) -> &'static [&'static str];

    /// Applies a page of events; see the trait's documentation.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [&'a pb::EventRecord],
    ) -> BoxFuture<'a, Result<Result<Changes, ProjectionError>, sqlx::Error>>;

    /// Called with what each `apply` of a committed projector batch returned, in commit order.
    /// Not called for a rebuild's pages (nothing watches a generation that does not serve).
    fn committed(&self, changes: Vec<Changes>) {
        let _ = changes;
    }

    /// Whether it applies events of this aggregate type.
    fn handles(&self, aggregate_type: &str) -> bool {
        self.aggregate_types().contains(&aggregate_type)
    }
}

/// The projections of a service, by name, in the order registered.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    projections: Vec<Arc<dyn Projection>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a projection. Panics at start-up on a name that is not a valid schema name or is
    /// taken: a programming error, not input.
    #[must_use]
    pub fn with(mut self, projection: Arc<dyn Projection>) -> Self {
        let name = projection.name();
        assert!(
            generations::is_valid_name(name),
            "projection name {name:?} must be lowercase letters, digits and underscores"
        );
        assert!(
            self.get(name).is_none(),
            "projection {name:?} registered twice"
        );
        self.projections.push(projection);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Projection>> {
        self.projections.iter().find(|p| p.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Projection>> {
        self.projections.iter()
    }
}

/// The stream a record belongs to, readable before its payload is decoded: `(tenant, stream,
/// version)`. None for a record no stream can hold (the relay never publishes one).
pub fn stream_key(record: &pb::EventRecord) -> Option<(uuid::Uuid, String, i64)> {
    Some((
        uuid::Uuid::try_parse(&record.tenant_id).ok()?,
        record.stream_id.clone(),
        i64::try_from(record.stream_version).ok()?,
    ))
}
