//! Reporting health that follows the dependencies: both services check theirs every
//! [`CHECK_INTERVAL`] and report the result on the standard gRPC health service.

use std::{future::Future, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// How often the dependencies are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Reports NOT_SERVING for `services` until the service is `ready` (its database reached and
/// migrated) and `check` finds no problem, then follows every check (logging each change with
/// its reason) until `stop`. Checks every [`CHECK_INTERVAL`], and at once when `ready` changes
/// (so a service reports SERVING as soon as it has started).
pub async fn follow<F, Fut>(
    reporter: HealthReporter,
    services: &[&str],
    stop: CancellationToken,
    mut ready: watch::Receiver<bool>,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    // Until the starting task is gone (it ends right after opening the gate, or when the
    // service stops); then only the interval wakes us.
    let mut watching_ready = true;
    let mut serving = None;
    loop {
        let started = *ready.borrow();
        let problem = if started {
            check().await
        } else {
            Some("database not reachable (or not migrated) yet".to_owned())
        };
        let now_serving = problem.is_none();
        if serving != Some(now_serving) {
            match &problem {
                None => tracing::info!(?services, "health: SERVING"),
                Some(why) => tracing::warn!(?services, reason = %why, "health: NOT_SERVING"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for service in services {
                reporter.set_service_status(*service, status).await;
            }
            serving = Some(now_serving);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
            changed = ready.changed(), if watching_ready => watching_ready = changed.is_ok(),
        }
    }
}

/// Why the database is not usable now (it does not answer within [`CHECK_INTERVAL`]), if so.
pub async fn database_problem(pool: &sqlx::PgPool) -> Option<String> {
    let answer = tokio::time::timeout(
        CHECK_INTERVAL,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool),
    )
    .await;
    (!matches!(answer, Ok(Ok(1)))).then(|| "database unreachable".to_owned())
}
