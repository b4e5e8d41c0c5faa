//! Events of the `order` aggregate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{domain_events, occurred_at};
use crate::values::{
    CancellationReason, CustomerId, DiscountCode, DriverName, KitchenNotes, Money, OrderId,
    OrderLines, PaymentMethod, PaymentReference,
};

domain_events! {
    /// Everything that can happen to an order. Type names are stable forever.
    pub enum OrderEvent for "order" upcast by (super::upcasters::ORDER_UPCASTERS) {
        /// A customer placed an order; the subtotal was computed by the server.
        Placed(OrderPlaced) = "OrderPlaced" v 2,
        /// The kitchen accepted the order and promised a delivery time.
        Confirmed(OrderConfirmed) = "OrderConfirmed" v 1,
        /// A discount code reduced the amount due.
        DiscountApplied(DiscountApplied) = "DiscountApplied" v 1,
        /// The amount due was paid in full.
        PaymentProcessed(PaymentProcessed) = "PaymentProcessed" v 1,
        /// The order is confirmed and paid, so the kitchen started cooking.
        CookingStarted(CookingStarted) = "CookingStarted" v 1,
        /// The food is ready for pick-up by a driver.
        Ready(OrderReady) = "OrderReady" v 1,
        /// A driver left with the order.
        OutForDelivery(OrderOutForDelivery) = "OrderOutForDelivery" v 1,
        /// The customer received the order.
        Delivered(OrderDelivered) = "OrderDelivered" v 1,
        /// The order was cancelled before delivery.
        Cancelled(OrderCancelled) = "OrderCancelled" v 1,
        /// A paid order was cancelled and the payment returned.
        PaymentRefunded(PaymentRefunded) = "PaymentRefunded" v 1,
    }
}

occurred_at! {
    OrderPlaced => placed_at,
    OrderConfirmed => confirmed_at,
    DiscountApplied => applied_at,
    PaymentProcessed => paid_at,
    CookingStarted => started_at,
    OrderReady => ready_at,
    OrderOutForDelivery => departed_at,
    OrderDelivered => delivered_at,
    OrderCancelled => cancelled_at,
    PaymentRefunded => refunded_at,
}

/// `OrderPlaced` schema v2. (v1, the prototype's shape with decimal-string prices and no sizes, is
/// upcast by [`super::upcasters::ORDER_UPCASTERS`].)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub items: OrderLines,
    #[serde(rename = "subtotal_cents")]
    pub subtotal: Money,
    pub placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub estimated_delivery: DateTime<Utc>,
    pub kitchen_notes: KitchenNotes,
    pub confirmed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscountApplied {
    pub code: DiscountCode,
    #[serde(rename = "amount_cents")]
    pub amount: Money,
    pub applied_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    pub method: PaymentMethod,
    #[serde(rename = "amount_cents")]
    pub amount: Money,
    pub reference: PaymentReference,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CookingStarted {
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderReady {
    pub ready_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderOutForDelivery {
    pub driver_name: DriverName,
    pub departed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderDelivered {
    pub delivered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: CancellationReason,
    pub cancelled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    #[serde(rename = "amount_cents")]
    pub amount: Money,
    pub refunded_at: DateTime<Utc>,
}
