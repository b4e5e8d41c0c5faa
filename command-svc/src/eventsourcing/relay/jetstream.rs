//! The JetStream side of the relay: the stream's configuration, the resume point read from the
//! stream's last message, and pipelined, order-preserving publishing.

use std::{future::IntoFuture, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        context::PublishErrorKind,
        message::PublishMessage,
        stream::{self, StorageType},
    },
};
use prost::Message as _;
use shared::{
    envelope::{event_subject, headers},
    trace_context::{self, TRACEPARENT, TraceParent},
};
use tracing::Instrument as _;

use super::RelayError;
use crate::eventsourcing::store::{LogCursor, StoredEvent, Xid8};

/// Where events go.
#[derive(Debug, Clone)]
pub struct EventStreamSettings {
    /// JetStream stream name.
    pub name: String,
    /// Subjects are `<subject_prefix>.<tenant>.<aggregate_type>.<aggregate_id>`.
    pub subject_prefix: String,
    /// How long to wait for a JetStream API reply or a publish acknowledgement.
    pub publish_timeout: Duration,
}

/// Where the relay picks up, as the stream itself says.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResumePoint {
    /// The log position of the stream's last message; the default cursor when it has none.
    pub cursor: LogCursor,
    /// The stream's last sequence number: the next publish expects it.
    pub last_sequence: u64,
    /// The stream once had messages but holds none now (purged or aged out).
    pub stream_emptied: bool,
}

#[derive(Debug)]
pub(super) struct Publisher {
    jetstream: jetstream::Context,
    settings: EventStreamSettings,
}

fn nats(error: impl Into<async_nats::Error>) -> RelayError {
    RelayError::Nats(error.into())
}

impl Publisher {
    pub fn new(client: async_nats::Client, settings: EventStreamSettings) -> Self {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .build(client);
        Self {
            jetstream,
            settings,
        }
    }

    /// Creates the stream, or brings an existing one to this configuration.
    pub async fn ensure_stream(&self) -> Result<(), RelayError> {
        let config = stream::Config {
            name: self.settings.name.clone(),
            description: Some(
                "Pizzeria domain events, relayed from the Postgres event store".into(),
            ),
            subjects: vec![format!("{}.>", self.settings.subject_prefix)],
            // File storage survives a NATS restart; the relay still re-publishes a lost tail.
            storage: StorageType::File,
            // Only the relay removes nothing: messages are facts. Deleting the whole stream stays
            // possible (the relay re-publishes everything from Postgres into a new one).
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..Default::default()
        };
        self.jetstream
            .create_or_update_stream(config)
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Reads the stream's last message and returns the log position it carries.
    pub async fn resume_point(&self) -> Result<ResumePoint, RelayError> {
        let mut stream = self
            .jetstream
            .get_stream(&self.settings.name)
            .await
            .map_err(nats)?;
        let state = stream.info().await.map_err(nats)?.state.clone();
        let mut resume = ResumePoint {
            cursor: LogCursor::default(),
            last_sequence: state.last_sequence,
            stream_emptied: false,
        };
        if state.messages == 0 {
            resume.stream_emptied = state.last_sequence > 0;
            return Ok(resume);
        }
        let last = stream
            .get_raw_message(state.last_sequence)
            .await
            .map_err(nats)?;
        resume.cursor = cursor_from_headers(&last.headers).ok_or(RelayError::ForeignMessage {
            sequence: last.sequence,
        })?;
        Ok(resume)
    }

    /// The stream's last sequence number.
    pub async fn last_sequence(&self) -> Result<u64, RelayError> {
        let stream = self
            .jetstream
            .get_stream_no_info(&self.settings.name)
            .await
            .map_err(nats)?;
        Ok(stream.get_info().await.map_err(nats)?.state.last_sequence)
    }

    /// Publishes `batch` in order, pipelined: every message expects the stream's last sequence
    /// to be the one before it, so if any publish fails, all later ones in the batch are
    /// rejected too and nothing overtakes. Advances `cursor` and `last_sequence` past every
    /// acknowledged event, and returns the first failure.
    pub async fn publish_batch(
        &self,
        batch: &[StoredEvent],
        cursor: &mut LogCursor,
        last_sequence: &mut u64,
    ) -> Result<(), RelayError> {
        let timeout = self.settings.publish_timeout;
        let mut pending = Vec::with_capacity(batch.len());
        // Each message names the one before it, so a consumer can tell a gap from a neighbour.
        let mut previous = *cursor;
        for (expected, event) in (*last_sequence..).zip(batch) {
            let subject = event_subject(
                &self.settings.subject_prefix,
                event.tenant_id,
                &event.aggregate_type,
                event.aggregate_id,
            );
            // One span per event, from send to acknowledgement, in the trace of the call that
            // appended it; the projector continues it from the message's header.
            let span = tracing::info_span!(
                "relay.publish",
                otel.name = "relay publish",
                otel.kind = "producer",
                stream = event.stream_id.as_str(),
                version = event.stream_version,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            let appended_in =
                TraceParent::from_header(event.metadata.get(TRACEPARENT).and_then(|v| v.as_str()));
            let context = trace_context::start_span(&span, appended_in);
            let mut headers = event_headers(event, previous);
            headers.insert(TRACEPARENT, context.to_string());
            previous = event.cursor();
            let message = PublishMessage::build()
                .headers(headers)
                .expected_last_sequence(expected)
                .payload(event.clone().into_record().encode_to_vec().into());
            match self.jetstream.send_publish(subject, message).await {
                Ok(ack) => pending.push((ack, span)),
                // Nothing after a failed send may go out; await what was sent, then report.
                Err(error) => {
                    drain(pending, batch, cursor, last_sequence, timeout).await;
                    return Err(nats(error));
                }
            }
        }
        drain(pending, batch, cursor, last_sequence, timeout)
            .await
            .map_or(Ok(()), Err)
    }
}

/// Awaits the acknowledgements in order, advancing the cursor past each stored event; returns
/// the first error. All of them share one deadline, `timeout` from now: each future's own
/// timeout starts only when it is awaited, so a batch sent into a dead connection would
/// otherwise take a timeout per message (minutes) to give up. Once one fails the rest are
/// dropped unawaited: each expects the sequence before it, so a late one can only ever land
/// right after its predecessor, and the resync reads where the stream really ends.
async fn drain(
    pending: Vec<(jetstream::context::PublishAckFuture, tracing::Span)>,
    batch: &[StoredEvent],
    cursor: &mut LogCursor,
    last_sequence: &mut u64,
    timeout: Duration,
) -> Option<RelayError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first_error = None;
    for (event, (ack, span)) in batch.iter().zip(pending) {
        if first_error.is_some() {
            break;
        }
        let acknowledged = tokio::time::timeout_at(deadline, ack.into_future()).instrument(span);
        let ack = match acknowledged.await {
            Ok(ack) => ack,
            Err(_) => Err(PublishErrorKind::TimedOut.into()),
        };
        match ack {
            // The relay sends no de-duplication id, so only a foreign publisher's message can be
            // "duplicate": trust nothing, resync from the stream.
            Ok(ack) if ack.duplicate => {
                first_error = Some(RelayError::UnexpectedDuplicate {
                    sequence: ack.sequence,
                });
            }
            Ok(ack) => {
                *last_sequence = ack.sequence;
                *cursor = event.cursor();
            }
            Err(error) => {
                if error.kind() == PublishErrorKind::WrongLastSequence {
                    tracing::info!("stream sequence moved under the relay; resyncing");
                }
                first_error = Some(nats(error));
            }
        }
    }
    first_error
}

/// The headers of `event`'s message, `previous` being the event published before it (tests
/// that publish as the relay does use it too).
pub fn event_headers(event: &StoredEvent, previous: LogCursor) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(headers::EVENT_ID, event.event_id.to_string());
    map.insert(headers::TENANT, event.tenant_id.to_string());
    map.insert(headers::STREAM, event.stream_id.as_str());
    map.insert(headers::VERSION, event.stream_version.to_string());
    map.insert(headers::POSITION, event.global_position.to_string());
    map.insert(headers::TRANSACTION_ID, event.transaction_id.0.to_string());
    map.insert(
        headers::PREVIOUS_TRANSACTION_ID,
        previous.transaction_id.0.to_string(),
    );
    map.insert(
        headers::PREVIOUS_POSITION,
        previous.global_position.to_string(),
    );
    map.insert(headers::EVENT_TYPE, event.event_type.as_str());
    map.insert(headers::SCHEMA_VERSION, event.schema_version.to_string());
    map.insert(headers::CONTENT_TYPE, headers::EVENT_RECORD_CONTENT_TYPE);
    map
}

