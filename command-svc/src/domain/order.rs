//! The pizzeria order: placed, confirmed, paid (possibly discounted first), cooked, delivered, or
//! cancelled with a refund.
//!
//! Lifecycle: `Pending → Confirmed → Cooking → Ready → OutForDelivery → Delivered`, where cooking
//! starts once the order is both confirmed and paid (in either order), and any state before
//! `Delivered` may move to `Cancelled`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    events::{
        CookingStarted, DiscountApplied, OrderCancelled, OrderConfirmed, OrderDelivered,
        OrderEvent, OrderOutForDelivery, OrderPlaced, OrderReady, PaymentProcessed,
        PaymentRefunded,
    },
    values::{
        CancellationReason, CustomerId, DiscountCode, DriverName, KitchenNotes, Money, OrderId,
        OrderLines, PaymentMethod, PaymentReference,
    },
};

use crate::eventsourcing::{Aggregate, DomainError};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// No `OrderPlaced` yet: the stream is empty.
    #[default]
    NotPlaced,
    Pending,
    Confirmed,
    Cooking,
    Ready,
    OutForDelivery,
    Delivered,
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderStatus::NotPlaced => "NOT_PLACED",
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Cooking => "COOKING",
            OrderStatus::Ready => "READY",
            OrderStatus::OutForDelivery => "OUT_FOR_DELIVERY",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Cancelled => "CANCELLED",
        })
    }
}

/// What `decide` needs to know about an order; everything else lives in the read models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub customer_id: Option<CustomerId>,
    pub subtotal: Money,
    pub discount: Money,
    pub discount_codes: Vec<DiscountCode>,
    pub confirmed: bool,
    /// `Some(amount)` once paid. An order discounted to zero is paid with zero.
    pub payment: Option<Money>,
    pub refunded: Money,
}

impl Order {
    /// What the customer still has to pay: subtotal minus discounts, never negative.
    pub fn amount_due(&self) -> Money {
        self.subtotal.saturating_sub(self.discount)
    }
}

/// Commands on an order. Times come from the application layer, never from a clock here.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    PlaceOrder {
        order_id: OrderId,
        customer_id: CustomerId,
        items: OrderLines,
        placed_at: DateTime<Utc>,
    },
    ConfirmOrder {
        estimated_delivery: DateTime<Utc>,
        kitchen_notes: KitchenNotes,
        confirmed_at: DateTime<Utc>,
    },
    ProcessPayment {
        method: PaymentMethod,
        amount: Money,
        reference: PaymentReference,
        paid_at: DateTime<Utc>,
    },
    ApplyDiscount {
        code: DiscountCode,
        amount: Money,
        applied_at: DateTime<Utc>,
    },
    MarkReady {
        at: DateTime<Utc>,
    },
    SendOutForDelivery {
        driver_name: DriverName,
        at: DateTime<Utc>,
    },
    MarkDelivered {
        at: DateTime<Utc>,
    },
    CancelOrder {
        reason: CancellationReason,
        at: DateTime<Utc>,
    },
}

/// The rule a refused order command broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    OrderNotFound,
    #[error("order already placed")]
    OrderAlreadyPlaced,
    #[error("only a PENDING order can be confirmed; this order is {status}")]
    NotPending { status: OrderStatus },
    #[error("estimated delivery must be later than the confirmation time")]
    EstimatedDeliveryNotInFuture,
    #[error("order is already paid")]
    AlreadyPaid,
    #[error("payment of {offered} does not equal the amount due {due}")]
    PaymentAmountMismatch { due: Money, offered: Money },
    #[error("order is cancelled")]
    OrderIsCancelled,
    #[error("discounts can only be applied before payment")]
    DiscountAfterPayment,
    #[error("discount code {code} was already applied to this order")]
    DiscountCodeAlreadyApplied { code: DiscountCode },
    #[error("discount of {discount} exceeds the amount due {due}")]
    DiscountExceedsAmountDue { due: Money, discount: Money },
    #[error("an order cannot go from {from} to {to}")]
    IllegalStatusTransition { from: OrderStatus, to: OrderStatus },
    #[error("a delivered order cannot be cancelled")]
    CannotCancelDelivered,
    #[error("order is already cancelled")]
    AlreadyCancelled,
}

