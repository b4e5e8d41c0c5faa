//! Random and malformed requests at every rpc of both services: no panic, no INTERNAL (or
//! UNKNOWN), the services still serve, and nothing half-written: every event in the log belongs
//! to a command that was answered OK, and every stream's versions are whole.
//!
//! `FUZZ_CASES` (default 600) requests with fields drawn from edge values (empty, huge, NUL,
//! control characters, SQL and NATS subject syntax, boundary numbers, out-of-range enums and
//! timestamps) plus raw byte strings that may not parse at all; `FUZZ_SEED` replays a run (the
//! seed is printed).

use std::{collections::HashSet, time::Duration};

use e2e::stack::Stack;
use shared::proto::v1::{
    self as pb, command_service_client::CommandServiceClient,
    event_log_service_client::EventLogServiceClient,
    projection_admin_service_client::ProjectionAdminServiceClient,
    query_service_client::QueryServiceClient,
};
use tonic::{Code, Status, transport::Channel};

/// SplitMix64: small, seedable, good enough to pick edge values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Ids that exist (so commands reach real aggregates) and a few that do not.
struct Known {
    customer: String,
    order: String,
}

impl Rng {
    fn text(&mut self) -> String {
        match self.below(16) {
            0 => String::new(),
            1 => "Margherita".into(),
            2 => "x".repeat(300),
            3 => "y".repeat(70_000),
            4 => "a\0b".into(),
            5 => "\u{1b}[31m\r\n\t".into(),
            6 => "🍕".repeat(100),
            7 => "'; DROP TABLE events; --".into(),
            8 => "pizzeria.events.*.>".into(),
            9 => "   ".into(),
            10 => "ADA@EXAMPLE.COM".into(),
            11 => "ada@example.com".into(),
            12 => "\u{202e}reversed\u{200b}".into(),
            13 => "%s%n{0}$1".into(),
            14 => char::from_u32(u32::try_from(self.below(0x2_0000)).unwrap_or(65))
                .map_or_else(String::new, String::from),
            _ => uuid::Uuid::now_v7().to_string(),
        }
    }

    fn id(&mut self, known: &Known) -> String {
        match self.below(10) {
            0..=2 => known.order.clone(),
            3..=4 => known.customer.clone(),
            5..=6 => uuid::Uuid::now_v7().to_string(),
            7 => uuid::Uuid::now_v7().to_string().to_uppercase(),
            8 => format!("{{{}}}", uuid::Uuid::now_v7()),
            _ => self.text(),
        }
    }

    fn u64(&mut self) -> u64 {
        self.pick(&[
            0,
            1,
            2,
            3,
            7,
            1_000,
            u64::from(u32::MAX),
            i64::MAX as u64,
            u64::MAX,
        ])
    }

    fn u32(&mut self) -> u32 {
        self.pick(&[0, 1, 5, 100, 501, 10_000, 100_000, u32::MAX])
    }

    fn i64(&mut self) -> i64 {
        self.pick(&[
            0,
            1,
            -1,
            1299,
            2098,
            10_000_000,
            10_000_001,
            i64::MAX,
            i64::MIN,
        ])
    }

    fn enumeration(&mut self) -> i32 {
        self.pick(&[0, 1, 2, 3, 4, 5, 6, 99, -1, i32::MAX, i32::MIN])
    }

    fn timestamp(&mut self) -> Option<prost_types::Timestamp> {
        let now = chrono::Utc::now().timestamp();
        match self.below(7) {
            0 => None,
            1 => Some(prost_types::Timestamp {
                seconds: now + 2700,
                nanos: 0,
            }),
            2 => Some(prost_types::Timestamp {
                seconds: now - 86_400,
                nanos: 0,
            }),
            3 => Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            4 => Some(prost_types::Timestamp {
                seconds: i64::MIN,
                nanos: -1,
            }),
            5 => Some(prost_types::Timestamp {
                seconds: now,
                nanos: 2_000_000_000,
            }),
            _ => Some(prost_types::Timestamp {
                seconds: 253_402_300_800,
                nanos: 0,
            }),
        }
    }

