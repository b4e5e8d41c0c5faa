//! Domain events: the contract between the write side and every reader of the log.
//!
//! Each event has a stable type name (the `event_type` column, never renamed) and a schema version.
//! Changing a stored shape means a new version plus an upcasting step in [`upcasters`], never an
//! edit of the old shape. Every read path (aggregate load, snapshots rebuilt from events,
//! projections, rebuilds) decodes through [`DomainEvent::decode`], so every path upcasts.

mod customer;
mod order;
mod training_plan;
pub mod upcasters;

pub use customer::*;
pub use order::*;
pub use training_plan::*;

use chrono::{DateTime, Utc};

use crate::upcasting::UpcastError;

/// Why a stored event could not be turned into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {event_type:?} for aggregate {aggregate_type:?}")]
    UnknownType {
        aggregate_type: &'static str,
        event_type: String,
    },
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    #[error("payload of {event_type} v{schema_version} does not match its schema: {source}")]
    Payload {
        event_type: String,
        schema_version: u32,
        #[source]
        source: serde_json::Error,
    },
}

/// Stored form of one event, as the event table and the NATS message carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: &'static str,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

/// The events of one aggregate type, encodable to and decodable from their stored form.
pub trait DomainEvent: Sized + Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The aggregate type whose streams hold these events (`aggregate_type` column).
    const AGGREGATE_TYPE: &'static str;

    /// The stable type name, e.g. `OrderPlaced`.
    fn event_type(&self) -> &'static str;

    /// The business time of the fact (supplied by the command, not read from a clock here).
    fn occurred_at(&self) -> DateTime<Utc>;

    /// The current stored form.
    fn encode(&self) -> EncodedEvent;

    /// Reads a stored event of any known schema version, upcasting old shapes first.
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: serde_json::Value,
    ) -> Result<Self, EventDecodeError>;
}

/// Declares an event enum whose variants each wrap one payload struct, with its stable name and
/// current schema version, and implements [`DomainEvent`] for it.
macro_rules! domain_events {
    (
        $(#[$doc:meta])*
        pub enum $enum:ident for $aggregate:literal upcast by ($upcasters:expr) {
            $( $(#[$vdoc:meta])* $variant:ident($payload:ident) = $name:literal v $version:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $( $(#[$vdoc])* $variant($payload), )+
        }

        impl $enum {
            /// Every (type name, current schema version) of this enum.
            pub const TYPES: &'static [(&'static str, u32)] = &[$( ($name, $version), )+];
        }

        impl crate::events::DomainEvent for $enum {
            const AGGREGATE_TYPE: &'static str = $aggregate;

            fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )+ }
            }

            fn occurred_at(&self) -> chrono::DateTime<chrono::Utc> {
                match self { $( Self::$variant(e) => crate::events::OccurredAt::occurred_at(e), )+ }
            }

            fn encode(&self) -> crate::events::EncodedEvent {
                let (event_type, schema_version, payload) = match self {
                    $( Self::$variant(e) => ($name, $version, serde_json::to_value(e)), )+
                };
                crate::events::EncodedEvent {
                    event_type,
                    schema_version,
                    // Plain structs of strings, numbers and timestamps always serialize.
                    payload: payload.unwrap_or(serde_json::Value::Null),
                }
            }

            fn decode(
                event_type: &str,
                schema_version: u32,
                payload: serde_json::Value,
            ) -> Result<Self, crate::events::EventDecodeError> {
                match event_type {
                    $( $name => {
                        let payload =
                            $upcasters.upcast(event_type, schema_version, $version, payload)?;
                        serde_json::from_value(payload).map(Self::$variant).map_err(|source| {
                            crate::events::EventDecodeError::Payload {
                                event_type: event_type.to_owned(),
                                schema_version,
                                source,
                            }
                        })
                    } )+
                    _ => Err(crate::events::EventDecodeError::UnknownType {
                        aggregate_type: $aggregate,
                        event_type: event_type.to_owned(),
                    }),
                }
            }
        }
    };
}
pub(crate) use domain_events;

/// Helper so the macro can ask any payload for its business time.
trait OccurredAt {
    fn occurred_at(&self) -> DateTime<Utc>;
}

macro_rules! occurred_at {
    ($($payload:ident => $field:ident),+ $(,)?) => {
        $(impl crate::events::OccurredAt for $payload {
            fn occurred_at(&self) -> chrono::DateTime<chrono::Utc> {
                self.$field
            }
        })+
    };
}
pub(crate) use occurred_at;