impl DomainError for OrderError {
    fn is_not_found(&self) -> bool {
        matches!(self, OrderError::OrderNotFound)
    }
}

impl Aggregate for Order {
    const STATE_SCHEMA_VERSION: u32 = 1;

    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderCommand as C;
        use OrderStatus as S;

        if self.status == S::NotPlaced && !matches!(command, C::PlaceOrder { .. }) {
            return Err(OrderError::OrderNotFound);
        }
        match command {
            C::PlaceOrder {
                order_id,
                customer_id,
                items,
                placed_at,
            } => {
                if self.status != S::NotPlaced {
                    return Err(OrderError::OrderAlreadyPlaced);
                }
                Ok(vec![OrderEvent::Placed(OrderPlaced {
                    order_id: *order_id,
                    customer_id: *customer_id,
                    subtotal: items.subtotal(),
                    items: items.clone(),
                    placed_at: *placed_at,
                })])
            }

            C::ConfirmOrder {
                estimated_delivery,
                kitchen_notes,
                confirmed_at,
            } => {
                if self.status != S::Pending {
                    return Err(OrderError::NotPending {
                        status: self.status,
                    });
                }
                if estimated_delivery <= confirmed_at {
                    return Err(OrderError::EstimatedDeliveryNotInFuture);
                }
                let mut events = vec![OrderEvent::Confirmed(OrderConfirmed {
                    estimated_delivery: *estimated_delivery,
                    kitchen_notes: kitchen_notes.clone(),
                    confirmed_at: *confirmed_at,
                })];
                if self.payment.is_some() {
                    events.push(start_cooking(*confirmed_at));
                }
                Ok(events)
            }

            C::ProcessPayment {
                method,
                amount,
                reference,
                paid_at,
            } => {
                if self.status == S::Cancelled {
                    return Err(OrderError::OrderIsCancelled);
                }
                if self.payment.is_some() {
                    return Err(OrderError::AlreadyPaid);
                }
                if *amount != self.amount_due() {
                    return Err(OrderError::PaymentAmountMismatch {
                        due: self.amount_due(),
                        offered: *amount,
                    });
                }
                let mut events = vec![OrderEvent::PaymentProcessed(PaymentProcessed {
                    method: *method,
                    amount: *amount,
                    reference: reference.clone(),
                    paid_at: *paid_at,
                })];
                if self.status == S::Confirmed {
                    events.push(start_cooking(*paid_at));
                }
                Ok(events)
            }

            C::ApplyDiscount {
                code,
                amount,
                applied_at,
            } => {
                if self.status == S::Cancelled {
                    return Err(OrderError::OrderIsCancelled);
                }
                if self.payment.is_some() {
                    return Err(OrderError::DiscountAfterPayment);
                }
                if self.discount_codes.contains(code) {
                    return Err(OrderError::DiscountCodeAlreadyApplied { code: code.clone() });
                }
                if *amount > self.amount_due() {
                    return Err(OrderError::DiscountExceedsAmountDue {
                        due: self.amount_due(),
                        discount: *amount,
                    });
                }
                Ok(vec![OrderEvent::DiscountApplied(DiscountApplied {
                    code: code.clone(),
                    amount: *amount,
                    applied_at: *applied_at,
                })])
            }

            C::MarkReady { at } => {
                self.step(S::Cooking, S::Ready)?;
                Ok(vec![OrderEvent::Ready(OrderReady { ready_at: *at })])
            }

            C::SendOutForDelivery { driver_name, at } => {
                self.step(S::Ready, S::OutForDelivery)?;
                Ok(vec![OrderEvent::OutForDelivery(OrderOutForDelivery {
                    driver_name: driver_name.clone(),
                    departed_at: *at,
                })])
            }

            C::MarkDelivered { at } => {
                self.step(S::OutForDelivery, S::Delivered)?;
                Ok(vec![OrderEvent::Delivered(OrderDelivered {
                    delivered_at: *at,
                })])
            }

            C::CancelOrder { reason, at } => {
                match self.status {
                    S::Delivered => return Err(OrderError::CannotCancelDelivered),
                    S::Cancelled => return Err(OrderError::AlreadyCancelled),
                    _ => {}
                }
                let mut events = vec![OrderEvent::Cancelled(OrderCancelled {
                    reason: reason.clone(),
                    cancelled_at: *at,
                })];
                if let Some(paid) = self.payment {
                    events.push(OrderEvent::PaymentRefunded(PaymentRefunded {
                        amount: paid.saturating_sub(self.refunded),
                        refunded_at: *at,
                    }));
                }
                Ok(events)
            }
        }
    }

    fn evolve(mut self, event: &OrderEvent) -> Self {
        use OrderStatus as S;
        match event {
            OrderEvent::Placed(e) => {
                self.status = S::Pending;
                self.customer_id = Some(e.customer_id);
                self.subtotal = e.subtotal;
            }
            OrderEvent::Confirmed(_) => {
                self.status = S::Confirmed;
                self.confirmed = true;
            }
            OrderEvent::DiscountApplied(e) => {
                self.discount = self.discount.saturating_add(e.amount);
                self.discount_codes.push(e.code.clone());
            }
            OrderEvent::PaymentProcessed(e) => self.payment = Some(e.amount),
            OrderEvent::CookingStarted(_) => self.status = S::Cooking,
            OrderEvent::Ready(_) => self.status = S::Ready,
            OrderEvent::OutForDelivery(_) => self.status = S::OutForDelivery,
            OrderEvent::Delivered(_) => self.status = S::Delivered,
            OrderEvent::Cancelled(_) => self.status = S::Cancelled,
            OrderEvent::PaymentRefunded(e) => {
                self.refunded = self.refunded.saturating_add(e.amount)
            }
        }
        self
    }
}

