//! Prometheus metrics. Each service serves `/metrics` on a port of its own (`METRICS_ADDR`), so a
//! scrape never waits behind gRPC calls or the admission gate, and the gRPC port stays gRPC only.
//!
//! Code records with the `metrics` macros where things happen (`counter!`, `histogram!`,
//! `gauge!`); [`MetricsServer::bind`] routes them to one Prometheus recorder per process. Every
//! name starts with `pizzeria_`. What a scrape shows is listed in the README ("Observability").

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets, in seconds: from half a millisecond (a cached read) to 10 s (a timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Batch-size buckets (events per relay or projector batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Histogram buffers are folded into the exported buckets this often even when nobody scrapes,
/// so memory stays flat.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's recorder: installed once, shared by every server in the process (in-process
/// tests run several).
fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Suffix("_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                })
                // Only an empty bucket list is refused, and both lists are constants.
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Refreshes gauges that are sampled rather than recorded (pool usage, say) before each scrape.
pub type Sampler = Arc<dyn Fn() + Send + Sync>;

/// A bound `/metrics` endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Installs the recorder (once per process) and binds `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        handle();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {addr}: {error}"))?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` until `stop`. `sample` runs before each scrape.
    pub async fn serve(self, sample: Sampler, stop: CancellationToken) {
        let handle = handle();
        let upkeep = {
            let handle = handle.clone();
            let stop = stop.clone();
            async move {
                let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = interval.tick() => handle.run_upkeep(),
                    }
                }
            }
        };
        tokio::spawn(upkeep);
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                let sample = sample.clone();
                async move {
                    sample();
                    handle.render()
                }
            }),
        );
        if let Err(error) = axum::serve(self.listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "metrics endpoint failed");
        }
    }
}

/// `METRICS_ADDR`: where to serve `/metrics`, or `off` for nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "off" | "" => Ok(Self(None)),
            addr => addr
                .parse()
                .map(|addr| Self(Some(addr)))
                .map_err(|_| format!("{addr:?} is not an address like 0.0.0.0:9464 (or off)")),
        }
    }
}

/// Records the database pool's size and idle connections (`pizzeria_db_pool_connections`).
pub fn sample_pool(pool: &sqlx::PgPool, name: &'static str) {
    let size = f64::from(pool.size());
    let idle = f64::from(u32::try_from(pool.num_idle()).unwrap_or(u32::MAX));
    metrics::gauge!("pizzeria_db_pool_connections", "pool" => name, "state" => "idle").set(idle);
    metrics::gauge!("pizzeria_db_pool_connections", "pool" => name, "state" => "in_use")
        .set((size - idle).max(0.0));
    metrics::gauge!("pizzeria_db_pool_max_connections", "pool" => name)
        .set(f64::from(pool.options().get_max_connections()));
}

/// The status code as Prometheus label value (`NOT_FOUND`, as gRPC spells them).
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_parses_or_turns_off() {
        assert_eq!("off".parse(), Ok(MetricsAddr(None)));
        assert_eq!(
            "127.0.0.1:9464".parse(),
            Ok(MetricsAddr(Some(SocketAddr::from(([127, 0, 0, 1], 9464)))))
        );
        assert!("localhost".parse::<MetricsAddr>().is_err());
    }
}
