//! Both binaries end to end: a command goes through command-svc, Postgres and JetStream into
//! query-svc's read tables and back out over gRPC; query-svc killed mid-scenario resumes from
//! its durable consumer.

use std::time::Duration;

use e2e::{RunningService, TestDatabase, nats::TestStream};
use shared::proto::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};

const CUSTOMER_ID: &str = "0190b8f6-0000-7000-8000-0000000e2e01";
const ORDER_ID: &str = "0190b8f6-3f2e-7c2a-9d1e-000000e2e001";

struct Stack {
    write_db: TestDatabase,
    read_db: TestDatabase,
    stream: TestStream,
    command_svc: RunningService,
}

impl Stack {
    async fn start() -> anyhow::Result<Self> {
        let write_db = TestDatabase::create().await?;
        let read_db = TestDatabase::create().await?;
        let stream = TestStream::new();
        let mut env = vec![
            ("DATABASE_URL", write_db.url.clone()),
            ("RELAY_POLL_INTERVAL", "50ms".to_owned()),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ];
        env.extend(stream.relay_env());
        let command_svc = RunningService::start("command-svc", env).await?;
        Ok(Self {
            write_db,
            read_db,
            stream,
            command_svc,
        })
    }

    async fn start_query_svc(&self) -> anyhow::Result<RunningService> {
        let mut env = vec![
            ("DATABASE_URL", self.read_db.url.clone()),
            (
                "COMMAND_SVC_URL",
                format!("http://{}", self.command_svc.addr),
            ),
            ("SHUTDOWN_DRAIN_TIMEOUT", "2s".to_owned()),
        ];
        env.extend(self.stream.relay_env());
        let query_svc = RunningService::start("query-svc", env).await?;
        query_svc
            .wait_until_serving("pizzeria.v1.QueryService", Duration::from_secs(30))
            .await?;
        Ok(query_svc)
    }

    async fn finish(self) -> anyhow::Result<()> {
        drop(self.command_svc);
        self.write_db.drop_database().await?;
        self.read_db.drop_database().await
    }
}

async fn order_at(
    queries: &mut QueryServiceClient<tonic::transport::Channel>,
    position: u64,
) -> anyhow::Result<pb::OrderView> {
    Ok(queries
        .get_order(pb::GetOrderRequest {
            order_id: ORDER_ID.into(),
            min_position: position,
        })
        .await?
        .into_inner())
}

#[tokio::test]
async fn a_command_reaches_the_read_side_and_survives_a_query_svc_kill() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let query_svc = stack.start_query_svc().await?;
    let mut commands = CommandServiceClient::new(stack.command_svc.channel().await?);
    let mut queries = QueryServiceClient::new(query_svc.channel().await?);

    commands
        .register_customer(pb::RegisterCustomerRequest {
            customer_id: CUSTOMER_ID.into(),
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
            ..Default::default()
        })
        .await?;
    let placed = commands
        .place_order(pb::PlaceOrderRequest {
            order_id: ORDER_ID.into(),
            customer_id: CUSTOMER_ID.into(),
            items: vec![pb::OrderItem {
                name: "Quattro Formaggi".into(),
                size: pb::PizzaSize::Medium as i32,
                quantity: 2,
                unit_price_cents: 1150,
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    // Read-your-writes through both binaries: never NOT_FOUND with the reply's position.
    let view = order_at(&mut queries, placed.position).await?;
    assert_eq!(view.status, pb::OrderStatus::Pending as i32);
    assert_eq!(
        (view.customer_name.as_str(), view.total_cents),
        ("Grace Hopper", 2300)
    );

    // query-svc dies; the order moves on meanwhile; a new query-svc picks up where it stopped.
    drop(query_svc);
    let confirmed = commands
        .confirm_order(pb::ConfirmOrderRequest {
            order_id: ORDER_ID.into(),
            estimated_delivery: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let query_svc = stack.start_query_svc().await?;
    let mut queries = QueryServiceClient::new(query_svc.channel().await?);
    let view = order_at(&mut queries, confirmed.position).await?;
    assert_eq!(view.status, pb::OrderStatus::Confirmed as i32);
    assert_eq!(view.version, 2);
    let timeline = queries
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: ORDER_ID.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(timeline.entries.len(), 2, "each event applied once");

    assert!(query_svc.terminate()?, "query-svc exits cleanly on SIGTERM");
    stack.finish().await
}