impl Order {
    /// A forward kitchen/delivery step is legal only from the one status before it.
    fn step(&self, from: OrderStatus, to: OrderStatus) -> Result<(), OrderError> {
        if self.status == from {
            Ok(())
        } else if self.status == OrderStatus::Cancelled {
            Err(OrderError::OrderIsCancelled)
        } else {
            Err(OrderError::IllegalStatusTransition {
                from: self.status,
                to,
            })
        }
    }
}

fn start_cooking(at: DateTime<Utc>) -> OrderEvent {
    OrderEvent::CookingStarted(CookingStarted { started_at: at })
}

#[cfg(test)]
pub(crate) mod tests {
    //! Given events, when a command, then events or a refusal. Each test pins one rule.

    use chrono::{Duration, TimeZone};
    use shared::values::{ItemName, OrderLine, PizzaSize, Quantity};

    use super::*;
    use OrderCommand as C;

    pub(crate) fn t(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap() + Duration::minutes(minute)
    }

    pub(crate) fn order_id() -> OrderId {
        OrderId::parse("0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e").unwrap()
    }

    pub(crate) fn customer_id() -> CustomerId {
        CustomerId::parse("0190b8f6-0000-7000-8000-000000000001").unwrap()
    }

    pub(crate) fn money(cents: i64) -> Money {
        Money::from_cents(cents).unwrap()
    }

    /// Two large Margheritas at 12.99 and one Diavola at 14.50: subtotal 40.48.
    pub(crate) fn items() -> OrderLines {
        let line = |name: &str, quantity, cents| OrderLine {
            name: ItemName::parse(name).unwrap(),
            size: PizzaSize::Large,
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: Money::positive_from_cents(cents).unwrap(),
        };
        OrderLines::new(vec![line("Margherita", 2, 1299), line("Diavola", 1, 1450)]).unwrap()
    }

    fn given(commands: &[OrderCommand]) -> Order {
        commands.iter().fold(Order::default(), |state, command| {
            crate::eventsourcing::execute(state, command)
                .unwrap_or_else(|e| panic!("given {command:?} was refused: {e}"))
                .0
        })
    }

    fn place() -> OrderCommand {
        C::PlaceOrder {
            order_id: order_id(),
            customer_id: customer_id(),
            items: items(),
            placed_at: t(0),
        }
    }

