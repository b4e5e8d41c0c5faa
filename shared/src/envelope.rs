//! What travels with every event besides its payload: where it sits in the log and why it happened.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why and by whom an event was recorded. Stored as the `metadata` JSONB column and carried to
/// readers, so a timeline can say who did what, under which command and trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The command that produced the event (the client's idempotency key, or a server-made one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Shared by every event that one user action caused, across services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Who issued the command (token subject, or `anonymous` with auth disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// W3C trace context of the call that appended the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The stream id of an aggregate instance: `<aggregate_type>-<uuid>`, e.g. `order-0190…`.
pub fn stream_id(aggregate_type: &str, aggregate_id: Uuid) -> String {
    format!("{aggregate_type}-{aggregate_id}")
}

/// Headers the relay puts on every JetStream message. The body is the protobuf
/// `pizzeria.v1.EventRecord`; the headers repeat what a reader needs without decoding it, and
/// `Es-Txid`/`Es-Pos` are the relay's own checkpoint: it resumes after the last message's pair.
pub mod headers {
    /// The event id. Deliberately not `Nats-Msg-Id`: the relay's `Nats-Expected-Last-Sequence`
    /// already refuses every publish but the next one, and a "duplicate" acknowledgement would
    /// let the relay move its cursor while the stream did not move.
    pub const EVENT_ID: &str = "Es-Event-Id";
    pub const TENANT: &str = "Es-Tenant";
    pub const STREAM: &str = "Es-Stream";
    pub const VERSION: &str = "Es-Version";
    pub const POSITION: &str = "Es-Pos";
    pub const TRANSACTION_ID: &str = "Es-Txid";
    /// `Es-Prev-Txid`/`Es-Prev-Pos`: the event published just before this one, in the relay's
    /// commit order (`0`/`0` before the first). A consumer that has applied exactly that event
    /// knows it has missed nothing in between; any other value is a gap to fill from the log.
    pub const PREVIOUS_TRANSACTION_ID: &str = "Es-Prev-Txid";
    pub const PREVIOUS_POSITION: &str = "Es-Prev-Pos";
    pub const EVENT_TYPE: &str = "Es-Type";
    pub const SCHEMA_VERSION: &str = "Es-Schema-Version";
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Value of [`CONTENT_TYPE`].
    pub const EVENT_RECORD_CONTENT_TYPE: &str =
        "application/protobuf; proto=pizzeria.v1.EventRecord";
}

/// The NATS subject of an event: `<prefix>.<tenant>.<aggregate_type>.<aggregate_id>`, so a
/// consumer can filter by tenant or aggregate type with wildcards. Uuids and the fixed aggregate
/// type names contain no `.`, `*` or `>`, so no token can widen a subscription.
pub fn event_subject(
    prefix: &str,
    tenant_id: Uuid,
    aggregate_type: &str,
    aggregate_id: Uuid,
) -> String {
    format!("{prefix}.{tenant_id}.{aggregate_type}.{aggregate_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_metadata_serializes_to_an_empty_object_and_back() {
        let json = serde_json::to_value(EventMetadata::default()).unwrap();
        assert_eq!(json, serde_json::json!({}));
        let full = EventMetadata {
            command_id: Some(Uuid::nil()),
            correlation_id: Some("c".into()),
            causation_id: Some("k".into()),
            actor: Some("ada".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let back: EventMetadata =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        assert_eq!(
            stream_id("order", Uuid::nil()),
            "order-00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            event_subject("pizzeria.events", Uuid::nil(), "order", Uuid::max()),
            "pizzeria.events.00000000-0000-0000-0000-000000000000.order.ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
    }
}
