//! `loadgen`: drives load through the pizzeria over gRPC and compares it, in one run, with
//! cqrs-es + postgres-es in process and with pgbench doing the raw SQL, on the same Postgres.
//!
//! `loadgen run` loads one stack (started here from `target/<profile>/`, or named by
//! `--command-url`/`--query-url`); `loadgen compare` runs the whole comparison. Build release
//! binaries first: `cargo build --release --workspace --bins` (scripts/bench.sh does it all).

mod compare;
mod cqrs_es_peer;
mod grpc_load;
mod pgbench;
mod stats;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use grpc_load::{LoadOptions, Mix, Target};
use stats::RunReport;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Load one stack and report throughput, latency, errors and projection lag.
    Run(RunArgs),
    /// This project vs cqrs-es vs pgbench, side by side in one run, with ratios.
    Compare(compare::CompareArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// command-svc to load (e.g. http://127.0.0.1:50051); without it both services are
    /// started here on fresh databases.
    #[arg(long, requires = "query_url")]
    command_url: Option<String>,
    #[arg(long, requires = "command_url")]
    query_url: Option<String>,
    /// Tenant sent as x-tenant-id when the services run with auth off.
    #[arg(long)]
    tenant: Option<String>,
    /// A file holding a bearer token (services with auth on; the token names the tenant).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How much load (shared by `run` and `compare`).
#[derive(Debug, Clone, Args)]
struct LoadArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, value_enum, default_value_t = Mix::Mixed)]
    mix: Mix,
    /// How long to measure (after the warm-up).
    #[arg(long, default_value = "20s", value_parser = shared::config::parse_duration)]
    duration: Duration,
    /// Not measured: lets connections, caches and the JIT-free Postgres plan cache settle.
    #[arg(long, default_value = "3s", value_parser = shared::config::parse_duration)]
    warmup: Duration,
    /// Stop after this many orders instead of after the duration (for `--mix get-order`:
    /// how many orders to seed).
    #[arg(long)]
    orders: Option<u64>,
    /// Commands per second over all clients (paced); unset means as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Probe the projection lag after every n-th command of each client (0: never).
    #[arg(long, default_value_t = 8)]
    lag_every: u32,
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            clients: self.clients.max(1),
            mix: self.mix,
            duration: self.duration,
            orders: self.orders,
            warmup: self.warmup,
            rate: self.rate,
            lag_every: self.lag_every,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Mode::Run(args) => run(args).await,
        Mode::Compare(args) => compare::run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(std::fs::read_to_string(path)?.trim().to_owned()),
        None => None,
    };
    let stack = match (&args.command_url, &args.query_url) {
        (Some(_), Some(_)) => None,
        _ => Some(compare::start_stack().await?),
    };
    let target = match (&stack, &args.command_url, &args.query_url) {
        (Some(stack), _, _) => compare::target_of(stack).await?,
        (None, Some(command), Some(query)) => Target {
            commands: tonic::transport::Channel::from_shared(command.clone())?
                .connect()
                .await?,
            queries: tonic::transport::Channel::from_shared(query.clone())?
                .connect()
                .await?,
            tenant: args
                .tenant
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            token,
        },
        _ => anyhow::bail!("give both --command-url and --query-url, or neither"),
    };
    let options = args.load.options();
    let result = grpc_load::run(&target, &options).await?;
    let report = RunReport::from_tally(
        "pizzeria (gRPC)",
        options.clients,
        result.elapsed,
        &result.tally,
        grpc_load::QUERIES,
        Some(&result.lag),
    );
    stats::print_table(std::slice::from_ref(&report));
    println!();
    for (operation, latency) in &report.by_operation {
        println!(
            "  {operation:<28} n={:<8} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            latency.count, latency.p50_ms, latency.p99_ms, latency.max_ms
        );
    }
    for (error, count) in &report.errors {
        println!("  error {error}: {count}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(stack) = stack {
        stack.finish().await?;
    }
    Ok(())
}

/// Resident memory of a process, in MiB (Linux).
fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    //! The load generator's own checks, on a small stack started from the debug binaries
    //! (`cargo build --workspace --bins` first), the shared Postgres and NATS, and pgbench.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use e2e::TestDatabase;

    use crate::{
        compare, cqrs_es_peer,
        grpc_load::{self, LoadOptions, Mix},
        pgbench,
    };

    #[tokio::test]
    async fn every_command_is_counted_and_every_probe_sees_its_command_projected() {
        let stack = compare::start_stack().await.unwrap();
        let target = compare::target_of(&stack).await.unwrap();
        let options = LoadOptions {
            clients: 2,
            mix: Mix::Mixed,
            duration: Duration::from_secs(120),
            orders: Some(4),
            warmup: Duration::ZERO,
            rate: None,
            lag_every: 1,
        };
        let result = grpc_load::run(&target, &options).await.unwrap();
        stack.finish().await.unwrap();

        assert!(result.tally.errors.is_empty(), "{:?}", result.tally.errors);
        let commands = result
            .tally
            .combined(|op| !grpc_load::QUERIES.contains(&op))
            .count();
        let queries = result
            .tally
            .combined(|op| grpc_load::QUERIES.contains(&op))
            .count();
        // A registration per client, six commands per order, two queries per order.
        assert_eq!(commands, 2 + 4 * 6);
        assert_eq!(queries, 4 * 2);
        assert_eq!(result.lag.count(), 4 * 6, "one lag probe per order command");
    }

    #[tokio::test]
    async fn the_cqrs_es_peer_stores_one_event_per_command() {
        let database = TestDatabase::create().await.unwrap();
        let (tally, _) = cqrs_es_peer::run(
            &database.url,
            2,
            4,
            Duration::ZERO,
            Duration::from_millis(1500),
        )
        .await
        .unwrap();
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        database.drop_database().await.unwrap();

        assert!(tally.errors.is_empty(), "{:?}", tally.errors);
        let commands = tally.combined(|_| true).count();
        assert!(commands > 6, "only {commands} commands in 1.5 s");
        // Commands of orders still open when the run stopped count too: equal, not more.
        assert_eq!(u64::try_from(events).unwrap(), commands);
    }

    #[tokio::test]
    async fn pgbench_runs_the_raw_command_sql_and_every_transaction_is_logged() {
        let database = TestDatabase::create().await.unwrap();
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        command_svc::eventsourcing::store::MIGRATOR
            .run(&pool)
            .await
            .unwrap();
        let tenant = uuid::Uuid::now_v7().to_string();
        pgbench::seed_streams(&database.url, &tenant, 50)
            .await
            .unwrap();
        let report = pgbench::run(
            pgbench::Script::Command,
            &database.url,
            2,
            Duration::from_secs(1),
            &[("tenant", tenant.clone()), ("streams", "50".into())],
        )
        .unwrap();
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        database.drop_database().await.unwrap();

        assert!(report.errors.is_empty(), "{:?}", report.errors);
        // 50 seeded events plus one per logged transaction.
        assert_eq!(
            u64::try_from(events).unwrap(),
            50 + report.command_latency.count
        );
    }
}
