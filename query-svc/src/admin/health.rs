//! Health that means something: SERVING only while the read database answers, NATS is
//! connected, the projector is consuming, and its lag is under the configured bound.

use std::time::Duration;

use shared::health::CHECK_INTERVAL;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use super::lag::LagProbe;

/// The services whose status is reported: the whole server ("") and each gRPC service.
const SERVICES: &[&str] = &[
    "",
    "pizzeria.v1.QueryService",
    "pizzeria.v1.ProjectionAdminService",
];

#[derive(Debug, Clone)]
pub struct HealthMonitor {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub lag: LagProbe,
    pub consuming: watch::Receiver<bool>,
    /// True once the read database is migrated (the service is admitting calls).
    pub ready: watch::Receiver<bool>,
    /// Largest tolerated age of the oldest unapplied event.
    pub max_lag: Duration,
}

impl HealthMonitor {
    /// Why the service should not take traffic now, or None if it should.
    pub async fn problem(&self) -> Option<String> {
        if let Some(problem) = shared::health::database_problem(&self.pool).await {
            return Some(format!("read {problem}"));
        }
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Some("NATS unreachable".into());
        }
        if !*self.consuming.borrow() {
            return Some("projector not consuming".into());
        }
        match tokio::time::timeout(CHECK_INTERVAL, self.lag.measure()).await {
            Ok(Ok(lag)) if lag.seconds > self.max_lag.as_secs_f64() => Some(format!(
                "projection lag {:.1}s exceeds {:?} ({} events behind)",
                lag.seconds, self.max_lag, lag.events
            )),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(format!("cannot measure projection lag: {error}")),
            Err(_) => Some("cannot measure projection lag: timed out".into()),
        }
    }

    /// Reports NOT_SERVING until the first check passes, then follows every check until `stop`.
    pub async fn run(self, reporter: HealthReporter, stop: CancellationToken) {
        let ready = self.ready.clone();
        shared::health::follow(reporter, SERVICES, stop, ready, || self.problem()).await;
    }
}
