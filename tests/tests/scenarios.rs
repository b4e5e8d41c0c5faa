//! The pizzeria end to end, over gRPC only: the scenarios a user of the two services lives
//! through. They start both binaries here, or run unchanged against a running stack (docker
//! compose, a cluster) when `E2E_COMMAND_SVC_URL` and `E2E_QUERY_SVC_URL` name it; each
//! scenario works in a tenant of its own.

use std::collections::HashSet;

use e2e::stack::Stack;
use futures::StreamExt as _;
use shared::proto::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};
use tonic::{Code, transport::Channel};

/// A scenario's clients, in its tenant.
struct Pizzeria {
    stack: Stack,
    commands: CommandServiceClient<Channel>,
    queries: QueryServiceClient<Channel>,
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn in_an_hour() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    })
}

fn today() -> String {
    chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

fn margherita(quantity: u32) -> pb::OrderItem {
    pb::OrderItem {
        name: "Margherita".into(),
        size: pb::PizzaSize::Large as i32,
        quantity,
        unit_price_cents: 1299,
    }
}

impl Pizzeria {
    async fn open() -> anyhow::Result<Self> {
        let stack = Stack::start().await?;
        Ok(Self {
            commands: stack.commands().await?,
            queries: stack.queries().await?,
            stack,
        })
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.commands = self.stack.commands().await?;
        self.queries = self.stack.queries().await?;
        Ok(())
    }

    async fn register(&mut self, name: &str) -> anyhow::Result<String> {
        let customer = id();
        let request = self.stack.request(pb::RegisterCustomerRequest {
            customer_id: customer.clone(),
            name: name.into(),
            email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
            ..Default::default()
        });
        self.commands.register_customer(request).await?;
        Ok(customer)
    }

    async fn place(
        &mut self,
        customer: &str,
        items: Vec<pb::OrderItem>,
    ) -> anyhow::Result<(String, pb::CommandReply)> {
        let order = id();
        let request = self.stack.request(pb::PlaceOrderRequest {
            order_id: order.clone(),
            customer_id: customer.into(),
            items,
            ..Default::default()
        });
        let reply = self.commands.place_order(request).await?.into_inner();
        Ok((order, reply))
    }

    async fn confirm(&mut self, order: &str) -> Result<pb::CommandReply, tonic::Status> {
        let request = self.stack.request(pb::ConfirmOrderRequest {
            order_id: order.into(),
            estimated_delivery: in_an_hour(),
            ..Default::default()
        });
        Ok(self.commands.confirm_order(request).await?.into_inner())
    }

    async fn pay(&mut self, order: &str, cents: i64) -> Result<pb::CommandReply, tonic::Status> {
        let request = self.stack.request(pb::ProcessPaymentRequest {
            order_id: order.into(),
            method: pb::PaymentMethod::Card as i32,
            amount_cents: cents,
            payment_reference: "ch_e2e".into(),
            ..Default::default()
        });
        Ok(self.commands.process_payment(request).await?.into_inner())
    }

    async fn order_at(&mut self, order: &str, position: u64) -> anyhow::Result<pb::OrderView> {
        let request = self.stack.request(pb::GetOrderRequest {
            order_id: order.into(),
            min_position: position,
        });
        Ok(self.queries.get_order(request).await?.into_inner())
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.stack.finish().await
    }
}

#[tokio::test]
async fn an_order_lives_from_placed_to_delivered() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Ada Lovelace").await?;
    let (order, placed) = shop.place(&customer, vec![margherita(2)]).await?;
    assert_eq!(
        shop.order_at(&order, placed.position).await?.status,
        pb::OrderStatus::Pending as i32
    );

    shop.confirm(&order).await?;
    let paid = shop.pay(&order, 2598).await?;
    let view = shop.order_at(&order, paid.position).await?;
    assert_eq!(view.status, pb::OrderStatus::Cooking as i32);
    assert_eq!(view.payment_status, pb::PaymentStatus::Paid as i32);

    let request = shop.stack.request(pb::MarkOrderReadyRequest {
        order_id: order.clone(),
        ..Default::default()
    });
    shop.commands.mark_order_ready(request).await?;
    let request = shop.stack.request(pb::SendOutForDeliveryRequest {
        order_id: order.clone(),
        driver_name: "Lin".into(),
        ..Default::default()
    });
    shop.commands.send_out_for_delivery(request).await?;
    let request = shop.stack.request(pb::MarkOrderDeliveredRequest {
        order_id: order.clone(),
        ..Default::default()
    });
    let delivered = shop
        .commands
        .mark_order_delivered(request)
        .await?
        .into_inner();

    let view = shop.order_at(&order, delivered.position).await?;
    assert_eq!(view.status, pb::OrderStatus::Delivered as i32);
    assert_eq!((view.driver_name.as_str(), view.paid_cents), ("Lin", 2598));
    assert_eq!(view.version, delivered.version);

    // Every event on the timeline, once, in order; and the order as it was at version 1.
    let request = shop.stack.request(pb::GetOrderTimelineRequest {
        order_id: order.clone(),
        ..Default::default()
    });
    let timeline = shop.queries.get_order_timeline(request).await?.into_inner();
    let versions: Vec<u64> = timeline.entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=delivered.version).collect::<Vec<_>>());
    let request = shop.stack.request(pb::GetOrderAsOfRequest {
        order_id: order.clone(),
        as_of: Some(pb::get_order_as_of_request::AsOf::Version(1)),
        ..Default::default()
    });
    let then = shop.queries.get_order_as_of(request).await?.into_inner();
    assert_eq!(
        (then.status, then.version),
        (pb::OrderStatus::Pending as i32, 1)
    );

    // A delivered order cannot be cancelled.
    let request = shop.stack.request(pb::CancelOrderRequest {
        order_id: order.clone(),
        reason: "too late".into(),
        ..Default::default()
    });
    let refused = shop.commands.cancel_order(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    shop.finish().await
}

