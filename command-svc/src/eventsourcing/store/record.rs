//! The wire form of a stored event, shared by `EventLogService.ReadAll` and the relay, so the
//! query side decodes one message type whether it reads the log over gRPC or from JetStream.

use shared::{envelope::EventMetadata, proto::v1 as pb};

use super::StoredEvent;

impl StoredEvent {
    /// The event as a `pizzeria.v1.EventRecord`.
    pub fn into_record(self) -> pb::EventRecord {
        let event = self;
        let metadata: EventMetadata = serde_json::from_value(event.metadata).unwrap_or_default();
        pb::EventRecord {
            global_position: u64::try_from(event.global_position).unwrap_or(0),
            transaction_id: event.transaction_id.0,
            tenant_id: event.tenant_id.to_string(),
            stream_id: event.stream_id,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id.to_string(),
            stream_version: u64::try_from(event.stream_version).unwrap_or(0),
            event_id: event.event_id.to_string(),
            event_type: event.event_type,
            schema_version: u32::try_from(event.schema_version).unwrap_or(0),
            payload_json: event.payload.to_string(),
            metadata: Some(pb::EventMetadata {
                command_id: metadata
                    .command_id
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                correlation_id: metadata.correlation_id.unwrap_or_default(),
                causation_id: metadata.causation_id.unwrap_or_default(),
                actor: metadata.actor.unwrap_or_default(),
                traceparent: metadata.traceparent.unwrap_or_default(),
            }),
            recorded_at: Some(prost_types::Timestamp {
                seconds: event.recorded_at.timestamp(),
                nanos: i32::try_from(event.recorded_at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
        }
    }
}
