//! The checker every fault test ends with. After the faults are healed and the load has
//! drained, it holds the system to its promises:
//!
//! 1. every command that got OK is in the event log exactly once (its events, once each, with
//!    the position and version its reply gave), and nothing else is in the log;
//! 2. every event is published to JetStream exactly once, in commit order;
//! 3. every event is applied to the read model exactly once, and no dead letter is pending;
//! 4. the read model equals a fold of the log: a rebuild from Postgres reproduces it row for row.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use shared::proto::v1 as pb;

use crate::{nats::assert_relayed, read_model_dump, rig::Rig, workload::Ledger};

/// What was checked, for the test's log and the README's fault table.
#[derive(Debug)]
pub struct Checked {
    pub commands_acknowledged: usize,
    pub events: usize,
    pub retries: u64,
}

/// Runs every check; the first broken promise is the error.
pub async fn check(rig: &Rig, ledger: &Ledger) -> anyhow::Result<Checked> {
    ensure!(
        ledger.failures.is_empty(),
        "clients saw failures no fault may cause: {:#?}",
        ledger.failures
    );
    let write = rig.write_pool()?;
    let read = rig.read_pool()?;

    // 1. The log holds exactly the acknowledged commands.
    let processed: Vec<(String, i64, i64, i32)> = sqlx::query_as(
        "SELECT command_id::text, global_position, stream_version, events_appended
         FROM processed_commands",
    )
    .fetch_all(&write)
    .await
    .context("read processed_commands")?;
    let processed: HashMap<String, (i64, i64, i32)> = processed
        .into_iter()
        .map(|(id, position, version, appended)| (id, (position, version, appended)))
        .collect();
    for (command_id, reply) in &ledger.acknowledged {
        let Some(&(position, version, _)) = processed.get(command_id) else {
            bail!("acknowledged command {command_id} is not in the log");
        };
        ensure!(
            u64::try_from(position).ok() == Some(reply.position)
                && u64::try_from(version).ok() == Some(reply.version),
            "command {command_id}: reply said position {} version {}, the log says {position} {version}",
            reply.position,
            reply.version
        );
    }
    for command_id in processed.keys() {
        ensure!(
            ledger.attempted.contains(command_id),
            "the log holds command {command_id}, which no client sent"
        );
    }
    let in_doubt = ledger.attempted.len() - ledger.acknowledged.len();
    ensure!(in_doubt == 0, "{in_doubt} commands were never acknowledged");
    let events_per_command: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT metadata->>'command_id', count(*) FROM events GROUP BY 1")
            .fetch_all(&write)
            .await?;
    let mut events = 0;
    for (command_id, count) in events_per_command {
        let command_id = command_id.unwrap_or_default();
        let Some(&(_, _, appended)) = processed.get(&command_id) else {
            bail!("{count} events of command {command_id:?}, which is not a processed command");
        };
        ensure!(
            count == i64::from(appended),
            "command {command_id} appended {appended} events but the log holds {count}"
        );
        events += usize::try_from(count)?;
    }

    // 2. Published once each, in commit order (asserts inside).
    let published = assert_relayed(&write, &rig.stream).await;
    ensure!(published.len() == events, "stream and log differ in length");

    // 3. Applied once each, nothing held in a dead letter.
    let positions: BTreeSet<i64> = sqlx::query_scalar("SELECT global_position FROM events")
        .fetch_all(&write)
        .await?
        .into_iter()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for projection in crate::projection_names(&read).await? {
        loop {
            let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT global_position FROM {projection}.applied_events"
            )))
            .fetch_all(&read)
            .await?;
            let applied_set: BTreeSet<i64> = applied.iter().copied().collect();
            ensure!(
                applied_set.len() == applied.len(),
                "an event is recorded as applied twice by {projection}"
            );
            ensure!(
                applied_set.is_subset(&positions),
                "{projection} applied events the log does not hold"
            );
            if applied_set == positions {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{projection} applied {} of {} events after 60 s",
                applied_set.len(),
                positions.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pending_dead_letters: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {projection}.dead_letters WHERE resolution IS NULL"
        )))
        .fetch_one(&read)
        .await?;
        ensure!(
            pending_dead_letters == 0,
            "{pending_dead_letters} dead letters pending in {projection}"
        );
    }

    // 4. The read model equals a fold of the log.
    let incremental = read_model_dump(&read).await?;
    rebuild(rig).await?;
    let rebuilt = read_model_dump(&read).await?;
    ensure!(
        incremental == rebuilt,
        "the read model differs from a rebuild of the log:\nincremental: {incremental:#?}\nrebuilt: {rebuilt:#?}"
    );

    Ok(Checked {
        commands_acknowledged: ledger.acknowledged.len(),
        events,
        retries: ledger.retries(),
    })
}

/// Rebuilds every projection from the log and waits until readers use the new generations.
async fn rebuild(rig: &Rig) -> anyhow::Result<()> {
    let mut admin = rig.admin()?;
    let names: Vec<String> = admin
        .list_projections(pb::ListProjectionsRequest::default())
        .await?
        .into_inner()
        .projections
        .into_iter()
        .map(|p| p.name)
        .collect();
    ensure!(!names.is_empty(), "query-svc lists no projections");
    for name in names {
        let started = admin
            .rebuild_projection(pb::RebuildProjectionRequest { name: name.clone() })
            .await?
            .into_inner();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let projections = admin
                .list_projections(pb::ListProjectionsRequest::default())
                .await?
                .into_inner();
            let done = projections.projections.iter().any(|p| {
                p.name == name && p.generation == started.generation && p.rebuild.is_none()
            });
            if done {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "rebuild of {name} not done after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
