//! The fault-injection rig: both service binaries over a Postgres and a nats-server of the
//! test's own, so any of the four processes can be killed, paused or restarted without touching
//! the shared servers. Each keeps its port across restarts, so clients and the other processes
//! reconnect by themselves.

use std::{net::SocketAddr, time::Duration};

use shared::proto::v1::{
    command_service_client::CommandServiceClient,
    projection_admin_service_client::ProjectionAdminServiceClient,
    query_service_client::QueryServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::{
    RunningService, free_addr,
    nats::{PrivateNats, TestStream},
    postgres::PrivatePostgres,
};

const WRITE_DB: &str = "events";
const READ_DB: &str = "reads";

/// The four processes of one fault test.
#[derive(Debug)]
pub struct Rig {
    // Dropped in this order: services first, then the stream (deleted while NATS still runs),
    // then the servers.
    command_svc: Option<RunningService>,
    query_svc: Option<RunningService>,
    pub stream: TestStream,
    pub nats: PrivateNats,
    pub postgres: PrivatePostgres,
    command_addr: SocketAddr,
    query_addr: SocketAddr,
}

impl Rig {
    /// Starts Postgres, NATS and both services, and waits until both report SERVING.
    pub async fn start() -> anyhow::Result<Self> {
        let mut rig = Self::with_servers_down()?;
        rig.postgres.restart()?;
        rig.create_databases()?;
        rig.nats.restart()?;
        rig.start_command_svc().await?;
        rig.start_query_svc().await?;
        rig.wait_until_serving(Duration::from_secs(30)).await?;
        Ok(rig)
    }

    /// Postgres (created, databases not yet made) and NATS on ports of their own, neither
    /// running; no service started.
    pub fn with_servers_down() -> anyhow::Result<Self> {
        let nats = PrivateNats::create()?;
        Ok(Self {
            command_svc: None,
            query_svc: None,
            stream: TestStream::on(&nats.url()),
            nats,
            postgres: PrivatePostgres::create()?,
            command_addr: free_addr()?,
            query_addr: free_addr()?,
        })
    }

    /// Creates the two databases (Postgres must be running).
    pub fn create_databases(&self) -> anyhow::Result<()> {
        self.postgres.create_database(WRITE_DB)?;
        self.postgres.create_database(READ_DB)
    }

    pub fn write_url(&self) -> String {
        self.postgres.url(WRITE_DB)
    }

    pub fn read_url(&self) -> String {
        self.postgres.url(READ_DB)
    }

    /// A pool on the event store (connects on first use, reconnects after restarts).
    pub fn write_pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPool::connect_lazy(&self.write_url())?)
    }

    /// A pool on the read database.
    pub fn read_pool(&self) -> anyhow::Result<PgPool> {
        Ok(PgPool::connect_lazy(&self.read_url())?)
    }

    /// Starts command-svc (again) on its address; it need not be SERVING yet.
    pub async fn start_command_svc(&mut self) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.write_url()),
            ("RELAY_POLL_INTERVAL", "100ms".to_owned()),
            ("RELAY_PUBLISH_TIMEOUT", "2s".to_owned()),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".to_owned()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
            ("RUST_LOG", log_filter()),
        ];
        env.extend(self.stream.relay_env());
        self.command_svc =
            Some(RunningService::start_on("command-svc", self.command_addr, env).await?);
        Ok(())
    }

    /// Starts query-svc (again) on its address; it need not be SERVING yet.
    pub async fn start_query_svc(&mut self) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.read_url()),
            ("COMMAND_SVC_URL", format!("http://{}", self.command_addr)),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".to_owned()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
            ("RUST_LOG", log_filter()),
        ];
        env.extend(self.stream.relay_env());
        self.query_svc = Some(RunningService::start_on("query-svc", self.query_addr, env).await?);
        Ok(())
    }

    /// `kill -9` of command-svc.
    pub fn kill_command_svc(&mut self) {
        self.command_svc = None;
    }

    /// `kill -9` of query-svc.
    pub fn kill_query_svc(&mut self) {
        self.query_svc = None;
    }

    pub fn command_svc(&mut self) -> Option<&mut RunningService> {
        self.command_svc.as_mut()
    }

    pub fn query_svc(&mut self) -> Option<&mut RunningService> {
        self.query_svc.as_mut()
    }

    /// Both services are started and neither process has exited.
    pub fn services_running(&mut self) -> bool {
        [&mut self.command_svc, &mut self.query_svc]
            .into_iter()
            .all(|service| service.as_mut().is_some_and(RunningService::is_running))
    }

    /// Both services report SERVING ("" on each).
    pub async fn wait_until_serving(&self, timeout: Duration) -> anyhow::Result<()> {
        for service in [&self.command_svc, &self.query_svc].into_iter().flatten() {
            service.wait_until_serving("", timeout).await?;
        }
        Ok(())
    }

    /// Brings every process back: resumes paused ones, starts stopped ones.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        self.postgres.resume();
        if !self.postgres.is_running() {
            self.postgres.restart()?;
        }
        self.nats.resume();
        if !self.nats.is_running() {
            self.nats.restart()?;
        }
        for service in [&self.command_svc, &self.query_svc].into_iter().flatten() {
            service.resume();
        }
        if self.command_svc.is_none() {
            self.start_command_svc().await?;
        }
        if self.query_svc.is_none() {
            self.start_query_svc().await?;
        }
        Ok(())
    }

    /// A channel to command-svc that reconnects across its restarts.
    pub fn command_channel(&self) -> anyhow::Result<Channel> {
        lazy_channel(self.command_addr)
    }

    pub fn commands(&self) -> anyhow::Result<CommandServiceClient<Channel>> {
        Ok(CommandServiceClient::new(self.command_channel()?))
    }

    pub fn queries(&self) -> anyhow::Result<QueryServiceClient<Channel>> {
        Ok(QueryServiceClient::new(lazy_channel(self.query_addr)?))
    }

    pub fn admin(&self) -> anyhow::Result<ProjectionAdminServiceClient<Channel>> {
        Ok(ProjectionAdminServiceClient::new(lazy_channel(
            self.query_addr,
        )?))
    }
}

/// The services' `RUST_LOG`: `warn`, or `RIG_LOG` (e.g. `warn,command_svc::eventsourcing::relay=debug` to
/// follow the relay through a failing fault test).
fn log_filter() -> String {
    std::env::var("RIG_LOG").unwrap_or_else(|_| "warn".to_owned())
}

fn lazy_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}