#[tokio::test]
async fn a_paid_order_cancelled_is_refunded_and_discounts_follow_the_rules() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Grace Hopper").await?;
    let (order, _) = shop.place(&customer, vec![margherita(2)]).await?;

    let discount = |code: &str, cents: i64| pb::ApplyDiscountRequest {
        order_id: order.clone(),
        code: code.into(),
        amount_cents: cents,
        ..Default::default()
    };
    let request = shop.stack.request(discount("welcome5", 500));
    shop.commands.apply_discount(request).await?;
    for (code, cents, expected) in [
        ("WELCOME5", 100, Code::FailedPrecondition), // the same code twice (codes are case-insensitive)
        ("BIG", 10_000, Code::FailedPrecondition),   // more than the amount due
        ("no spaces", 100, Code::InvalidArgument),   // malformed code
        ("ZERO", 0, Code::InvalidArgument),          // not positive
    ] {
        let request = shop.stack.request(discount(code, cents));
        let status = shop.commands.apply_discount(request).await.unwrap_err();
        assert_eq!(status.code(), expected, "{code}: {status:?}");
    }
    // The amount due is 2 x 12.99 - 5.00; paying anything else is refused.
    assert_eq!(
        shop.pay(&order, 2598).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    shop.pay(&order, 2098).await?;
    let request = shop.stack.request(discount("LATE", 100));
    let status = shop.commands.apply_discount(request).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "no discount once paid"
    );

    let request = shop.stack.request(pb::CancelOrderRequest {
        order_id: order.clone(),
        reason: "customer called".into(),
        ..Default::default()
    });
    let cancelled = shop.commands.cancel_order(request).await?.into_inner();
    let view = shop.order_at(&order, cancelled.position).await?;
    assert_eq!(view.status, pb::OrderStatus::Cancelled as i32);
    assert_eq!(view.payment_status, pb::PaymentStatus::Refunded as i32);
    assert_eq!((view.discount_cents, view.refunded_cents), (500, 2098));
    assert_eq!(view.discount_codes, ["WELCOME5"]);

    let request = shop.stack.request(pb::GetCustomerRequest {
        customer_id: customer.clone(),
        min_position: cancelled.position,
    });
    let figures = shop.queries.get_customer(request).await?.into_inner();
    assert_eq!((figures.order_count, figures.cancelled_order_count), (1, 1));
    shop.finish().await
}

