//! `pizzeria.v1.QueryService` over the read tables: each handler parses its request
//! (`super::requests`), waits for the read-your-writes token and answers with what the query
//! function (`store::queries`) returns.

use std::{pin::Pin, sync::Arc};

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
    consistency::ReadYourWrites,
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
    store::queries::{self, OrderFilter},
};

/// Serves queries.
#[derive(Debug, Clone)]
pub struct QueryApi {
    pool: PgPool,
    consistency: ReadYourWrites,
    changes: broadcast::Sender<Arc<OrderChanged>>,
}

impl QueryApi {
    /// `changes`: the read model's order views as they change ([`ReadModel::changes`]).
    pub fn new(
        pool: PgPool,
        consistency: ReadYourWrites,
        changes: broadcast::Sender<Arc<OrderChanged>>,
    ) -> Self {
        Self {
            pool,
            consistency,
            changes,
        }
    }

    /// [`ReadYourWrites::wait_for_aggregate`] for an order in `projection`.
    async fn wait_for_order<T>(
        &self,
        request: &Request<T>,
        projection: &str,
        min_position: u64,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<(), Status> {
        self.consistency
            .wait_for_aggregate(
                request,
                projection,
                min_position,
                tenant,
                OrderEvent::AGGREGATE_TYPE,
                id,
            )
            .await
    }
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
        self.consistency
            .wait_for(&request, ReadModel::NAME, query.min_position)
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
        self.consistency
            .wait_for_aggregate(
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
        self.consistency
            .wait_for(&request, ReadModel::NAME, query.min_position)
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
        self.consistency
            .wait_for(&request, ReadModel::NAME, query.min_position)
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
