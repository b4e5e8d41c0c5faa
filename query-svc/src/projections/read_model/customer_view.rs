//! The customer view: name and email from the customer's own events, order figures from the
//! changes of that customer's orders.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::order_view::{OrderState, Status};

/// How one order event changes its customer's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerOrderDelta {
    pub orders: i64,
    pub cancelled: i64,
    /// Paid minus refunded.
    pub spend_cents: i64,
    /// Set when the order was just placed: a candidate for "last order".
    pub placed: Option<(Uuid, DateTime<Utc>)>,
}

impl CustomerOrderDelta {
    /// The change from the order's previous state (`None` before it was placed) to `after`.
    pub fn between(before: Option<&OrderState>, after: &OrderState) -> Self {
        let spend = |o: &OrderState| o.paid_cents - o.refunded_cents;
        let cancelled = |o: &OrderState| i64::from(o.status == Status::Cancelled);
        match before {
            None => Self {
                orders: 1,
                cancelled: cancelled(after),
                spend_cents: spend(after),
                placed: Some((after.order_id, after.placed_at)),
            },
            Some(before) => Self {
                orders: 0,
                cancelled: cancelled(after) - cancelled(before),
                spend_cents: spend(after) - spend(before),
                placed: None,
            },
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}
