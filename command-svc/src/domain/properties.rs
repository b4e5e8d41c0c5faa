//! Property tests: random command sequences against the aggregates.
//!
//! Whatever commands arrive, in whatever order: replaying the recorded events rebuilds the same
//! state, every event survives its stored form, money never goes negative, and the order status
//! only moves along legal steps.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use shared::{
    events::DomainEvent,
    values::{
        CancellationReason, CustomerName, DiscountCode, DriverName, Email, ItemName, KitchenNotes,
        Money, OrderLine, OrderLines, PaymentMethod, PaymentReference, PizzaSize, Quantity,
    },
};

use super::{
    Aggregate,
    customer::{Customer, CustomerCommand},
    order::{Order, OrderCommand, OrderStatus, tests as fixtures},
};

/// A command with its random parts; amounts may be made relative to the state when it runs.
#[derive(Debug, Clone)]
enum Action {
    Place(Vec<(u32, i64)>),
    Confirm { delivery_after_minutes: i64 },
    PayExact,
    PayOff { delta_cents: i64 },
    Discount { code: usize, cents: i64 },
    Ready,
    Out,
    Delivered,
    Cancel,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        prop::collection::vec((1u32..=5, 100i64..=3_000), 1..5).prop_map(Action::Place),
        (-10i64..60).prop_map(|m| Action::Confirm {
            delivery_after_minutes: m
        }),
        Just(Action::PayExact),
        (-500i64..500).prop_map(|d| Action::PayOff { delta_cents: d }),
        (0usize..3, 1i64..6_000).prop_map(|(code, cents)| Action::Discount { code, cents }),
        Just(Action::Ready),
        Just(Action::Out),
        Just(Action::Delivered),
        Just(Action::Cancel),
    ]
}

fn to_command(action: &Action, state: &Order, now: DateTime<Utc>) -> Option<OrderCommand> {
    Some(match action {
        Action::Place(lines) => OrderCommand::PlaceOrder {
            order_id: fixtures::order_id(),
            customer_id: fixtures::customer_id(),
            items: OrderLines::new(
                lines
                    .iter()
                    .map(|(quantity, cents)| {
                        Some(OrderLine {
                            name: ItemName::parse("Margherita").ok()?,
                            size: PizzaSize::Medium,
                            quantity: Quantity::new(*quantity).ok()?,
                            unit_price: Money::positive_from_cents(*cents).ok()?,
                        })
                    })
                    .collect::<Option<_>>()?,
            )
            .ok()?,
            placed_at: now,
        },
        Action::Confirm {
            delivery_after_minutes,
        } => OrderCommand::ConfirmOrder {
            estimated_delivery: now + Duration::minutes(*delivery_after_minutes),
            kitchen_notes: KitchenNotes::parse("").ok()?,
            confirmed_at: now,
        },
        Action::PayExact => pay(state.amount_due(), now),
        Action::PayOff { delta_cents } => pay(
            Money::from_cents(state.amount_due().cents() + delta_cents).ok()?,
            now,
        ),
        Action::Discount { code, cents } => OrderCommand::ApplyDiscount {
            code: DiscountCode::parse(["A", "B", "C"][*code]).ok()?,
            amount: Money::positive_from_cents(*cents).ok()?,
            applied_at: now,
        },
        Action::Ready => OrderCommand::MarkReady { at: now },
        Action::Out => OrderCommand::SendOutForDelivery {
            driver_name: DriverName::parse("Luigi").ok()?,
            at: now,
        },
        Action::Delivered => OrderCommand::MarkDelivered { at: now },
        Action::Cancel => OrderCommand::CancelOrder {
            reason: CancellationReason::parse("no longer hungry").ok()?,
            at: now,
        },
    })
}

fn pay(amount: Money, now: DateTime<Utc>) -> OrderCommand {
    OrderCommand::ProcessPayment {
        method: PaymentMethod::Card,
        amount,
        reference: PaymentReference::parse("ref").unwrap(),
        paid_at: now,
    }
}

fn legal_step(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus as S;
    from == to
        || matches!(
            (from, to),
            (S::NotPlaced, S::Pending)
                | (S::Pending, S::Confirmed)
                | (S::Confirmed, S::Cooking)
                | (S::Cooking, S::Ready)
                | (S::Ready, S::OutForDelivery)
                | (S::OutForDelivery, S::Delivered)
        )
        || (to == S::Cancelled && !matches!(from, S::NotPlaced | S::Delivered | S::Cancelled))
}

fn round_trip<E: DomainEvent + PartialEq>(event: &E) -> bool {
    let stored = event.encode();
    E::decode(stored.event_type, stored.schema_version, stored.payload)
        .ok()
        .as_ref()
        == Some(event)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn order_histories_replay_and_keep_their_invariants(actions in prop::collection::vec(action(), 0..30)) {
        let start = Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap();
        let mut state = Order::default();
        let mut history = Vec::new();
        for (minute, action) in (0i64..).zip(&actions) {
            let Some(command) = to_command(action, &state, start + Duration::minutes(minute)) else {
                continue;
            };
            let Ok(events) = state.decide(&command) else { continue };
            for event in events {
                prop_assert!(round_trip(&event), "{event:?} does not survive its stored form");
                let before = state.status;
                state = state.evolve(&event);
                prop_assert!(legal_step(before, state.status), "{before} -> {}", state.status);
                if state.status == OrderStatus::Cooking {
                    prop_assert!(state.confirmed && state.payment.is_some(), "cooking before confirmed and paid");
                }
                history.push(event);
            }
            prop_assert!(state.discount <= state.subtotal, "discounts above the subtotal");
            prop_assert!(state.amount_due().cents() >= 0);
            prop_assert!(state.refunded <= state.payment.unwrap_or(Money::ZERO), "refunded more than paid");
            if let Some(paid) = state.payment {
                prop_assert!(paid <= state.subtotal, "paid more than the subtotal");
            }
        }
        prop_assert_eq!(Order::replay(&history), state);
    }

    #[test]
    fn customer_histories_replay(ops in prop::collection::vec((0u8..3, 0usize..3), 0..20)) {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        let names = ["Ada", "Grace", "Alan"];
        let mut state = Customer::default();
        let mut history = Vec::new();
        for (op, pick) in ops {
            let command = match op {
                0 => CustomerCommand::RegisterCustomer {
                    customer_id: fixtures::customer_id(),
                    name: CustomerName::parse(names[pick]).unwrap(),
                    email: Email::parse(&format!("{}@example.com", names[pick])).unwrap(),
                    registered_at: at,
                },
                1 => CustomerCommand::RenameCustomer { name: CustomerName::parse(names[pick]).unwrap(), at },
                _ => CustomerCommand::ChangeCustomerEmail {
                    email: Email::parse(&format!("{}@example.org", names[pick])).unwrap(),
                    at,
                },
            };
            let Ok(events) = state.decide(&command) else { continue };
            for event in events {
                prop_assert!(round_trip(&event));
                state = state.evolve(&event);
                history.push(event);
            }
        }
        prop_assert_eq!(Customer::replay(&history), state);
    }
}
