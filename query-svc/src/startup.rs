//! Builds and runs the server: `App::build` binds; `run_until_stopped` migrates (once the
//! database answers), projects and serves until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use async_nats::jetstream;
use shared::proto::v1::{
    event_log_service_client::EventLogServiceClient,
    projection_admin_service_server::ProjectionAdminServiceServer,
    query_service_server::QueryServiceServer,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use shared::proto::training::v1::training_plan_query_service_server::TrainingPlanQueryServiceServer;
use shared::{connect::Background, service::Bound};

use crate::{
    admin::{Admin, health::HealthMonitor},
    config::Config,
    grpc::{admin_service::AdminApi, consistency::ReadYourWrites, query_service::QueryApi},
    projections::{self, read_model::ReadModel},
    runtime::{
        Registry, consumer::ProjectorSettings, host::Hosts, lag::LagProbe, rebuild::Rebuilder,
        streams::Streams,
    },
    store::MIGRATOR,
    training::{TrainingPlans, service::TrainingPlanQueryApi},
};

/// The health services whose status follows the read side's.
const HEALTH_SERVICES: &[&str] = &[
    "",
    "pizzeria.v1.QueryService",
    "pizzeria.v1.ProjectionAdminService",
    "training.v1.TrainingPlanQueryService",
];

/// Every projection this service hosts: the pizzeria's, then the training plans'. A bounded
/// context's read side is registered here, and its gRPC service below.
pub fn registry() -> (Registry, Arc<ReadModel>) {
    let (pizzeria, read_model) = projections::registry();
    (pizzeria.with(Arc::new(TrainingPlans)), read_model)
}

/// A connected, migrated, bound query-svc.
#[derive(Debug)]
pub struct App {
    bound: Bound,
    config: Config,
    pool: PgPool,
}

impl App {
    /// Makes the read database pool (connected on first use) and binds the listen address.
    /// Neither Postgres nor NATS has to be up: the service starts NOT_SERVING and migrates,
    /// projects and serves once they are.
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
        })
    }

    /// Where `/metrics` is served, unless switched off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.bound.metrics_addr()
    }

    /// Turns true once the service has migrated its database and admits calls.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.bound.ready()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.bound.local_addr()
    }

    /// Projects and serves until `shutdown` resolves, then drains calls, lets the projector
    /// finish its batch and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let nats = shared::connect::nats(&self.config.common.nats_url, "query-svc projector")
            .await
            .context("invalid NATS_URL")?;
        let command_svc = Channel::from_shared(self.config.command_svc_url.clone())
            .context("invalid COMMAND_SVC_URL")?
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect_lazy();
        let command_svc = EventLogServiceClient::with_interceptor(
            command_svc,
            shared::auth::ServiceToken::from_file(self.config.command_svc_token_file.clone()),
        );
        let streams = Streams::new(command_svc);
        let lag = LagProbe {
            jetstream: jetstream::new(nats.clone()),
            stream: self.config.common.nats_stream.clone(),
            consumer: self.config.nats_consumer.clone(),
        };
        let (registry, read_model) = registry();
        let (hosts, projector) = Hosts::start(
            &registry,
            &self.pool,
            &nats,
            &streams,
            &ProjectorSettings {
                stream: self.config.common.nats_stream.clone(),
                subject_prefix: self.config.common.nats_subject_prefix.clone(),
                consumer: self.config.nats_consumer.clone(),
                batch_size: self.config.projector_batch_size as usize,
            },
        );
        let stop = CancellationToken::new();
        let addr = self.local_addr()?;
        let Bound {
            listener,
            admission,
            readiness,
            metrics,
        } = self.bound;
        // Migrate (waiting for the database as long as it takes), then admit calls and project.
        let projecting = Background::start_once_migrated(
            "projector",
            self.pool.clone(),
            &MIGRATOR,
            readiness,
            stop.clone(),
            Some(projector.run(stop.clone())),
        );

        if let Some(metrics) = metrics {
            let pool = self.pool.clone();
            let sample = Arc::new(move || shared::metrics::sample_pool(&pool, "read_models"));
            tokio::spawn(metrics.serve(sample, stop.clone()));
        }
        let (health, routes) = shared::grpc::base_routes().await?;
        let monitor = HealthMonitor {
            services: HEALTH_SERVICES,
            pool: self.pool.clone(),
            nats,
            lag: lag.clone(),
            hosts: hosts.clone(),
            ready: admission.ready(),
            max_lag: self.config.health_max_lag,
        };
        let stop_monitor = CancellationToken::new();
        tokio::spawn(monitor.run(health.clone(), stop_monitor.clone()));
        let admin = Admin::new(
            self.pool.clone(),
            hosts.clone(),
            streams.clone(),
            lag.clone(),
            Rebuilder::new(
                self.pool.clone(),
                streams,
                lag,
                stop.clone(),
                self.config.rebuild_page_size,
            ),
        );
        let consistency = ReadYourWrites::new(
            self.pool.clone(),
            hosts.clone(),
            self.config.max_consistency_wait,
        );
        let limit = self.config.max_request_bytes;
        let routes = routes
            .add_service(
                QueryServiceServer::new(QueryApi::new(
                    self.pool.clone(),
                    consistency.clone(),
                    read_model.changes(),
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            )
            .add_service(
                TrainingPlanQueryServiceServer::new(TrainingPlanQueryApi::new(
                    self.pool.clone(),
                    consistency,
                ))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            )
            .add_service(
                ProjectionAdminServiceServer::new(AdminApi::new(admin))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(shared::grpc::MAX_RESPONSE_BYTES),
            );
        // The monitor stops first, so it cannot report SERVING again while the server drains.
        let shutdown = async move {
            shutdown.await;
            stop_monitor.cancel();
        };
        tracing::info!(%addr, "query-svc listening");
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
        // The rebuilder shares `stop`, so a running rebuild stops here too.
        projecting
            .stop(self.config.common.shutdown_drain_timeout)
            .await;
        served
    }
}
