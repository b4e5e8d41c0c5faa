//! What an operator sees: after a scripted scenario, each service's `/metrics` counts exactly
//! what happened, and one trace runs from a call to its projection. Runs against binaries
//! started here (a remote stack's metrics port and exporter are not the test's to reach).

use std::time::{Duration, Instant};

use e2e::{metric_value, otlp::Collector, stack::Stack};
use shared::proto::v1 as pb;
use tonic::Code;

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn margherita() -> pb::OrderItem {
    pb::OrderItem {
        name: "Margherita".into(),
        size: pb::PizzaSize::Large as i32,
        quantity: 1,
        unit_price_cents: 1299,
    }
}

/// Scrapes until `done` holds for the scrape, or fails after 10 s showing the last one.
async fn scrape_until(
    scrape: impl AsyncFn() -> anyhow::Result<String>,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape().await?;
        if done(&text) {
            return Ok(text);
        }
        anyhow::ensure!(Instant::now() < deadline, "metrics never matched:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_what_happened() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    anyhow::ensure!(stack.is_local(), "needs the binaries started here");
    let mut commands = stack.commands().await?;
    let mut queries = stack.queries().await?;

    // 1 customer, 3 orders: 4 events accepted.
    let customer = id();
    commands
        .register_customer(stack.request(pb::RegisterCustomerRequest {
            customer_id: customer.clone(),
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
            ..Default::default()
        }))
        .await?;
    let command_id = id();
    let mut orders = Vec::new();
    let mut last_position = 0;
    for n in 0..3 {
        let order = id();
        let reply = commands
            .place_order(stack.request(pb::PlaceOrderRequest {
                order_id: order.clone(),
                customer_id: customer.clone(),
                items: vec![margherita()],
                command_id: if n == 0 {
                    command_id.clone()
                } else {
                    String::new()
                },
                ..Default::default()
            }))
            .await?
            .into_inner();
        last_position = last_position.max(reply.position);
        orders.push(order);
    }
    // A retry of the first order's command: replayed, nothing appended.
    let replay = commands
        .place_order(stack.request(pb::PlaceOrderRequest {
            order_id: orders[0].clone(),
            customer_id: customer.clone(),
            items: vec![margherita()],
            command_id,
            ..Default::default()
        }))
        .await?
        .into_inner();
    assert!(replay.replayed);
    // Two optimistic conflicts: the orders are at version 1, not 7.
    for order in &orders[..2] {
        let status = commands
            .apply_discount(stack.request(pb::ApplyDiscountRequest {
                order_id: order.clone(),
                code: "SPRING".into(),
                amount_cents: 100,
                expected_version: Some(7),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
    }
    // One business refusal: confirming an order nobody placed.
    let status = commands
        .confirm_order(stack.request(pb::ConfirmOrderRequest {
            order_id: id(),
            estimated_delivery: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 3600,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // One bad request, refused before any command runs.
    let status = commands
        .place_order(stack.request(pb::PlaceOrderRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A method no service serves: counted, but not as a series of its own.
    let mut raw = tonic::client::Grpc::new(stack.command_channel().await?);
    raw.ready().await?;
    let status = raw
        .unary::<(), (), _>(
            stack.request(()),
            http::uri::PathAndQuery::from_static("/pizzeria.v1.CommandService/NoSuchMethod"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    // Read-your-writes on the last event.
    queries
        .get_order(stack.request(pb::GetOrderRequest {
            order_id: orders[2].clone(),
            min_position: last_position,
        }))
        .await?;

    let command_svc = stack.scrape_command_svc().await?;
    let commands_total = |command: &str, outcome: &str| {
        metric_value(
            &command_svc,
            "pizzeria_commands_total",
            &[("command", command), ("outcome", outcome)],
        )
    };
    assert_eq!(commands_total("RegisterCustomer", "accepted"), 1.0);
    assert_eq!(commands_total("PlaceOrder", "accepted"), 3.0);
    assert_eq!(commands_total("PlaceOrder", "replayed"), 1.0);
    assert_eq!(commands_total("ApplyDiscount", "conflict"), 2.0);
    assert_eq!(commands_total("ConfirmOrder", "rejected"), 1.0);
    let appended = |aggregate: &str| {
        metric_value(
            &command_svc,
            "pizzeria_events_appended_total",
            &[("aggregate", aggregate)],
        )
    };
    assert_eq!((appended("customer"), appended("order")), (1.0, 3.0));
    let grpc = |method: &str, code: &str| {
        metric_value(
            &command_svc,
            "pizzeria_grpc_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(grpc("PlaceOrder", "OK"), 4.0);
    assert_eq!(grpc("PlaceOrder", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(grpc("ApplyDiscount", "ABORTED"), 2.0);
    assert_eq!(grpc("unknown", "UNIMPLEMENTED"), 1.0);
    assert!(!command_svc.contains("NoSuchMethod"), "{command_svc}");
    assert_eq!(
        metric_value(&command_svc, "pizzeria_append_duration_seconds_count", &[]),
        4.0,
        "one append per accepted command"
    );
    assert!(
        metric_value(
            &command_svc,
            "pizzeria_db_pool_max_connections",
            &[("pool", "event_store")]
        ) > 0.0
    );

    // The relay publishes all 4 events and, once the health loop samples it, shows no lag.
    scrape_until(
        || stack.scrape_command_svc(),
        |text| {
            metric_value(text, "pizzeria_relay_published_total", &[]) == 4.0
                && text.contains("pizzeria_relay_lag_events 0")
        },
    )
    .await?;

    // query-svc's read model applied the 4 events exactly once, dead-lettered none, served one
    // GetOrder. (Projection series carry the projection's name.)
    const READ_MODEL: &[(&str, &str)] = &[("projection", "read_model")];
    let query_svc = scrape_until(
        || stack.scrape_query_svc(),
        |text| {
            metric_value(text, "pizzeria_projection_events_applied_total", READ_MODEL) >= 4.0
                && metric_value(text, "pizzeria_projection_lag_events", READ_MODEL) == 0.0
                && text.contains("pizzeria_projection_lag_events{projection=\"read_model\"} 0")
        },
    )
    .await?;
    assert_eq!(
        metric_value(
            &query_svc,
            "pizzeria_projection_events_applied_total",
            READ_MODEL
        ),
        4.0
    );
    assert_eq!(
        metric_value(
            &query_svc,
            "pizzeria_projection_dead_letters_total",
            READ_MODEL
        ),
        0.0
    );
    assert_eq!(
        metric_value(
            &query_svc,
            "pizzeria_projection_checkpoint_position",
            READ_MODEL
        ),
        last_position as f64
    );
    assert_eq!(
        metric_value(
            &query_svc,
            "pizzeria_grpc_requests_total",
            &[("method", "GetOrder"), ("code", "OK")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &query_svc,
            "pizzeria_read_your_writes_wait_seconds_count",
            &[("outcome", "reached")]
        ),
        1.0
    );
    stack.finish().await
}

/// One trace from the gRPC call to the projection, across the NATS hop: the caller's
/// `traceparent` → command-svc's call span → stored in the event's metadata → the relay's
/// publish span → the message's header → query-svc's projection span. Both services export
/// to a receiver in this test, as to any OTLP collector.
#[tokio::test]
async fn one_trace_spans_both_services_through_nats() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let stack = Stack::start_with(vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.endpoint()),
        // Export every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ])
    .await?;
    anyhow::ensure!(stack.is_local(), "needs the binaries started here");
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let caller_span = "00f067aa0ba902b7";
    let customer = id();
    let mut request = stack.request(pb::RegisterCustomerRequest {
        customer_id: customer.clone(),
        name: "Margaret Hamilton".into(),
        email: "margaret@example.com".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse()?,
    );
    stack.commands().await?.register_customer(request).await?;

    let deadline = Instant::now() + Duration::from_secs(15);
    let (call, publish, projection) = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let find = |service: &str, name: &str| {
            spans
                .iter()
                .find(|s| s.service == service && s.name == name)
                .cloned()
        };
        if let (Some(call), Some(publish), Some(projection)) = (
            find("command-svc", "pizzeria.v1.CommandService/RegisterCustomer"),
            find("command-svc", "relay publish"),
            find("query-svc", "project event"),
        ) {
            break (call, publish, projection);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "trace {trace_id} incomplete; received {:#?}",
            collector.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        call.parent_span_id, caller_span,
        "the call continues the caller's span"
    );
    assert_eq!(
        publish.parent_span_id, call.span_id,
        "the publish continues the call"
    );
    assert_eq!(
        projection.parent_span_id, publish.span_id,
        "the projection continues the publish, through the NATS header"
    );

    // The event keeps the call's context, for timelines and for any later reader of the log.
    let events = stack
        .event_log()
        .await?
        .read_stream(stack.request(pb::ReadStreamRequest {
            aggregate_type: "customer".into(),
            aggregate_id: customer.clone(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .events;
    let stored = events
        .first()
        .and_then(|e| e.metadata.as_ref())
        .map(|m| m.traceparent.clone())
        .unwrap_or_default();
    assert_eq!(stored, format!("00-{trace_id}-{}-01", call.span_id));
    stack.finish().await
}
