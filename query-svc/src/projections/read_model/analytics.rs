//! Sales analytics: what one order contributes to the figures of the UTC day it was placed on.
//! The store keeps one row per day; applying an event adds `after - before` of the order's
//! contribution, so every figure follows the order's latest state (a cancellation days later
//! still counts on the day it was placed, as the API promises).

use chrono::NaiveDate;

use super::order_view::{OrderState, Status};

/// One order's share of its day's figures (all 0 or 1 counts, and cents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayFigures {
    pub orders: i64,
    pub confirmed: i64,
    pub cancelled: i64,
    pub delivered: i64,
    pub gross_cents: i64,
    pub discount_cents: i64,
    pub paid_cents: i64,
    pub refunded_cents: i64,
    pub items_sold: i64,
}

impl DayFigures {
    /// What `order`, as it stands, contributes.
    pub fn of(order: &OrderState) -> Self {
        Self {
            orders: 1,
            confirmed: i64::from(order.confirmed_at.is_some()),
            cancelled: i64::from(order.status == Status::Cancelled),
            delivered: i64::from(order.status == Status::Delivered),
            gross_cents: order.subtotal_cents,
            discount_cents: order.discount_cents,
            paid_cents: order.paid_cents,
            refunded_cents: order.refunded_cents,
            items_sold: i64::from(order.item_count()),
        }
    }

    /// The change from `before` to `self`.
    pub fn minus(self, before: Self) -> Self {
        Self {
            orders: self.orders - before.orders,
            confirmed: self.confirmed - before.confirmed,
            cancelled: self.cancelled - before.cancelled,
            delivered: self.delivered - before.delivered,
            gross_cents: self.gross_cents - before.gross_cents,
            discount_cents: self.discount_cents - before.discount_cents,
            paid_cents: self.paid_cents - before.paid_cents,
            refunded_cents: self.refunded_cents - before.refunded_cents,
            items_sold: self.items_sold - before.items_sold,
        }
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            orders: self.orders + other.orders,
            confirmed: self.confirmed + other.confirmed,
            cancelled: self.cancelled + other.cancelled,
            delivered: self.delivered + other.delivered,
            gross_cents: self.gross_cents + other.gross_cents,
            discount_cents: self.discount_cents + other.discount_cents,
            paid_cents: self.paid_cents + other.paid_cents,
            refunded_cents: self.refunded_cents + other.refunded_cents,
            items_sold: self.items_sold + other.items_sold,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// The UTC day an order counts on.
pub fn sales_day(order: &OrderState) -> NaiveDate {
    order.placed_at.date_naive()
}

/// Average order value net of discounts, rounded toward zero; 0 without orders.
pub fn average_order_value(gross_cents: i64, discount_cents: i64, orders: i64) -> i64 {
    if orders == 0 {
        0
    } else {
        (gross_cents - discount_cents) / orders
    }
}

/// Confirmed orders over placed orders, 0 without orders.
pub fn confirmation_rate(confirmed: i64, orders: i64) -> f64 {
    if orders == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rate = confirmed as f64 / orders as f64;
        rate
    }
}
