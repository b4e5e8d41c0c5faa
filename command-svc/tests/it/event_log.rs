//! The commit-order read behind the relay and ReadAll: a late commit with a lower position is
//! never skipped, and a rolled-back append leaves no stall.

use command_svc::eventsourcing::store::{EventStore, LogCursor};
use sqlx::PgPool;

use crate::helpers::{begin_slow_append, placed_order, spawn};

async fn positions(store: &EventStore, after: LogCursor) -> Vec<i64> {
    store
        .read_all(after, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.global_position)
        .collect()
}

/// Reads until `count` events are visible. The horizon is the oldest transaction in the whole
/// cluster, and other tests' transactions run on the same server, so visibility can lag a little.
async fn wait_for(
    store: &EventStore,
    count: usize,
) -> Vec<command_svc::eventsourcing::store::StoredEvent> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = store.read_all(LogCursor::default(), 0, 1000).await.unwrap();
        if all.len() >= count || tokio::time::Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_late_commit_with_a_lower_position_is_read_in_commit_order(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let slow = begin_slow_append(&pool, "customer-slow").await; // takes the lower position
    let mut app = spawn(pool.clone()).await;
    placed_order(&mut app).await; // two later positions, committed first

    // The open transaction holds the horizon: nothing at or after it is visible yet, so a reader
    // cannot move its cursor past the slow event.
    assert!(positions(&store, LogCursor::default()).await.is_empty());

    slow.commit().await.unwrap();
    let all = wait_for(&store, 3).await;
    let order: Vec<i64> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(order.len(), 3);
    assert_eq!(
        order[0],
        order.iter().copied().min().unwrap(),
        "slow event first: it has the lowest xid"
    );
    // Resuming after each event yields exactly the rest: nothing skipped, nothing repeated.
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            positions(&store, event.cursor()).await,
            order[i + 1..].to_vec()
        );
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rolled_back_append_leaves_no_stall(pool: PgPool) {
    let store = EventStore::new(pool.clone());
    let aborted = begin_slow_append(&pool, "customer-aborted").await;
    aborted.rollback().await.unwrap();
    let mut app = spawn(pool.clone()).await;
    placed_order(&mut app).await;
    assert_eq!(wait_for(&store, 2).await.len(), 2);
}

#[sqlx::test(migrations = "./migrations")]
async fn transaction_ids_are_ordered_as_numbers_not_as_text(pool: PgPool) {
    // Transactions 9, 10 and 100 ended long ago on any cluster (initdb alone uses hundreds), so
    // their rows are below the horizon. As text "10" < "100" < "9"; the log reads numerically.
    // (The relay published a backlog crossing xid 999 -> 1000 out of order before this.)
    for (xid, version) in [("100", 3), ("9", 1), ("10", 2)] {
        sqlx::query(
            "INSERT INTO events (transaction_id, tenant_id, stream_id, aggregate_type,
                                 aggregate_id, stream_version, event_id, event_type,
                                 schema_version, payload)
             VALUES ($1::text::xid8, gen_random_uuid(), 'order-x', 'order', gen_random_uuid(),
                     $2, gen_random_uuid(), 'OrderPlaced', 1, '{}')",
        )
        .bind(xid)
        .bind(version)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = EventStore::new(pool);
    let read: Vec<u64> = store
        .read_all(LogCursor::default(), 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.transaction_id.0)
        .collect();
    assert_eq!(read, [9, 10, 100]);
    let after_9 = store
        .read_all(LogCursor::default(), 0, 1)
        .await
        .unwrap()
        .remove(0)
        .cursor();
    let rest: Vec<u64> = store
        .read_all(after_9, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.transaction_id.0)
        .collect();
    assert_eq!(rest, [10, 100], "resuming after 9 skips nothing");
}
