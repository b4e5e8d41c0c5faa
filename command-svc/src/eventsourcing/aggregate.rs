//! What an event-sourced aggregate is, to the write core: state folded from its events, and the
//! rules that decide which new events a command produces. Pure and synchronous.

use serde::{Serialize, de::DeserializeOwned};
use shared::events::DomainEvent;

/// An event-sourced aggregate: state built by folding its events, and the rules that decide
/// which new events a command produces.
pub trait Aggregate:
    Default + Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Stream category and `aggregate_type` column value. Stable forever.
    const TYPE: &'static str = <Self::Event as DomainEvent>::AGGREGATE_TYPE;

    /// Version of the serialized state. Bump it whenever the state's shape or meaning changes:
    /// snapshots taken under another version are ignored and the state is rebuilt from events.
    const STATE_SCHEMA_VERSION: u32;

    /// What a caller asks the aggregate to do.
    type Command: std::fmt::Debug + Send + Sync;
    /// What the aggregate records as having happened.
    type Event: DomainEvent;
    /// Why a command was refused.
    type Error: DomainError;

    /// Checks `command` against the current state. Returns the events to append (possibly none,
    /// for a command that changes nothing) or the rule it breaks.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event. Never fails: events are facts that already happened.
    fn evolve(self, event: &Self::Event) -> Self;

    /// Folds events onto the initial state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}

/// A domain refusal. Kept apart from storage failures: these are answers, not faults.
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// The command targets an aggregate that does not exist (gRPC `NOT_FOUND`);
    /// every other refusal is a broken business rule (`FAILED_PRECONDITION`).
    fn is_not_found(&self) -> bool;
}

/// Runs a command against a state the way the repository will: decide, then evolve with the
/// result. Returns the new state and the events.
pub fn execute<A: Aggregate>(
    state: A,
    command: &A::Command,
) -> Result<(A, Vec<A::Event>), A::Error> {
    let events = state.decide(command)?;
    let state = events.iter().fold(state, A::evolve);
    Ok((state, events))
}
