//! Runs the README's grpcurl tour verbatim against the real binaries, so the docs cannot rot.
//! The blocks between `<!-- tour:NAME -->` and `<!-- /tour:NAME -->` are run in order with bash;
//! only the address is swapped for the test's own.

use std::process::Command;

use e2e::{
    RunningService, TestDatabase,
    nats::{TestStream, assert_relayed},
};

/// The ```sh blocks of one tour section of README.md.
fn tour_blocks(name: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md is readable");
    let start = format!("<!-- tour:{name} -->");
    let end = format!("<!-- /tour:{name} -->");
    let section = readme
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(section, _)| section)
        .unwrap_or_else(|| panic!("README.md has no {start} ... {end} section"));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(!blocks.is_empty(), "the {name} tour has no ```sh blocks");
    blocks
}

/// Runs a block with the README's addresses swapped for the test's services.
fn run_block(block: &str, command_svc: &str, query_svc: &str) -> String {
    let script = block
        .replace("localhost:50051", command_svc)
        .replace("localhost:50052", query_svc);
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "README block failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_tours_run_verbatim() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let read_database = TestDatabase::create().await?;
    let stream = TestStream::new();
    let mut env = vec![("DATABASE_URL", database.url.clone())];
    env.extend(stream.relay_env());
    let service = RunningService::start_serving("command-svc", env).await?;
    let addr = service.addr.to_string();
    let mut env = vec![
        ("DATABASE_URL", read_database.url.clone()),
        ("COMMAND_SVC_URL", format!("http://{addr}")),
    ];
    env.extend(stream.relay_env());
    let query_svc = RunningService::start("query-svc", env).await?;
    let query_addr = query_svc.addr.to_string();

    let outputs: Vec<String> = tour_blocks("command-svc")
        .iter()
        .map(|block| run_block(block, &addr, &query_addr))
        .collect();
    let all = outputs.concat();
    assert!(
        all.contains(r#""status": "SERVING""#),
        "health check in the tour"
    );
    assert!(
        all.contains(r#""eventType": "OrderDelivered""#),
        "ReadStream shows the delivery"
    );

    let pool = sqlx::PgPool::connect(&database.url).await?;
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_id = 'order-0190b8f6-3f2e-7c2a-9d1e-000000000001'
         ORDER BY stream_version",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "DiscountApplied",
            "OrderConfirmed",
            "PaymentProcessed",
            "CookingStarted",
            "OrderReady",
            "OrderOutForDelivery",
            "OrderDelivered"
        ]
    );
    assert_relayed(&pool, &stream).await;
    pool.close().await;

    query_svc
        .wait_until_serving("", std::time::Duration::from_secs(30))
        .await?;
    let outputs: Vec<String> = tour_blocks("query-svc")
        .iter()
        .map(|block| run_block(block, &addr, &query_addr))
        .collect();
    let all = outputs.concat();
    for expected in [
        r#""status": "ORDER_STATUS_DELIVERED""#,
        r#""customerName": "Ada King""#,
        r#""description": "#,
        r#""name": "read_model""#,
        r#""status": "SERVING""#,
    ] {
        assert!(
            all.contains(expected),
            "query tour output lacks {expected}:\n{all}"
        );
    }

    // The training plans tour: written and read back on the same two services.
    let outputs: Vec<String> = tour_blocks("training")
        .iter()
        .map(|block| run_block(block, &addr, &query_addr))
        .collect();
    let all = outputs.concat();
    for expected in [
        r#""status": "PLAN_STATUS_ACTIVE""#,
        r#""status": "WORKOUT_STATUS_SKIPPED""#,
        r#""weekStartsOn": "2027-01-18""#,
        r#""completedPercent": 33"#,
        r#""name": "Spring 10k""#,
        r#""eventType": "WorkoutSkipped""#,
        r#""version": "9""#,
    ] {
        assert!(
            all.contains(expected),
            "training tour output lacks {expected}:\n{all}"
        );
    }
    assert!(query_svc.terminate()?);
    assert!(service.terminate()?);
    read_database.drop_database().await?;
    database.drop_database().await
}
