//! A whole stack in one test: command-svc (its own database, its relay on the test's stream) and
//! query-svc (the test's `#[sqlx::test]` database), both real gRPC servers on free ports.

use std::time::Duration;

use clap::Parser;
use e2e::{TestDatabase, nats::TestStream};
use shared::proto::v1::{
    self as pb, command_service_client::CommandServiceClient,
    projection_admin_service_client::ProjectionAdminServiceClient,
    query_service_client::QueryServiceClient,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const CUSTOMER_ID: &str = "0190b8f6-0000-7000-8000-0000000000c1";

pub struct Stack {
    pub commands: CommandServiceClient<Channel>,
    pub queries: QueryServiceClient<Channel>,
    pub admin: ProjectionAdminServiceClient<Channel>,
    /// command-svc's event store.
    pub write_pool: PgPool,
    /// query-svc's read database.
    pub read_pool: PgPool,
    pub stream: TestStream,
    write_db: Option<TestDatabase>,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(database) = self.write_db.take() {
            // Drop cannot await: drop the write database from a thread with its own runtime
            // (FORCE ends this test's connections; closing the pool here would wait on the
            // test's own, blocked runtime).
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let _ = database.drop_database().await;
                });
            })
            .join();
        }
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Starts both services. `relay` false leaves publishing to the test (to reorder or drop messages).
pub async fn start(read_pool: PgPool, relay: bool) -> Stack {
    let stream = TestStream::new();
    let write_db = TestDatabase::create().await.unwrap();
    let write_pool = PgPool::connect(&write_db.url).await.unwrap();
    command_svc::eventsourcing::store::MIGRATOR
        .run(&write_pool)
        .await
        .unwrap();
    let stop = CancellationToken::new();

    let mut args: Vec<String> = [
        "command-svc",
        "--grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--log-format",
        "pretty",
        "--auth-disabled",
    ]
    .map(String::from)
    .to_vec();
    args.extend(stream.relay_flags());
    args.extend(["--relay-poll-interval".into(), "50ms".into()]);
    args.extend(["--relay-enabled".into(), relay.to_string()]);
    let command_app = command_svc::startup::App::with_pool(
        command_svc::config::Config::parse_from(args),
        write_pool.clone(),
    )
    .await
    .unwrap();
    let command_addr = command_app.local_addr().unwrap();
    let mut command_ready = command_app.ready();
    tokio::spawn(command_app.run_until_stopped(stop.clone().cancelled_owned()));
    command_ready.wait_for(|ready| *ready).await.unwrap();

    if !relay {
        // The relay normally creates the stream; without it the test publishes into one it made.
        stream.create().await.unwrap();
    }

    let query_args = [
        "query-svc".to_owned(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--log-format".into(),
        "pretty".into(),
        "--auth-disabled".into(),
        "--nats-url".into(),
        stream.nats_url.clone(),
        "--nats-stream".into(),
        stream.name.clone(),
        "--nats-subject-prefix".into(),
        stream.subject_prefix.clone(),
        "--command-svc-url".into(),
        format!("http://{command_addr}"),
        // Rebuilds here read many pages (and the swap's last stretch more than one).
        "--rebuild-page-size".into(),
        "7".into(),
    ];
    let query_app = query_svc::startup::App::with_pool(
        query_svc::config::Config::parse_from(query_args),
        read_pool.clone(),
    )
    .await
    .unwrap();
    let query_addr = query_app.local_addr().unwrap();
    let mut query_ready = query_app.ready();
    tokio::spawn(query_app.run_until_stopped(stop.clone().cancelled_owned()));
    query_ready.wait_for(|ready| *ready).await.unwrap();

    Stack {
        commands: CommandServiceClient::new(channel(command_addr).await),
        queries: QueryServiceClient::new(channel(query_addr).await),
        admin: ProjectionAdminServiceClient::new(channel(query_addr).await),
        write_pool,
        read_pool,
        stream,
        write_db: Some(write_db),
        stop,
    }
}

impl Stack {
    pub async fn register(&mut self, name: &str) -> pb::CommandReply {
        self.commands
            .register_customer(pb::RegisterCustomerRequest {
                customer_id: CUSTOMER_ID.into(),
                name: name.into(),
                email: "ada@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn place(&mut self, order_id: &str, quantity: u32) -> pb::CommandReply {
        self.commands
            .place_order(pb::PlaceOrderRequest {
                order_id: order_id.into(),
                customer_id: CUSTOMER_ID.into(),
                items: vec![pb::OrderItem {
                    name: "Margherita".into(),
                    size: pb::PizzaSize::Large as i32,
                    quantity,
                    unit_price_cents: 1000,
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn confirm(&mut self, order_id: &str) -> pb::CommandReply {
        self.commands
            .confirm_order(pb::ConfirmOrderRequest {
                order_id: order_id.into(),
                estimated_delivery: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + 3600,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// GetOrder that waits for `position` (read-your-writes).
    pub async fn order_at(&mut self, order_id: &str, position: u64) -> pb::OrderView {
        self.queries
            .get_order(pb::GetOrderRequest {
                order_id: order_id.into(),
                min_position: position,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Publishes stored events (as the relay would) in the order given, by global position,
    /// with no headers: the projector cannot tell what came before each one.
    pub async fn publish(&self, positions: &[i64]) {
        self.publish_with(positions, false).await;
    }

    /// Publishes stored events as the relay does, headers and all (each message names the
    /// event before it in commit order), but only those given: the others are "lost".
    pub async fn publish_as_relay(&self, positions: &[i64]) {
        self.publish_with(positions, true).await;
    }

    async fn publish_with(&self, positions: &[i64], headers: bool) {
        let store = command_svc::eventsourcing::store::EventStore::new(self.write_pool.clone());
        let mut all = wait_for_events(&store, positions.iter().copied().max().unwrap_or(0)).await;
        all.sort_by_key(|e| e.cursor());
        let client = async_nats::connect(&self.stream.nats_url).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        for position in positions {
            let at = all
                .iter()
                .position(|e| e.global_position == *position)
                .expect("event exists");
            let previous = at
                .checked_sub(1)
                .map_or_else(command_svc::eventsourcing::store::LogCursor::default, |p| {
                    all[p].cursor()
                });
            let event = all[at].clone();
            let subject = shared::envelope::event_subject(
                &self.stream.subject_prefix,
                event.tenant_id,
                &event.aggregate_type,
                event.aggregate_id,
            );
            let map = if headers {
                command_svc::eventsourcing::relay::event_headers(&event, previous)
            } else {
                async_nats::HeaderMap::new()
            };
            let body = prost::Message::encode_to_vec(&event.into_record());
            jetstream
                .publish_with_headers(subject, map, body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    /// Waits until the projector's consumer has nothing pending or unacknowledged.
    pub async fn drained(&self) {
        let client = async_nats::connect(&self.stream.nats_url).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        eventually(|| {
            let jetstream = jetstream.clone();
            let stream = self.stream.name.clone();
            async move {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
                    .get_stream(&stream)
                    .await
                    .ok()?
                    .get_consumer("query-svc-projections")
                    .await
                    .ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        })
        .await;
    }

    /// A dump of every read table, to compare before and after.
    pub async fn dump(&self) -> Vec<String> {
        e2e::read_model_dump(&self.read_pool).await.unwrap()
    }
}

async fn wait_for_events(
    store: &command_svc::eventsourcing::store::EventStore,
    max_position: i64,
) -> Vec<command_svc::eventsourcing::store::StoredEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = store
            .read_all(
                command_svc::eventsourcing::store::LogCursor::default(),
                0,
                10_000,
            )
            .await
            .unwrap();
        if all.iter().any(|e| e.global_position >= max_position)
            || tokio::time::Instant::now() > deadline
        {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns Some or 20 s pass.
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
