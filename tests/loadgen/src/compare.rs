//! `loadgen compare`: every figure of the Benchmarks table in one run, side by side, so the
//! ratios hold whatever else the machine is doing.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Args;
use e2e::{TestDatabase, stack::Stack};
use serde::Serialize;
use shared::proto::v1::{
    self as pb, projection_admin_service_client::ProjectionAdminServiceClient,
};

use crate::{
    cqrs_es_peer,
    grpc_load::{self, LoadOptions, Mix, Target},
    pgbench, resident_mib,
    stats::{self, RunReport},
};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Client counts for the throughput comparison (the last one is used for the rest).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// How long each run measures.
    #[arg(long, default_value = "15s", value_parser = shared::config::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "3s", value_parser = shared::config::parse_duration)]
    warmup: Duration,
    /// Connections in each side's pool (command-svc's default is 16).
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/compare.json")]
    json: PathBuf,
}

/// Everything `compare` measured.
#[derive(Debug, Serialize)]
struct Comparison {
    machine: String,
    runs: Vec<RunReport>,
    ratios: Vec<(String, f64)>,
    rebuild_events_per_sec: Option<f64>,
    resident_mib: Vec<(String, f64)>,
}

/// Starts both services here, quietly (warnings only: per-command logs would be measured too).
pub async fn start_stack() -> anyhow::Result<Stack> {
    Stack::start_with(vec![("RUST_LOG".into(), "warn".into())]).await
}

/// The load target of a stack started here.
pub async fn target_of(stack: &Stack) -> anyhow::Result<Target> {
    Ok(Target {
        commands: stack.command_channel().await?,
        queries: stack.query_channel().await?,
        tenant: stack.tenant.clone(),
        token: None,
    })
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let stack = start_stack().await?;
    let result = compare(&args, &stack).await;
    stack.finish().await?;
    let comparison = result?;
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&comparison)?)?;
    println!("\nwrote {}", args.json.display());
    Ok(())
}

async fn compare(args: &CompareArgs, stack: &Stack) -> anyhow::Result<Comparison> {
    let target = target_of(stack).await?;
    let max_clients = *args.clients.iter().max().context("--clients is empty")?;
    let mut runs = Vec::new();
    let mut memory = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    record_memory(stack, "idle", &mut memory);

    let load = |clients, mix, rate, lag_every| LoadOptions {
        clients,
        mix,
        duration: args.duration,
        orders: None,
        warmup: args.warmup,
        rate,
        lag_every,
    };
    let ours = |result: grpc_load::LoadResult, label: &str, clients| {
        RunReport::from_tally(
            label,
            clients,
            result.elapsed,
            &result.tally,
            grpc_load::QUERIES,
            Some(&result.lag),
        )
    };

    // 1. Command throughput and latency, ours and the peer's, at each client count.
    let mut peak = 0.0_f64;
    for &clients in &args.clients {
        eprintln!("pizzeria, {clients} clients ...");
        let result = grpc_load::run(&target, &load(clients, Mix::Commands, None, 8)).await?;
        let report = ours(result, "pizzeria (gRPC, relay+query on)", clients);
        if clients == max_clients {
            peak = report.commands_per_sec;
        }
        runs.push(report);

        eprintln!("cqrs-es + postgres-es, {clients} clients ...");
        let database = TestDatabase::create().await?;
        let peer = cqrs_es_peer::run(
            &database.url,
            clients,
            args.pool_size,
            args.warmup,
            args.duration,
        )
        .await;
        database.drop_database().await?;
        let (tally, elapsed) = peer?;
        runs.push(RunReport::from_tally(
            "cqrs-es + postgres-es (in process)",
            clients,
            elapsed,
            &tally,
            &[],
            None,
        ));
    }
    record_memory(stack, "after full load", &mut memory);

    // 2. The physical limit: the raw SQL of a command, through pgbench.
    eprintln!("pgbench, {max_clients} clients ...");
    let database = TestDatabase::create().await?;
    let raw = raw_command_sql(&database.url, &stack.tenant, max_clients, args.duration).await;
    database.drop_database().await?;
    runs.extend(raw?);

    // 3. Latency at half of our peak, and projection lag at 1,000 commands/s.
    eprintln!("pizzeria paced at half its peak ({:.0}/s) ...", peak / 2.0);
    let result = grpc_load::run(
        &target,
        &load(max_clients, Mix::Commands, Some(peak / 2.0), 8),
    )
    .await?;
    runs.push(ours(result, "pizzeria paced at 50% of peak", max_clients));
    eprintln!("pizzeria paced at 1,000 commands/s ...");
    let result =
        grpc_load::run(&target, &load(max_clients, Mix::Commands, Some(1000.0), 2)).await?;
    runs.push(ours(result, "pizzeria paced at 1,000/s", max_clients));

    // 4. GetOrder over gRPC vs the same row by key through pgbench.
    eprintln!("GetOrder, {max_clients} clients ...");
    let result = grpc_load::run(&target, &load(max_clients, Mix::GetOrder, None, 0)).await?;
    runs.push(ours(result, "pizzeria GetOrder (gRPC)", max_clients));
    let read_url = stack.read_database_url().context("stack is not local")?;
    runs.push(pgbench::run(
        pgbench::Script::GetOrder,
        read_url,
        max_clients,
        args.duration,
        &[("tenant", stack.tenant.clone()), ("orders", "1000".into())],
    )?);

    // 5. A full rebuild of the read model from the log.
    eprintln!("rebuild ...");
    let rebuild = rebuild_rate(stack).await?;
    record_memory(stack, "end", &mut memory);

    let ratios = ratios(&runs, max_clients);
    print(&runs, &ratios, rebuild, &memory);
    Ok(Comparison {
        machine: machine(),
        runs,
        ratios,
        rebuild_events_per_sec: rebuild,
        resident_mib: memory,
    })
}

