//! Health that means something: SERVING only while the read database answers, NATS is
//! connected, every projection's projector is consuming, and each one's lag is under the
//! configured bound.

use std::time::Duration;

use shared::health::CHECK_INTERVAL;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use crate::runtime::{
    host::Hosts,
    lag::{Lag, LagProbe},
};

#[derive(Debug, Clone)]
pub struct HealthMonitor {
    /// The services whose status is reported: the whole server ("") and each gRPC service.
    pub services: &'static [&'static str],
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub lag: LagProbe,
    pub hosts: Hosts,
    /// True once the read database is migrated (the service is admitting calls).
    pub ready: watch::Receiver<bool>,
    /// Largest tolerated age of the oldest unapplied event.
    pub max_lag: Duration,
}

impl HealthMonitor {
    /// Why the service should not take traffic now, or None if it should. Measures the lag
    /// first, whatever else is wrong, so the lag gauges never freeze at a stale value: they
    /// read NaN (no data) while the lag cannot be measured.
    pub async fn problem(&self) -> Option<String> {
        let nats_connected =
            self.nats.connection_state() == async_nats::connection::State::Connected;
        // One consumer feeds every projection: one measurement is each one's lag.
        let measured = if nats_connected {
            tokio::time::timeout(CHECK_INTERVAL, self.lag.measure())
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|lag| lag.map_err(|error| error.to_string()))
        } else {
            Err("NATS unreachable".to_owned())
        };
        let head = measured
            .as_ref()
            .map_or(f64::NAN, |lag| lag.head_position as f64);
        metrics::gauge!("pizzeria_log_head_position").set(head);
        // Each projection's own lag (none once its watermark covers the head); the worst one
        // decides. A read database that cannot say leaves the consumer's lag.
        let mut worst: Option<Lag> = None;
        for hosted in self.hosts.iter() {
            let name = hosted.projection.name();
            let (events, seconds) = match &measured {
                Ok(lag) => {
                    let lag = lag.of_projection(&self.pool, name).await.unwrap_or(*lag);
                    if worst.is_none_or(|w| lag.seconds > w.seconds) {
                        worst = Some(lag);
                    }
                    (lag.events as f64, lag.seconds)
                }
                Err(_) => (f64::NAN, f64::NAN),
            };
            metrics::gauge!("pizzeria_projection_lag_events", "projection" => name).set(events);
            metrics::gauge!("pizzeria_projection_lag_seconds", "projection" => name).set(seconds);
        }

        if let Some(problem) = shared::health::database_problem(&self.pool).await {
            return Some(format!("read {problem}"));
        }
        if !nats_connected {
            return Some("NATS unreachable".into());
        }
        if let Some(hosted) = self.hosts.iter().find(|h| !*h.progress.consuming.borrow()) {
            return Some(format!(
                "projector of {} not consuming",
                hosted.projection.name()
            ));
        }
        match measured.map(|consumer| worst.unwrap_or(consumer)) {
            Ok(lag) if lag.seconds > self.max_lag.as_secs_f64() => {
                return Some(format!(
                    "projection lag {:.1}s exceeds {:?} ({} events behind)",
                    lag.seconds, self.max_lag, lag.events
                ));
            }
            Ok(_) => {}
            Err(error) => return Some(format!("cannot measure projection lag: {error}")),
        }
        None
    }

    /// Reports NOT_SERVING until the first check passes, then follows every check until `stop`.
    pub async fn run(self, reporter: HealthReporter, stop: CancellationToken) {
        let ready = self.ready.clone();
        shared::health::follow(reporter, self.services, stop, ready, || self.problem()).await;
    }
}
