//! What every service's `main` does around its server: answer `--probe`, start logging and
//! tracing, serve until SIGTERM, flush the traces.

use std::{future::Future, net::SocketAddr};

use crate::config::CommonConfig;

/// Runs service `name`: with `--probe`, asks the server at `grpc_addr` for its health and exits
/// 0 if SERVING, 1 otherwise; else starts telemetry, awaits `serve` and shuts telemetry down.
pub async fn main<F, Fut>(
    name: &'static str,
    grpc_addr: SocketAddr,
    common: &CommonConfig,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if common.probe {
        let serving = crate::grpc::probe(grpc_addr).await;
        std::process::exit(if serving { 0 } else { 1 });
    }
    let otlp = crate::telemetry::OtlpExport::configured(common.otlp_endpoint.as_deref(), name);
    let telemetry = crate::telemetry::init(common.log_format, otlp)?;
    let served = serve().await;
    telemetry.shutdown().await;
    served
}

/// What a service holds from start-up on, before it serves: its listener, the layer that admits
/// calls (closed until the service is ready), and its `/metrics` listener.
#[derive(Debug)]
pub struct Bound {
    pub listener: tokio::net::TcpListener,
    pub admission: crate::admission::AdmissionLayer,
    pub readiness: crate::admission::Readiness,
    pub metrics: Option<crate::metrics::MetricsServer>,
}

impl Bound {
    /// Binds `grpc_addr` (port 0 picks a free port, as tests do) and `metrics_addr`, and sets up
    /// admission from the common settings (load shedding, authentication).
    pub async fn bind(
        grpc_addr: SocketAddr,
        metrics_addr: &crate::metrics::MetricsAddr,
        common: &CommonConfig,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {grpc_addr}"))?;
        let (admission, readiness) = crate::admission::AdmissionLayer::new(
            common.max_in_flight_calls as usize,
            common.auth.authentication()?,
        );
        let metrics = match metrics_addr.0 {
            Some(addr) => Some(crate::metrics::MetricsServer::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            admission,
            readiness,
            metrics,
        })
    }

    /// Turns true once the service has migrated its database and admits calls.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.admission.ready()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served, unless switched off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }
}

/// The service's database pool (connected on first use), from its URL and the common settings.
pub fn database(url: &str, common: &CommonConfig) -> anyhow::Result<sqlx::PgPool> {
    use anyhow::Context as _;
    crate::connect::database(
        url,
        common.database_max_connections,
        common.database_acquire_timeout,
    )
    .context("invalid DATABASE_URL")
}
