//! A page of events folded in memory: every rule of the read model, computing the rows a page
//! of events changes so that `read_model` writes each of its tables once. An event that
//! does not fit refuses the whole page, which is then applied event by event (each a page of
//! one), where a failing event is dead-lettered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, SubsecRound as _, Utc};
use shared::events::{CustomerEvent, OrderEvent};
use uuid::Uuid;

use super::{
    analytics::{DayFigures, sales_day},
    customer_view::CustomerOrderDelta,
    order_view::{OrderChanged, OrderState},
};
use crate::{
    projections::event::{Event, Payload},
    runtime::ProjectionError,
};

/// `(tenant, order id)`.
pub type OrderKey = (Uuid, Uuid);
/// `(tenant, customer id)`.
pub type CustomerKey = (Uuid, Uuid);

/// An order view as stored: the folded state and the customer's name and email copied in.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub state: OrderState,
    pub customer_name: String,
    pub customer_email: String,
}

/// A customer view as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    pub name: String,
    pub email: String,
    pub order_count: i32,
    pub cancelled_order_count: i32,
    pub lifetime_spend_cents: i64,
    pub last_order_id: Option<Uuid>,
    pub last_order_at: Option<DateTime<Utc>>,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_updated: DateTime<Utc>,
    /// The customer stream's version; 0 while only order events have been seen.
    pub version: i64,
}

impl CustomerRow {
    /// The row a first event creates: empty until the registration fills it.
    fn empty(last_updated: DateTime<Utc>) -> Self {
        Self {
            name: String::new(),
            email: String::new(),
            order_count: 0,
            cancelled_order_count: 0,
            lifetime_spend_cents: 0,
            last_order_id: None,
            last_order_at: None,
            registered_at: None,
            last_updated,
            version: 0,
        }
    }

    /// Adds an order's change to the customer's figures.
    fn add(
        &mut self,
        delta: &CustomerOrderDelta,
        at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let overflow = || ProjectionError("customer figures out of range".into());
        let orders = i32::try_from(delta.orders).unwrap_or(0);
        let cancelled = i32::try_from(delta.cancelled).unwrap_or(0);
        self.order_count = self.order_count.checked_add(orders).ok_or_else(overflow)?;
        self.cancelled_order_count = self
            .cancelled_order_count
            .checked_add(cancelled)
            .ok_or_else(overflow)?;
        self.lifetime_spend_cents = self
            .lifetime_spend_cents
            .checked_add(delta.spend_cents)
            .ok_or_else(overflow)?;
        if let Some((order_id, placed_at)) = delta.placed {
            // Compared as stored (microseconds), as the database compares the rows it merges.
            let placed_at = placed_at.trunc_subsecs(6);
            if self
                .last_order_at
                .is_none_or(|last| placed_at >= last.trunc_subsecs(6))
            {
                self.last_order_id = Some(order_id);
                self.last_order_at = Some(placed_at);
            }
        }
        self.last_updated = self.last_updated.max(at);
        Ok(())
    }
}

/// One `order_history` row: the view after one version.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub version: i64,
    pub occurred_at: DateTime<Utc>,
    pub state: serde_json::Value,
}

/// What a page of events does to the read tables.
#[derive(Debug, Default)]
pub struct PageFold {
    /// Every order the page touches as it stands: loaded before folding (absent: no row yet),
    /// then folded.
    pub orders: HashMap<OrderKey, OrderRow>,
    /// Every customer the page touches, the same way.
    pub customers: HashMap<CustomerKey, CustomerRow>,
    /// The customers whose rows were there (and locked) before folding. The others are new to
    /// this page, and another transaction may create the same row meanwhile: they are merged
    /// into whatever row is there when written, not written over it.
    pub customers_loaded: BTreeSet<CustomerKey>,
    /// The rows the page changed, to be written (sorted, so writers lock in one order).
    pub changed_orders: BTreeSet<OrderKey>,
    pub changed_customers: BTreeSet<CustomerKey>,
    /// Customers an event of theirs set: every order view of theirs copies the name and email.
    pub customer_events: BTreeSet<CustomerKey>,
    pub history: Vec<HistoryRow>,
    /// Additions to `daily_sales`, by `(tenant, day)`.
    pub sales: BTreeMap<(Uuid, NaiveDate), DayFigures>,
    /// Additions to `daily_item_sales`: `(quantity, revenue)` by `(tenant, day, name)`.
    pub item_sales: BTreeMap<(Uuid, NaiveDate, String), (i64, i64)>,
    /// The order views after each order event, for watchers.
    pub changes: Vec<OrderChanged>,
}

impl PageFold {
    /// Starts from the rows the tables hold for the page's orders and customers.
    pub fn new(
        orders: HashMap<OrderKey, OrderRow>,
        customers: HashMap<CustomerKey, CustomerRow>,
    ) -> Self {
        Self {
            orders,
            customers_loaded: customers.keys().copied().collect(),
            customers,
            ..Self::default()
        }
    }

    /// Folds the page's next event, or says why the page cannot be folded.
    pub fn apply(&mut self, event: &Event) -> Result<(), ProjectionError> {
        match &event.payload {
            Payload::Order(order_event) => self.apply_order(event, order_event),
            Payload::Customer(customer_event) => self.apply_customer(event, customer_event),
        }
    }

