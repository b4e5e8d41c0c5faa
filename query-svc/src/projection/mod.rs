//! Pure projection logic: how events change the read models, with no I/O. The store applies the
//! results in one transaction per batch; tests run these folds in memory.
//!
//! - [`event`]: an event as it arrives (from JetStream or command-svc's ReadStream), decoded.
//! - [`order_view`]: the denormalized order view, folded event by event (and kept per version
//!   for as-of queries).
//! - [`customer_view`]: customer figures.
//! - [`timeline`]: a readable line per order event.
//! - [`analytics`]: what one order contributes to its day's sales.

pub mod analytics;
pub mod customer_view;
pub mod event;
pub mod order_view;
pub mod page;
pub mod timeline;

/// An event a projection cannot apply: a deterministic failure that retrying the same event
/// will not fix (the event goes to the dead letters after bounded retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProjectionError(pub String);
