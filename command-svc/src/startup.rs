//! Builds and runs the server: `App::build` binds; `run_until_stopped` migrates (once the
//! database answers), relays and serves until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use shared::proto::training::v1::training_plan_command_service_server::TrainingPlanCommandServiceServer;
use shared::proto::v1::{
    command_service_server::CommandServiceServer, event_log_service_server::EventLogServiceServer,
};
use shared::{connect::Background, service::Bound};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    eventsourcing::{
        handler::CommandHandler,
        relay::{EventStreamSettings, Relay, RelaySettings},
        store::{EventStore, MIGRATOR},
    },
    grpc::{
        command_service::CommandApi, commands::Commands, event_log_service::EventLogApi,
        training::TrainingPlanCommandApi,
    },
};

/// The health services whose status follows the event store's.
const HEALTH_SERVICES: &[&str] = &[
    "",
    "pizzeria.v1.CommandService",
    "pizzeria.v1.EventLogService",
    "training.v1.TrainingPlanCommandService",
];

/// The relay's own health status: SERVING while NATS is connected. Not part of the server's
/// (`""`): commands do not need NATS, the relay publishes them once it is back.
pub const RELAY_HEALTH: &str = "relay";

/// A bound command-svc.
#[derive(Debug)]
pub struct App {
    bound: Bound,
    config: Config,
    pool: PgPool,
    appended: Arc<Notify>,
}

impl App {
    /// Makes the event store's pool (connected on first use) and binds the listen address (port
    /// 0 picks a free port, as tests do). Postgres does not have to be up: the service starts
    /// NOT_SERVING and migrates and serves once it is.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = shared::service::database(&config.database_url, &config.common)?;
        Self::with_pool(config, pool).await
    }

    /// Binds with an existing pool (tests get one per test from `#[sqlx::test]`).
    pub async fn with_pool(config: Config, pool: PgPool) -> anyhow::Result<Self> {
        let bound = Bound::bind(config.grpc_addr, &config.metrics_addr, &config.common).await?;
        Ok(Self {
            bound,
            config,
            pool,
            appended: Arc::new(Notify::new()),
        })
    }

    /// Turns true once the service has migrated its database and admits calls.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.bound.ready()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.bound.local_addr()
    }

    /// Where `/metrics` is served, unless switched off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.bound.metrics_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let store = EventStore::new(self.pool.clone());
        let handler = CommandHandler::new(
            store.clone(),
            self.config.snapshot_every,
            self.appended.clone(),
        );
        let stop = CancellationToken::new();
        let nats = if self.config.relay_enabled {
            Some(
                shared::connect::nats(&self.config.common.nats_url, "command-svc relay")
                    .await
                    .context("invalid NATS_URL")?,
            )
        } else {
            None
        };
        // Migrate (waiting for the database as long as it takes), then admit calls and relay.
        let relay_nats = nats.clone();
        let relay = nats.map(|nats| self.relay(nats));
        let addr = self.local_addr()?;
        let Bound {
            listener,
            admission,
            readiness,
            metrics,
        } = self.bound;
        let relaying = Background::start_once_migrated(
            "relay",
            self.pool.clone(),
            &MIGRATOR,
            readiness,
            stop.clone(),
            relay.map(|relay| relay.run(stop.clone())),
        );

        if let Some(metrics) = metrics {
            let pool = self.pool.clone();
            let sample = Arc::new(move || shared::metrics::sample_pool(&pool, "event_store"));
            tokio::spawn(metrics.serve(sample, stop.clone()));
        }
        let (health, routes) = shared::grpc::base_routes().await?;
        // Ready while the event store answers. NATS is not needed to take commands: the relay
        // publishes them once it is back.
        let stop_monitor = CancellationToken::new();
        let pool = self.pool.clone();
        let relay_enabled = self.config.relay_enabled;
        tokio::spawn(shared::health::follow(
            health.clone(),
            HEALTH_SERVICES,
            stop_monitor.clone(),
            admission.ready(),
            move || {
                let pool = pool.clone();
                async move {
                    let problem = shared::health::database_problem(&pool).await;
                    if problem.is_none() && relay_enabled {
                        crate::eventsourcing::relay::sample_lag(&pool).await;
                    }
                    problem
                }
            },
        ));
        if let Some(nats) = relay_nats {
            tokio::spawn(shared::health::follow(
                health.clone(),
                &[RELAY_HEALTH],
                stop_monitor.clone(),
                admission.ready(),
                move || {
                    let connected =
                        nats.connection_state() == async_nats::connection::State::Connected;
                    async move {
                        (!connected).then(|| "NATS unreachable: events wait in Postgres".to_owned())
                    }
                },
            ));
        }
        let shutdown = async move {
            shutdown.await;
            stop_monitor.cancel();
        };
        let limit = self.config.max_request_bytes;
        let commands = Commands::new(handler);
        let routes = routes
            .add_service(
                CommandServiceServer::new(CommandApi::new(commands.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            )
            .add_service(
                TrainingPlanCommandServiceServer::new(TrainingPlanCommandApi::new(commands))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            )
            .add_service(
                EventLogServiceServer::new(EventLogApi::new(store, crate::domain::AGGREGATE_TYPES))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            );
        tracing::info!(%addr, "command-svc listening");
        let served = shared::grpc::serve(
            listener,
            routes,
            admission,
            health,
            shutdown,
            self.config.common.shutdown_drain_timeout,
            self.config.common.request_timeout,
        )
        .await
        .context("gRPC server failed");
        // Calls are drained, so no more commits come from this process: let the relay finish
        // its batch. What it leaves is published by the next relay to take the lock.
        relaying
            .stop(self.config.common.shutdown_drain_timeout)
            .await;
        served
    }

    /// The relay. Its NATS connection is made in the background (and re-made after any
    /// disconnect), so the command path never waits for NATS.
    fn relay(&self, nats: async_nats::Client) -> Relay {
        let settings = RelaySettings {
            stream: EventStreamSettings {
                name: self.config.common.nats_stream.clone(),
                subject_prefix: self.config.common.nats_subject_prefix.clone(),
                publish_timeout: self.config.relay_publish_timeout,
            },
            batch_size: self.config.relay_batch_size,
            poll_interval: self.config.relay_poll_interval,
        };
        Relay::new(self.pool.clone(), nats, settings, self.appended.clone())
    }
}
