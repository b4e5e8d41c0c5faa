//! Connecting to the two dependencies both services have, the same way in each.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// A Postgres pool: at most `max_connections`, and a call waits at most `acquire_timeout` for a
/// connection (then the caller answers UNAVAILABLE). Fails if the database cannot be reached now.
pub async fn database(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect(url)
        .await
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
