//! W3C trace context (`traceparent`) from a gRPC call to the projection of its events:
//!
//! gRPC `traceparent` header → the call's span → event metadata (stored with the events) → the
//! relay's publish span → NATS `traceparent` header → the projector's span for that event.
//!
//! Each hop starts a span of its own as a child of the context it received ([`start_span`]) and
//! hands the span's context on. With OpenTelemetry export on ([`crate::telemetry`]), those are
//! the exported spans, so a trace backend shows one trace across both services and the broker.
//! With it off, ids are drawn here and logs still carry `trace_id` and `span_id`: the trace can be
//! followed by grepping, at no cost beyond two random numbers per hop.

use std::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (gRPC metadata and NATS) and event-metadata field name.
pub const TRACEPARENT: &str = "traceparent";

/// Set once an OpenTelemetry layer is installed: spans then get their ids from it.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// One `traceparent` value: version 00, trace id, parent (span) id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace (no caller sent one).
    fn root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    fn child(self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..self
        }
    }

    /// `traceparent` from a header value, ignoring one that is malformed (W3C: start a new trace).
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        value.and_then(|v| v.parse().ok())
    }

    fn span_context(self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::NOT_SAMPLED
            },
            true,
            TraceState::NONE,
        )
    }

    fn from_span_context(context: &SpanContext) -> Option<Self> {
        context.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(context.span_id().to_bytes()),
            sampled: context.is_sampled(),
        })
    }

    /// The trace id as 32 hex digits, as logs and trace backends show it.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

impl FromStr for TraceParent {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace_id, span_id, flags] = parts[..] else {
            return Err("traceparent has four dash-separated parts");
        };
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return Err("traceparent is not version 00 with hex ids");
        }
        let trace_id = u128::from_str_radix(trace_id, 16).map_err(|_| "bad trace id")?;
        let span_id = u64::from_str_radix(span_id, 16).map_err(|_| "bad span id")?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| "bad flags")?;
        if trace_id == 0 || span_id == 0 {
            return Err("all-zero ids are invalid");
        }
        Ok(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

fn nonzero_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128().max(1)
}

fn nonzero_u64() -> u64 {
    u64::try_from(uuid::Uuid::new_v4().as_u128() >> 64)
        .unwrap_or(1)
        .max(1)
}

/// Makes `span` a child of `parent` (a new trace without one), records its `trace_id` and
/// `span_id` fields for the logs, and returns its context to hand downstream. Declare both
/// fields on the span (`trace_id = tracing::field::Empty`).
pub fn start_span(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    let own = exported_context(span, parent).unwrap_or_else(|| match parent {
        Some(parent) => parent.child(),
        None => TraceParent::root(),
    });
    // Formatting costs an allocation each: skip it for a span no layer records.
    if !span.is_disabled() {
        span.record("trace_id", own.trace_id_hex());
        span.record("span_id", own.span_id_hex());
    }
    own
}

/// The context the OpenTelemetry layer gave `span`, when one is installed and sees the span.
fn exported_context(span: &tracing::Span, parent: Option<TraceParent>) -> Option<TraceParent> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    if let Some(parent) = parent {
        let remote = opentelemetry::Context::new().with_remote_span_context(parent.span_context());
        span.set_parent(remote).ok()?;
    }
    TraceParent::from_span_context(span.context().span().span_context())
}

tokio::task_local! {
    /// The context of the gRPC call being served, set by [`crate::telemetry::GrpcTelemetryLayer`].
    static CALL: TraceParent;
}

/// Runs `future` as part of the call whose span has context `call`.
pub(crate) async fn in_call<F: Future>(call: TraceParent, future: F) -> F::Output {
    CALL.scope(call, future).await
}

/// The context of the gRPC call being served (what its events store as `traceparent`).
pub fn current_call() -> Option<TraceParent> {
    CALL.try_with(|call| *call).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parsed: TraceParent = text.parse().unwrap();
        assert_eq!(parsed.to_string(), text);
        assert!(parsed.sampled);
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_span_without_an_exporter_continues_the_callers_trace() {
        let parent: TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap();
        let span = tracing::info_span!(
            "test",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        let own = start_span(&span, Some(parent));
        assert_eq!(own.trace_id, parent.trace_id);
        assert_ne!(own.span_id, parent.span_id);
        let root = start_span(&span, None);
        assert_ne!(root.trace_id, parent.trace_id);
    }
}
