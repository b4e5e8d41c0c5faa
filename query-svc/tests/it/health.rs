//! Health follows the dependencies: NOT_SERVING while NATS is down or the projection lags past
//! its bound, SERVING again once they recover. NATS here is a private nats-server this test can
//! kill.

use clap::Parser;
use e2e::nats::{PrivateNats, TestStream};
use prost::Message as _;
use shared::proto::v1 as pb;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};

use crate::helpers::eventually;

async fn wait_for_health(client: &HealthClient<tonic::transport::Channel>, want: ServingStatus) {
    eventually(|| {
        let mut client = client.clone();
        async move {
            let status = client
                .check(HealthCheckRequest {
                    service: "pizzeria.v1.QueryService".into(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == want as i32).then_some(())
        }
    })
    .await;
}

#[sqlx::test(migrations = "./migrations")]
async fn health_follows_nats_and_the_projection_lag(pool: PgPool) {
    let mut nats = PrivateNats::start().unwrap();
    let stream = TestStream::on(&nats.url());
    stream.create().await.unwrap();
    // command-svc is never there: a hole in a stream cannot be filled, so the lag grows.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = query_svc::config::Config::parse_from([
        "query-svc".to_owned(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--log-format".into(),
        "pretty".into(),
        "--auth-disabled".into(),
        "--nats-url".into(),
        nats.url(),
        "--nats-stream".into(),
        stream.name.clone(),
        "--nats-subject-prefix".into(),
        stream.subject_prefix.clone(),
        "--command-svc-url".into(),
        format!("http://127.0.0.1:{closed_port}"),
        "--health-max-lag".into(),
        "2s".into(),
    ]);
    let app = query_svc::startup::App::with_pool(config, pool)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    let health = HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    wait_for_health(&health, ServingStatus::Serving).await;

    nats.kill();
    wait_for_health(&health, ServingStatus::NotServing).await;
    nats.restart().unwrap();
    wait_for_health(&health, ServingStatus::Serving).await;

    // Version 2 of a stream whose version 1 never came: stuck until command-svc answers.
    let order_id = uuid::Uuid::now_v7().to_string();
    let tenant = "00000000-0000-0000-0000-000000000000";
    let record = pb::EventRecord {
        global_position: 2,
        transaction_id: 2,
        tenant_id: tenant.into(),
        stream_id: format!("order-{order_id}"),
        aggregate_type: "order".into(),
        aggregate_id: order_id.clone(),
        stream_version: 2,
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "OrderConfirmed".into(),
        schema_version: 1,
        payload_json: "{}".into(),
        recorded_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp(),
            nanos: 0,
        }),
        ..Default::default()
    };
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    jetstream
        .publish(
            format!("{}.{tenant}.order.{order_id}", stream.subject_prefix),
            record.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for_health(&health, ServingStatus::NotServing).await;
    stop.cancel();
}
