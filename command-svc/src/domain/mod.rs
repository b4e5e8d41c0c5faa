//! The write-side domain: pure, synchronous decisions over event-sourced state.
//!
//! Each aggregate lives in one file: its state, commands, `decide`, `evolve`, errors and tests,
//! implementing [`crate::eventsourcing::Aggregate`]. The event store, command handler and relay
//! know only that trait, so adding an aggregate means one domain file, its events in
//! `shared::events`, its proto messages and its entry in [`AGGREGATE_TYPES`].
//!
//! Nothing here touches a clock, a random number generator or I/O: the application layer puts
//! time and ids into the commands, which keeps `decide` and `evolve` deterministic and replayable.

pub mod customer;
pub mod order;
pub mod training_plan;

/// The aggregate types of this service's streams, registered with the event log at start-up
/// (EventLogService reads a stream of these types only).
pub const AGGREGATE_TYPES: &[&str] = &[
    <order::Order as Aggregate>::TYPE,
    <customer::Customer as Aggregate>::TYPE,
    <training_plan::TrainingPlan as Aggregate>::TYPE,
];

#[cfg(test)]
mod properties;

use crate::eventsourcing::Aggregate;