#[tokio::test]
async fn a_rename_reaches_every_order_view_and_analytics_add_up() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Alan Turing").await?;
    let mut orders = Vec::new();
    for quantity in 1..=4 {
        orders.push(shop.place(&customer, vec![margherita(quantity)]).await?.0);
    }
    shop.confirm(&orders[0]).await?;
    shop.confirm(&orders[1]).await?;
    let request = shop.stack.request(pb::CancelOrderRequest {
        order_id: orders[3].clone(),
        reason: "duplicate".into(),
        ..Default::default()
    });
    shop.commands.cancel_order(request).await?;
    let request = shop.stack.request(pb::RenameCustomerRequest {
        customer_id: customer.clone(),
        name: "Alan M. Turing".into(),
        ..Default::default()
    });
    let renamed = shop.commands.rename_customer(request).await?.into_inner();

    for order in &orders {
        let view = shop.order_at(order, renamed.position).await?;
        assert_eq!(view.customer_name, "Alan M. Turing");
    }
    let request = shop.stack.request(pb::GetSalesAnalyticsRequest {
        from_date: today(),
        to_date: today(),
        top_items_limit: 5,
        min_position: renamed.position,
    });
    let sales = shop
        .queries
        .get_sales_analytics(request)
        .await?
        .into_inner();
    assert_eq!(sales.total_orders, 4);
    assert_eq!((sales.confirmed_orders, sales.cancelled_orders), (2, 1));
    assert_eq!(sales.gross_revenue_cents, 1299 * (1 + 2 + 3 + 4));
    assert_eq!(sales.total_items_sold, 10);
    assert_eq!(sales.top_items.len(), 1);
    assert!((sales.confirmation_rate - 0.5).abs() < 1e-9);
    shop.finish().await
}

#[tokio::test]
async fn a_thousand_orders_page_without_gaps_or_repeats() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Page Turner").await?;
    // Placed by 8 clients at once.
    let mut placing = Vec::new();
    for client in 0..8 {
        let mut commands = shop.stack.commands().await?;
        let requests: Vec<_> = (0..125)
            .map(|_| {
                let order = id();
                (
                    order.clone(),
                    shop.stack.request(pb::PlaceOrderRequest {
                        order_id: order,
                        customer_id: customer.clone(),
                        items: vec![margherita(1 + client % 3)],
                        ..Default::default()
                    }),
                )
            })
            .collect();
        placing.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for (order, request) in requests {
                let reply = commands.place_order(request).await?.into_inner();
                placed.push((order, reply.position));
            }
            Ok::<_, tonic::Status>(placed)
        }));
    }
    let mut expected = HashSet::new();
    let mut highest = 0;
    for task in placing {
        for (order, position) in task.await?? {
            highest = highest.max(position);
            expected.insert(order);
        }
    }
    assert_eq!(expected.len(), 1000);

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = shop.stack.request(pb::ListOrdersRequest {
            customer_id: customer.clone(),
            page_size: 77,
            page_token: page_token.clone(),
            min_position: highest,
            ..Default::default()
        });
        let page = shop.queries.list_orders(request).await?.into_inner();
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 1000, "no repeats");
    assert_eq!(unique, expected, "no gaps");
    shop.finish().await
}

