//! Configuration from flags and environment variables (flags win).

use std::{net::SocketAddr, time::Duration};

use shared::telemetry::LogFormat;

/// Every setting of command-svc. `--help` lists them with their environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "command-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Do not serve: ask the server at GRPC_ADDR for its health and exit 0 if SERVING, 1
    /// otherwise (the container healthcheck).
    #[arg(long)]
    pub probe: bool,

    /// Postgres holding the event store (the write database).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Most database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a call waits for a free database connection before answering UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = shared::config::parse_duration)]
    pub database_acquire_timeout: Duration,

    /// Take a snapshot of an aggregate every this many events (off the command path).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100)]
    pub snapshot_every: u64,

    /// Upper bound on any call's duration; a shorter client deadline (grpc-timeout) wins.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = shared::config::parse_duration)]
    pub request_timeout: Duration,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 256 * 1024)]
    pub max_request_bytes: usize,

    /// Most calls running at once in this process; one more is refused at once with
    /// RESOURCE_EXHAUSTED (load shedding) rather than queued. Health checks are never refused.
    #[arg(long, env = "MAX_IN_FLIGHT_CALLS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_calls: u32,

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = shared::config::parse_duration)]
    pub shutdown_drain_timeout: Duration,

    /// NATS server the relay publishes to (may carry credentials, so it is never logged).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// JetStream stream holding the published events; created or updated on start.
    #[arg(long, env = "NATS_STREAM", default_value = "PIZZERIA_EVENTS", value_parser = shared::config::parse_stream_name)]
    pub nats_stream: String,

    /// Events are published on `<prefix>.<tenant>.<aggregate_type>.<aggregate_id>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "pizzeria.events", value_parser = shared::config::parse_subject_prefix)]
    pub nats_subject_prefix: String,

    /// Run the relay in this process. One relay per database is active at a time (the others
    /// wait on an advisory lock), so every replica may leave it on.
    #[arg(long, env = "RELAY_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay_enabled: bool,

    /// Most events the relay reads and publishes per batch.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub relay_batch_size: u32,

    /// How often the relay looks for commits it was not woken for (other replicas' appends).
    #[arg(long, env = "RELAY_POLL_INTERVAL", default_value = "500ms", value_parser = shared::config::parse_duration)]
    pub relay_poll_interval: Duration,

    /// How long the relay waits for JetStream to acknowledge a publish before resyncing.
    #[arg(long, env = "RELAY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = shared::config::parse_duration)]
    pub relay_publish_timeout: Duration,

    #[command(flatten)]
    pub auth: shared::auth::AuthConfig,

    /// Where to serve Prometheus `/metrics` (its own port), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: shared::metrics::MetricsAddr,

    /// Export spans over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`).
    /// Unset: no export, and no OpenTelemetry code runs.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}
