//! Commands over gRPC: concurrency, idempotency, refusals, bad input.

use futures::future::join_all;
use shared::proto::v1 as pb;
use sqlx::PgPool;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    CUSTOMER_ID, ORDER_ID, event_count, place_request, placed_order, register_request, spawn,
    versions,
};

fn order_stream() -> String {
    format!("order-{ORDER_ID}")
}

#[sqlx::test(migrations = "./migrations")]
async fn fifty_concurrent_commands_on_one_version_one_wins(pool: PgPool) {
    let mut app = spawn(pool).await;
    let placed = placed_order(&mut app).await;
    assert_eq!(placed.version, 1);

    let calls = (0..50).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .apply_discount(pb::ApplyDiscountRequest {
                    expected_version: Some(1),
                    order_id: ORDER_ID.into(),
                    code: format!("CODE{i}"),
                    amount_cents: 1,
                    ..Default::default()
                })
                .await
        }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let aborted = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::Aborted))
        .count();
    assert_eq!((ok, aborted), (1, 49), "{results:?}");
    let message = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(|s| s.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("expected version 1") && message.contains("actual version 2"),
        "{message}"
    );
    assert_eq!(versions(&app.pool, &order_stream()).await, vec![1, 2]);
}

#[sqlx::test(migrations = "./migrations")]
async fn without_expected_version_concurrent_commands_all_land_gaplessly(pool: PgPool) {
    let mut app = spawn(pool).await;
    placed_order(&mut app).await;
    let calls = (0..20).map(|i| {
        let mut client = app.client.clone();
        async move {
            client
                .apply_discount(pb::ApplyDiscountRequest {
                    order_id: ORDER_ID.into(),
                    code: format!("CODE{i}"),
                    amount_cents: 1,
                    ..Default::default()
                })
                .await
        }
    });
    let results = join_all(calls).await;
    // Each conflict is reloaded and retried (bounded): under this contention most land, and
    // any that exhaust their retries say ABORTED, never anything else.
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Aborted, "{status:?}");
        }
    }
    let landed = results.iter().filter(|r| r.is_ok()).count();
    let expected: Vec<i64> = (1..=i64::try_from(landed).unwrap() + 1).collect();
    assert_eq!(versions(&app.pool, &order_stream()).await, expected);
}

/// Retries racing each other (a client that timed out and resent, several times): exactly one
/// appends, every other gets the same reply back as a replay.
#[sqlx::test(migrations = "./migrations")]
async fn concurrent_retries_of_one_command_id_append_once(pool: PgPool) {
    let mut app = spawn(pool).await;
    app.client
        .register_customer(register_request())
        .await
        .unwrap();
    let before = event_count(&app.pool).await;
    let command_id = "0190b8f6-aaaa-7000-8000-00000000000b";
    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        async move { client.place_order(place_request(command_id)).await }
    });
    let replies: Vec<pb::CommandReply> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every retry gets the reply").into_inner())
        .collect();
    assert_eq!(replies.iter().filter(|r| !r.replayed).count(), 1);
    for reply in &replies {
        assert_eq!(
            (reply.version, reply.position),
            (replies[0].version, replies[0].position)
        );
    }
    assert_eq!(event_count(&app.pool).await, before + 1);
    assert_eq!(versions(&app.pool, &order_stream()).await, vec![1]);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_retried_command_returns_the_original_reply_and_appends_nothing(pool: PgPool) {
    let mut app = spawn(pool).await;
    app.client
        .register_customer(register_request())
        .await
        .unwrap();
    let command_id = "0190b8f6-aaaa-7000-8000-00000000000a";

    let first = app
        .client
        .place_order(place_request(command_id))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    assert_eq!(first.events_appended, 1);
    let before = event_count(&app.pool).await;

    // As after an ambiguous failure (the reply was lost): the client sends it again.
    let retry = app
        .client
        .place_order(place_request(command_id))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(
        (retry.aggregate_id.as_str(), retry.version, retry.position),
        (first.aggregate_id.as_str(), first.version, first.position)
    );
    assert_eq!(
        event_count(&app.pool).await,
        before,
        "a replay appends nothing"
    );

    // Even a restarted service answers from Postgres.
    let pool = app.pool.clone();
    drop(app);
    let mut restarted = spawn(pool).await;
    let again = restarted
        .client
        .place_order(place_request(command_id))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.position, first.position);

    // The same id with a different command is refused.
    let mut different = place_request(command_id);
    different.items[0].quantity = 3;
    let status = restarted.client.place_order(different).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("command id reused"),
        "{}",
        status.message()
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn business_rules_and_missing_aggregates_map_to_their_codes(pool: PgPool) {
    let mut app = spawn(pool).await;
    // No such customer yet.
    let status = app.client.place_order(place_request("")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("not registered"));

    let status = app
        .client
        .mark_order_ready(pb::MarkOrderReadyRequest {
            order_id: ORDER_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    placed_order(&mut app).await;
    let status = app
        .client
        .process_payment(pb::ProcessPaymentRequest {
            order_id: ORDER_ID.into(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("amount due 25.98"),
        "{}",
        status.message()
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn bad_input_lists_every_field_and_writes_nothing(pool: PgPool) {
    let mut app = spawn(pool).await;
    let status = app
        .client
        .place_order(pb::PlaceOrderRequest {
            command_id: "not-a-uuid".into(),
            customer_id: CUSTOMER_ID.into(),
            items: vec![pb::OrderItem {
                name: "Bad\0name".into(),
                size: pb::PizzaSize::Unspecified as i32,
                quantity: 0,
                unit_price_cents: -5,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    for field in [
        "command_id",
        "items[0].name",
        "items[0].size",
        "items[0].quantity",
        "items[0].unit_price_cents",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
    assert_eq!(event_count(&app.pool).await, 0);
    let streams: i64 = sqlx::query_scalar("SELECT count(*) FROM streams")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(streams, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_whole_order_life_runs_over_grpc(pool: PgPool) {
    let mut app = spawn(pool).await;
    placed_order(&mut app).await;
    let id = || ORDER_ID.to_string();
    let c = &mut app.client;
    c.apply_discount(pb::ApplyDiscountRequest {
        order_id: id(),
        code: "welcome".into(),
        amount_cents: 598,
        ..Default::default()
    })
    .await
    .unwrap();
    c.confirm_order(pb::ConfirmOrderRequest {
        order_id: id(),
        estimated_delivery: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 3600,
            nanos: 0,
        }),
        kitchen_notes: "extra basil".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let paid = c
        .process_payment(pb::ProcessPaymentRequest {
            order_id: id(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: 2000,
            payment_reference: "txn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        paid.events_appended, 2,
        "payment of a confirmed order also starts cooking"
    );
    c.mark_order_ready(pb::MarkOrderReadyRequest {
        order_id: id(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.send_out_for_delivery(pb::SendOutForDeliveryRequest {
        order_id: id(),
        driver_name: "Luigi".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let done = c
        .mark_order_delivered(pb::MarkOrderDeliveredRequest {
            order_id: id(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.version, 8);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(order_stream())
    .fetch_all(&app.pool)
    .await
    .unwrap();
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
}