    fn confirm() -> OrderCommand {
        C::ConfirmOrder {
            estimated_delivery: t(45),
            kitchen_notes: KitchenNotes::parse("extra basil").unwrap(),
            confirmed_at: t(2),
        }
    }

    fn pay(cents: i64) -> OrderCommand {
        C::ProcessPayment {
            method: PaymentMethod::Card,
            amount: money(cents),
            reference: PaymentReference::parse("txn-42").unwrap(),
            paid_at: t(3),
        }
    }

    fn discount(code: &str, cents: i64) -> OrderCommand {
        C::ApplyDiscount {
            code: DiscountCode::parse(code).unwrap(),
            amount: money(cents),
            applied_at: t(1),
        }
    }

    fn ready() -> OrderCommand {
        C::MarkReady { at: t(20) }
    }

    fn out() -> OrderCommand {
        C::SendOutForDelivery {
            driver_name: DriverName::parse("Luigi").unwrap(),
            at: t(25),
        }
    }

    fn delivered() -> OrderCommand {
        C::MarkDelivered { at: t(40) }
    }

    fn cancel() -> OrderCommand {
        C::CancelOrder {
            reason: CancellationReason::parse("customer changed their mind").unwrap(),
            at: t(5),
        }
    }

    fn cooking_at(minute: i64) -> OrderEvent {
        OrderEvent::CookingStarted(CookingStarted {
            started_at: t(minute),
        })
    }

    // PlaceOrder

    #[test]
    fn placing_computes_the_subtotal_on_the_server() {
        let events = given(&[]).decide(&place()).unwrap();
        assert_eq!(
            events,
            vec![OrderEvent::Placed(OrderPlaced {
                order_id: order_id(),
                customer_id: customer_id(),
                items: items(),
                subtotal: money(4048),
                placed_at: t(0),
            })]
        );
        let state = Order::replay(&events);
        assert_eq!(state.status, OrderStatus::Pending);
        assert_eq!(state.amount_due(), money(4048));
    }

    #[test]
    fn an_order_is_placed_once() {
        assert_eq!(
            given(&[place()]).decide(&place()),
            Err(OrderError::OrderAlreadyPlaced)
        );
    }

    #[test]
    fn every_other_command_needs_a_placed_order() {
        for command in [
            confirm(),
            pay(4048),
            discount("A", 1),
            ready(),
            out(),
            delivered(),
            cancel(),
        ] {
            assert_eq!(
                given(&[]).decide(&command),
                Err(OrderError::OrderNotFound),
                "{command:?}"
            );
        }
    }

    // ConfirmOrder

    #[test]
    fn a_pending_order_is_confirmed() {
        let events = given(&[place()]).decide(&confirm()).unwrap();
        assert_eq!(
            events,
            vec![OrderEvent::Confirmed(OrderConfirmed {
                estimated_delivery: t(45),
                kitchen_notes: KitchenNotes::parse("extra basil").unwrap(),
                confirmed_at: t(2),
            })]
        );
    }

    #[test]
    fn only_a_pending_order_can_be_confirmed() {
        assert_eq!(
            given(&[place(), confirm()]).decide(&confirm()),
            Err(OrderError::NotPending {
                status: OrderStatus::Confirmed
            })
        );
        assert_eq!(
            given(&[place(), cancel()]).decide(&confirm()),
            Err(OrderError::NotPending {
                status: OrderStatus::Cancelled
            })
        );
    }

    #[test]
    fn estimated_delivery_must_be_after_confirmation() {
        let command = C::ConfirmOrder {
            estimated_delivery: t(2),
            kitchen_notes: KitchenNotes::parse("").unwrap(),
            confirmed_at: t(2),
        };
        assert_eq!(
            given(&[place()]).decide(&command),
            Err(OrderError::EstimatedDeliveryNotInFuture)
        );
    }

