//! Health that means something: SERVING only while the read database answers, NATS is
//! connected, the projector is consuming, and its lag is under the configured bound.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use super::lag::LagProbe;

/// How often the dependencies are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

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
    /// Largest tolerated age of the oldest unapplied event.
    pub max_lag: Duration,
}

impl HealthMonitor {
    /// Why the service should not take traffic now, or None if it should.
    pub async fn problem(&self) -> Option<String> {
        let database = tokio::time::timeout(
            CHECK_INTERVAL,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool),
        )
        .await;
        if !matches!(database, Ok(Ok(1))) {
            return Some("read database unreachable".into());
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
        let mut serving = None;
        loop {
            let problem = self.problem().await;
            let now_serving = problem.is_none();
            if serving != Some(now_serving) {
                match &problem {
                    None => tracing::info!("health: SERVING"),
                    Some(why) => tracing::warn!(reason = %why, "health: NOT_SERVING"),
                }
                let status = if now_serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for service in SERVICES {
                    reporter.set_service_status(*service, status).await;
                }
                serving = Some(now_serving);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
        }
    }
}
