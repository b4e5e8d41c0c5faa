//! How far a projector is behind the log, measured on JetStream: the stream's last message is
//! the head of the log as published, the projection's durable consumer's pending count is its
//! backlog. That backlog is the consumer's, shared by every projection and counting messages
//! not yet acknowledged: a projection whose watermark already covers the head of the log (its
//! events committed, their acks still on the way, or redelivered after a restart) is not behind
//! at all, which `Lag::of_projection` says.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use prost::Message as _;
use shared::proto::v1 as pb;
use sqlx::PgPool;

use super::watermark;

/// The projector's distance from the head of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Global position of the last event in the stream (0 for an empty stream).
    pub head_position: u64,
    /// Events delivered to the consumer or waiting for it, not yet acknowledged.
    pub events: u64,
    /// Age of the oldest unacknowledged event (now minus when it was recorded); 0 when caught up.
    pub seconds: f64,
}

impl Lag {
    /// Projection `name`'s lag, given the consumer's: none when its watermark covers the head
    /// of the log, the consumer's otherwise.
    pub async fn of_projection(self, pool: &PgPool, name: &str) -> Result<Lag, sqlx::Error> {
        if self.events == 0 {
            return Ok(self);
        }
        let head = i64::try_from(self.head_position).unwrap_or(i64::MAX);
        if watermark::covered(pool, name, head).await? {
            return Ok(Lag {
                head_position: self.head_position,
                events: 0,
                seconds: 0.0,
            });
        }
        Ok(self)
    }
}

/// Where to look: the stream and the durable consumer that feeds every projection (so one
/// measurement is every projection's lag).
#[derive(Debug, Clone)]
pub struct LagProbe {
    pub jetstream: jetstream::Context,
    pub stream: String,
    pub consumer: String,
}

impl LagProbe {
    /// The head of the log as published (0 when JetStream cannot say).
    pub async fn head_position(&self) -> i64 {
        let head = async {
            let stream = self.jetstream.get_stream(&self.stream).await?;
            let last_sequence = stream.cached_info().state.last_sequence;
            if last_sequence == 0 {
                return Ok::<u64, async_nats::Error>(0);
            }
            Ok(record_at(&stream, last_sequence).await?.global_position)
        };
        head.await
            .map_or(0, |position| i64::try_from(position).unwrap_or(i64::MAX))
    }

    /// The lag of the durable consumer.
    pub async fn measure(&self) -> Result<Lag, async_nats::Error> {
        let stream = self.jetstream.get_stream(&self.stream).await?;
        let last_sequence = stream.cached_info().state.last_sequence;
        if last_sequence == 0 {
            return Ok(Lag::default());
        }
        let head = record_at(&stream, last_sequence).await?;
        let consumer = stream.consumer_info(&self.consumer).await?;
        let events = consumer.num_pending + consumer.num_ack_pending as u64;
        let seconds = if events == 0 {
            0.0
        } else {
            let oldest = record_at(&stream, consumer.ack_floor.stream_sequence + 1).await?;
            recorded_at(&oldest).map_or(0.0, |at| {
                ((Utc::now() - at).num_milliseconds().max(0) as f64) / 1000.0
            })
        };
        Ok(Lag {
            head_position: head.global_position,
            events,
            seconds,
        })
    }
}

async fn record_at(
    stream: &jetstream::stream::Stream,
    sequence: u64,
) -> Result<pb::EventRecord, async_nats::Error> {
    let message = stream.get_raw_message(sequence).await?;
    Ok(pb::EventRecord::decode(message.payload)?)
}

fn recorded_at(record: &pb::EventRecord) -> Option<DateTime<Utc>> {
    let at = record.recorded_at.as_ref()?;
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}
