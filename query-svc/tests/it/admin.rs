//! ProjectionAdminService: dead letters retried after a fix and skipped, projection status, and
//! a rebuild that equals the incremental projection while queries keep answering.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use shared::proto::v1::{
    self as pb, projection_admin_service_client::ProjectionAdminServiceClient,
};
use sqlx::PgPool;
use tonic::Code;

use crate::helpers::{Stack, eventually, start};

const ORDER_A: &str = "0190b8f6-3f2e-7c2a-9d1e-0000000000a1";
const ORDER_B: &str = "0190b8f6-3f2e-7c2a-9d1e-0000000000b1";

/// Writes an event straight into command-svc's log (the relay publishes it like any other).
async fn insert_event(stack: &Stack, order_id: &str, version: i64, payload: &str) {
    sqlx::query("UPDATE streams SET version = $2 WHERE stream_id = $1")
        .bind(format!("order-{order_id}"))
        .bind(version)
        .execute(&stack.write_pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                             event_id, event_type, schema_version, payload)
         VALUES ('00000000-0000-0000-0000-000000000000', $1, 'order', $2, $3,
                 gen_random_uuid(), 'OrderConfirmed', 1, $4::jsonb)",
    )
    .bind(format!("order-{order_id}"))
    .bind(uuid::Uuid::parse_str(order_id).unwrap())
    .bind(version)
    .bind(payload)
    .execute(&stack.write_pool)
    .await
    .unwrap();
}

/// The payload of a real OrderConfirmed (order B's), to repair or forge events with.
async fn a_good_confirmation(stack: &mut Stack) -> String {
    let confirmed = stack.confirm(ORDER_B).await;
    stack.order_at(ORDER_B, confirmed.position).await;
    sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE stream_id = $1 AND stream_version = 2",
    )
    .bind(format!("order-{ORDER_B}"))
    .fetch_one(&stack.write_pool)
    .await
    .unwrap()
}

