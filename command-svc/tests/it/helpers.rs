//! Starts the real gRPC server on a free port over a test's database.

use clap::Parser;
use command_svc::{config::Config, startup::App};
use e2e::nats::TestStream;
pub use e2e::nats::assert_relayed;
use shared::proto::v1::{self as pb, command_service_client::CommandServiceClient};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running command-svc; stopped when dropped.
pub struct TestApp {
    pub client: CommandServiceClient<Channel>,
    pub channel: Channel,
    pub pool: PgPool,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A command-svc without a relay: for tests of the command path alone.
pub async fn spawn(pool: PgPool) -> TestApp {
    spawn_with(pool, &[]).await
}

/// A command-svc without a relay, with extra flags.
pub async fn spawn_with(pool: PgPool, flags: &[&str]) -> TestApp {
    let mut all = vec!["--relay-enabled", "false"];
    all.extend_from_slice(flags);
    spawn_args(pool, &all).await
}

/// A command-svc whose relay publishes to `stream`, with extra flags.
pub async fn spawn_with_relay(pool: PgPool, stream: &TestStream, flags: &[&str]) -> TestApp {
    let relay_flags = stream.relay_flags();
    let mut all: Vec<&str> = relay_flags.iter().map(String::as_str).collect();
    // Poll often so tests that commit outside this process don't wait long.
    all.extend_from_slice(&["--relay-poll-interval", "50ms"]);
    all.extend_from_slice(flags);
    spawn_args(pool, &all).await
}

async fn spawn_args(pool: PgPool, flags: &[&str]) -> TestApp {
    let mut args = vec![
        "command-svc",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--log-format",
        "pretty",
        // Authentication has its own tests (tests/tests/auth.rs); these name the tenant by header.
        "--auth-disabled",
    ];
    args.extend_from_slice(flags);
    let config = Config::parse_from(args);
    let app = App::with_pool(config, pool.clone())
        .await
        .expect("app builds");
    let addr = app.local_addr().expect("bound");
    let mut ready = app.ready();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    ready.wait_for(|ready| *ready).await.expect("app starts");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("server reachable");
    TestApp {
        client: CommandServiceClient::new(channel.clone()),
        channel,
        pool,
        stop,
    }
}

pub const CUSTOMER_ID: &str = "0190b8f6-0000-7000-8000-000000000001";
pub const ORDER_ID: &str = "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e";

pub fn register_request() -> pb::RegisterCustomerRequest {
    pb::RegisterCustomerRequest {
        customer_id: CUSTOMER_ID.into(),
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        ..Default::default()
    }
}

pub fn place_request(command_id: &str) -> pb::PlaceOrderRequest {
    pb::PlaceOrderRequest {
        command_id: command_id.into(),
        order_id: ORDER_ID.into(),
        customer_id: CUSTOMER_ID.into(),
        items: vec![pb::OrderItem {
            name: "Margherita".into(),
            size: pb::PizzaSize::Large as i32,
            quantity: 2,
            unit_price_cents: 1299,
        }],
        ..Default::default()
    }
}

/// Registers the customer and places the order: stream `order-…` at version 1.
pub async fn placed_order(app: &mut TestApp) -> pb::CommandReply {
    app.client
        .register_customer(register_request())
        .await
        .expect("customer registered");
    app.client
        .place_order(place_request(""))
        .await
        .expect("order placed")
        .into_inner()
}

/// `(stream_version)` of every event of a stream, in version order.
pub async fn versions(pool: &PgPool, stream_id: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(stream_id)
    .fetch_all(pool)
    .await
    .expect("query events")
}

pub async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count events")
}

/// Inserts a raw event in an open transaction, as a slow appender would.
pub async fn begin_slow_append(
    pool: &PgPool,
    stream: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                             event_id, event_type, schema_version, payload)
         VALUES ('00000000-0000-0000-0000-000000000000', $1, 'customer', gen_random_uuid(), 1,
                 gen_random_uuid(), 'CustomerRenamed', 1, '{}')",
    )
    .bind(stream)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}
