//! The system under test for the scenarios: either both binaries started here against fresh
//! databases and a fresh stream, or a stack already running elsewhere (docker compose, a
//! cluster) named by `E2E_COMMAND_SVC_URL` and `E2E_QUERY_SVC_URL`. The scenarios run unchanged
//! against either; each uses a tenant of its own, so they never see one another's data.

use std::time::Duration;

use shared::proto::v1::{
    command_service_client::CommandServiceClient, event_log_service_client::EventLogServiceClient,
    query_service_client::QueryServiceClient,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

use crate::{RunningService, TestDatabase, nats::TestStream};

/// Both services started by the test: restartable.
#[derive(Debug)]
struct Local {
    /// Extra environment for both services (the load generator quiets their logs).
    env: Vec<(String, String)>,
    write_db: TestDatabase,
    read_db: TestDatabase,
    stream: TestStream,
    command_svc: Option<RunningService>,
    query_svc: Option<RunningService>,
}

/// A running command-svc and query-svc, and a tenant of this scenario's own.
#[derive(Debug)]
pub struct Stack {
    local: Option<Local>,
    command_url: String,
    query_url: String,
    pub tenant: String,
}

impl Stack {
    /// Starts both binaries, or connects to the stack the environment names.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Vec::new()).await
    }

    /// [`Self::start`] with extra environment variables for both services when started here.
    pub async fn start_with(env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let tenant = uuid::Uuid::now_v7().to_string();
        if let (Ok(command_url), Ok(query_url)) = (
            std::env::var("E2E_COMMAND_SVC_URL"),
            std::env::var("E2E_QUERY_SVC_URL"),
        ) {
            return Ok(Self {
                local: None,
                command_url,
                query_url,
                tenant,
            });
        }
        let mut local = Local {
            env,
            write_db: TestDatabase::create().await?,
            read_db: TestDatabase::create().await?,
            stream: TestStream::new(),
            command_svc: None,
            query_svc: None,
        };
        local.start_command_svc().await?;
        local.start_query_svc().await?;
        Ok(Self {
            command_url: local.command_url(),
            query_url: local.query_url(),
            local: Some(local),
            tenant,
        })
    }

    /// Whether this run started the services (and can restart them).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The event store's database, when this run started the services.
    pub fn write_database_url(&self) -> Option<&str> {
        self.local.as_ref().map(|local| local.write_db.url.as_str())
    }

    /// The read model's database, when this run started the services.
    pub fn read_database_url(&self) -> Option<&str> {
        self.local.as_ref().map(|local| local.read_db.url.as_str())
    }

    /// Process ids of command-svc and query-svc, when this run started them.
    pub fn service_pids(&self) -> Option<(u32, u32)> {
        let local = self.local.as_ref()?;
        Some((
            local.command_svc.as_ref()?.pid(),
            local.query_svc.as_ref()?.pid(),
        ))
    }

    /// One scrape of command-svc's `/metrics` (local only: a remote stack's metrics port is
    /// its operator's business).
    pub async fn scrape_command_svc(&self) -> anyhow::Result<String> {
        let local = self
            .local
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not local"))?;
        let service = local
            .command_svc
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("stopped"))?;
        service.scrape_metrics().await
    }

    /// One scrape of query-svc's `/metrics` (local only).
    pub async fn scrape_query_svc(&self) -> anyhow::Result<String> {
        let local = self
            .local
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not local"))?;
        let service = local
            .query_svc
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("stopped"))?;
        service.scrape_metrics().await
    }

    pub async fn commands(&self) -> anyhow::Result<CommandServiceClient<Channel>> {
        Ok(CommandServiceClient::new(connect(&self.command_url).await?))
    }

    pub async fn event_log(&self) -> anyhow::Result<EventLogServiceClient<Channel>> {
        Ok(EventLogServiceClient::new(
            connect(&self.command_url).await?,
        ))
    }

    pub async fn command_channel(&self) -> anyhow::Result<Channel> {
        connect(&self.command_url).await
    }

    pub async fn query_channel(&self) -> anyhow::Result<Channel> {
        connect(&self.query_url).await
    }

    pub async fn queries(&self) -> anyhow::Result<QueryServiceClient<Channel>> {
        Ok(QueryServiceClient::new(connect(&self.query_url).await?))
    }

    /// `message` as a request of this scenario's tenant.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(tenant) = MetadataValue::try_from(self.tenant.as_str()) {
            request
                .metadata_mut()
                .insert(shared::auth::TENANT_HEADER, tenant);
        }
        request
    }

    /// SIGKILLs command-svc and starts it again on the same database and stream (local only).
    pub async fn restart_command_svc(&mut self) -> anyhow::Result<()> {
        let local = self
            .local
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("not local"))?;
        local.command_svc = None;
        local.start_command_svc().await?;
        self.command_url = local.command_url();
        Ok(())
    }

    /// SIGKILLs query-svc (local only); [`Self::start_query_svc`] brings it back.
    pub fn kill_query_svc(&mut self) -> anyhow::Result<()> {
        let local = self
            .local
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("not local"))?;
        local.query_svc = None;
        Ok(())
    }

    /// Starts query-svc again on the same read database and stream (local only).
    pub async fn start_query_svc(&mut self) -> anyhow::Result<()> {
        let local = self
            .local
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("not local"))?;
        local.start_query_svc().await?;
        self.query_url = local.query_url();
        Ok(())
    }

    /// Stops what this run started and drops its databases.
    pub async fn finish(self) -> anyhow::Result<()> {
        if let Some(mut local) = self.local {
            local.query_svc = None;
            local.command_svc = None;
            local.write_db.drop_database().await?;
            local.read_db.drop_database().await?;
        }
        Ok(())
    }
}

impl Local {
    fn command_url(&self) -> String {
        self.command_svc
            .as_ref()
            .map_or_else(String::new, |s| format!("http://{}", s.addr))
    }

    fn query_url(&self) -> String {
        self.query_svc
            .as_ref()
            .map_or_else(String::new, |s| format!("http://{}", s.addr))
    }

    async fn start_command_svc(&mut self) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.write_db.url.clone()),
            ("RELAY_POLL_INTERVAL", "50ms".to_owned()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ];
        env.extend(self.stream.relay_env());
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v));
        let env: Vec<(String, String)> = env.chain(self.env.iter().cloned()).collect();
        self.command_svc = Some(RunningService::start_serving("command-svc", env).await?);
        Ok(())
    }

    async fn start_query_svc(&mut self) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.read_db.url.clone()),
            ("COMMAND_SVC_URL", self.command_url()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ];
        env.extend(self.stream.relay_env());
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v));
        let env: Vec<(String, String)> = env.chain(self.env.iter().cloned()).collect();
        self.query_svc = Some(RunningService::start_serving("query-svc", env).await?);
        Ok(())
    }
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}