#[tokio::test]
async fn watchers_see_changes_live() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Watcher").await?;
    let request = shop.stack.request(pb::WatchOrdersRequest {
        customer_id: customer.clone(),
        ..Default::default()
    });
    let mut changes = shop.queries.watch_orders(request).await?.into_inner();
    let (order, _) = shop.place(&customer, vec![margherita(1)]).await?;
    shop.confirm(&order).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let change = tokio::time::timeout(std::time::Duration::from_secs(20), changes.next())
            .await?
            .expect("the watch stays open")?;
        let view = change.order.expect("a change carries the view");
        assert_eq!(view.order_id, order);
        seen.push((change.event_type, view.version));
    }
    assert_eq!(
        seen,
        [
            ("OrderPlaced".to_owned(), 1),
            ("OrderConfirmed".to_owned(), 2)
        ]
    );
    shop.finish().await
}

#[tokio::test]
async fn retries_replay_and_concurrent_writers_conflict() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    let customer = shop.register("Retry Ray").await?;
    let order = id();
    let command_id = id();
    let place = pb::PlaceOrderRequest {
        command_id: command_id.clone(),
        order_id: order.clone(),
        customer_id: customer.clone(),
        items: vec![margherita(1)],
        ..Default::default()
    };
    let first = shop
        .commands
        .place_order(shop.stack.request(place.clone()))
        .await?
        .into_inner();
    let again = shop
        .commands
        .place_order(shop.stack.request(place))
        .await?
        .into_inner();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        (again.version, again.position),
        (first.version, first.position)
    );

    // Two writers who both saw version 1: exactly one wins, the other gets ABORTED.
    let confirm = pb::ConfirmOrderRequest {
        order_id: order.clone(),
        expected_version: Some(1),
        estimated_delivery: in_an_hour(),
        ..Default::default()
    };
    let discount = pb::ApplyDiscountRequest {
        order_id: order.clone(),
        expected_version: Some(1),
        code: "RACE".into(),
        amount_cents: 100,
        ..Default::default()
    };
    let mut other = shop.stack.commands().await?;
    let (a, b) = tokio::join!(
        shop.commands.confirm_order(shop.stack.request(confirm)),
        other.apply_discount(shop.stack.request(discount)),
    );
    let outcomes = [a.err().map(|s| s.code()), b.err().map(|s| s.code())];
    assert_eq!(
        outcomes.iter().filter(|o| o.is_none()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&Some(Code::Aborted)), "{outcomes:?}");
    // The log holds exactly the placement and the one winning write.
    let request = shop.stack.request(pb::ReadStreamRequest {
        aggregate_type: "order".into(),
        aggregate_id: order.clone(),
        ..Default::default()
    });
    let mut log = shop.stack.event_log().await?;
    assert_eq!(log.read_stream(request).await?.into_inner().events.len(), 2);
    shop.finish().await
}

#[tokio::test]
async fn each_service_restarted_mid_scenario_loses_nothing() -> anyhow::Result<()> {
    let mut shop = Pizzeria::open().await?;
    if !shop.stack.is_local() {
        // A stack run elsewhere is not ours to kill.
        return shop.finish().await;
    }
    let customer = shop.register("Restart Rita").await?;
    let (order, _) = shop.place(&customer, vec![margherita(1)]).await?;

    shop.stack.restart_command_svc().await?;
    shop.reconnect().await?;
    let confirmed = shop.confirm(&order).await?;
    assert_eq!(shop.order_at(&order, confirmed.position).await?.version, 2);

    // query-svc is down while the order is paid; the new one resumes from its durable consumer.
    shop.stack.kill_query_svc()?;
    let paid = shop.pay(&order, 1299).await?;
    shop.stack.start_query_svc().await?;
    shop.reconnect().await?;
    let view = shop.order_at(&order, paid.position).await?;
    assert_eq!(view.version, paid.version);
    assert_eq!(view.status, pb::OrderStatus::Cooking as i32);
    let request = shop.stack.request(pb::GetOrderTimelineRequest {
        order_id: order.clone(),
        ..Default::default()
    });
    let timeline = shop.queries.get_order_timeline(request).await?.into_inner();
    assert_eq!(
        timeline.entries.len() as u64,
        paid.version,
        "each event applied once"
    );
    shop.finish().await
}