/// The (`Es-Txid`, `Es-Pos`) pair of a message the relay published.
fn cursor_from_headers(map: &HeaderMap) -> Option<LogCursor> {
    let transaction_id = map.get(headers::TRANSACTION_ID)?.as_str().parse().ok()?;
    let global_position = map.get(headers::POSITION)?.as_str().parse().ok()?;
    Some(LogCursor {
        transaction_id: Xid8(transaction_id),
        global_position,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn headers_carry_the_resume_point_and_the_dedup_key() {
        let event = StoredEvent {
            global_position: 42,
            transaction_id: Xid8(9_000_000_001),
            tenant_id: Uuid::nil(),
            stream_id: "order-1".into(),
            aggregate_type: "order".into(),
            aggregate_id: Uuid::max(),
            stream_version: 3,
            event_id: Uuid::from_u128(7),
            event_type: "OrderConfirmed".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
            recorded_at: Utc::now(),
        };
        let previous = LogCursor {
            transaction_id: Xid8(9_000_000_000),
            global_position: 40,
        };
        let map = event_headers(&event, previous);
        assert_eq!(cursor_from_headers(&map), Some(event.cursor()));
        assert_eq!(
            map.get(headers::PREVIOUS_TRANSACTION_ID)
                .map(|v| v.as_str().to_owned()),
            Some("9000000000".into()),
            "the message names the event published before it"
        );
        assert_eq!(
            map.get(headers::PREVIOUS_POSITION)
                .map(|v| v.as_str().to_owned()),
            Some("40".into())
        );
        assert_eq!(
            map.get(headers::EVENT_ID).map(|v| v.as_str().to_owned()),
            Some(Uuid::from_u128(7).to_string()),
            "the event id travels in a header"
        );
        assert_eq!(
            map.get(headers::VERSION).map(|v| v.as_str().to_owned()),
            Some("3".into())
        );
    }

    #[test]
    fn a_message_without_the_relay_headers_has_no_resume_point() {
        let mut map = HeaderMap::new();
        assert_eq!(cursor_from_headers(&map), None);
        map.insert(headers::TRANSACTION_ID, "12");
        map.insert(headers::POSITION, "not a number");
        assert_eq!(cursor_from_headers(&map), None);
    }
}