    fn apply_order(
        &mut self,
        event: &Event,
        order_event: &OrderEvent,
    ) -> Result<(), ProjectionError> {
        let tenant = event.tenant_id;
        let key = (tenant, event.aggregate_id);
        let (before, row) = match (self.orders.get(&key), order_event) {
            // (An OrderPlaced naming another order than its stream's is refused below.)
            (None, OrderEvent::Placed(placed))
                if placed.order_id.as_uuid() == event.aggregate_id =>
            {
                let customer = self.customers.get(&(tenant, placed.customer_id.as_uuid()));
                let row = OrderRow {
                    state: OrderState::placed(placed, event.global_position),
                    customer_name: customer.map(|c| c.name.clone()).unwrap_or_default(),
                    customer_email: customer.map(|c| c.email.clone()).unwrap_or_default(),
                };
                (None, row)
            }
            (None, _) => {
                return Err(ProjectionError(format!(
                    "{} for order {} that was never placed",
                    event.event_type, event.aggregate_id
                )));
            }
            (Some(row), _) => {
                let mut after = row.clone();
                after
                    .state
                    .apply(order_event, event.stream_version, event.global_position)?;
                (Some(row.state.clone()), after)
            }
        };
        let after = &row.state;
        let state_json = serde_json::to_value(after)
            .map_err(|e| ProjectionError(format!("cannot encode view: {e}")))?;
        let customer_delta = CustomerOrderDelta::between(before.as_ref(), after);
        if !customer_delta.is_zero() {
            let customer = self
                .customers
                .entry((tenant, after.customer_id))
                .or_insert_with(|| CustomerRow::empty(event.occurred_at()));
            customer.add(&customer_delta, event.occurred_at())?;
            self.changed_customers.insert((tenant, after.customer_id));
        }

        let day = sales_day(after);
        let sales =
            DayFigures::of(after).minus(before.as_ref().map(DayFigures::of).unwrap_or_default());
        if !sales.is_zero() {
            let total = self.sales.entry((tenant, day)).or_default();
            *total = total.plus(sales);
        }
        if before.is_none() {
            for line in &after.items {
                let total = self
                    .item_sales
                    .entry((tenant, day, line.name.clone()))
                    .or_default();
                total.0 += i64::from(line.quantity);
                total.1 += line.total_cents();
            }
        }
        self.history.push(HistoryRow {
            tenant_id: tenant,
            order_id: after.order_id,
            version: after.version,
            occurred_at: event.occurred_at(),
            state: state_json,
        });
        self.changes.push(OrderChanged {
            tenant_id: tenant,
            state: row.state.clone(),
            customer_name: row.customer_name.clone(),
            customer_email: row.customer_email.clone(),
            event_type: event.event_type.clone(),
        });
        self.changed_orders.insert(key);
        self.orders.insert(key, row);
        Ok(())
    }

    fn apply_customer(
        &mut self,
        event: &Event,
        customer_event: &CustomerEvent,
    ) -> Result<(), ProjectionError> {
        let key = (event.tenant_id, event.aggregate_id);
        let at = event.occurred_at();
        let customer = match customer_event {
            CustomerEvent::Registered(e) => {
                // An upsert: a row its orders created first is filled in.
                let customer = self
                    .customers
                    .entry(key)
                    .or_insert_with(|| CustomerRow::empty(e.registered_at));
                customer.name = e.name.as_str().to_owned();
                customer.email = e.email.as_str().to_owned();
                customer.registered_at = Some(e.registered_at);
                customer.last_updated = customer.last_updated.max(e.registered_at);
                customer
            }
            CustomerEvent::Renamed(e) => {
                let customer = registered(&mut self.customers, event)?;
                customer.name = e.name.as_str().to_owned();
                customer.last_updated = customer.last_updated.max(at);
                customer
            }
            CustomerEvent::EmailChanged(e) => {
                let customer = registered(&mut self.customers, event)?;
                customer.email = e.email.as_str().to_owned();
                customer.last_updated = customer.last_updated.max(at);
                customer
            }
        };
        customer.version = event.stream_version;
        let (name, email) = (customer.name.clone(), customer.email.clone());
        // The copies in the page's order views; those outside the page are rewritten when the
        // page is written.
        for ((tenant, _), order) in &mut self.orders {
            if *tenant == event.tenant_id && order.state.customer_id == event.aggregate_id {
                order.customer_name.clone_from(&name);
                order.customer_email.clone_from(&email);
            }
        }
        self.changed_customers.insert(key);
        self.customer_events.insert(key);
        Ok(())
    }
}

/// The row of the customer `event` belongs to, which a change needs to exist.
fn registered<'a>(
    customers: &'a mut HashMap<CustomerKey, CustomerRow>,
    event: &Event,
) -> Result<&'a mut CustomerRow, ProjectionError> {
    customers
        .get_mut(&(event.tenant_id, event.aggregate_id))
        .ok_or_else(|| {
            ProjectionError(format!(
                "{} for customer {} who was never registered",
                event.event_type, event.aggregate_id
            ))
        })
}
