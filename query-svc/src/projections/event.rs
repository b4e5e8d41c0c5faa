//! An event as the projections see it: its place in the log and its decoded domain payload.

use chrono::{DateTime, Utc};
use shared::{
    events::{CustomerEvent, DomainEvent, OrderEvent},
    proto::v1 as pb,
};
use uuid::Uuid;

use crate::runtime::ProjectionError;

/// The decoded payload, by aggregate type.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Order(OrderEvent),
    Customer(CustomerEvent),
}

/// One event of the log, decoded and upcast to the current schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub stream_id: String,
    pub aggregate_id: Uuid,
    pub stream_version: i64,
    pub global_position: i64,
    pub transaction_id: u64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub metadata: pb::EventMetadata,
    /// The payload as stored (before upcasting), for the timeline's details.
    pub payload_json: String,
    pub payload: Payload,
}

impl Event {
    /// When the fact happened (the command's time), as opposed to when it was recorded.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match &self.payload {
            Payload::Order(event) => event.occurred_at(),
            Payload::Customer(event) => event.occurred_at(),
        }
    }
}

fn bad(what: &str, record: &pb::EventRecord) -> ProjectionError {
    ProjectionError(format!(
        "event {} (position {}): {what}",
        record.event_id, record.global_position
    ))
}

/// Decodes a page of records, or says which one cannot be decoded.
pub fn decode_all(records: &[&pb::EventRecord]) -> Result<Vec<Event>, ProjectionError> {
    records
        .iter()
        .map(|record| Event::try_from(*record))
        .collect()
}

impl TryFrom<&pb::EventRecord> for Event {
    type Error = ProjectionError;

    fn try_from(record: &pb::EventRecord) -> Result<Self, Self::Error> {
        let uuid = |raw: &str, field: &str| {
            Uuid::try_parse(raw).map_err(|_| bad(&format!("{field} is not a UUID"), record))
        };
        let payload_value: serde_json::Value = serde_json::from_str(&record.payload_json)
            .map_err(|_| bad("payload is not JSON", record))?;
        let payload = match record.aggregate_type.as_str() {
            OrderEvent::AGGREGATE_TYPE => Payload::Order(
                OrderEvent::decode(&record.event_type, record.schema_version, payload_value)
                    .map_err(|e| bad(&e.to_string(), record))?,
            ),
            CustomerEvent::AGGREGATE_TYPE => Payload::Customer(
                CustomerEvent::decode(&record.event_type, record.schema_version, payload_value)
                    .map_err(|e| bad(&e.to_string(), record))?,
            ),
            other => return Err(bad(&format!("unknown aggregate type {other:?}"), record)),
        };
        let recorded_at = record
            .recorded_at
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .ok_or_else(|| bad("recorded_at is missing", record))?;
        Ok(Self {
            event_id: uuid(&record.event_id, "event_id")?,
            tenant_id: uuid(&record.tenant_id, "tenant_id")?,
            stream_id: record.stream_id.clone(),
            aggregate_id: uuid(&record.aggregate_id, "aggregate_id")?,
            stream_version: i64::try_from(record.stream_version)
                .map_err(|_| bad("stream_version out of range", record))?,
            global_position: i64::try_from(record.global_position)
                .map_err(|_| bad("global_position out of range", record))?,
            transaction_id: record.transaction_id,
            event_type: record.event_type.clone(),
            recorded_at,
            metadata: record.metadata.clone().unwrap_or_default(),
            payload_json: record.payload_json.clone(),
            payload,
        })
    }
}
