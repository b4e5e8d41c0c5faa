//! Configuration from flags and environment variables (flags win).

use std::{net::SocketAddr, time::Duration};

/// Every setting of command-svc. `--help` lists them with their environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "command-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    #[command(flatten)]
    pub common: shared::config::CommonConfig,

    /// Postgres holding the event store (the write database).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Take a snapshot of an aggregate every this many events (off the command path).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 100)]
    pub snapshot_every: u64,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = 256 * 1024)]
    pub max_request_bytes: usize,

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

    /// Where to serve Prometheus `/metrics` (its own port), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: shared::metrics::MetricsAddr,
}
