//! Configuration from flags and environment variables (flags win).

use std::{net::SocketAddr, time::Duration};

use shared::telemetry::LogFormat;

/// Every setting of query-svc. `--help` lists them with their environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "query-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,

    /// Do not serve: ask the server at GRPC_ADDR for its health and exit 0 if SERVING, 1
    /// otherwise (the container healthcheck).
    #[arg(long)]
    pub probe: bool,

    /// query-svc's own read database (migrated at start-up). Keep it apart from command-svc's
    /// event store: both keep an sqlx migration history.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/pizzeria_read",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Most read-database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a call waits for a free database connection before answering UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = shared::config::parse_duration)]
    pub database_acquire_timeout: Duration,

    /// NATS server with the event stream.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// JetStream stream the relay of command-svc publishes to.
    #[arg(long, env = "NATS_STREAM", default_value = "PIZZERIA_EVENTS", value_parser = shared::config::parse_stream_name)]
    pub nats_stream: String,

    /// Subject prefix of the events (as command-svc's NATS_SUBJECT_PREFIX).
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "pizzeria.events", value_parser = shared::config::parse_subject_prefix)]
    pub nats_subject_prefix: String,

    /// Durable consumer name of the projections; replicas share it (and its progress).
    #[arg(long, env = "NATS_CONSUMER", default_value = "query-svc-projections", value_parser = shared::config::parse_stream_name)]
    pub nats_consumer: String,

    /// Most events applied in one read-database transaction.
    #[arg(long, env = "PROJECTOR_BATCH_SIZE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub projector_batch_size: u32,

    /// Events a rebuild reads from command-svc and applies per transaction.
    #[arg(long, env = "REBUILD_PAGE_SIZE", default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rebuild_page_size: u32,

    /// command-svc, read to fill holes in a stream (EventLogService.ReadStream).
    #[arg(
        long,
        env = "COMMAND_SVC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub command_svc_url: String,

    /// File holding query-svc's bearer token for command-svc (role `event-reader`, no tenant),
    /// re-read on every call so a rotated secret is picked up. Unset: no token is sent.
    #[arg(long, env = "COMMAND_SVC_TOKEN_FILE")]
    pub command_svc_token_file: Option<std::path::PathBuf>,

    /// Longest a query with `min_position` waits for the projections (a shorter deadline wins).
    #[arg(long, env = "MAX_CONSISTENCY_WAIT", default_value = "5s", value_parser = shared::config::parse_duration)]
    pub max_consistency_wait: Duration,

    /// Health reports NOT_SERVING while the oldest unapplied event is older than this.
    #[arg(long, env = "HEALTH_MAX_LAG", default_value = "30s", value_parser = shared::config::parse_duration)]
    pub health_max_lag: Duration,

    /// Upper bound on any call's duration; a shorter client deadline (grpc-timeout) wins.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = shared::config::parse_duration)]
    pub request_timeout: Duration,

    /// Largest request message accepted, in bytes (queries are small; one more byte gets
    /// OUT_OF_RANGE before anything is read from the database).
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Most calls running at once in this process; one more is refused at once with
    /// RESOURCE_EXHAUSTED (load shedding) rather than queued. Health checks are never refused.
    #[arg(long, env = "MAX_IN_FLIGHT_CALLS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_calls: u32,

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = shared::config::parse_duration)]
    pub shutdown_drain_timeout: Duration,

    #[command(flatten)]
    pub auth: shared::auth::AuthConfig,

    /// Where to serve Prometheus `/metrics` (its own port), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: shared::metrics::MetricsAddr,

    /// Export spans over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`).
    /// Unset: no export, and no OpenTelemetry code runs.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}
