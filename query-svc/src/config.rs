//! Configuration from flags and environment variables (flags win).

use std::{net::SocketAddr, time::Duration};

/// Every setting of query-svc. `--help` lists them with their environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "query-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,

    #[command(flatten)]
    pub common: shared::config::CommonConfig,

    /// query-svc's own read database (migrated at start-up). Keep it apart from command-svc's
    /// event store: both keep an sqlx migration history.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/pizzeria_read",
        hide_env_values = true
    )]
    pub database_url: String,

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

    /// Largest request message accepted, in bytes (queries are small; one more byte gets
    /// OUT_OF_RANGE before anything is read from the database).
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 64 * 1024)]
    pub max_request_bytes: usize,

    /// Where to serve Prometheus `/metrics` (its own port), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: shared::metrics::MetricsAddr,
}
