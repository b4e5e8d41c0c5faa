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

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = shared::config::parse_duration)]
    pub shutdown_drain_timeout: Duration,

    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}
