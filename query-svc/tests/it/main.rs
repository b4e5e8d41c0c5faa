//! query-svc against real Postgres and NATS, fed by a real command-svc: projections, read-your-
//! writes, duplicates, reordering, lost messages and poison events.

// A panic in a test is a test failure with a line number: unwrap is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod apply_page;
mod health;
mod helpers;
mod tenancy;

use helpers::{CUSTOMER_ID, eventually, start};
use shared::proto::v1 as pb;
use sqlx::PgPool;

const ORDER_A: &str = "0190b8f6-3f2e-7c2a-9d1e-00000000000a";
const ORDER_B: &str = "0190b8f6-3f2e-7c2a-9d1e-00000000000b";

#[sqlx::test(migrations = "./migrations")]
async fn a_command_is_readable_at_once_with_its_position(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada Lovelace").await;
    let placed = stack.place(ORDER_A, 2).await;

    // Read-your-writes: with the reply's position the view is there, never NOT_FOUND.
    let view = stack.order_at(ORDER_A, placed.position).await;
    assert_eq!(view.status, pb::OrderStatus::Pending as i32);
    assert_eq!(view.customer_name, "Ada Lovelace");
    assert_eq!(
        (view.item_count, view.total_cents, view.version),
        (2, 2000, 1)
    );

    let confirmed = stack.confirm(ORDER_A).await;
    let view = stack.order_at(ORDER_A, confirmed.position).await;
    assert_eq!(view.status, pb::OrderStatus::Confirmed as i32);
    assert!(view.time_to_confirmation_seconds.is_some());

    let timeline = stack
        .queries
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: ORDER_A.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let types: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderConfirmed"]);
    assert!(timeline.entries[0].description.contains("2 x Margherita"));

    let as_of = stack
        .queries
        .get_order_as_of(pb::GetOrderAsOfRequest {
            order_id: ORDER_A.into(),
            as_of: Some(pb::get_order_as_of_request::AsOf::Version(1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(as_of.status, pb::OrderStatus::Pending as i32);
    assert_eq!(as_of.version, 1);

    let customer = stack
        .queries
        .get_customer(pb::GetCustomerRequest {
            customer_id: CUSTOMER_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(customer.order_count, 1);
    assert_eq!(customer.last_order_id.as_deref(), Some(ORDER_A));

    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let sales = stack
        .queries
        .get_sales_analytics(pb::GetSalesAnalyticsRequest {
            from_date: today.clone(),
            to_date: today,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sales.total_orders, sales.confirmed_orders), (1, 1));
    assert_eq!(sales.gross_revenue_cents, 2000);
    assert_eq!(sales.top_items[0].name, "Margherita");
    assert!((sales.confirmation_rate - 1.0).abs() < f64::EPSILON);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_customer_rename_reaches_every_order_view(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada Lovelace").await;
    stack.place(ORDER_A, 1).await;
    stack.place(ORDER_B, 1).await;
    let renamed = stack
        .commands
        .rename_customer(pb::RenameCustomerRequest {
            customer_id: CUSTOMER_ID.into(),
            name: "Ada King".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for order in [ORDER_A, ORDER_B] {
        assert_eq!(
            stack.order_at(order, renamed.position).await.customer_name,
            "Ada King"
        );
    }
    let list = stack
        .queries
        .list_orders(pb::ListOrdersRequest {
            customer_id: CUSTOMER_ID.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.orders.len(), 2);
    assert!(list.orders.iter().all(|o| o.customer_name == "Ada King"));
}

#[sqlx::test(migrations = "./migrations")]
async fn duplicates_and_a_whole_replay_leave_the_read_tables_unchanged(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    stack.place(ORDER_A, 3).await;
    let last = stack.confirm(ORDER_A).await;
    stack.order_at(ORDER_A, last.position).await;
    stack.drained().await;
    let before = stack.dump().await;

    // Every event again (new message ids, so JetStream keeps them), and the last one twice more.
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(&stack.write_pool)
    .await
    .unwrap();
    let mut replay = positions.clone();
    replay.extend([*positions.last().unwrap(); 2]);
    stack.publish(&replay).await;
    stack.drained().await;

    assert_eq!(stack.dump().await, before);
}

#[sqlx::test(migrations = "./migrations")]
async fn reordered_and_lost_messages_are_filled_from_command_svc(pool: PgPool) {
    // No relay: the test decides what reaches NATS, and in which order.
    let mut stack = start(pool, false).await;
    let registered = stack.register("Ada").await;
    let placed = stack.place(ORDER_A, 1).await;
    let confirmed = stack.confirm(ORDER_A).await;
    let cancelled = stack
        .commands
        .cancel_order(pb::CancelOrderRequest {
            order_id: ORDER_A.into(),
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // v2 (confirmed) is lost: v3 arrives right after v1.
    stack
        .publish(&[
            i64::try_from(registered.position).unwrap(),
            i64::try_from(placed.position).unwrap(),
            i64::try_from(cancelled.position).unwrap(),
        ])
        .await;
    let view = stack.order_at(ORDER_A, cancelled.position).await;
    assert_eq!(view.version, 3);
    assert_eq!(view.status, pb::OrderStatus::Cancelled as i32);
    assert!(
        view.estimated_delivery.is_some(),
        "v2 was applied from command-svc"
    );

    // The lost v2 finally arrives, late: a duplicate, nothing changes.
    stack.drained().await;
    let before = stack.dump().await;
    stack
        .publish(&[i64::try_from(confirmed.position).unwrap()])
        .await;
    stack.drained().await;
    assert_eq!(stack.dump().await, before);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_poison_event_is_dead_lettered_and_other_orders_keep_flowing(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    let placed = stack.place(ORDER_A, 1).await;
    stack.order_at(ORDER_A, placed.position).await;

    // An event no projection can apply: a confirmation whose payload lacks every field.
    append_poison(&stack, ORDER_A, 2).await;

    // Another order is projected while the poison event is being retried.
    let other = stack.place(ORDER_B, 1).await;
    assert_eq!(stack.order_at(ORDER_B, other.position).await.version, 1);

    let (error, attempts): (String, i32) = eventually(|| async {
        sqlx::query_as(
            "SELECT error, attempts FROM read_model.dead_letters
             WHERE stream_id = $1 AND status = 'PENDING'",
        )
        .bind(format!("order-{ORDER_A}"))
        .fetch_optional(&stack.read_pool)
        .await
        .unwrap()
    })
    .await;
    assert!(error.contains("OrderConfirmed"), "{error}");
    assert_eq!(i64::from(attempts), query_svc::runtime::run::MAX_ATTEMPTS);
    // The held order keeps its last good view.
    assert_eq!(stack.order_at(ORDER_A, 0).await.version, 1);
}

/// The usual session token: a client keeps the highest position it has been given and reads
/// with it. Order X is written, then order Y; only Y's message reaches the projector (X's are
/// held by a consumer that died, or lost). A read of X with Y's token must see X as written,
/// never an older view or NOT_FOUND: the token covers every event published before Y's.
#[sqlx::test(migrations = "./migrations")]
async fn a_session_token_covers_every_earlier_write_of_the_session(pool: PgPool) {
    let mut stack = start(pool, false).await;
    stack.register("Ada").await;
    stack.place(ORDER_A, 1).await;
    let confirmed_a = stack.confirm(ORDER_A).await;
    let placed_b = stack.place(ORDER_B, 2).await;
    assert!(placed_b.position > confirmed_a.position);

    stack
        .publish_as_relay(&[i64::try_from(placed_b.position).unwrap()])
        .await;
    let a = stack.order_at(ORDER_A, placed_b.position).await;
    assert_eq!(
        (a.version, a.status),
        (2, pb::OrderStatus::Confirmed as i32),
        "order X as of the session token"
    );
    let b = stack.order_at(ORDER_B, placed_b.position).await;
    assert_eq!(b.version, 1);

    // X's messages arrive at last: done already, nothing changes.
    stack.drained().await;
    let before = stack.dump().await;
    let all: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(&stack.write_pool)
    .await
    .unwrap();
    stack.publish_as_relay(&all).await;
    stack.drained().await;
    assert_eq!(stack.dump().await, before);
}

/// An order held behind a dead letter is not current, and a read that asks for currency (a
/// token) is told so with UNAVAILABLE instead of being given the view as it was; reads of
/// other orders with the same token answer.
#[sqlx::test(migrations = "./migrations")]
async fn a_read_of_an_order_held_behind_a_dead_letter_is_unavailable_not_stale(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    let placed = stack.place(ORDER_A, 1).await;
    stack.order_at(ORDER_A, placed.position).await;
    // Order A's version 2 is an event no projection can apply.
    append_poison(&stack, ORDER_A, 2).await;
    let session = stack.place(ORDER_B, 1).await.position;

    // Order B, written after the poison event, is read with the session token.
    assert_eq!(stack.order_at(ORDER_B, session).await.version, 1);
    // Order A with the same token: never its version 1 as if it were current.
    let status = stack
        .queries
        .get_order(pb::GetOrderRequest {
            order_id: ORDER_A.into(),
            min_position: session,
        })
        .await
        .expect_err("order A is held behind a dead letter");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("held at version 2"),
        "{}",
        status.message()
    );
    for status in [
        stack
            .queries
            .get_order_timeline(pb::GetOrderTimelineRequest {
                order_id: ORDER_A.into(),
                min_position: session,
            })
            .await
            .expect_err("the timeline is held too"),
        stack
            .queries
            .get_order_as_of(pb::GetOrderAsOfRequest {
                order_id: ORDER_A.into(),
                as_of: Some(pb::get_order_as_of_request::AsOf::Version(1)),
                min_position: session,
            })
            .await
            .expect_err("and its past"),
    ] {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    // Without a token the read is eventually consistent and shows the last good view.
    assert_eq!(stack.order_at(ORDER_A, 0).await.version, 1);
}

/// Appends to `order`'s stream, at `version`, a confirmation whose payload lacks every field:
/// an event no projection can apply.
async fn append_poison(stack: &helpers::Stack, order: &str, version: i64) {
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                             event_id, event_type, schema_version, payload)
         VALUES ('00000000-0000-0000-0000-000000000000', $1, 'order', $2, $3,
                 gen_random_uuid(), 'OrderConfirmed', 1, '{}')",
    )
    .bind(format!("order-{order}"))
    .bind(uuid::Uuid::parse_str(order).unwrap())
    .bind(version)
    .execute(&stack.write_pool)
    .await
    .unwrap();
}

/// Each projection has its own dead letters: an event that only the read model handles and
/// cannot apply (a customer's rename without its fields) holds that customer there, while the
/// order timeline and the training plans, which do not handle customer events, stay current
/// (the timeline answers reads with the token); the read model keeps serving other aggregates
/// with it too.
#[sqlx::test(migrations = "./migrations")]
async fn a_dead_letter_in_one_projection_leaves_the_others_current(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    let ghost = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                             event_id, event_type, schema_version, payload)
         VALUES ('00000000-0000-0000-0000-000000000000', $1, 'customer', $2, 1,
                 gen_random_uuid(), 'CustomerRenamed', 1, '{}')",
    )
    .bind(format!("customer-{ghost}"))
    .bind(ghost)
    .execute(&stack.write_pool)
    .await
    .unwrap();
    let placed = stack.place(ORDER_A, 1).await;

    // The read model dead-letters the rename and holds the customer...
    let dead = eventually(|| {
        let mut admin = stack.admin.clone();
        async move {
            let letters = admin
                .list_dead_letters(pb::ListDeadLettersRequest::default())
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            (!letters.is_empty()).then_some(letters)
        }
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].projection.as_str(), dead[0].event_type.as_str()),
        ("read_model", "CustomerRenamed")
    );
    let status = stack
        .queries
        .get_customer(pb::GetCustomerRequest {
            customer_id: ghost.to_string(),
            min_position: placed.position,
        })
        .await
        .expect_err("the customer is held");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // ...while the timeline and the read model's orders answer with the token.
    let timeline = stack
        .queries
        .get_order_timeline(pb::GetOrderTimelineRequest {
            order_id: ORDER_A.into(),
            min_position: placed.position,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timeline.entries.len(), 1);
    assert_eq!(stack.order_at(ORDER_A, placed.position).await.version, 1);

    let projections = stack
        .admin
        .list_projections(pb::ListProjectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projections;
    let states: Vec<(&str, i32, u64)> = projections
        .iter()
        .map(|p| (p.name.as_str(), p.state, p.dead_letters))
        .collect();
    assert_eq!(
        states,
        [
            ("order_timeline", pb::ProjectionState::Running as i32, 0),
            ("read_model", pb::ProjectionState::Stalled as i32, 1),
            ("training_plans", pb::ProjectionState::Running as i32, 0),
        ]
    );
}