/// pgbench on a fresh, migrated event store: place (append to a new stream) and a status
/// step (load + append + command record).
async fn raw_command_sql(
    url: &str,
    tenant: &str,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Vec<RunReport>> {
    let pool = sqlx::PgPool::connect(url).await?;
    command_svc::eventsourcing::store::MIGRATOR
        .run(&pool)
        .await?;
    pool.close().await;
    let streams = 20_000;
    pgbench::seed_streams(url, tenant, streams).await?;
    let variables = [
        ("tenant", tenant.to_owned()),
        ("streams", streams.to_string()),
    ];
    Ok(vec![
        pgbench::run(pgbench::Script::Append, url, clients, duration, &variables)?,
        pgbench::run(pgbench::Script::Command, url, clients, duration, &variables)?,
    ])
}

/// Starts a rebuild of every projection and returns events per second over the whole log.
async fn rebuild_rate(stack: &Stack) -> anyhow::Result<Option<f64>> {
    let mut admin = ProjectionAdminServiceClient::new(stack.query_channel().await?);
    let projections = admin
        .list_projections(stack.request(pb::ListProjectionsRequest::default()))
        .await?
        .into_inner()
        .projections;
    let Some(first) = projections.first() else {
        return Ok(None);
    };
    let head = first.head_position;
    let started = std::time::Instant::now();
    for projection in &projections {
        admin
            .rebuild_projection(stack.request(pb::RebuildProjectionRequest {
                name: projection.name.clone(),
            }))
            .await?;
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let listed = admin
            .list_projections(stack.request(pb::ListProjectionsRequest::default()))
            .await?
            .into_inner()
            .projections;
        let done = listed.iter().all(|p| {
            p.rebuild.is_none()
                && projections
                    .iter()
                    .any(|before| before.name == p.name && p.generation > before.generation)
        });
        if done {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "rebuild did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Positions are dense in a log only this run wrote, so the head is the event count.
    Ok(Some(head as f64 / started.elapsed().as_secs_f64()))
}

fn record_memory(stack: &Stack, when: &str, memory: &mut Vec<(String, f64)>) {
    if let Some((command, query)) = stack.service_pids() {
        for (name, pid) in [("command-svc", command), ("query-svc", query)] {
            if let Some(mib) = resident_mib(pid) {
                memory.push((format!("{name} {when}"), mib));
            }
        }
    }
}

/// The ratios the targets are stated in.
fn ratios(runs: &[RunReport], clients: usize) -> Vec<(String, f64)> {
    let find = |prefix: &str| {
        runs.iter()
            .find(|r| r.system.starts_with(prefix) && r.clients == clients)
    };
    let mut ratios = Vec::new();
    let mut push =
        |name: &str, a: Option<&RunReport>, b: Option<&RunReport>, f: fn(&RunReport) -> f64| {
            if let (Some(a), Some(b)) = (a, b) {
                ratios.push((name.to_owned(), f(a) / f(b).max(1e-9)));
            }
        };
    let ours = find("pizzeria (gRPC");
    push(
        "commands/s: pizzeria / cqrs-es",
        ours,
        find("cqrs-es"),
        |r| r.commands_per_sec,
    );
    push(
        "commands/s: pizzeria / pgbench load+append",
        ours,
        find("pgbench: load+append"),
        |r| r.commands_per_sec,
    );
    push(
        "GetOrder/s: pizzeria / pgbench row by key",
        find("pizzeria GetOrder"),
        find("pgbench: row by key"),
        |r| r.queries_per_sec,
    );
    ratios
}

fn print(
    runs: &[RunReport],
    ratios: &[(String, f64)],
    rebuild: Option<f64>,
    memory: &[(String, f64)],
) {
    println!();
    stats::print_table(runs);
    println!();
    for (name, ratio) in ratios {
        println!("{name:<45} {ratio:>6.2}x");
    }
    if let Some(rate) = rebuild {
        println!("{:<45} {rate:>8.0} events/s", "full rebuild");
    }
    for (name, mib) in memory {
        println!("{:<45} {mib:>8.1} MiB", format!("resident {name}"));
    }
    for run in runs.iter().filter(|r| !r.errors.is_empty()) {
        println!(
            "errors in {} ({} clients): {:?}",
            run.system, run.clients, run.errors
        );
    }
}

/// One line about the machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}