    #[test]
    fn confirming_a_paid_order_starts_cooking() {
        let events = given(&[place(), pay(4048)]).decide(&confirm()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], cooking_at(2));
    }

    // ProcessPayment

    #[test]
    fn paying_a_confirmed_order_starts_cooking() {
        let events = given(&[place(), confirm()]).decide(&pay(4048)).unwrap();
        assert_eq!(
            events,
            vec![
                OrderEvent::PaymentProcessed(PaymentProcessed {
                    method: PaymentMethod::Card,
                    amount: money(4048),
                    reference: PaymentReference::parse("txn-42").unwrap(),
                    paid_at: t(3),
                }),
                cooking_at(3),
            ]
        );
        assert_eq!(
            given(&[place(), confirm(), pay(4048)]).status,
            OrderStatus::Cooking
        );
    }

    #[test]
    fn paying_a_pending_order_does_not_start_cooking() {
        let events = given(&[place()]).decide(&pay(4048)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(given(&[place(), pay(4048)]).status, OrderStatus::Pending);
    }

    #[test]
    fn payment_must_equal_the_amount_due() {
        assert_eq!(
            given(&[place()]).decide(&pay(4000)),
            Err(OrderError::PaymentAmountMismatch {
                due: money(4048),
                offered: money(4000)
            })
        );
        // Discounts lower the amount due.
        assert!(
            given(&[place(), discount("WELCOME", 448)])
                .decide(&pay(3600))
                .is_ok()
        );
    }

    #[test]
    fn an_order_is_paid_once() {
        assert_eq!(
            given(&[place(), pay(4048)]).decide(&pay(4048)),
            Err(OrderError::AlreadyPaid)
        );
    }

    #[test]
    fn a_cancelled_order_cannot_be_paid() {
        assert_eq!(
            given(&[place(), cancel()]).decide(&pay(4048)),
            Err(OrderError::OrderIsCancelled)
        );
    }

    // ApplyDiscount

    #[test]
    fn a_discount_lowers_the_amount_due() {
        let events = given(&[place()]).decide(&discount("welcome", 500)).unwrap();
        assert_eq!(
            events,
            vec![OrderEvent::DiscountApplied(DiscountApplied {
                code: DiscountCode::parse("WELCOME").unwrap(),
                amount: money(500),
                applied_at: t(1),
            })]
        );
        assert_eq!(
            given(&[place(), discount("welcome", 500)]).amount_due(),
            money(3548)
        );
    }

    #[test]
    fn discounts_only_before_payment() {
        assert_eq!(
            given(&[place(), pay(4048)]).decide(&discount("LATE", 100)),
            Err(OrderError::DiscountAfterPayment)
        );
    }

    #[test]
    fn a_code_applies_at_most_once_whatever_its_case() {
        assert_eq!(
            given(&[place(), discount("WELCOME", 100)]).decide(&discount("welcome", 100)),
            Err(OrderError::DiscountCodeAlreadyApplied {
                code: DiscountCode::parse("WELCOME").unwrap()
            })
        );
    }

    #[test]
    fn discounts_never_exceed_the_amount_due() {
        assert_eq!(
            given(&[place(), discount("A", 4000)]).decide(&discount("B", 49)),
            Err(OrderError::DiscountExceedsAmountDue {
                due: money(48),
                discount: money(49)
            })
        );
        // Exactly the amount due is allowed: the order becomes free and is paid with zero.
        let state = given(&[place(), discount("A", 4000), discount("B", 48)]);
        assert_eq!(state.amount_due(), Money::ZERO);
        assert!(state.decide(&pay(0)).is_ok());
    }

    #[test]
    fn a_cancelled_order_takes_no_discount() {
        assert_eq!(
            given(&[place(), cancel()]).decide(&discount("A", 1)),
            Err(OrderError::OrderIsCancelled)
        );
    }

    // Kitchen and delivery steps

    #[test]
    fn the_happy_path_moves_one_legal_step_at_a_time() {
        let cooking = given(&[place(), confirm(), pay(4048)]);
        assert_eq!(
            cooking.decide(&ready()),
            Ok(vec![OrderEvent::Ready(OrderReady { ready_at: t(20) })])
        );
        let ready_state = given(&[place(), confirm(), pay(4048), ready()]);
        assert_eq!(
            ready_state.decide(&out()),
            Ok(vec![OrderEvent::OutForDelivery(OrderOutForDelivery {
                driver_name: DriverName::parse("Luigi").unwrap(),
                departed_at: t(25),
            })])
        );
        let out_state = given(&[place(), confirm(), pay(4048), ready(), out()]);
        assert_eq!(
            out_state.decide(&delivered()),
            Ok(vec![OrderEvent::Delivered(OrderDelivered {
                delivered_at: t(40)
            })])
        );
        assert_eq!(
            given(&[place(), confirm(), pay(4048), ready(), out(), delivered()]).status,
            OrderStatus::Delivered
        );
    }

    #[test]
    fn nothing_is_ready_before_cooking() {
        assert_eq!(
            given(&[place(), confirm()]).decide(&ready()),
            Err(OrderError::IllegalStatusTransition {
                from: OrderStatus::Confirmed,
                to: OrderStatus::Ready
            })
        );
    }

    #[test]
    fn nothing_leaves_before_it_is_ready() {
        assert_eq!(
            given(&[place(), confirm(), pay(4048)]).decide(&out()),
            Err(OrderError::IllegalStatusTransition {
                from: OrderStatus::Cooking,
                to: OrderStatus::OutForDelivery
            })
        );
    }

    #[test]
    fn nothing_is_delivered_before_it_left() {
        assert_eq!(
            given(&[place(), confirm(), pay(4048), ready()]).decide(&delivered()),
            Err(OrderError::IllegalStatusTransition {
                from: OrderStatus::Ready,
                to: OrderStatus::Delivered
            })
        );
    }

    #[test]
    fn steps_never_go_backwards() {
        let delivered_state = given(&[place(), confirm(), pay(4048), ready(), out(), delivered()]);
        for command in [ready(), out(), delivered()] {
            assert!(matches!(
                delivered_state.decide(&command),
                Err(OrderError::IllegalStatusTransition { .. })
            ));
        }
    }

    #[test]
    fn a_cancelled_order_takes_no_more_steps() {
        assert_eq!(
            given(&[place(), confirm(), pay(4048), cancel()]).decide(&ready()),
            Err(OrderError::OrderIsCancelled)
        );
    }

    // CancelOrder

    #[test]
    fn cancelling_an_unpaid_order_refunds_nothing() {
        let events = given(&[place(), confirm()]).decide(&cancel()).unwrap();
        assert_eq!(
            events,
            vec![OrderEvent::Cancelled(OrderCancelled {
                reason: CancellationReason::parse("customer changed their mind").unwrap(),
                cancelled_at: t(5),
            })]
        );
    }

    #[test]
    fn cancelling_a_paid_order_records_a_refund_of_what_was_paid() {
        let events = given(&[place(), discount("A", 48), confirm(), pay(4000)])
            .decide(&cancel())
            .unwrap();
        assert_eq!(
            events[1],
            OrderEvent::PaymentRefunded(PaymentRefunded {
                amount: money(4000),
                refunded_at: t(5),
            })
        );
        let state = given(&[place(), discount("A", 48), confirm(), pay(4000), cancel()]);
        assert_eq!(state.status, OrderStatus::Cancelled);
        assert_eq!(state.refunded, money(4000));
    }

    #[test]
    fn a_delivered_order_cannot_be_cancelled() {
        assert_eq!(
            given(&[place(), confirm(), pay(4048), ready(), out(), delivered()]).decide(&cancel()),
            Err(OrderError::CannotCancelDelivered)
        );
    }

    #[test]
    fn an_order_out_for_delivery_can_still_be_cancelled() {
        assert!(
            given(&[place(), confirm(), pay(4048), ready(), out()])
                .decide(&cancel())
                .is_ok()
        );
    }

    #[test]
    fn an_order_is_cancelled_once() {
        assert_eq!(
            given(&[place(), cancel()]).decide(&cancel()),
            Err(OrderError::AlreadyCancelled)
        );
    }

    #[test]
    fn only_not_found_maps_to_not_found() {
        assert!(OrderError::OrderNotFound.is_not_found());
        assert!(!OrderError::AlreadyPaid.is_not_found());
    }
}
