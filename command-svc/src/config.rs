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

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = shared::config::parse_duration)]
    pub shutdown_drain_timeout: Duration,

    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}
