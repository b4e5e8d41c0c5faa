//! The physical limit: pgbench running the raw SQL of one command (or one GetOrder) against
//! the same Postgres, with per-transaction latencies from its log.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, bail};

use crate::stats::{Latencies, RunReport, Tally};

/// A pgbench script shipped in `tests/loadgen/pgbench/`.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// A new stream with its first event (PlaceOrder).
    Append,
    /// Load a stream, claim a version, append, record the command (a status step).
    Command,
    /// One read-model row by key (GetOrder).
    GetOrder,
}

impl Script {
    fn file(self) -> &'static str {
        match self {
            Script::Append => "append.sql",
            Script::Command => "command.sql",
            Script::GetOrder => "get_order.sql",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Script::Append => "pgbench: append (place)",
            Script::Command => "pgbench: load+append (step)",
            Script::GetOrder => "pgbench: row by key",
        }
    }
}

/// Seeds `streams` order streams `pgb-1..` with one event each for [`Script::Command`], in
/// the event store database at `url` (already migrated).
pub async fn seed_streams(url: &str, tenant: &str, streams: u32) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(url).await?;
    let tenant: uuid::Uuid = tenant.parse()?;
    sqlx::query(
        "INSERT INTO streams (tenant_id, stream_id, aggregate_type, version)
         SELECT $1, 'pgb-' || n, 'order', 1 FROM generate_series(1, $2) n",
    )
    .bind(tenant)
    .bind(i64::from(streams))
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                             event_id, event_type, schema_version, payload)
         SELECT $1, 'pgb-' || n, 'order', md5('pgb-' || n)::uuid, 1, gen_random_uuid(),
                'OrderPlaced', 1, '{\"customer_id\": \"0190a0b0-0000-7000-8000-000000000001\"}'
         FROM generate_series(1, $2) n",
    )
    .bind(tenant)
    .bind(i64::from(streams))
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await.ok();
    pool.close().await;
    Ok(())
}

/// Runs `script` with `clients` connections for `duration` against `url`, with `variables`
/// (`-D name=value`), and reads every transaction's latency from pgbench's log.
pub fn run(
    script: Script,
    url: &str,
    clients: usize,
    duration: Duration,
    variables: &[(&str, String)],
) -> anyhow::Result<RunReport> {
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pgbench");
    let logs = std::env::temp_dir().join(format!("loadgen-pgbench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs)?;
    let seconds = duration.as_secs().max(1);
    let mut command = Command::new("pgbench");
    command
        .args(["--no-vacuum", "--protocol=prepared", "--log"])
        .arg(format!("--log-prefix={}", logs.join("tx").display()))
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.clamp(1, 2)))
        .arg(format!("--time={seconds}"))
        .arg(format!("--file={}", scripts.join(script.file()).display()));
    for (name, value) in variables {
        command.arg(format!("--define={name}={value}"));
    }
    let output = command
        .arg(url)
        .output()
        .context("cannot run pgbench (Debian package postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench {} failed: {}{}",
            script.file(),
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut latencies = Latencies::default();
    for entry in std::fs::read_dir(&logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        // client_id transaction_no time_us script_no epoch epoch_us
        for line in text.lines() {
            if let Some(micros) = line.split(' ').nth(2).and_then(|t| t.parse::<u64>().ok()) {
                latencies.record(Duration::from_micros(micros));
            }
        }
    }
    std::fs::remove_dir_all(&logs).ok();
    let failed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut tally = Tally::default();
    tally.latency.insert("transaction", latencies);
    if failed > 0 {
        tally.errors.insert("failed transactions".into(), failed);
    }
    let queries: &[&str] = match script {
        Script::GetOrder => &["transaction"],
        Script::Append | Script::Command => &[],
    };
    Ok(RunReport::from_tally(
        script.label(),
        clients,
        Duration::from_secs(seconds),
        &tally,
        queries,
        None,
    ))
}
