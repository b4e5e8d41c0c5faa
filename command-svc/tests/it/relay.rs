//! The relay against real Postgres and NATS: commit order, nothing skipped, nothing doubled,
//! across late commits, rollbacks, restarts of the relay, of NATS, and a NATS that lost its tail.

use std::time::Duration;

use command_svc::startup::RELAY_HEALTH;
use e2e::nats::{PrivateNats, TestStream};
use shared::proto::v1 as pb;
use sqlx::PgPool;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{
    ORDER_ID, TestApp, assert_relayed, begin_slow_append, event_count, placed_order,
    register_request, spawn, spawn_with_relay,
};

/// Places `count` more orders for the registered customer (one event each).
async fn place_orders(app: &mut TestApp, count: usize) {
    for _ in 0..count {
        let mut request = crate::helpers::place_request("");
        request.order_id = uuid::Uuid::now_v7().to_string();
        app.client.place_order(request).await.expect("order placed");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn publishes_every_committed_event_in_commit_order_with_its_headers(pool: PgPool) {
    let stream = TestStream::new();
    let mut app = spawn_with_relay(pool.clone(), &stream, &[]).await;
    placed_order(&mut app).await;
    app.client
        .confirm_order(pb::ConfirmOrderRequest {
            order_id: ORDER_ID.into(),
            estimated_delivery: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    let published = assert_relayed(&pool, &stream).await;
    assert_eq!(published.len(), 3);
    let types: Vec<&str> = published
        .iter()
        .map(|m| m.record.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["CustomerRegistered", "OrderPlaced", "OrderConfirmed"]
    );
    let order = &published[2];
    assert_eq!(order.stream_id, format!("order-{ORDER_ID}"));
    assert_eq!(order.stream_version, 2);
    assert_eq!(order.record.aggregate_id, ORDER_ID);
    assert!(order.transaction_id > published[1].transaction_id);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_late_commit_holds_later_events_back_and_is_published_first(pool: PgPool) {
    let stream = TestStream::new();
    let slow = begin_slow_append(&pool, "customer-slow").await; // lower position, commits last
    let mut app = spawn_with_relay(pool.clone(), &stream, &[]).await;
    placed_order(&mut app).await;

    // While the slow transaction is open the relay must not move past it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stream.messages().await.unwrap().is_empty());

    slow.commit().await.unwrap();
    let published = assert_relayed(&pool, &stream).await;
    assert_eq!(published.len(), 3);
    assert_eq!(published[0].stream_id, "customer-slow");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rolled_back_append_leaves_no_stall(pool: PgPool) {
    let stream = TestStream::new();
    let doomed = begin_slow_append(&pool, "customer-doomed").await;
    let mut app = spawn_with_relay(pool.clone(), &stream, &[]).await;
    placed_order(&mut app).await;
    doomed.rollback().await.unwrap();

    // The hole its position leaves needs no timeout: the next read goes straight past it.
    let published = assert_relayed(&pool, &stream).await;
    assert_eq!(published.len(), 2);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_relay_stopped_mid_backlog_resumes_without_loss_or_duplicates(pool: PgPool) {
    let stream = TestStream::new();
    {
        // Commit a backlog with no relay running.
        let mut app = spawn(pool.clone()).await;
        app.client
            .register_customer(register_request())
            .await
            .unwrap();
        place_orders(&mut app, 60).await;
    }
    assert_eq!(event_count(&pool).await, 61);

    // Start a relay with small batches and stop it as soon as it has published something.
    let app = spawn_with_relay(pool.clone(), &stream, &["--relay-batch-size", "7"]).await;
    let partial = stream.wait_for(1, Duration::from_secs(20)).await.unwrap();
    drop(app);
    assert!(!partial.is_empty());

    // A new relay resumes after the last message NATS holds.
    let _app = spawn_with_relay(pool.clone(), &stream, &["--relay-batch-size", "7"]).await;
    assert_eq!(assert_relayed(&pool, &stream).await.len(), 61);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_standby_relay_takes_over_when_the_active_one_stops(pool: PgPool) {
    let stream = TestStream::new();
    let mut first = spawn_with_relay(pool.clone(), &stream, &[]).await;
    let mut second = spawn_with_relay(pool.clone(), &stream, &[]).await;
    placed_order(&mut first).await;
    assert_relayed(&pool, &stream).await;

    drop(first);
    place_orders(&mut second, 3).await;
    assert_eq!(assert_relayed(&pool, &stream).await.len(), 5);
}

#[sqlx::test(migrations = "./migrations")]
async fn commands_succeed_while_nats_is_down_and_are_published_after_it_restarts(pool: PgPool) {
    let mut nats = PrivateNats::start().unwrap();
    let stream = TestStream::on(&nats.url());
    let mut app = spawn_with_relay(pool.clone(), &stream, &["--relay-publish-timeout", "1s"]).await;
    placed_order(&mut app).await;
    assert_relayed(&pool, &stream).await;
    // The relay connects to NATS in the background and health is sampled every 2 s, so the
    // first sample may predate the connection: wait for it rather than read it once.
    wait_for_health(&app, RELAY_HEALTH, ServingStatus::Serving).await;

    nats.kill();
    // The command path does not depend on NATS, and the server stays SERVING; only the
    // relay's own status says it cannot publish.
    tokio::time::timeout(Duration::from_secs(5), place_orders(&mut app, 5))
        .await
        .expect("commands are not blocked by a NATS outage");
    wait_for_health(&app, RELAY_HEALTH, ServingStatus::NotServing).await;
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    nats.restart().unwrap();

    assert_eq!(assert_relayed(&pool, &stream).await.len(), 7);
    wait_for_health(&app, RELAY_HEALTH, ServingStatus::Serving).await;
}

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    let reply = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner();
    ServingStatus::try_from(reply.status).expect("a known status")
}

/// Health is checked every 2 s: waits up to 10 s for `service` to report `status`.
async fn wait_for_health(app: &TestApp, service: &str, status: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(app, service).await != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service:?} never became {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_tail_nats_lost_is_republished_from_postgres(pool: PgPool) {
    let mut nats = PrivateNats::start().unwrap();
    let stream = TestStream::on(&nats.url());
    let mut app = spawn_with_relay(pool.clone(), &stream, &["--relay-publish-timeout", "1s"]).await;
    placed_order(&mut app).await;
    assert_relayed(&pool, &stream).await;

    // Keep a copy of NATS's storage holding only the first two events...
    let copy = nats.stop_and_copy_store().unwrap();
    nats.restart().unwrap();
    place_orders(&mut app, 4).await;
    assert_eq!(assert_relayed(&pool, &stream).await.len(), 6);

    // ...and bring NATS back with it, as after a power loss that dropped acknowledged writes.
    nats.stop_and_restore_store(&copy).unwrap();
    nats.restart().unwrap();
    assert_eq!(
        stream.messages().await.unwrap().len(),
        2,
        "NATS lost the tail"
    );

    // No new command arrives: the relay notices the shorter stream by itself.
    assert_eq!(assert_relayed(&pool, &stream).await.len(), 6);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_stream_ahead_of_the_database_stops_the_relay(pool: PgPool) {
    let stream = TestStream::new();
    {
        let mut app = spawn_with_relay(pool.clone(), &stream, &[]).await;
        placed_order(&mut app).await;
        assert_relayed(&pool, &stream).await;
    }
    // The database loses events NATS already has (a restore from an older backup, a failover
    // to a lagging replica). Publishing on would put newer events after ones that no longer
    // exist, so the relay must refuse.
    sqlx::query("DELETE FROM events WHERE stream_id LIKE 'order-%'")
        .execute(&pool)
        .await
        .unwrap();
    let mut app = spawn_with_relay(pool.clone(), &stream, &[]).await;
    place_orders(&mut app, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stream.messages().await.unwrap().len(), 2);
}