    fn expected_version(&mut self) -> Option<u64> {
        if self.chance(70) {
            None
        } else {
            Some(self.u64())
        }
    }

    fn items(&mut self) -> Vec<pb::OrderItem> {
        let count = self.pick(&[0, 1, 1, 2, 50, 51, 200]);
        (0..count)
            .map(|_| pb::OrderItem {
                name: if self.chance(60) {
                    "Margherita".into()
                } else {
                    self.text()
                },
                size: self.enumeration(),
                quantity: self.u32(),
                unit_price_cents: self.i64(),
            })
            .collect()
    }

    fn date(&mut self) -> String {
        self.pick(&[
            String::new(),
            "2026-11-22".into(),
            "2026-02-30".into(),
            "0001-01-01".into(),
            "9999-12-31".into(),
            "22/11/2026".into(),
        ])
    }
}

/// command-svc's default MAX_REQUEST_BYTES.
const OVERSIZE: usize = 256 * 1024;

fn is_reset(status: &Status) -> bool {
    status.code() == Code::Internal && status.message().starts_with("h2 protocol error")
}

/// Codes that mean a bug on our side, whatever the input.
fn is_server_fault(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented
    )
}

struct Clients {
    commands: CommandServiceClient<Channel>,
    log: EventLogServiceClient<Channel>,
    queries: QueryServiceClient<Channel>,
    admin: ProjectionAdminServiceClient<Channel>,
}

