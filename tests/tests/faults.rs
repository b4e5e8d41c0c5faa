//! Fault injection: both binaries over a Postgres and a nats-server of the test's own (never the
//! shared ones), with clients placing and advancing orders and retrying as the API asks, while a
//! fault is injected. Every test ends with the invariant checker (`e2e::invariants`): every
//! acknowledged command is in the log once, published once in commit order, applied once, and
//! the read model equals a rebuild from the log. While the faults run, a session reader reads
//! the clients' orders with the highest position any of them was given: never stale.
//!
//! `CHAOS_SOAK_SECS` sets how long the chaos soak runs (20 s by default, as in CI); see the
//! README for the long run.

use std::time::{Duration, Instant};

use e2e::{
    invariants::{self, Checked},
    rig::Rig,
    workload::{CALL_DEADLINE, Ledger, Workload},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const CLIENTS: usize = 6;
/// Progress the load must make between faults, so every fault hits a system under load.
const SOME: usize = 30;
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the chaos soak waits for the read side to converge before it calls it stuck.
const CONVERGENCE_PATIENCE: Duration = Duration::from_secs(180);

/// Heals the rig, lets the clients finish, and runs the checker.
async fn heal_and_check(mut rig: Rig, load: Workload) -> anyhow::Result<(Checked, Ledger)> {
    rig.heal().await?;
    rig.wait_until_serving(PATIENCE).await?;
    let ledger = load.finish().await;
    let checked = invariants::check(&rig, &ledger).await?;
    eprintln!(
        "checked: {checked:?}; refusals by code: {:?}; reads with the session token: {} \
         answered (none stale), {} refused",
        ledger.refusals, ledger.session_reads, ledger.session_reads_refused
    );
    anyhow::ensure!(
        ledger.session_reads > 0,
        "no read with the session token answered: read-your-writes went unchecked"
    );
    Ok((checked, ledger))
}

async fn progress(load: &Workload) -> anyhow::Result<()> {
    anyhow::ensure!(
        load.wait_for_progress(SOME, PATIENCE).await,
        "the load made no progress ({} commands acknowledged)",
        load.acknowledged()
    );
    Ok(())
}

#[tokio::test]
async fn command_svc_killed_mid_burst_while_clients_retry() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    for _ in 0..3 {
        progress(&load).await?;
        rig.kill_command_svc();
        tokio::time::sleep(Duration::from_millis(300)).await;
        rig.start_command_svc().await?;
    }
    progress(&load).await?;
    let (_, ledger) = heal_and_check(rig, load).await?;
    anyhow::ensure!(ledger.retries() > 0, "the kills were never noticed");
    Ok(())
}

#[tokio::test]
async fn nats_killed_and_paused_while_the_relay_publishes() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    progress(&load).await?;
    rig.nats.kill();
    progress(&load).await?;
    rig.nats.restart()?;
    progress(&load).await?;
    rig.nats.pause();
    progress(&load).await?;
    rig.nats.resume();
    progress(&load).await?;
    heal_and_check(rig, load).await?;
    Ok(())
}

#[tokio::test]
async fn a_tail_nats_lost_after_acknowledging_it_is_republished_from_postgres() -> anyhow::Result<()>
{
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    progress(&load).await?;
    let copy = rig.nats.stop_and_copy_store()?;
    rig.nats.restart()?;
    // Wait until the relay has published more on top of the copy, then lose it.
    progress(&load).await?;
    rig.wait_until_serving(PATIENCE).await?;
    progress(&load).await?;
    rig.nats.stop_and_restore_store(&copy)?;
    rig.nats.restart()?;
    progress(&load).await?;
    heal_and_check(rig, load).await?;
    Ok(())
}

#[tokio::test]
async fn postgres_stopped_under_load_gets_unavailable_in_time_and_both_services_recover()
-> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    progress(&load).await?;
    rig.postgres.stop_immediately();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.acknowledged();
    tokio::time::sleep(Duration::from_secs(1)).await;
    anyhow::ensure!(
        load.acknowledged() == during,
        "commands were acknowledged with the event store down"
    );
    rig.postgres.restart()?;
    progress(&load).await?;
    // Both recovered in place: neither process exited.
    anyhow::ensure!(
        rig.services_running(),
        "a service exited when Postgres stopped"
    );
    let (_, ledger) = heal_and_check(rig, load).await?;
    anyhow::ensure!(
        ledger.refusals.contains_key("Unavailable"),
        "calls during the outage were refused UNAVAILABLE, got {:?}",
        ledger.refusals
    );
    anyhow::ensure!(
        ledger.slowest_refusal <= CALL_DEADLINE + Duration::from_secs(1),
        "a refused call took {:?}, longer than its deadline",
        ledger.slowest_refusal
    );
    Ok(())
}

#[tokio::test]
async fn query_svc_killed_while_projecting_applies_nothing_twice() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    // Batches are committed and acked continuously under this load, so a kill lands between
    // a read-model commit and its ack now and then; several kills make that likely.
    for _ in 0..4 {
        progress(&load).await?;
        rig.kill_query_svc();
        rig.start_query_svc().await?;
    }
    progress(&load).await?;
    heal_and_check(rig, load).await?;
    Ok(())
}

