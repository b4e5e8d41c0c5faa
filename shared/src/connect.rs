//! Connecting to the two dependencies both services have, the same way in each. Neither
//! connection is needed to start: a service whose database or NATS is down runs, reports
//! NOT_SERVING, and carries on once they appear (no crash loop).

use std::{future::Future, time::Duration};

use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::Readiness;

/// A Postgres pool that connects on first use: at most `max_connections`, and a call waits at
/// most `acquire_timeout` for a connection (then the caller answers UNAVAILABLE). Fails only for
/// a malformed URL.
pub fn database(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy(url)
}

/// Runs `migrator` on `pool`, retrying with backoff while the database cannot be reached or the
/// migration fails (each failure is logged). Returns false if `stop` came first.
/// sqlx holds a Postgres advisory lock while migrating, so replicas starting together don't race.
pub async fn migrate(pool: &PgPool, migrator: &Migrator, stop: &CancellationToken) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match migrator.run(pool).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "database not ready: cannot migrate yet");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A service's background work (the relay, the projector), started once its database is
/// migrated.
#[derive(Debug)]
pub struct Background {
    name: &'static str,
    stop: CancellationToken,
    task: JoinHandle<Option<JoinHandle<()>>>,
}

impl Background {
    /// Migrates (waiting for the database as long as it takes, or until `stop`), then opens the
    /// admission gate and runs `work` (`name` is for the log).
    pub fn start_once_migrated<W>(
        name: &'static str,
        pool: PgPool,
        migrator: &'static Migrator,
        readiness: Readiness,
        stop: CancellationToken,
        work: Option<W>,
    ) -> Self
    where
        W: Future<Output = ()> + Send + 'static,
    {
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                if !migrate(&pool, migrator, &stop).await {
                    return None;
                }
                readiness.set_ready();
                work.map(tokio::spawn)
            })
        };
        Self { name, stop, task }
    }

    /// Cancels `stop` and waits up to `timeout` for the work to finish its batch.
    pub async fn stop(self, timeout: Duration) {
        self.stop.cancel();
        let finished = async {
            if let Ok(Some(work)) = self.task.await {
                let _ = work.await;
            }
        };
        if tokio::time::timeout(timeout, finished).await.is_err() {
            tracing::warn!(?timeout, "{} did not finish its batch in time", self.name);
        }
    }
}

/// A NATS client that connects (and reconnects) in the background, so start-up never waits for
/// NATS; connection events are logged. Fails only for a malformed URL.
pub async fn nats(url: &str, name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        })
        .connect(url)
        .await
}

/// The role tenant-scoped transactions run as (both schemas' row-level security policies name
/// it; see command-svc's migration 0002).
pub const TENANT_ROLE: &str = "pizzeria_tenant";

/// Begins a transaction that acts for `tenant` only: it runs as [`TENANT_ROLE`] with
/// `pizzeria.tenant_id` set, so row-level security shows and accepts that tenant's rows and no
/// others, whatever the queries inside say. Both settings end with the transaction, so the
/// pooled connection goes back as it came.
///
/// BEGIN and both settings travel in one simple-protocol message: one round trip instead of
/// two on every tenant-scoped call. Splicing is safe here: the role is a constant and a
/// `Uuid` prints as hex digits and dashes only.
pub async fn begin_as_tenant(
    pool: &PgPool,
    tenant: uuid::Uuid,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "BEGIN; SET LOCAL ROLE {TENANT_ROLE}; SET LOCAL pizzeria.tenant_id = '{tenant}'"
    )))
    .await
}

/// Ends a transaction that only read. It has nothing to commit, and dropping it queues a
/// ROLLBACK that sqlx sends with the ping it makes anyway when the connection goes back to the
/// pool: the reply does not wait for a COMMIT round trip.
pub fn end_read_only(tx: sqlx::Transaction<'static, sqlx::Postgres>) {
    drop(tx);
}
