//! The settings every service takes ([`CommonConfig`], flattened into each service's `Config`
//! with the same flags, environment variables and defaults), and parsers for configuration
//! values both services accept.

use std::time::Duration;

use crate::telemetry::LogFormat;

/// Settings every service takes, with the same names and defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonConfig {
    /// Do not serve: ask the server at GRPC_ADDR for its health and exit 0 if SERVING, 1
    /// otherwise (the container healthcheck).
    #[arg(long)]
    pub probe: bool,

    /// Most database connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a call waits for a free database connection before answering UNAVAILABLE.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,

    /// Upper bound on any call's duration; a shorter client deadline (grpc-timeout) wins.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Most calls running at once in this process; one more is refused at once with
    /// RESOURCE_EXHAUSTED (load shedding) rather than queued. Health checks are never refused.
    #[arg(long, env = "MAX_IN_FLIGHT_CALLS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_calls: u32,

    /// On SIGTERM, how long in-flight calls may take to finish before the process exits.
    #[arg(long, env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_drain_timeout: Duration,

    /// NATS server with the event stream (may carry credentials, so it is never logged).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// JetStream stream of the published events (command-svc creates or updates it on start).
    #[arg(long, env = "NATS_STREAM", default_value = "PIZZERIA_EVENTS", value_parser = parse_stream_name)]
    pub nats_stream: String,

    /// Events are published on `<prefix>.<tenant>.<aggregate_type>.<aggregate_id>`; the same
    /// for both services.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "pizzeria.events", value_parser = parse_subject_prefix)]
    pub nats_subject_prefix: String,

    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,

    /// Export spans over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`).
    /// Unset: no export, and no OpenTelemetry code runs.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
}

/// Parses `250ms`, `10s`, `5m` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 250ms, 10s or 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s or m)")),
    }
}

fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A JetStream stream name: letters, digits, `_` and `-` (no `.`, `*`, `>` or spaces).
pub fn parse_stream_name(raw: &str) -> Result<String, String> {
    if is_token(raw) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a stream name (use letters, digits, _ and -)"
        ))
    }
}

/// A NATS subject prefix: dot-separated tokens of letters, digits, `_` and `-`, no wildcards.
pub fn parse_subject_prefix(raw: &str) -> Result<String, String> {
    if raw.split('.').all(is_token) {
        Ok(raw.to_owned())
    } else {
        Err(format!(
            "{raw:?} is not a subject prefix (dot-separated tokens of letters, digits, _ and -)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn stream_names_and_subject_prefixes_refuse_wildcards_and_empty_tokens() {
        assert_eq!(
            parse_stream_name("PIZZERIA_EVENTS-1"),
            Ok("PIZZERIA_EVENTS-1".into())
        );
        for bad in ["", "A.B", "A*", "A>", "A B"] {
            assert!(parse_stream_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_subject_prefix("pizzeria.events"),
            Ok("pizzeria.events".into())
        );
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(parse_subject_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
