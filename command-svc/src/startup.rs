//! Builds and runs the server: `App::build` connects, migrates and binds; `run_until_stopped`
//! serves until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use shared::proto::v1::{
    command_service_server::CommandServiceServer, event_log_service_server::EventLogServiceServer,
};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    app::CommandHandler,
    config::Config,
    grpc::{command_service::CommandApi, event_log_service::EventLogApi},
    relay::{EventStreamSettings, Relay, RelaySettings},
    store::{EventStore, MIGRATOR},
};

/// A connected, migrated, bound command-svc.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    config: Config,
    pool: PgPool,
    appended: Arc<Notify>,
}

impl App {
    /// Connects to Postgres, runs the migrations and binds the listen address (port 0 picks a
    /// free port, as tests do).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shared::connect::database(
            &config.database_url,
            config.database_max_connections,
            config.database_acquire_timeout,
        )
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
        // sqlx holds a Postgres advisory lock while migrating, so replicas starting together
        // don't race.
        MIGRATOR
            .run(&pool)
            .await
            .context("database migration failed")?;
        Self::with_pool(config, pool).await
    }

    /// Binds with an existing, migrated pool (tests get one per test from `#[sqlx::test]`).
    pub async fn with_pool(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        Ok(Self {
            listener,
            config,
            pool,
            appended: Arc::new(Notify::new()),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let store = EventStore::new(self.pool.clone());
        let handler = CommandHandler::new(
            store.clone(),
            self.config.snapshot_every,
            self.appended.clone(),
        );
        let relay_stop = CancellationToken::new();
        let relay = if self.config.relay_enabled {
            Some(self.spawn_relay(relay_stop.clone()).await?)
        } else {
            None
        };
        let limit = self.config.max_request_bytes;
        let (health, routes) = shared::grpc::base_routes().await?;
        let routes = routes
            .add_service(
                CommandServiceServer::new(CommandApi::new(handler))
                    .max_decoding_message_size(limit),
            )
            .add_service(
                EventLogServiceServer::new(EventLogApi::new(store))
                    .max_decoding_message_size(limit),
            );
        tracing::info!(addr = %self.local_addr()?, "command-svc listening");
        let served = shared::grpc::serve(
            self.listener,
            routes,
            health,
            shutdown,
            self.config.shutdown_drain_timeout,
            self.config.request_timeout,
        )
        .await
        .context("gRPC server failed");
        // Calls are drained, so no more commits come from this process: let the relay finish
        // its batch. What it leaves is published by the next relay to take the lock.
        relay_stop.cancel();
        if let Some(relay) = relay
            && tokio::time::timeout(self.config.shutdown_drain_timeout, relay)
                .await
                .is_err()
        {
            tracing::warn!("relay did not finish its batch within the drain timeout");
        }
        served
    }

    /// Starts the relay task. The NATS connection is made in the background (and re-made after
    /// any disconnect), so the command path never waits for NATS.
    async fn spawn_relay(&self, stop: CancellationToken) -> anyhow::Result<JoinHandle<()>> {
        let nats = shared::connect::nats(&self.config.nats_url, "command-svc relay")
            .await
            .context("invalid NATS_URL")?;
        let settings = RelaySettings {
            stream: EventStreamSettings {
                name: self.config.nats_stream.clone(),
                subject_prefix: self.config.nats_subject_prefix.clone(),
                duplicate_window: self.config.nats_duplicate_window,
                publish_timeout: self.config.relay_publish_timeout,
            },
            batch_size: self.config.relay_batch_size,
            poll_interval: self.config.relay_poll_interval,
        };
        let relay = Relay::new(self.pool.clone(), nats, settings, self.appended.clone());
        Ok(tokio::spawn(relay.run(stop)))
    }
}
