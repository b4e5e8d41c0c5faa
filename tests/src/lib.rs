//! End-to-end harness: starts the real service binaries and talks to them over gRPC.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test.sh` does it).

// A test harness: a panic here is a test failure with a line number.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub mod invariants;
pub mod nats;
pub mod otlp;
pub mod postgres;
pub mod rig;
pub mod stack;
pub mod workload;

use anyhow::{Context, bail};
use tonic::transport::Channel;

/// A service binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct RunningService {
    pub addr: SocketAddr,
    /// Where the service serves Prometheus `/metrics`.
    pub metrics_addr: SocketAddr,
    child: Child,
}

impl Drop for RunningService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunningService {
    /// Starts `binary` (e.g. `command-svc`) on a free port with extra environment variables and
    /// waits until it accepts gRPC connections.
    pub async fn start<K, V>(
        binary: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> anyhow::Result<Self>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::start_on(binary, free_addr()?, env).await
    }

    /// [`Self::start`] on a given address (a restarted service keeps its address, so clients
    /// and the other service reconnect to it).
    pub async fn start_on<K, V>(
        binary: &str,
        addr: SocketAddr,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> anyhow::Result<Self>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let path = binary_path(binary)?;
        let metrics_addr = free_addr()?;
        let child = Command::new(&path)
            .env("GRPC_ADDR", addr.to_string())
            .env("METRICS_ADDR", metrics_addr.to_string())
            .env("LOG_FORMAT", "pretty")
            // Tests name their tenant with x-tenant-id; tests/tests/auth.rs sets a key instead.
            .env("AUTH_DISABLED", "true")
            .envs(env)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let service = Self {
            addr,
            metrics_addr,
            child,
        };
        service
            .wait_until_connectable(Duration::from_secs(20))
            .await?;
        Ok(service)
    }

    /// [`Self::start`], then waits until the whole server reports SERVING.
    pub async fn start_serving<K, V>(
        binary: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> anyhow::Result<Self>
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let service = Self::start(binary, env).await?;
        service
            .wait_until_serving("", Duration::from_secs(30))
            .await?;
        Ok(service)
    }

    /// One scrape of `/metrics`, in the Prometheus text format.
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        scrape(self.metrics_addr).await
    }

    /// The process id (to read its resident memory, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A gRPC channel to the service.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    /// Waits until the health service reports `service` ("" for the whole server) SERVING.
    pub async fn wait_until_serving(&self, service: &str, timeout: Duration) -> anyhow::Result<()> {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let mut health = HealthClient::new(self.channel().await?);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map(|response| response.into_inner().status);
            if status
                .as_ref()
                .is_ok_and(|s| *s == ServingStatus::Serving as i32)
            {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("health of {:?} is {status:?} after {timeout:?}", service);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGSTOP: the process hangs with its connections open.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the process to exit, returning whether it exited cleanly.
    pub fn terminate(mut self) -> anyhow::Result<bool> {
        signal(self.child.id(), "TERM");
        Ok(self.child.wait()?.success())
    }

    async fn wait_until_connectable(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.channel().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "service on {} did not come up within {timeout:?}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A database of its own on the Postgres at `DATABASE_URL`, dropped when the test ends.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates `e2e_<random>`. Fails loudly when Postgres is unreachable.
    pub async fn create() -> anyhow::Result<Self> {
        use sqlx::Connection;
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("Postgres at DATABASE_URL is required for end-to-end tests")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        // Keep connection parameters (`?sslmode=disable`, say) for the new database too.
        let (address, parameters) = admin_url
            .split_once('?')
            .map_or((admin_url.as_str(), String::new()), |(a, p)| {
                (a, format!("?{p}"))
            });
        let base = address.rsplit_once('/').map_or(address, |(base, _)| base);
        Ok(Self {
            url: format!("{base}/{name}{parameters}"),
            name,
            admin_url,
        })
    }

    /// A pool of `max_connections` on the database, after running `migrator` on it.
    pub async fn migrated_pool(
        &self,
        migrator: &sqlx::migrate::Migrator,
        max_connections: u32,
    ) -> anyhow::Result<sqlx::PgPool> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&self.url)
            .await
            .context("connecting to the test database")?;
        migrator
            .run(&pool)
            .await
            .context("migrating the test database")?;
        Ok(pool)
    }

    /// Drops the database (forcing out leftover connections).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// The projections of a read database (`public.projections`), by name.
pub async fn projection_names(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM public.projections ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// Every read table's rows of every projection as text, sorted, plus the applied event
/// positions: two read databases are the same exactly when their dumps are equal.
pub async fn read_model_dump(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    let mut dump = Vec::new();
    for name in projection_names(pool).await? {
        dump.extend(projection_dump(pool, &name).await?);
    }
    Ok(dump)
}

/// The rows of projection `name`'s tables (its schema's, with its stream progress) as text,
/// sorted, and its applied event positions. Left out: the watermark row and the dead letters,
/// which carry the times they were written.
pub async fn projection_dump(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = $1 AND table_type = 'BASE TABLE'
           AND table_name NOT IN ('applied_events', 'projector_state', 'dead_letters')
         ORDER BY table_name",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(!tables.is_empty(), "projection {name} has no tables");
    let mut dump = Vec::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {name}.{table} t ORDER BY t::text"
        )))
        .fetch_all(pool)
        .await?;
        dump.push(format!("{name}.{table}: {rows:?}"));
    }
    let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT global_position FROM {name}.applied_events ORDER BY 1"
    )))
    .fetch_all(pool)
    .await?;
    dump.push(format!("{name}.applied_events: {applied:?}"));
    Ok(dump)
}

/// `target/<profile>/<binary>`, found from the running executable: a test is in
/// `target/<profile>/deps/`, a binary such as the load generator in `target/<profile>/`.
fn binary_path(binary: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let parent = exe.parent().context("executable has no directory")?;
    let profile_dir = if parent.ends_with("deps") {
        parent
            .parent()
            .context("test executable has no target/<profile> directory")?
    } else {
        parent
    };
    let path = profile_dir.join(binary);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first with `cargo build --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// Sends `kill -<name>` to a process.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

/// A free local address (bound and released at once).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET /metrics` over plain HTTP/1.0 (the response ends when the connection closes).
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("metrics endpoint {addr}"))?;
    connection
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    connection.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("metrics endpoint answered {head:?}");
    }
    Ok(body.to_owned())
}

/// The value of the sample of `name` with exactly `labels` (in any order) in a scrape, or 0
/// when there is none (a counter never incremented is not exported).
pub fn metric_value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, mut found) = match series.split_once('{') {
                Some((metric, rest)) => (
                    metric,
                    rest.trim_end_matches('}')
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            found.sort();
            (metric == name && found == wanted).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
