//! One telemetry set-up for both services: logs (JSON lines for machines, a readable format for
//! terminals) with trace and span ids, optional OpenTelemetry export over OTLP, and the gRPC
//! layer that starts each call's span and counts it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Instrument as _, Level};
use tracing_subscriber::{EnvFilter, Layer as _, filter::Targets, fmt, prelude::*};

use crate::trace_context::{self, TRACEPARENT, TraceParent};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(format!("unknown log format {other:?}: use json or pretty")),
        }
    }
}

/// What to export spans to: OTLP over gRPC at `endpoint` (e.g. `http://otel-collector:4317`),
/// with `service` as `service.name`.
#[derive(Debug, Clone)]
pub struct OtlpExport {
    pub endpoint: String,
    pub service: &'static str,
}

impl OtlpExport {
    /// The export `OTEL_EXPORTER_OTLP_ENDPOINT` asks for, if any. Empty counts as unset
    /// (compose passes `${OTEL_EXPORTER_OTLP_ENDPOINT:-}`).
    pub fn configured(endpoint: Option<&str>, service: &'static str) -> Option<Self> {
        endpoint
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(|endpoint| Self {
                endpoint: endpoint.to_owned(),
                service,
            })
    }
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered (bounded by the exporter's timeout) and stops exporting.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Blocks until the export thread is done: off the async workers.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                eprintln!("spans not exported at shutdown: {error}");
            }
        }
    }
}

/// Installs the global subscriber. Log levels come from `RUST_LOG` (default `info`). With
/// `otlp`, the spans of this workspace's crates are exported whatever `RUST_LOG` says (the
/// two have separate filters); without it no OpenTelemetry code runs at all.
/// Calling it twice is harmless: the second call keeps the first subscriber.
pub fn init(format: LogFormat, otlp: Option<OtlpExport>) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        // Each line lists its spans with their fields, so the call's `trace_id` and `span_id`.
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().boxed(),
    }
    .with_filter(filter);

    let provider = match otlp {
        Some(otlp) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(otlp.endpoint)
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(otlp.service).build())
                    .build(),
            )
        }
        None => None,
    };
    let spans = provider.as_ref().map(|provider| {
        let ours = Targets::new()
            .with_target("command_svc", Level::INFO)
            .with_target("query_svc", Level::INFO)
            .with_target("shared", Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("pizzeria"))
            .with_filter(ours)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        trace_context::set_exporting();
    }
    Ok(Telemetry { provider })
}

/// Counts and times one call when it ends, however it ends: a call dropped before its
/// response (the client went away, or the server's REQUEST_TIMEOUT, which wraps this layer)
/// counts as CANCELLED.
struct CallRecord {
    method: String,
    started: Instant,
    code: Option<tonic::Code>,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        // The path is the caller's to choose: an unknown one must not become a series of its
        // own, or any client could grow the metrics without bound.
        let method = if code == tonic::Code::Unimplemented {
            "unknown".to_owned()
        } else {
            std::mem::take(&mut self.method)
        };
        let code = crate::metrics::code_name(code);
        metrics::counter!("pizzeria_grpc_requests_total", "method" => method.clone(), "code" => code)
            .increment(1);
        metrics::histogram!("pizzeria_grpc_request_duration_seconds", "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A tower layer around every gRPC call (health checks and reflection aside):
/// - a `grpc` span, child of the caller's `traceparent` header (or a new trace), whose context
///   the call's events store (see [`trace_context::current_call`]);
/// - `pizzeria_grpc_requests_total{method, code}` and
///   `pizzeria_grpc_request_duration_seconds{method}` (until the response headers: for a
///   server stream, the time to open it). A path no service serves counts as `unknown`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTelemetryLayer;

impl<S> tower::Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcTelemetry<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.") {
            return Box::pin(self.inner.call(request));
        }
        let method = path.rsplit('/').next().unwrap_or_default().to_owned();
        let span = tracing::info_span!(
            "grpc",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.method = method.as_str(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let caller = TraceParent::from_header(
            request
                .headers()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
        );
        let call = trace_context::start_span(&span, caller);
        let record = CallRecord {
            method,
            started: Instant::now(),
            code: None,
        };
        let future = self.inner.call(request);
        let observed = async move {
            // Moves the whole record in (a closure would capture only the field it assigns),
            // so it is dropped, and counted, when the call ends.
            let mut record = record;
            let result = future.await;
            // An error status travels in the headers ("trailers only"); a success in the
            // trailers, so no grpc-status header means OK.
            record.code = Some(match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Internal,
            });
            result
        };
        Box::pin(trace_context::in_call(call, observed).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_otlp_endpoint_means_no_export() {
        assert!(OtlpExport::configured(None, "svc").is_none());
        assert!(OtlpExport::configured(Some("  "), "svc").is_none());
        let export = OtlpExport::configured(Some(" http://jaeger:4317 "), "svc").unwrap();
        assert_eq!(export.endpoint, "http://jaeger:4317");
    }
}
