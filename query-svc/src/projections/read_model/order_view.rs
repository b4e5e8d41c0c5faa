//! The order view: everything a client shows about an order, folded from its events. The
//! customer's name and email are not part of the fold: they are copied from the customer view
//! and kept current when the customer changes (see the store).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    events::{OrderEvent, OrderPlaced},
    proto::v1 as pb,
    values::{PaymentMethod, PizzaSize},
};
use uuid::Uuid;

use super::ProjectionError;

/// Where an order is in its life; stored by name in the `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Confirmed,
    Cooking,
    Ready,
    OutForDelivery,
    Delivered,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Confirmed,
        Status::Cooking,
        Status::Ready,
        Status::OutForDelivery,
        Status::Delivered,
        Status::Cancelled,
    ];

    /// The `status` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Cooking => "COOKING",
            Status::Ready => "READY",
            Status::OutForDelivery => "OUT_FOR_DELIVERY",
            Status::Delivered => "DELIVERED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn to_proto(self) -> pb::OrderStatus {
        match self {
            Status::Pending => pb::OrderStatus::Pending,
            Status::Confirmed => pb::OrderStatus::Confirmed,
            Status::Cooking => pb::OrderStatus::Cooking,
            Status::Ready => pb::OrderStatus::Ready,
            Status::OutForDelivery => pb::OrderStatus::OutForDelivery,
            Status::Delivered => pb::OrderStatus::Delivered,
            Status::Cancelled => pb::OrderStatus::Cancelled,
        }
    }

    /// `None` for ORDER_STATUS_UNSPECIFIED (and unknown values).
    pub fn from_proto(status: pb::OrderStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == status)
    }
}

/// Whether the order has been paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Payment {
    Unpaid,
    Paid,
    Refunded,
}

