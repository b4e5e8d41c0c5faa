//! `pizzeria.v1.QueryService` over the read tables: each handler parses its request
//! (`super::requests`), waits for the read-your-writes token and answers with what the query
//! function (`store::queries`) returns.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use shared::{
    events::{CustomerEvent, DomainEvent as _, OrderEvent},
    grpc::{invalid, tenant},
    proto::v1::{self as pb, query_service_server::QueryService},
};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    db,
    requests::{
        CustomerQuery, OrderAsOfQuery, OrderListQuery, OrderQuery, PageToken, SalesQuery,
        WatchQuery,
    },
};
use crate::{
    projections::{
        order_timeline::OrderTimeline,
        read_model::{ReadModel, order_view::OrderChanged},
    },
    runtime::{dead_letters, host::Hosts, watermark},
    store::queries::{self, OrderFilter},
};

/// Serves queries; `max_consistency_wait` bounds how long a `min_position` read waits.
#[derive(Debug, Clone)]
pub struct QueryApi {
    pool: PgPool,
    hosts: Hosts,
    changes: broadcast::Sender<Arc<OrderChanged>>,
    max_consistency_wait: Duration,
}

/// How often a waiting read asks the database again, for batches it cannot see in memory
/// (another replica's, or a rebuild's swap).
const RECHECK_EVERY: Duration = Duration::from_millis(200);

impl QueryApi {
    /// `changes`: the read model's order views as they change ([`ReadModel::changes`]).
    pub fn new(
        pool: PgPool,
        hosts: Hosts,
        changes: broadcast::Sender<Arc<OrderChanged>>,
        max_consistency_wait: Duration,
    ) -> Self {
        Self {
            pool,
            hosts,
            changes,
            max_consistency_wait,
        }
    }

    /// Read-your-writes: waits until every event published up to and including the one at
    /// `min_position` is done in `projection` (under its watermark), bounded by the call's
    /// deadline and the server maximum; then UNAVAILABLE.
    ///
    /// One query when the read starts; after that it waits in memory on the batches this
    /// process commits (each says which positions it covered), and asks the database again
    /// only if it missed a batch or every [`RECHECK_EVERY`].
    async fn wait_for<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
    ) -> Result<(), Status> {
        if min_position == 0 {
            return Ok(());
        }
        let Some(hosted) = self.hosts.get(projection) else {
            tracing::error!(projection, "a query reads a projection that is not hosted");
            return Err(Status::internal("internal error"));
        };
        let position = i64::try_from(min_position).unwrap_or(i64::MAX);
        let wait = deadline(request).map_or(self.max_consistency_wait, |d| {
            d.min(self.max_consistency_wait)
        });
        let mut coverage = hosted.progress.coverage.clone();
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(wait, async {
            loop {
                let mut seen = coverage.borrow_and_update().batches;
                if watermark::covered(&self.pool, projection, position)
                    .await
                    .map_err(db)?
                {
                    return Ok::<(), Status>(());
                }
                let recheck = tokio::time::sleep(RECHECK_EVERY);
                tokio::pin!(recheck);
                loop {
                    tokio::select! {
                        changed = coverage.changed() => {
                            if changed.is_err() {
                                // The projector is gone: only the database can tell.
                                (&mut recheck).await;
                                break;
                            }
                            let latest = coverage.borrow_and_update();
                            if latest.positions.binary_search(&position).is_ok() {
                                return Ok(());
                            }
                            let missed = latest.batches != seen + 1;
                            seen = latest.batches;
                            if missed {
                                break;
                            }
                        }
                        () = &mut recheck => break,
                    }
                }
            }
        })
        .await;
        let outcome = if matches!(waited, Ok(Ok(()))) {
            "reached"
        } else {
            "not_reached"
        };
        metrics::histogram!("pizzeria_read_your_writes_wait_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match waited {
            Ok(result) => result,
            Err(_) => {
                let reached = watermark::position(&self.pool, projection)
                    .await
                    .map_err(db)?;
                Err(Status::unavailable(format!(
                    "projection {projection} has not reached position {min_position} yet (every \
                     event up to position {reached} in commit order is applied); retry later"
                )))
            }
        }
    }

    /// [`Self::wait_for_aggregate`] for an order in `projection`.
    async fn wait_for_order<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<(), Status> {
        self.wait_for_aggregate(
            request,
            projection,
            min_position,
            tenant,
            OrderEvent::AGGREGATE_TYPE,
            id,
        )
        .await
    }

    /// [`Self::wait_for`], for a read of one aggregate: once the position is reached, a stream
    /// held behind a dead letter answers UNAVAILABLE rather than a view that misses events
    /// the caller may have written (the hold lasts until an operator retries or skips the dead
    /// letter, so the message says so). Reads without `min_position` are not checked.
    async fn wait_for_aggregate<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
        tenant: Uuid,
        aggregate_type: &str,
        id: Uuid,
    ) -> Result<(), Status> {
        if min_position == 0 {
            return Ok(());
        }
        self.wait_for(request, projection, min_position).await?;
        let stream = shared::envelope::stream_id(aggregate_type, id);
        match dead_letters::held_at(&self.pool, projection, tenant, &stream)
            .await
            .map_err(db)?
        {
            None => Ok(()),
            Some(version) => Err(Status::unavailable(format!(
                "{aggregate_type} {id} is held at version {version}: that event could not be \
                 projected and waits in the dead letters, so its view is not current; retry \
                 after an operator retries or skips it (ProjectionAdminService)"
            ))),
        }
    }
}