/// One random call; Ok(command id) when a command was answered OK.
async fn random_call(
    rng: &mut Rng,
    known: &Known,
    stack: &Stack,
    clients: &mut Clients,
) -> (String, usize, Result<Option<String>, Status>) {
    let command_id = uuid::Uuid::now_v7().to_string();
    let c = command_id.clone();
    macro_rules! command {
        ($rpc:ident, $message:expr) => {{
            let message = $message;
            let size = prost::Message::encoded_len(&message);
            let result = clients.commands.$rpc(stack.request(message)).await;
            (
                stringify!($rpc).to_owned(),
                size,
                result.map(|_| Some(c.clone())),
            )
        }};
    }
    macro_rules! other {
        ($client:ident . $rpc:ident, $message:expr) => {{
            let message = $message;
            let size = prost::Message::encoded_len(&message);
            let result = clients.$client.$rpc(stack.request(message)).await;
            (stringify!($rpc).to_owned(), size, result.map(|_| None))
        }};
    }
    let ev = rng.expected_version();
    match rng.below(25) {
        0 => command!(
            register_customer,
            pb::RegisterCustomerRequest {
                command_id: c.clone(),
                expected_version: ev,
                customer_id: rng.id(known),
                name: rng.text(),
                email: rng.text(),
            }
        ),
        1 => command!(
            change_customer_email,
            pb::ChangeCustomerEmailRequest {
                command_id: c.clone(),
                expected_version: ev,
                customer_id: rng.id(known),
                email: rng.text(),
            }
        ),
        2 => command!(
            rename_customer,
            pb::RenameCustomerRequest {
                command_id: c.clone(),
                expected_version: ev,
                customer_id: rng.id(known),
                name: rng.text(),
            }
        ),
        3 | 4 => command!(
            place_order,
            pb::PlaceOrderRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: if rng.chance(30) {
                    String::new()
                } else {
                    rng.id(known)
                },
                customer_id: rng.id(known),
                items: rng.items(),
            }
        ),
        5 => command!(
            confirm_order,
            pb::ConfirmOrderRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
                estimated_delivery: rng.timestamp(),
                kitchen_notes: rng.text(),
            }
        ),
        6 => command!(
            process_payment,
            pb::ProcessPaymentRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
                method: rng.enumeration(),
                amount_cents: rng.i64(),
                payment_reference: rng.text(),
            }
        ),
        7 => command!(
            apply_discount,
            pb::ApplyDiscountRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
                code: rng.text(),
                amount_cents: rng.i64(),
            }
        ),
        8 => command!(
            mark_order_ready,
            pb::MarkOrderReadyRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
            }
        ),
        9 => command!(
            send_out_for_delivery,
            pb::SendOutForDeliveryRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
                driver_name: rng.text(),
            }
        ),
        10 => command!(
            mark_order_delivered,
            pb::MarkOrderDeliveredRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
            }
        ),
        11 => command!(
            cancel_order,
            pb::CancelOrderRequest {
                command_id: c.clone(),
                expected_version: ev,
                order_id: rng.id(known),
                reason: rng.text(),
            }
        ),
        12 => other!(
            log.read_stream,
            pb::ReadStreamRequest {
                aggregate_type: match rng.below(3) {
                    0 => "order".to_owned(),
                    1 => "customer".to_owned(),
                    _ => rng.text(),
                },
                aggregate_id: rng.id(known),
                from_version: rng.u64(),
                max_count: rng.u32(),
            }
        ),
        13 => {
            let start = match rng.below(3) {
                0 => None,
                1 => Some(pb::read_all_request::Start::FromPosition(rng.u64())),
                _ => Some(pb::read_all_request::Start::After(pb::LogCursor {
                    transaction_id: rng.u64(),
                    global_position: rng.u64(),
                })),
            };
            let request = pb::ReadAllRequest {
                start,
                max_count: rng.u32(),
                follow: false,
            };
            let result = clients.log.read_all(stack.request(request)).await;
            let result = match result {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let mut outcome = Ok(None);
                    while let Some(item) = stream.message().await.transpose() {
                        if let Err(status) = item {
                            outcome = Err(status);
                            break;
                        }
                    }
                    outcome
                }
                Err(status) => Err(status),
            };
            ("read_all".to_owned(), 0, result)
        }
        14 => other!(
            queries.get_order,
            pb::GetOrderRequest {
                order_id: rng.id(known),
                min_position: if rng.chance(80) { 0 } else { rng.u64() },
            }
        ),
        15 => other!(
            queries.list_orders,
            pb::ListOrdersRequest {
                customer_id: if rng.chance(50) {
                    String::new()
                } else {
                    rng.id(known)
                },
                status: rng.enumeration(),
                placed_from: rng.timestamp(),
                placed_to: rng.timestamp(),
                page_size: rng.u32(),
                page_token: if rng.chance(50) {
                    String::new()
                } else {
                    rng.text()
                },
                ..Default::default()
            }
        ),
        16 => other!(
            queries.get_customer,
            pb::GetCustomerRequest {
                customer_id: rng.id(known),
                ..Default::default()
            }
        ),
        17 => other!(
            queries.get_order_timeline,
            pb::GetOrderTimelineRequest {
                order_id: rng.id(known),
                ..Default::default()
            }
        ),
        18 => other!(
            queries.get_order_as_of,
            pb::GetOrderAsOfRequest {
                order_id: rng.id(known),
                as_of: match rng.below(3) {
                    0 => None,
                    1 => Some(pb::get_order_as_of_request::AsOf::Version(rng.u64())),
                    _ => rng.timestamp().map(pb::get_order_as_of_request::AsOf::At),
                },
                ..Default::default()
            }
        ),
        19 => other!(
            queries.get_sales_analytics,
            pb::GetSalesAnalyticsRequest {
                from_date: rng.date(),
                to_date: rng.date(),
                top_items_limit: rng.u32(),
                ..Default::default()
            }
        ),
        20 => {
            let request = pb::WatchOrdersRequest {
                customer_id: if rng.chance(50) {
                    String::new()
                } else {
                    rng.id(known)
                },
                order_id: if rng.chance(50) {
                    String::new()
                } else {
                    rng.id(known)
                },
                from_position: rng.u64(),
                min_position: if rng.chance(80) { 0 } else { rng.u64() },
            };
            let result = match clients.queries.watch_orders(stack.request(request)).await {
                // The first change (or none within 200 ms), then hang up.
                Ok(response) => {
                    let mut stream = response.into_inner();
                    match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                        Ok(Err(status)) => Err(status),
                        _ => Ok(None),
                    }
                }
                Err(status) => Err(status),
            };
            ("watch_orders".to_owned(), 0, result)
        }
        21 => other!(
            admin.list_dead_letters,
            pb::ListDeadLettersRequest {
                projection: match rng.below(3) {
                    0 => String::new(),
                    1 => "read_model".to_owned(),
                    _ => rng.text(),
                },
                page_size: rng.u32(),
                page_token: if rng.chance(50) {
                    String::new()
                } else {
                    rng.text()
                },
            }
        ),
        22 => other!(
            admin.retry_dead_letter,
            pb::RetryDeadLetterRequest { id: rng.u64() }
        ),
        23 => other!(
            admin.skip_dead_letter,
            pb::SkipDeadLetterRequest {
                id: rng.u64(),
                reason: rng.text(),
            }
        ),
        _ => other!(
            admin.list_projections,
            pb::ListProjectionsRequest::default()
        ),
    }
}