impl Payment {
    pub fn to_proto(self) -> pb::PaymentStatus {
        match self {
            Payment::Unpaid => pb::PaymentStatus::Unpaid,
            Payment::Paid => pb::PaymentStatus::Paid,
            Payment::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

/// One order line as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub name: String,
    pub size: PizzaSize,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

impl Line {
    pub fn total_cents(&self) -> i64 {
        self.unit_price_cents
            .saturating_mul(i64::from(self.quantity))
    }
}

/// An order view that changed, for watchers.
#[derive(Debug, Clone)]
pub struct OrderChanged {
    pub tenant_id: Uuid,
    pub state: OrderState,
    pub customer_name: String,
    pub customer_email: String,
    pub event_type: String,
}

/// The folded state of one order, stored as JSONB (per version, too, for as-of queries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub items: Vec<Line>,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub discount_codes: Vec<String>,
    pub status: Status,
    pub payment_status: Payment,
    pub paid_cents: i64,
    pub refunded_cents: i64,
    pub payment_method: Option<PaymentMethod>,
    pub placed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub estimated_delivery: Option<DateTime<Utc>>,
    pub kitchen_notes: String,
    pub driver_name: String,
    pub cancellation_reason: String,
    /// When the latest event happened.
    pub last_updated: DateTime<Utc>,
    /// Stream version and global position of the latest event applied.
    pub version: i64,
    pub position: i64,
}

impl OrderState {
    /// The view right after `OrderPlaced` (stream version 1).
    pub fn placed(placed: &OrderPlaced, position: i64) -> Self {
        let items: Vec<Line> = placed
            .items
            .as_slice()
            .iter()
            .map(|line| Line {
                name: line.name.as_str().to_owned(),
                size: line.size,
                quantity: line.quantity.get(),
                unit_price_cents: line.unit_price.cents(),
            })
            .collect();
        Self {
            order_id: placed.order_id.as_uuid(),
            customer_id: placed.customer_id.as_uuid(),
            items,
            subtotal_cents: placed.subtotal.cents(),
            discount_cents: 0,
            discount_codes: Vec::new(),
            status: Status::Pending,
            payment_status: Payment::Unpaid,
            paid_cents: 0,
            refunded_cents: 0,
            payment_method: None,
            placed_at: placed.placed_at,
            confirmed_at: None,
            paid_at: None,
            estimated_delivery: None,
            kitchen_notes: String::new(),
            driver_name: String::new(),
            cancellation_reason: String::new(),
            last_updated: placed.placed_at,
            version: 1,
            position,
        }
    }

    /// Folds the order's event number `version`, or refuses an event that does not fit. The
    /// projector hands each stream's versions over in order; a gap here is an event an operator
    /// skipped (a dead letter), so only going backwards is refused.
    pub fn apply(
        &mut self,
        event: &OrderEvent,
        version: i64,
        position: i64,
    ) -> Result<(), ProjectionError> {
        if version <= self.version {
            return Err(ProjectionError(format!(
                "order {} is at version {}, cannot apply version {version}",
                self.order_id, self.version
            )));
        }
        match event {
            OrderEvent::Placed(_) => {
                return Err(ProjectionError(format!(
                    "order {} was already placed",
                    self.order_id
                )));
            }
            OrderEvent::Confirmed(e) => {
                self.status = Status::Confirmed;
                self.confirmed_at = Some(e.confirmed_at);
                self.estimated_delivery = Some(e.estimated_delivery);
                self.kitchen_notes = e.kitchen_notes.as_str().to_owned();
            }
            OrderEvent::DiscountApplied(e) => {
                self.discount_cents = self.discount_cents.saturating_add(e.amount.cents());
                self.discount_codes.push(e.code.as_str().to_owned());
            }
            OrderEvent::PaymentProcessed(e) => {
                self.paid_cents = self.paid_cents.saturating_add(e.amount.cents());
                self.payment_status = Payment::Paid;
                self.payment_method = Some(e.method);
                self.paid_at = Some(e.paid_at);
            }
            OrderEvent::CookingStarted(_) => self.status = Status::Cooking,
            OrderEvent::Ready(_) => self.status = Status::Ready,
            OrderEvent::OutForDelivery(e) => {
                self.status = Status::OutForDelivery;
                self.driver_name = e.driver_name.as_str().to_owned();
            }
            OrderEvent::Delivered(_) => self.status = Status::Delivered,
            OrderEvent::Cancelled(e) => {
                self.status = Status::Cancelled;
                self.cancellation_reason = e.reason.as_str().to_owned();
            }
            OrderEvent::PaymentRefunded(e) => {
                self.refunded_cents = self.refunded_cents.saturating_add(e.amount.cents());
                self.payment_status = Payment::Refunded;
            }
        }
        use shared::events::DomainEvent as _;
        self.last_updated = event.occurred_at();
        self.version = version;
        self.position = position;
        Ok(())
    }

    pub fn total_cents(&self) -> i64 {
        self.subtotal_cents.saturating_sub(self.discount_cents)
    }

    pub fn item_count(&self) -> u32 {
        self.items.iter().map(|line| line.quantity).sum()
    }

    /// The gRPC view, with the customer's current name and email.
    pub fn to_proto(&self, customer_name: &str, customer_email: &str) -> pb::OrderView {
        let seconds_since_placed =
            |at: Option<DateTime<Utc>>| at.map(|at| (at - self.placed_at).num_seconds().max(0));
        pb::OrderView {
            order_id: self.order_id.to_string(),
            customer_id: self.customer_id.to_string(),
            customer_name: customer_name.to_owned(),
            customer_email: customer_email.to_owned(),
            items: self.items.iter().map(line_to_proto).collect(),
            item_count: self.item_count(),
            subtotal_cents: self.subtotal_cents,
            discount_cents: self.discount_cents,
            total_cents: self.total_cents(),
            discount_codes: self.discount_codes.clone(),
            status: self.status.to_proto() as i32,
            payment_status: self.payment_status.to_proto() as i32,
            paid_cents: self.paid_cents,
            refunded_cents: self.refunded_cents,
            payment_method: self
                .payment_method
                .map_or(pb::PaymentMethod::Unspecified, method_to_proto)
                as i32,
            placed_at: Some(timestamp(self.placed_at)),
            estimated_delivery: self.estimated_delivery.map(timestamp),
            kitchen_notes: self.kitchen_notes.clone(),
            driver_name: self.driver_name.clone(),
            cancellation_reason: self.cancellation_reason.clone(),
            time_to_confirmation_seconds: seconds_since_placed(self.confirmed_at),
            time_to_payment_seconds: seconds_since_placed(self.paid_at),
            last_updated: Some(timestamp(self.last_updated)),
            version: u64::try_from(self.version).unwrap_or(0),
            position: u64::try_from(self.position).unwrap_or(0),
        }
    }
}

pub use shared::proto::timestamp;

fn line_to_proto(line: &Line) -> pb::OrderItem {
    pb::OrderItem {
        name: line.name.clone(),
        size: size_to_proto(line.size) as i32,
        quantity: line.quantity,
        unit_price_cents: line.unit_price_cents,
    }
}

fn size_to_proto(size: PizzaSize) -> pb::PizzaSize {
    match size {
        PizzaSize::Small => pb::PizzaSize::Small,
        PizzaSize::Medium => pb::PizzaSize::Medium,
        PizzaSize::Large => pb::PizzaSize::Large,
        PizzaSize::Family => pb::PizzaSize::Family,
    }
}

fn method_to_proto(method: PaymentMethod) -> pb::PaymentMethod {
    match method {
        PaymentMethod::Card => pb::PaymentMethod::Card,
        PaymentMethod::Cash => pb::PaymentMethod::Cash,
        PaymentMethod::Online => pb::PaymentMethod::Online,
    }
}