/// The call's remaining time from its `grpc-timeout` header, if any.
fn deadline<T>(request: &Request<T>) -> Option<Duration> {
    let raw = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (value, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let value: u64 = value.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

fn not_found_order(id: Uuid) -> Status {
    Status::not_found(format!("order {id} not found"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::OrderChange, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = OrderQuery::try_from(request.get_ref()).map_err(invalid)?;
        let id = query.order_id;
        self.wait_for_order(&request, ReadModel::NAME, query.min_position, tenant, id)
            .await?;
        let view = queries::order(&self.pool, tenant, id)
            .await
            .map_err(db)?
            .ok_or_else(|| not_found_order(id))?;
        Ok(Response::new(view))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = OrderListQuery::try_from(request.get_ref()).map_err(invalid)?;
        self.wait_for(&request, ReadModel::NAME, query.min_position)
            .await?;
        let (filter, page_size) = (&query.filter, query.page_size);
        // One more than asked tells whether another page follows.
        let mut rows = queries::list_orders(&self.pool, tenant, filter, page_size + 1)
            .await
            .map_err(db)?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => PageToken {
                placed_at: last.placed_at,
                order_id: last.order_id,
                filters: query.fingerprint.clone(),
            }
            .encode(),
            _ => String::new(),
        };
        let orders = rows.into_iter().map(pb::OrderSummary::from).collect();
        Ok(Response::new(pb::ListOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerView>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = CustomerQuery::try_from(request.get_ref()).map_err(invalid)?;
        let id = query.customer_id;
        self.wait_for_aggregate(
            &request,
            ReadModel::NAME,
            query.min_position,
            tenant,
            CustomerEvent::AGGREGATE_TYPE,
            id,
        )
        .await?;
        let view = queries::customer(&self.pool, tenant, id)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("customer {id} not found")))?;
        Ok(Response::new(view))
    }

    async fn get_order_timeline(
        &self,
        request: Request<pb::GetOrderTimelineRequest>,
    ) -> Result<Response<pb::OrderTimeline>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = OrderQuery::try_from(request.get_ref()).map_err(invalid)?;
        let id = query.order_id;
        self.wait_for_order(
            &request,
            OrderTimeline::NAME,
            query.min_position,
            tenant,
            id,
        )
        .await?;
        let timeline = queries::timeline(&self.pool, tenant, id)
            .await
            .map_err(db)?
            .ok_or_else(|| not_found_order(id))?;
        Ok(Response::new(timeline))
    }

    async fn get_order_as_of(
        &self,
        request: Request<pb::GetOrderAsOfRequest>,
    ) -> Result<Response<pb::OrderView>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = OrderAsOfQuery::try_from(request.get_ref()).map_err(invalid)?;
        let (id, as_of) = (query.order_id, query.as_of);
        self.wait_for_order(&request, ReadModel::NAME, query.min_position, tenant, id)
            .await?;
        let view = queries::order_as_of(&self.pool, tenant, id, as_of)
            .await
            .map_err(db)?
            .ok_or_else(|| Status::not_found(format!("order {id} did not exist at that point")))?;
        Ok(Response::new(view))
    }

    async fn get_sales_analytics(
        &self,
        request: Request<pb::GetSalesAnalyticsRequest>,
    ) -> Result<Response<pb::SalesAnalytics>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = SalesQuery::try_from(request.get_ref()).map_err(invalid)?;
        let (from, to, limit) = (query.from, query.to, query.top_items_limit);
        self.wait_for(&request, ReadModel::NAME, query.min_position)
            .await?;
        let mut analytics = queries::sales_analytics(&self.pool, tenant, from, to, limit)
            .await
            .map_err(db)?;
        analytics.from_date.clone_from(&request.get_ref().from_date);
        analytics.to_date.clone_from(&request.get_ref().to_date);
        Ok(Response::new(analytics))
    }

    type WatchOrdersStream = WatchStream;

    async fn watch_orders(
        &self,
        request: Request<pb::WatchOrdersRequest>,
    ) -> Result<Response<Self::WatchOrdersStream>, Status> {
        let tenant = tenant(&request)?.as_uuid();
        let query = WatchQuery::try_from(request.get_ref()).map_err(invalid)?;
        let (customer, order) = (query.customer_id, query.order_id);
        self.wait_for(&request, ReadModel::NAME, query.min_position)
            .await?;
        // Subscribe before catching up, so nothing falls between the two.
        let mut live = self.changes.subscribe();
        let matches =
            move |t: Uuid, state: &crate::projections::read_model::order_view::OrderState| {
                t == tenant
                    && customer.is_none_or(|c| c == state.customer_id)
                    && order.is_none_or(|o| o == state.order_id)
            };
        let mut catch_up = Vec::new();
        if query.from_position > 0 {
            let filter = OrderFilter {
                customer_id: customer,
                ..Default::default()
            };
            // Latest state of each matching order changed since from_position.
            for row in queries::list_orders(&self.pool, tenant, &filter, 10_000)
                .await
                .map_err(db)?
            {
                if order.is_some_and(|o| o != row.order_id) {
                    continue;
                }
                if let Some(view) = queries::order(&self.pool, tenant, row.order_id)
                    .await
                    .map_err(db)?
                    && view.position > query.from_position
                {
                    catch_up.push(pb::OrderChange {
                        event_type: String::new(),
                        position: view.position,
                        order: Some(view),
                    });
                }
            }
            catch_up.sort_by_key(|c| c.position);
        }
        let stream = async_stream(catch_up, move |sender| async move {
            loop {
                match live.recv().await {
                    Ok(change) => {
                        if !matches(change.tenant_id, &change.state) {
                            continue;
                        }
                        let message = pb::OrderChange {
                            order: Some(
                                change
                                    .state
                                    .to_proto(&change.customer_name, &change.customer_email),
                            ),
                            event_type: change.event_type.clone(),
                            position: u64::try_from(change.state.position).unwrap_or(0),
                        };
                        if sender.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = sender
                            .send(Err(Status::resource_exhausted(
                                "watcher fell behind; reconnect with from_position set to the last position received",
                            )))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = sender
                            .send(Err(Status::unavailable("server shutting down; reconnect")))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A response stream: first `initial`, then whatever `produce` sends.
fn async_stream<F, Fut>(initial: Vec<pb::OrderChange>, produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::OrderChange, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(256);
    let task = produce(sender.clone());
    tokio::spawn(async move {
        for change in initial {
            if sender.send(Ok(change)).await.is_err() {
                return;
            }
        }
        drop(sender);
        task.await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