/// The read model's dead letters. (An event no projection can decode is dead-lettered by
/// `order_timeline` too, each projection on its own.)
async fn dead_letters(stack: &mut Stack) -> Vec<pb::DeadLetter> {
    stack
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            projection: "read_model".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

/// Waits for the read model's one dead letter of order A with `held` events behind it.
async fn dead_letter_holding(stack: &mut Stack, held: u64) -> pb::DeadLetter {
    eventually(|| {
        let mut admin = stack.admin.clone();
        async move {
            let letters = admin
                .list_dead_letters(pb::ListDeadLettersRequest {
                    projection: "read_model".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .dead_letters;
            letters
                .into_iter()
                .find(|d| d.stream_id == format!("order-{ORDER_A}") && d.held_events == held)
        }
    })
    .await
}

/// Projection `name`'s status, from ListProjections (which lists every projection, by name).
async fn projection_status(
    mut admin: ProjectionAdminServiceClient<tonic::transport::Channel>,
    name: &str,
) -> pb::ProjectionStatus {
    let projections = admin
        .list_projections(pb::ListProjectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .projections;
    let names: Vec<&str> = projections.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["order_timeline", "read_model", "training_plans"]);
    projections
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("projection {name} not listed"))
}

async fn read_model(stack: &mut Stack) -> pb::ProjectionStatus {
    projection_status(stack.admin.clone(), "read_model").await
}

#[sqlx::test(migrations = "./migrations")]
async fn a_dead_letter_retried_after_the_fix_applies_and_its_stream_catches_up(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    stack.place(ORDER_A, 1).await;
    stack.place(ORDER_B, 1).await;
    let good = a_good_confirmation(&mut stack).await;
    insert_event(&stack, ORDER_A, 2, "{}").await;

    let dead = dead_letter_holding(&mut stack, 0).await;
    assert_eq!(
        (dead.stream_version, dead.event_type.as_str()),
        (2, "OrderConfirmed")
    );
    assert_eq!(dead.projection, "read_model");
    let status = read_model(&mut stack).await;
    assert_eq!(status.state, pb::ProjectionState::Stalled as i32);
    assert_eq!(status.dead_letters, 1);

    // Retried before the fix: fails again, stays, with one more attempt.
    let retried = stack
        .admin
        .retry_dead_letter(pb::RetryDeadLetterRequest { id: dead.id })
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.applied);
    let again = retried.dead_letter.unwrap();
    assert_eq!((again.id, again.attempts), (dead.id, dead.attempts + 1));
    assert_eq!(dead_letters(&mut stack).await.len(), 1);

    // The fix: the event's data is repaired in the log. command-svc can now load the order and
    // takes a payment, whose event waits behind the dead letter.
    sqlx::query(
        "UPDATE events SET payload = $1::jsonb WHERE stream_id = $2 AND stream_version = 2",
    )
    .bind(&good)
    .bind(format!("order-{ORDER_A}"))
    .execute(&stack.write_pool)
    .await
    .unwrap();
    let paid = stack
        .commands
        .process_payment(pb::ProcessPaymentRequest {
            order_id: ORDER_A.into(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: 1000,
            payment_reference: "ch_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The payment appends its events after v2; all of them wait behind the dead letter.
    dead_letter_holding(&mut stack, paid.version - 2).await;
    assert_eq!(
        stack.order_at(ORDER_A, 0).await.version,
        1,
        "held behind the dead letter"
    );

    let retried = stack
        .admin
        .retry_dead_letter(pb::RetryDeadLetterRequest { id: dead.id })
        .await
        .unwrap()
        .into_inner();
    assert!(retried.applied);
    assert!(retried.dead_letter.is_none());
    let view = stack.order_at(ORDER_A, paid.position).await;
    assert_eq!(view.version, paid.version);
    assert_eq!(view.payment_status, pb::PaymentStatus::Paid as i32);
    assert!(dead_letters(&mut stack).await.is_empty());
    assert_eq!(read_model(&mut stack).await.dead_letters, 0);

    let resolved = stack
        .admin
        .retry_dead_letter(pb::RetryDeadLetterRequest { id: dead.id })
        .await
        .unwrap_err();
    assert_eq!(resolved.code(), Code::FailedPrecondition);
    let unknown = stack
        .admin
        .retry_dead_letter(pb::RetryDeadLetterRequest { id: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_skipped_dead_letter_lets_its_stream_continue(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    stack.place(ORDER_A, 1).await;
    stack.place(ORDER_B, 1).await;
    let good = a_good_confirmation(&mut stack).await;
    // v2 can never be applied; v3 (a good confirmation) waits behind it.
    insert_event(&stack, ORDER_A, 2, "{}").await;
    insert_event(&stack, ORDER_A, 3, &good).await;
    let dead = dead_letter_holding(&mut stack, 1).await;

    for (request, code) in [
        (
            pb::SkipDeadLetterRequest {
                id: dead.id,
                reason: " ".into(),
            },
            Code::InvalidArgument,
        ),
        (
            pb::SkipDeadLetterRequest {
                id: dead.id,
                reason: "x".repeat(501),
            },
            Code::InvalidArgument,
        ),
        (
            pb::SkipDeadLetterRequest {
                id: 999_999,
                reason: "typo".into(),
            },
            Code::NotFound,
        ),
    ] {
        let status = stack.admin.skip_dead_letter(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    assert_eq!(
        dead_letters(&mut stack).await.len(),
        1,
        "bad requests change nothing"
    );

    stack
        .admin
        .skip_dead_letter(pb::SkipDeadLetterRequest {
            id: dead.id,
            reason: "confirmation written by a broken import; superseded by v3".into(),
        })
        .await
        .unwrap();
    // v3 is applied at once; the skipped position counts as passed for read-your-writes.
    let view = stack.order_at(ORDER_A, dead.global_position).await;
    assert_eq!(
        (view.version, view.status),
        (3, pb::OrderStatus::Confirmed as i32),
        "{:?}",
        dead_letters(&mut stack).await
    );
    assert!(dead_letters(&mut stack).await.is_empty());
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, resolution FROM read_model.dead_letters WHERE id = $1")
            .bind(i64::try_from(dead.id).unwrap())
            .fetch_one(&stack.read_pool)
            .await
            .unwrap();
    assert_eq!(status, "SKIPPED");
    assert!(reason.contains("broken import"));

    let again = stack
        .admin
        .skip_dead_letter(pb::SkipDeadLetterRequest {
            id: dead.id,
            reason: "twice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
}

/// Starts a rebuild of projection `name` and waits until readers use its generation.
async fn rebuild(stack: &mut Stack, name: &str) -> u32 {
    let before = projection_status(stack.admin.clone(), name)
        .await
        .generation;
    let started = stack
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.generation, before + 1);
    eventually(|| {
        let admin = stack.admin.clone();
        async move {
            let status = projection_status(admin, name).await;
            (status.generation == started.generation && status.rebuild.is_none()).then_some(())
        }
    })
    .await;
    started.generation
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rebuild_equals_the_incremental_projection_while_queries_keep_answering(pool: PgPool) {
    let mut stack = start(pool, true).await;
    stack.register("Ada").await;
    let mut last = 0;
    for n in 0..40u32 {
        let order = format!("0190b8f6-3f2e-7c2a-9d1e-{n:012x}");
        last = stack.place(&order, 1 + n % 3).await.position;
        if n % 2 == 0 {
            last = stack.confirm(&order).await.position;
        }
    }
    stack
        .order_at("0190b8f6-3f2e-7c2a-9d1e-000000000027", last)
        .await;
    stack.drained().await;
    let incremental = stack.dump().await;

    // A quiet rebuild of each projection alone reproduces its incremental tables exactly, and
    // leaves the other's as they are.
    let timeline = e2e::projection_dump(&stack.read_pool, "order_timeline")
        .await
        .unwrap();
    assert_eq!(rebuild(&mut stack, "read_model").await, 2);
    assert_eq!(stack.dump().await, incremental);
    assert_eq!(rebuild(&mut stack, "order_timeline").await, 2);
    assert_eq!(
        e2e::projection_dump(&stack.read_pool, "order_timeline")
            .await
            .unwrap(),
        timeline
    );
    assert_eq!(stack.dump().await, incremental);

    // A rebuild while commands keep coming and queries keep reading: no query fails, and the
    // result equals what a quiet rebuild of the same log gives.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let mut queries = stack.queries.clone();
        let (stop, reads) = (stop.clone(), reads.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let view = queries
                    .get_order(pb::GetOrderRequest {
                        order_id: "0190b8f6-3f2e-7c2a-9d1e-000000000000".into(),
                        min_position: 0,
                    })
                    .await
                    .expect("GetOrder during a rebuild");
                assert_eq!(view.into_inner().version, 2);
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = stack
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest {
            name: "read_model".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((started.generation, started.already_running), (3, false));
    let mut positions = Vec::new();
    for n in 100..130u32 {
        let order = format!("0190b8f6-3f2e-7c2a-9d1e-{n:012x}");
        positions.push((order.clone(), stack.place(&order, 1).await.position));
    }
    eventually(|| {
        let admin = stack.admin.clone();
        async move {
            let status = projection_status(admin, "read_model").await;
            (status.generation == 3 && status.rebuild.is_none()).then_some(())
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    for (order, position) in &positions {
        assert_eq!(stack.order_at(order, *position).await.version, 1);
    }
    stack.drained().await;
    let after_live_rebuild = stack.dump().await;
    assert_eq!(rebuild(&mut stack, "read_model").await, 4);
    assert_eq!(stack.dump().await, after_live_rebuild);

    // Caught up: the checkpoint reaches the head of the stream, nothing pending.
    let status = eventually(|| {
        let admin = stack.admin.clone();
        async move {
            let status = projection_status(admin, "read_model").await;
            (status.checkpoint_position == status.head_position && status.lag_events == 0)
                .then_some(status)
        }
    })
    .await;
    assert_eq!(status.state, pb::ProjectionState::Running as i32);
    assert_eq!((status.generation, status.dead_letters), (4, 0));
    let retired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%\\_\\_retired\\_%' OR nspname LIKE '%\\_\\_rebuild'",
    )
    .fetch_one(&stack.read_pool)
    .await
    .unwrap();
    assert_eq!(retired, 0, "old generations are dropped");
}

#[sqlx::test(migrations = "./migrations")]
async fn admin_requests_that_name_nothing_are_refused(pool: PgPool) {
    let mut stack = start(pool, true).await;
    let empty = stack
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let unknown = stack
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest {
            name: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = stack
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            projection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let token = stack
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            page_token: "not a token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(token.code(), Code::InvalidArgument);
}

/// Every table of the read database belongs to a projection's generation (and is rebuilt with
/// it): each projection's schema holds exactly its generation's tables, and `public` only the
/// list of projections and sqlx's migration history.
#[sqlx::test(migrations = "./migrations")]
async fn every_read_table_is_part_of_a_generation(pool: PgPool) {
    let tables = |schema: String| {
        let pool = pool.clone();
        async move {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            )
            .bind(schema)
            .fetch_all(&pool)
            .await
            .unwrap();
            tables
        }
    };
    assert_eq!(
        tables("public".into()).await,
        ["_sqlx_migrations", "projections"]
    );
    let (registry, _) = query_svc::startup::registry();
    let mut names = Vec::new();
    for projection in registry.iter() {
        let mut generation: Vec<String> =
            query_svc::runtime::generations::generation_tables(projection.as_ref())
                .iter()
                .map(|t| (*t).to_owned())
                .collect();
        generation.sort();
        assert_eq!(
            tables(projection.name().to_owned()).await,
            generation,
            "{}",
            projection.name()
        );
        names.push(projection.name().to_owned());
    }
    names.sort();
    assert_eq!(e2e::projection_names(&pool).await.unwrap(), names);
}
