//! Pages folded in memory and written at once (`runtime::page`, the one way events are
//! applied) give the same read tables, row for row, whatever the page size: the whole log, pages
//! of 7, pages of one, and the projector's path one event per batch; an event that does not
//! fit sends its page back, having written nothing.

use e2e::TestDatabase;
use query_svc::{
    projections::{order_timeline::OrderTimeline, read_model::ReadModel},
    runtime::{
        Projection,
        consumer::apply_records,
        page::{self, Page},
        progress::Batch,
        run::Delivery,
        streams::Streams,
        watermark::LogPoint,
    },
    store::MIGRATOR,
};
use shared::{
    auth::ServiceToken,
    proto::v1::{self as pb, event_log_service_client::EventLogServiceClient},
};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction};
use tonic::transport::Channel;

use crate::helpers::{Stack, start};

const ADA: &str = "0190b8f6-0000-7000-8000-0000000000c1";
const GRACE: &str = "0190b8f6-0000-7000-8000-0000000000c2";

fn order_id(n: u32) -> String {
    format!("0190b8f6-3f2e-7c2a-9d1e-{n:012x}")
}

/// Drives a varied log through command-svc: two customers, renamed and given a new email
/// between their orders; orders discounted, paid, delivered, cancelled before and after
/// payment (a refund); lines over several pizzas and sizes.
async fn a_varied_day(stack: &mut Stack) {
    let commands = &mut stack.commands;
    for (id, name) in [(ADA, "Ada"), (GRACE, "Grace")] {
        commands
            .register_customer(pb::RegisterCustomerRequest {
                customer_id: id.into(),
                name: name.into(),
                email: format!("{}@example.com", name.to_lowercase()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for n in 0..12u32 {
        let order = order_id(n);
        let customer = if n % 3 == 0 { GRACE } else { ADA };
        commands
            .place_order(pb::PlaceOrderRequest {
                order_id: order.clone(),
                customer_id: customer.into(),
                items: vec![
                    pb::OrderItem {
                        name: "Margherita".into(),
                        size: pb::PizzaSize::Large as i32,
                        quantity: 1 + n % 2,
                        unit_price_cents: 1299,
                    },
                    pb::OrderItem {
                        name: if n % 2 == 0 { "Diavola" } else { "Funghi" }.into(),
                        size: pb::PizzaSize::Small as i32,
                        quantity: 1,
                        unit_price_cents: 950,
                    },
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let mut due = 1299 * i64::from(1 + n % 2) + 950;
        if n % 4 == 1 {
            commands
                .apply_discount(pb::ApplyDiscountRequest {
                    order_id: order.clone(),
                    code: "SPRING".into(),
                    amount_cents: 300,
                    ..Default::default()
                })
                .await
                .unwrap();
            due -= 300;
        }
        if n % 5 != 4 {
            commands
                .confirm_order(pb::ConfirmOrderRequest {
                    order_id: order.clone(),
                    estimated_delivery: Some(prost_types::Timestamp {
                        seconds: chrono::Utc::now().timestamp() + 3600,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        if n % 5 < 3 {
            commands
                .process_payment(pb::ProcessPaymentRequest {
                    order_id: order.clone(),
                    method: pb::PaymentMethod::Card as i32,
                    amount_cents: due,
                    payment_reference: format!("ch_{n}"),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        if n % 6 == 2 || n % 5 == 4 {
            // Paid (refunded) or not yet confirmed.
            commands
                .cancel_order(pb::CancelOrderRequest {
                    order_id: order.clone(),
                    reason: "changed their mind".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        if n % 5 == 0 {
            // Confirmed and paid, so cooking: on to the door.
            commands
                .mark_order_ready(pb::MarkOrderReadyRequest {
                    order_id: order.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            commands
                .send_out_for_delivery(pb::SendOutForDeliveryRequest {
                    order_id: order.clone(),
                    driver_name: "Luigi".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            commands
                .mark_order_delivered(pb::MarkOrderDeliveredRequest {
                    order_id: order.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        if n == 4 {
            commands
                .rename_customer(pb::RenameCustomerRequest {
                    customer_id: ADA.into(),
                    name: "Ada Lovelace".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        if n == 7 {
            commands
                .change_customer_email(pb::ChangeCustomerEmailRequest {
                    customer_id: GRACE.into(),
                    email: "grace.hopper@example.com".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
}

/// The whole log, in commit order. ReadAll stops before the oldest transaction still open
/// anywhere on the server (another test's, say), so this waits until it returns every event.
async fn the_records(stack: &Stack) -> Vec<pb::EventRecord> {
    let store = command_svc::eventsourcing::store::EventStore::new(stack.write_pool.clone());
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&stack.write_pool)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let events = store
            .read_all(
                command_svc::eventsourcing::store::LogCursor::default(),
                0,
                10_000,
            )
            .await
            .unwrap();
        if events.len() as i64 == committed {
            return events
                .into_iter()
                .map(command_svc::eventsourcing::store::StoredEvent::into_record)
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ReadAll returned {} of {committed} events",
            events.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The whole log, in commit order.
async fn the_log(stack: &Stack) -> Vec<pb::EventRecord> {
    the_records(stack).await
}

/// Points the transaction's table names at `projection`'s schema, as the runtime does, without
/// its locks (so that two transactions can meet on a row).
async fn in_schema(conn: &mut PgConnection, projection: &str) {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(projection)
        .execute(conn)
        .await
        .unwrap();
}

/// Applies `records` as one page of the read model.
async fn apply_read_model(
    conn: &mut PgConnection,
    batch: &mut Batch,
    records: &[pb::EventRecord],
) -> Result<Page, sqlx::Error> {
    in_schema(conn, ReadModel::NAME).await;
    let records: Vec<&pb::EventRecord> = records.iter().collect();
    page::apply(conn, &ReadModel::default(), batch, &records).await
}

/// The read tables after applying `records` one at a time as the projector applies a batch
/// (`apply_records`: the run after the watermark, its page of one), each in a transaction of
/// its own, to every projection.
async fn applied_one_by_one(records: Vec<pb::EventRecord>) -> Vec<String> {
    let database = TestDatabase::create().await.unwrap();
    let pool = database.migrated_pool(&MIGRATOR, 2).await.unwrap();
    // command-svc is only asked for missing versions, and the log has none.
    let command_svc = Channel::from_static("http://127.0.0.1:9").connect_lazy();
    let streams = Streams::new(EventLogServiceClient::with_interceptor(
        command_svc,
        ServiceToken::default(),
    ));
    let projections: [&dyn Projection; 2] = [&ReadModel::default(), &OrderTimeline];
    for delivery in Delivery::read_from_log(LogPoint::default(), records) {
        for projection in projections {
            let outcome =
                apply_records(&pool, projection, &streams, std::slice::from_ref(&delivery))
                    .await
                    .unwrap();
            let handled = projection.handles(&delivery.record.as_ref().unwrap().aggregate_type);
            assert_eq!(
                (outcome.done, outcome.applied),
                (vec![true], usize::from(handled))
            );
        }
    }
    let dump = e2e::read_model_dump(&pool).await.unwrap();
    pool.close().await;
    database.drop_database().await.unwrap();
    dump
}

/// Applies `records` to `pool` in pages of `page` events, each folded at once by every
/// projection (every page must fit) and brought under the watermark as a run does.
async fn fold_in_pages(pool: &PgPool, records: &[pb::EventRecord], page: usize) {
    let mut conn = pool.acquire().await.unwrap();
    let projections: [&dyn Projection; 2] = [&ReadModel::default(), &OrderTimeline];
    for chunk in records.chunks(page) {
        for projection in projections {
            let mut tx = conn.begin().await.unwrap();
            in_schema(&mut tx, projection.name()).await;
            let mut batch = Batch::new();
            let handled: Vec<&pb::EventRecord> = chunk
                .iter()
                .filter(|r| projection.handles(&r.aggregate_type))
                .collect();
            assert!(
                matches!(
                    page::apply(&mut tx, projection, &mut batch, &handled)
                        .await
                        .unwrap(),
                    Page::Applied(_)
                ),
                "a page of the log did not fold"
            );
            for record in chunk {
                batch.record_done(record);
            }
            batch.flush(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn pages_folded_at_once_equal_the_events_applied_one_by_one(pool: PgPool) {
    let mut stack = start(pool, false).await;
    a_varied_day(&mut stack).await;
    let records = the_records(&stack).await;
    let log = records.clone();
    let one_by_one = applied_one_by_one(records.clone()).await;
    assert!(log.len() > 40, "{} events", log.len());

    // Whole, and in small pages (orders and customers written by an earlier page are read
    // back and folded on), and one event at a time.
    for page in [log.len(), 7, 1] {
        let database = TestDatabase::create().await.unwrap();
        let folded = database.migrated_pool(&MIGRATOR, 2).await.unwrap();
        fold_in_pages(&folded, &records, page).await;
        assert_eq!(
            e2e::read_model_dump(&folded).await.unwrap(),
            one_by_one,
            "pages of {page}"
        );
        folded.close().await;
        database.drop_database().await.unwrap();
    }
}

/// Offers `events` as one page of the read model in a transaction of its own; true if they
/// were folded.
async fn try_page(conn: &mut PgConnection, events: &[pb::EventRecord]) -> bool {
    let mut tx = conn.begin().await.unwrap();
    let mut batch = Batch::new();
    let applied = matches!(
        apply_read_model(&mut tx, &mut batch, events).await.unwrap(),
        Page::Applied(_)
    );
    batch.flush(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    applied
}

#[sqlx::test(migrations = "./migrations")]
async fn a_page_that_does_not_fit_is_sent_back_having_written_nothing(pool: PgPool) {
    let mut stack = start(pool, false).await;
    a_varied_day(&mut stack).await;
    let log = the_log(&stack).await;
    let database = TestDatabase::create().await.unwrap();
    let folded = database.migrated_pool(&MIGRATOR, 2).await.unwrap();
    let mut conn = folded.acquire().await.unwrap();
    let empty = e2e::read_model_dump(&folded).await.unwrap();

    // A stream's version 2 before its version 1 (a hole).
    assert!(!try_page(&mut conn, &log[1..]).await);
    // An event the fold refuses, after good ones: an order event of an order never placed.
    let mut with_stray = log.clone();
    let mut stray = log
        .iter()
        .find(|e| e.event_type == "OrderConfirmed")
        .unwrap()
        .clone();
    stray.aggregate_id = uuid::Uuid::now_v7().to_string();
    stray.stream_id = format!("order-{}", stray.aggregate_id);
    stray.stream_version = 1;
    with_stray.push(stray);
    assert!(!try_page(&mut conn, &with_stray).await);
    assert_eq!(e2e::read_model_dump(&folded).await.unwrap(), empty);

    // A row the database refuses (a history row that is already there): the page's writes
    // are rolled back to their savepoint, and the transaction stays usable.
    let placed = &log.iter().find(|e| e.event_type == "OrderPlaced").unwrap();
    sqlx::query(
        "INSERT INTO read_model.order_history (tenant_id, order_id, version, occurred_at, state)
         VALUES ($1::uuid, $2::uuid, 1, now(), '{}')",
    )
    .bind(&placed.tenant_id)
    .bind(&placed.aggregate_id)
    .execute(&mut *conn)
    .await
    .unwrap();
    let with_history_row = e2e::read_model_dump(&folded).await.unwrap();
    assert!(!try_page(&mut conn, &log).await);
    assert_eq!(
        e2e::read_model_dump(&folded).await.unwrap(),
        with_history_row
    );

    // Without it, the same log folds.
    sqlx::query("DELETE FROM read_model.order_history")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(try_page(&mut conn, &log).await);
    assert_ne!(e2e::read_model_dump(&folded).await.unwrap(), empty);
    drop(conn);
    folded.close().await;
    database.drop_database().await.unwrap();
}

/// Ada's registration, from `log`.
fn ada_registered(log: &[pb::EventRecord]) -> pb::EventRecord {
    log.iter()
        .find(|e| e.event_type == "CustomerRegistered" && e.aggregate_id == ADA)
        .unwrap()
        .clone()
}

/// Applies `events` as one page in a transaction left open, as another replica's batch would
/// be while the test goes on.
async fn applied_uncommitted(
    pool: &PgPool,
    events: &[pb::EventRecord],
) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    let mut batch = Batch::new();
    assert!(matches!(
        apply_read_model(&mut tx, &mut batch, events).await.unwrap(),
        Page::Applied(_)
    ));
    batch.flush(&mut tx).await.unwrap();
    tx
}

/// Two transactions create the same customer row at once (replicas share the consumer): one
/// applies the registration, the other an order whose customer had no row when its page was
/// read. The order's page merges into the registered row; it does not write over it.
#[sqlx::test(migrations = "./migrations")]
async fn a_customer_row_created_meanwhile_is_merged_not_overwritten(pool: PgPool) {
    let mut stack = start(pool, false).await;
    a_varied_day(&mut stack).await;
    let log = the_log(&stack).await;
    let placed = log
        .iter()
        .find(|e| {
            e.event_type == "OrderPlaced"
                && e.payload_json.contains(ADA)
                && e.aggregate_id == order_id(1)
        })
        .unwrap()
        .clone();
    let database = TestDatabase::create().await.unwrap();
    let folded = database.migrated_pool(&MIGRATOR, 4).await.unwrap();

    // The registration is applied but not committed yet...
    let registering = applied_uncommitted(&folded, &[ada_registered(&log)]).await;
    // ...when the order's page reads no customer row, and then waits on the one being created.
    let ordering = tokio::spawn({
        let folded = folded.clone();
        async move {
            let mut tx = folded.begin().await.unwrap();
            let mut batch = Batch::new();
            let applied = matches!(
                apply_read_model(&mut tx, &mut batch, &[placed])
                    .await
                    .unwrap(),
                Page::Applied(_)
            );
            batch.flush(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            applied
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!ordering.is_finished(), "the order's page did not wait");
    registering.commit().await.unwrap();
    assert!(ordering.await.unwrap());

    let (name, email, order_count, last_order, version): (
        String,
        String,
        i32,
        Option<uuid::Uuid>,
        i64,
    ) = sqlx::query_as(
        "SELECT name, email, order_count, last_order_id, version FROM read_model.customer_views
             WHERE customer_id = $1",
    )
    .bind(uuid::Uuid::parse_str(ADA).unwrap())
    .fetch_one(&folded)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), email.as_str(), order_count, version),
        ("Ada", "ada@example.com", 1, 1)
    );
    assert_eq!(last_order.map(|id| id.to_string()), Some(order_id(1)));
    folded.close().await;
    database.drop_database().await.unwrap();
}

/// A refusal that passes (here a lock timeout, as a deadlock would be) is no fault of the page:
/// it is returned as an error, so the batch is tried again later, rather than sent event by
/// event where it would be dead-lettered.
#[sqlx::test(migrations = "./migrations")]
async fn a_lock_timeout_is_an_error_to_retry_not_a_page_to_send_back(pool: PgPool) {
    let mut stack = start(pool, false).await;
    a_varied_day(&mut stack).await;
    let registered = ada_registered(&the_log(&stack).await);
    let database = TestDatabase::create().await.unwrap();
    let folded = database.migrated_pool(&MIGRATOR, 4).await.unwrap();

    // Another transaction is creating the same customer row and does not finish.
    let holding = applied_uncommitted(&folded, std::slice::from_ref(&registered)).await;
    let mut tx = folded.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let error = apply_read_model(&mut tx, &mut Batch::new(), &[registered])
        .await
        .expect_err("a lock timeout is an error");
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("55P03"), "{error}");
    drop(tx);
    holding.rollback().await.unwrap();
    folded.close().await;
    database.drop_database().await.unwrap();
}