#[tokio::test]
async fn commands_are_accepted_while_nats_is_down_and_drain_after() -> anyhow::Result<()> {
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    progress(&load).await?;
    rig.nats.kill();
    // A while without NATS: the write side goes on.
    progress(&load).await?;
    progress(&load).await?;
    rig.command_svc()
        .expect("started")
        .wait_until_serving("", Duration::from_secs(5))
        .await?;
    rig.nats.restart()?;
    heal_and_check(rig, load).await?;
    Ok(())
}

async fn health(rig_addr: tonic::transport::Channel) -> Option<i32> {
    HealthClient::new(rig_addr)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn services_started_before_their_dependencies_wait_not_serving_and_never_exit()
-> anyhow::Result<()> {
    let mut rig = Rig::with_servers_down()?;
    rig.start_command_svc().await?;
    rig.start_query_svc().await?;
    let command_svc = rig.command_svc().expect("started").channel().await?;
    let query_svc = rig.query_svc().expect("started").channel().await?;

    // Several health check intervals with Postgres and NATS on closed ports.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for channel in [&command_svc, &query_svc] {
            anyhow::ensure!(
                health(channel.clone()).await == Some(ServingStatus::NotServing as i32),
                "a service without its dependencies must answer health NOT_SERVING"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused = rig
        .commands()?
        .register_customer(shared::proto::v1::RegisterCustomerRequest::default())
        .await
        .expect_err("no command is taken before the event store is there");
    anyhow::ensure!(refused.code() == tonic::Code::Unavailable, "{refused:?}");

    rig.postgres.restart()?;
    rig.create_databases()?;
    rig.nats.restart()?;
    rig.wait_until_serving(PATIENCE).await?;
    anyhow::ensure!(rig.services_running(), "a service exited");
    let load = Workload::start(rig.command_channel()?, rig.queries()?, 2);
    progress(&load).await?;
    heal_and_check(rig, load).await?;
    Ok(())
}

/// Random kill / stop / pause of the four processes every 1-3 s under load, then heal, drain
/// and check. `CHAOS_SOAK_SECS` sets the duration.
#[tokio::test]
async fn chaos_soak() -> anyhow::Result<()> {
    let seconds = std::env::var("CHAOS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // `services`: only SIGKILLs of command-svc and query-svc (the recovery measurement).
    let kinds: u128 = match std::env::var("CHAOS_FAULTS").as_deref() {
        Ok("services") => 2,
        Ok("all") | Err(_) => 8,
        Ok(other) => anyhow::bail!("CHAOS_FAULTS is `all` or `services`, not {other:?}"),
    };
    let mut rig = Rig::start().await?;
    let load = Workload::start(rig.command_channel()?, rig.queries()?, CLIENTS);
    progress(&load).await?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut faults = Vec::new();
    let mut random = uuid::Uuid::new_v4().as_u128();
    while Instant::now() < until {
        random = random.rotate_left(7) ^ uuid::Uuid::new_v4().as_u128();
        let fault = u8::try_from(random % kinds)?;
        faults.push(fault);
        match fault {
            0 => rig.kill_command_svc(),
            1 => rig.kill_query_svc(),
            2 => rig.nats.kill(),
            3 => rig.nats.pause(),
            4 => rig.postgres.stop_immediately(),
            5 => rig.postgres.pause(),
            6 => {
                if let Some(service) = rig.command_svc() {
                    service.pause();
                }
            }
            _ => {
                if let Some(service) = rig.query_svc() {
                    service.pause();
                }
            }
        }
        let pause = Duration::from_millis(1000 + u64::try_from((random >> 64) % 2000)?);
        tokio::time::sleep(pause).await;
        rig.heal().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = converged_after_last_fault(&mut rig).await?;
    let (checked, _) = heal_and_check(rig, load).await?;
    eprintln!(
        "chaos soak: {seconds} s, {} faults ({faults:?}), {checked:?}; the read side converged \
         {converged:.1?} after the last fault healed",
        faults.len()
    );
    Ok(())
}

/// Heals the rig and measures how long the read side takes, under the load that goes on, to
/// apply every event committed when the last fault healed (each of them, not just the last:
/// a read model may apply events out of order).
async fn converged_after_last_fault(rig: &mut Rig) -> anyhow::Result<Duration> {
    rig.heal().await?;
    let healed = Instant::now();
    let write = rig.write_pool()?;
    let read = rig.read_pool()?;
    let committed: Vec<i64> = loop {
        // Postgres may still be coming back.
        match sqlx::query_scalar("SELECT global_position FROM events")
            .fetch_all(&write)
            .await
        {
            Ok(committed) => break committed,
            Err(_) if healed.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let expected = i64::try_from(committed.len())?;
    loop {
        let applied: Option<i64> = sqlx::query_scalar(
            "SELECT least((SELECT count(*) FROM read_model.applied_events WHERE global_position = ANY($1)),
                          (SELECT count(*) FROM order_timeline.applied_events WHERE global_position = ANY($1)))",
        )
        .bind(&committed)
        .fetch_one(&read)
        .await
        .ok();
        if applied == Some(expected) {
            let converged = healed.elapsed();
            eprintln!(
                "the read side converged {converged:.1?} after the last fault healed \
                 ({expected} events committed by then)"
            );
            return Ok(converged);
        }
        anyhow::ensure!(
            healed.elapsed() < CONVERGENCE_PATIENCE,
            "the read side did not converge within {CONVERGENCE_PATIENCE:?} of the last fault"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