/// Every method path of both services, for the raw-bytes half.
const COMMAND_METHODS: &[&str] = &[
    "/pizzeria.v1.CommandService/RegisterCustomer",
    "/pizzeria.v1.CommandService/PlaceOrder",
    "/pizzeria.v1.CommandService/ProcessPayment",
    "/pizzeria.v1.CommandService/CancelOrder",
    "/pizzeria.v1.EventLogService/ReadStream",
];
const QUERY_METHODS: &[&str] = &[
    "/pizzeria.v1.QueryService/GetOrder",
    "/pizzeria.v1.QueryService/ListOrders",
    "/pizzeria.v1.QueryService/GetOrderAsOf",
    "/pizzeria.v1.QueryService/GetSalesAnalytics",
    "/pizzeria.v1.ProjectionAdminService/RetryDeadLetter",
];

/// Sends `bytes` as the request message, unparsed.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf as _;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.pick(&[0, 1, 2, 5, 17, 64, 300]);
    let mut bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
    if rng.chance(30) {
        // A field header promising more bytes than follow.
        bytes.splice(0..0, [0x1a, 0xff, 0xff, 0xff, 0x0f]);
    }
    bytes
}

async fn raw_call(channel: Channel, path: &'static str, bytes: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    grpc.unary(
        tonic::Request::new(bytes),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn random_and_malformed_requests_get_clear_statuses_and_write_nothing_partial()
-> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let Some(write_db) = stack.write_database_url().map(str::to_owned) else {
        anyhow::bail!(
            "the fuzz test checks the event store directly: run it against local services"
        );
    };
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or_else(|| {
            u64::from(std::process::id()) ^ chrono::Utc::now().timestamp_micros().unsigned_abs()
        });
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .unwrap_or(600);
    println!("fuzz: FUZZ_SEED={seed} FUZZ_CASES={cases}");
    let mut rng = Rng(seed);

    let mut clients = Clients {
        commands: stack.commands().await?,
        log: stack.event_log().await?,
        queries: stack.queries().await?,
        admin: ProjectionAdminServiceClient::new(stack.query_channel().await?),
    };
    // Something to aim at: a customer with an order.
    let known = Known {
        customer: uuid::Uuid::now_v7().to_string(),
        order: uuid::Uuid::now_v7().to_string(),
    };
    let seed_ids = [
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    ];
    clients
        .commands
        .register_customer(stack.request(pb::RegisterCustomerRequest {
            command_id: seed_ids[0].clone(),
            customer_id: known.customer.clone(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            ..Default::default()
        }))
        .await?;
    clients
        .commands
        .place_order(stack.request(pb::PlaceOrderRequest {
            command_id: seed_ids[1].clone(),
            order_id: known.order.clone(),
            customer_id: known.customer.clone(),
            items: vec![pb::OrderItem {
                name: "Margherita".into(),
                size: pb::PizzaSize::Large as i32,
                quantity: 2,
                unit_price_cents: 1299,
            }],
            ..Default::default()
        }))
        .await?;

    let mut answered_ok: HashSet<String> = seed_ids.iter().cloned().collect();
    let mut codes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut faults = Vec::new();
    for case in 0..cases {
        let (rpc, size, result) = random_call(&mut rng, &known, &stack, &mut clients).await;
        match result {
            // Far beyond MAX_REQUEST_BYTES, the server answers before reading the body and the
            // client's HTTP/2 stack reports the stream reset as INTERNAL: refused, not a fault.
            Err(status) if size > OVERSIZE && is_reset(&status) => {
                *codes.entry("oversize, reset".into()).or_default() += 1;
            }
            Ok(command) => {
                *codes.entry("Ok".into()).or_default() += 1;
                answered_ok.extend(command);
            }
            Err(status) => {
                *codes.entry(format!("{:?}", status.code())).or_default() += 1;
                if is_server_fault(&status) {
                    faults.push(format!("case {case} {rpc} ({size} bytes): {status:?}"));
                }
                let message = status.message().to_lowercase();
                for leak in [
                    "select ",
                    "insert ",
                    "postgres://",
                    "nats://",
                    "sqlx",
                    "panicked",
                ] {
                    if message.contains(leak) {
                        faults.push(format!(
                            "case {case} {rpc}: message leaks {leak:?}: {status:?}"
                        ));
                    }
                }
            }
        }
    }
    let command_channel = stack.command_channel().await?;
    let query_channel = stack.query_channel().await?;
    for case in 0..cases / 4 {
        let (channel, path) = if rng.chance(50) {
            (command_channel.clone(), rng.pick(COMMAND_METHODS))
        } else {
            (query_channel.clone(), rng.pick(QUERY_METHODS))
        };
        let bytes = random_bytes(&mut rng);
        match raw_call(channel, path, bytes.clone()).await {
            Ok(()) => *codes.entry("Ok (raw)".into()).or_default() += 1,
            Err(status) => {
                *codes
                    .entry(format!("{:?} (raw)", status.code()))
                    .or_default() += 1;
                if is_server_fault(&status) {
                    faults.push(format!("raw case {case} {path} {bytes:02x?}: {status:?}"));
                }
            }
        }
    }
    println!("fuzz: statuses {codes:?}");
    assert!(faults.is_empty(), "server faults:\n{}", faults.join("\n"));

    // Both still serve.
    clients
        .queries
        .get_order(stack.request(pb::GetOrderRequest {
            order_id: known.order.clone(),
            min_position: 0,
        }))
        .await?;

    // Nothing half-written: every event's command was answered OK (or was a command of the
    // seed), each stream's versions run 1..=version without a gap, and its row agrees.
    let pool = sqlx::PgPool::connect(&write_db).await?;
    let strangers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT metadata->>'command_id' FROM events WHERE metadata ? 'command_id'",
    )
    .fetch_all(&pool)
    .await?;
    let strangers: Vec<&String> = strangers
        .iter()
        .filter(|id| !answered_ok.contains(*id))
        .collect();
    assert!(
        strangers.is_empty(),
        "events of commands never answered OK: {strangers:?}"
    );
    let torn: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.stream_id, s.version, count(e.*), coalesce(max(e.stream_version), 0)
         FROM streams s LEFT JOIN events e USING (tenant_id, stream_id)
         GROUP BY s.stream_id, s.version
         HAVING s.version <> count(e.*) OR s.version <> coalesce(max(e.stream_version), 0)",
    )
    .fetch_all(&pool)
    .await?;
    assert!(
        torn.is_empty(),
        "streams whose row and events disagree: {torn:?}"
    );
    pool.close().await;
    stack.finish().await
}
