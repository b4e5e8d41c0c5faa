//! Turns CommandService requests into validated domain commands.
//!
//! Parse, don't validate: every field goes through the constructor of its value type, so a command
//! that reaches the domain cannot carry an invalid value. Conversion does not stop at the first bad
//! field: it records one [`FieldViolation`] per bad field, which the service returns as a
//! `google.rpc.BadRequest`, so a client can fix a request in one round trip.
//!
//! Conversion reads no state: the caller passes `now`, which becomes every timestamp the domain
//! records and the reference for "later than the current time". The only other input is the id
//! generator, for requests that leave a new aggregate's id to the server.

use chrono::{DateTime, Utc};
use shared::{
    proto::v1 as pb,
    values::{
        CancellationReason, CustomerId, CustomerName, DiscountCode, DriverName, Email, ItemName,
        KitchenNotes, Money, OrderId, OrderLine, OrderLines, PaymentMethod, PaymentReference,
        PizzaSize, Quantity, ValueError,
    },
};

use super::fields::{
    Converted, FieldViolation, command_options, field, finish, given_or_new_id,
    timestamp_to_datetime, violation,
};
use crate::domain::{customer::CustomerCommand, order::OrderCommand};

/// RegisterCustomer. An empty `customer_id` means the server assigns a new one.
pub fn register_customer(
    r: &pb::RegisterCustomerRequest,
    now: DateTime<Utc>,
) -> Result<Converted<CustomerId, CustomerCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = given_or_new_id(
        &mut v,
        "customer_id",
        &r.customer_id,
        CustomerId::parse,
        CustomerId::generate,
    );
    let name = field(&mut v, "name", CustomerName::parse(&r.name));
    let email = field(&mut v, "email", Email::parse(&r.email));
    finish(v, || {
        let id = id?;
        Some(Converted {
            options,
            id,
            command: CustomerCommand::RegisterCustomer {
                customer_id: id,
                name: name?,
                email: email?,
                registered_at: now,
            },
        })
    })
}

/// ChangeCustomerEmail.
pub fn change_customer_email(
    r: &pb::ChangeCustomerEmailRequest,
    now: DateTime<Utc>,
) -> Result<Converted<CustomerId, CustomerCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "customer_id", CustomerId::parse(&r.customer_id));
    let email = field(&mut v, "email", Email::parse(&r.email));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: CustomerCommand::ChangeCustomerEmail {
                email: email?,
                at: now,
            },
        })
    })
}

/// RenameCustomer.
pub fn rename_customer(
    r: &pb::RenameCustomerRequest,
    now: DateTime<Utc>,
) -> Result<Converted<CustomerId, CustomerCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "customer_id", CustomerId::parse(&r.customer_id));
    let name = field(&mut v, "name", CustomerName::parse(&r.name));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: CustomerCommand::RenameCustomer {
                name: name?,
                at: now,
            },
        })
    })
}

/// PlaceOrder. An empty `order_id` means the server assigns a new one.
///
/// Also returns the customer id: the order aggregate cannot see other streams, so the caller checks
/// that the customer is registered before running the command.
pub fn place_order(
    r: &pb::PlaceOrderRequest,
    now: DateTime<Utc>,
) -> Result<(Converted<OrderId, OrderCommand>, CustomerId), Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = given_or_new_id(
        &mut v,
        "order_id",
        &r.order_id,
        OrderId::parse,
        OrderId::generate,
    );
    let customer_id = field(&mut v, "customer_id", CustomerId::parse(&r.customer_id));
    let items = order_lines(&mut v, &r.items);
    finish(v, || {
        let id = id?;
        let customer_id = customer_id?;
        let converted = Converted {
            options,
            id,
            command: OrderCommand::PlaceOrder {
                order_id: id,
                customer_id,
                items: items?,
                placed_at: now,
            },
        };
        Some((converted, customer_id))
    })
}

/// ConfirmOrder. The estimated delivery must be later than `now`. The domain checks it against
/// `confirmed_at` too, but the API promises INVALID_ARGUMENT for it, before any state is read.
pub fn confirm_order(
    r: &pb::ConfirmOrderRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    let estimated_delivery = future_time(
        &mut v,
        "estimated_delivery",
        r.estimated_delivery.as_ref().map(|t| (t.seconds, t.nanos)),
        now,
    );
    let kitchen_notes = field(
        &mut v,
        "kitchen_notes",
        KitchenNotes::parse(&r.kitchen_notes),
    );
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::ConfirmOrder {
                estimated_delivery: estimated_delivery?,
                kitchen_notes: kitchen_notes?,
                confirmed_at: now,
            },
        })
    })
}

/// ProcessPayment. Zero is a valid amount: an order discounted to nothing is paid with nothing.
pub fn process_payment(
    r: &pb::ProcessPaymentRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    let method = field(&mut v, "method", payment_method(r.method));
    let amount = field(&mut v, "amount_cents", Money::from_cents(r.amount_cents));
    let reference = field(
        &mut v,
        "payment_reference",
        PaymentReference::parse(&r.payment_reference),
    );
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::ProcessPayment {
                method: method?,
                amount: amount?,
                reference: reference?,
                paid_at: now,
            },
        })
    })
}

/// ApplyDiscount. A zero discount is refused: it would record an event that changes nothing.
pub fn apply_discount(
    r: &pb::ApplyDiscountRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    let code = field(&mut v, "code", DiscountCode::parse(&r.code));
    let amount = field(
        &mut v,
        "amount_cents",
        Money::positive_from_cents(r.amount_cents),
    );
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::ApplyDiscount {
                code: code?,
                amount: amount?,
                applied_at: now,
            },
        })
    })
}

/// MarkOrderReady.
pub fn mark_order_ready(
    r: &pb::MarkOrderReadyRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::MarkReady { at: now },
        })
    })
}

/// SendOutForDelivery.
pub fn send_out_for_delivery(
    r: &pb::SendOutForDeliveryRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    let driver_name = field(&mut v, "driver_name", DriverName::parse(&r.driver_name));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::SendOutForDelivery {
                driver_name: driver_name?,
                at: now,
            },
        })
    })
}

/// MarkOrderDelivered.
pub fn mark_order_delivered(
    r: &pb::MarkOrderDeliveredRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::MarkDelivered { at: now },
        })
    })
}

/// CancelOrder.
pub fn cancel_order(
    r: &pb::CancelOrderRequest,
    now: DateTime<Utc>,
) -> Result<Converted<OrderId, OrderCommand>, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let options = command_options(&mut v, &r.command_id, r.expected_version);
    let id = field(&mut v, "order_id", OrderId::parse(&r.order_id));
    let reason = field(&mut v, "reason", CancellationReason::parse(&r.reason));
    finish(v, || {
        Some(Converted {
            options,
            id: id?,
            command: OrderCommand::CancelOrder {
                reason: reason?,
                at: now,
            },
        })
    })
}

/// The order lines, each checked field by field so that one response names every bad field.
fn order_lines(
    violations: &mut Vec<FieldViolation>,
    items: &[pb::OrderItem],
) -> Option<OrderLines> {
    // Checked before the lines: an oversized request would otherwise produce one violation per
    // field of every line, an error reply larger than the request.
    if items.len() > OrderLines::MAX_LINES {
        violation(
            violations,
            "items",
            format!("must contain at most {} items", OrderLines::MAX_LINES),
        );
        return None;
    }
    // Collected into a Vec first so every line is checked; collecting straight into an Option
    // would stop at the first bad line.
    let lines: Vec<Option<OrderLine>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| order_line(violations, index, item))
        .collect();
    let lines: Vec<OrderLine> = lines.into_iter().collect::<Option<_>>()?;
    field(violations, "items", OrderLines::new(lines))
}

/// One order line; violations are reported at `items[index].<field>`.
fn order_line(
    violations: &mut Vec<FieldViolation>,
    index: usize,
    item: &pb::OrderItem,
) -> Option<OrderLine> {
    let path = |name: &str| format!("items[{index}].{name}");
    let name = field(violations, &path("name"), ItemName::parse(&item.name));
    let size = field(violations, &path("size"), pizza_size(item.size));
    let quantity = field(violations, &path("quantity"), Quantity::new(item.quantity));
    let unit_price = field(
        violations,
        &path("unit_price_cents"),
        Money::positive_from_cents(item.unit_price_cents),
    );
    Some(OrderLine {
        name: name?,
        size: size?,
        quantity: quantity?,
        unit_price: unit_price?,
    })
}

/// Maps the proto size. UNSPECIFIED is what an unset field reads as, so it is refused like a
/// missing value; numbers this build does not know are refused by value.
fn pizza_size(raw: i32) -> Result<PizzaSize, String> {
    match pb::PizzaSize::try_from(raw) {
        Ok(pb::PizzaSize::Small) => Ok(PizzaSize::Small),
        Ok(pb::PizzaSize::Medium) => Ok(PizzaSize::Medium),
        Ok(pb::PizzaSize::Large) => Ok(PizzaSize::Large),
        Ok(pb::PizzaSize::Family) => Ok(PizzaSize::Family),
        Ok(pb::PizzaSize::Unspecified) => Err(ValueError::Unspecified.to_string()),
        Err(_) => Err(unknown_enum_value(raw)),
    }
}

/// Maps the proto payment method; refusals as for [`pizza_size`].
fn payment_method(raw: i32) -> Result<PaymentMethod, String> {
    match pb::PaymentMethod::try_from(raw) {
        Ok(pb::PaymentMethod::Card) => Ok(PaymentMethod::Card),
        Ok(pb::PaymentMethod::Cash) => Ok(PaymentMethod::Cash),
        Ok(pb::PaymentMethod::Online) => Ok(PaymentMethod::Online),
        Ok(pb::PaymentMethod::Unspecified) => Err(ValueError::Unspecified.to_string()),
        Err(_) => Err(unknown_enum_value(raw)),
    }
}

/// Description for an enum number outside the proto definition this build was compiled from.
fn unknown_enum_value(raw: i32) -> String {
    format!("unknown value {raw}")
}

/// A required `google.protobuf.Timestamp`, given as `(seconds, nanos)`, that must be strictly
/// later than `now`.
fn future_time(
    violations: &mut Vec<FieldViolation>,
    path: &str,
    timestamp: Option<(i64, i32)>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some((seconds, nanos)) = timestamp else {
        violation(violations, path, ValueError::Unspecified);
        return None;
    };
    let time = timestamp_to_datetime(violations, path, seconds, nanos)?;
    if time <= now {
        violation(violations, path, "must be later than the current time");
        return None;
    }
    Some(time)
}

#[cfg(test)]
mod tests {
    //! One test per rule: valid requests convert to the expected command, and each kind of bad
    //! input is reported at its field path.

    use std::fmt::Debug;

    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::grpc::fields::CommandOptions;
    use shared::values::CommandId;

    const ORDER: &str = "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e";
    const CUSTOMER: &str = "0190b8f6-0000-7000-8000-000000000001";
    const COMMAND: &str = "0190b8f6-0000-7000-8000-0000000000c1";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap()
    }

    fn order_id() -> OrderId {
        OrderId::parse(ORDER).unwrap()
    }

    fn customer_id() -> CustomerId {
        CustomerId::parse(CUSTOMER).unwrap()
    }

    fn no_options() -> CommandOptions {
        CommandOptions {
            command_id: None,
            expected_version: None,
        }
    }

    /// The violations as `(field, description)` pairs, in the order they were found.
    fn violations<T: Debug>(result: Result<T, Vec<FieldViolation>>) -> Vec<(String, String)> {
        result
            .unwrap_err()
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    fn fields<T: Debug>(result: Result<T, Vec<FieldViolation>>) -> Vec<String> {
        violations(result).into_iter().map(|(f, _)| f).collect()
    }

    fn pair(field: &str, description: &str) -> (String, String) {
        (field.to_owned(), description.to_owned())
    }

    fn margherita() -> pb::OrderItem {
        pb::OrderItem {
            name: "Margherita".into(),
            size: pb::PizzaSize::Large.into(),
            quantity: 2,
            unit_price_cents: 1299,
        }
    }

    fn place(items: Vec<pb::OrderItem>) -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            order_id: ORDER.into(),
            customer_id: CUSTOMER.into(),
            items,
            ..Default::default()
        }
    }

    /// A ConfirmOrder request with the given timestamp parts; the Timestamp type is reached through
    /// the field so these tests need no direct prost-types dependency.
    fn confirm(estimated_delivery: Option<(i64, i32)>) -> pb::ConfirmOrderRequest {
        let mut r = pb::ConfirmOrderRequest {
            order_id: ORDER.into(),
            kitchen_notes: "  extra basil ".into(),
            ..Default::default()
        };
        if let Some((seconds, nanos)) = estimated_delivery {
            let mut timestamp = r.estimated_delivery.take().unwrap_or_default();
            timestamp.seconds = seconds;
            timestamp.nanos = nanos;
            r.estimated_delivery = Some(timestamp);
        }
        r
    }

    fn in_minutes(minutes: i64) -> Option<(i64, i32)> {
        Some(((now() + Duration::minutes(minutes)).timestamp(), 0))
    }

    #[test]
    fn register_customer_converts() {
        let r = pb::RegisterCustomerRequest {
            command_id: COMMAND.into(),
            expected_version: Some(0),
            customer_id: CUSTOMER.into(),
            name: " Ada Lovelace ".into(),
            email: "ada@example.com".into(),
        };
        let converted = register_customer(&r, now()).unwrap();
        assert_eq!(
            converted,
            Converted {
                options: CommandOptions {
                    command_id: Some(CommandId::parse(COMMAND).unwrap()),
                    expected_version: Some(0),
                },
                id: customer_id(),
                command: CustomerCommand::RegisterCustomer {
                    customer_id: customer_id(),
                    name: CustomerName::parse("Ada Lovelace").unwrap(),
                    email: Email::parse("ada@example.com").unwrap(),
                    registered_at: now(),
                },
            }
        );
    }

    #[test]
    fn register_customer_without_id_gets_a_new_v7_id() {
        let r = pb::RegisterCustomerRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            ..Default::default()
        };
        let converted = register_customer(&r, now()).unwrap();
        assert_eq!(converted.id.as_uuid().get_version_num(), 7);
        assert!(matches!(
            converted.command,
            CustomerCommand::RegisterCustomer { customer_id, .. } if customer_id == converted.id
        ));
    }

    #[test]
    fn change_customer_email_converts() {
        let r = pb::ChangeCustomerEmailRequest {
            customer_id: CUSTOMER.into(),
            email: "ada@example.org".into(),
            ..Default::default()
        };
        assert_eq!(
            change_customer_email(&r, now()).unwrap(),
            Converted {
                options: no_options(),
                id: customer_id(),
                command: CustomerCommand::ChangeCustomerEmail {
                    email: Email::parse("ada@example.org").unwrap(),
                    at: now(),
                },
            }
        );
    }

    #[test]
    fn rename_customer_converts() {
        let r = pb::RenameCustomerRequest {
            customer_id: CUSTOMER.into(),
            name: "Ada King".into(),
            ..Default::default()
        };
        assert_eq!(
            rename_customer(&r, now()).unwrap(),
            Converted {
                options: no_options(),
                id: customer_id(),
                command: CustomerCommand::RenameCustomer {
                    name: CustomerName::parse("Ada King").unwrap(),
                    at: now(),
                },
            }
        );
    }

    #[test]
    fn place_order_converts_and_returns_the_customer() {
        let (converted, customer) = place_order(&place(vec![margherita()]), now()).unwrap();
        let items = OrderLines::new(vec![OrderLine {
            name: ItemName::parse("Margherita").unwrap(),
            size: PizzaSize::Large,
            quantity: Quantity::new(2).unwrap(),
            unit_price: Money::positive_from_cents(1299).unwrap(),
        }])
        .unwrap();
        assert_eq!(customer, customer_id());
        assert_eq!(
            converted,
            Converted {
                options: no_options(),
                id: order_id(),
                command: OrderCommand::PlaceOrder {
                    order_id: order_id(),
                    customer_id: customer_id(),
                    items,
                    placed_at: now(),
                },
            }
        );
    }

    #[test]
    fn place_order_without_order_id_gets_a_new_id_but_needs_a_customer() {
        let mut r = place(vec![margherita()]);
        r.order_id.clear();
        let (converted, _) = place_order(&r, now()).unwrap();
        assert_ne!(converted.id, order_id());

        r.customer_id.clear();
        assert_eq!(
            violations(place_order(&r, now())),
            vec![pair("customer_id", "must not be empty")]
        );
    }

    #[test]
    fn confirm_order_converts() {
        let r = confirm(in_minutes(45));
        assert_eq!(
            confirm_order(&r, now()).unwrap(),
            Converted {
                options: no_options(),
                id: order_id(),
                command: OrderCommand::ConfirmOrder {
                    estimated_delivery: now() + Duration::minutes(45),
                    kitchen_notes: KitchenNotes::parse("extra basil").unwrap(),
                    confirmed_at: now(),
                },
            }
        );
    }

    #[test]
    fn process_payment_converts_including_a_zero_amount() {
        let r = pb::ProcessPaymentRequest {
            order_id: ORDER.into(),
            method: pb::PaymentMethod::Cash.into(),
            amount_cents: 0,
            payment_reference: String::new(),
            ..Default::default()
        };
        assert_eq!(
            process_payment(&r, now()).unwrap(),
            Converted {
                options: no_options(),
                id: order_id(),
                command: OrderCommand::ProcessPayment {
                    method: PaymentMethod::Cash,
                    amount: Money::ZERO,
                    reference: PaymentReference::parse("").unwrap(),
                    paid_at: now(),
                },
            }
        );
    }

    #[test]
    fn apply_discount_converts() {
        let r = pb::ApplyDiscountRequest {
            order_id: ORDER.into(),
            code: "welcome10".into(),
            amount_cents: 500,
            ..Default::default()
        };
        assert_eq!(
            apply_discount(&r, now()).unwrap(),
            Converted {
                options: no_options(),
                id: order_id(),
                command: OrderCommand::ApplyDiscount {
                    code: DiscountCode::parse("WELCOME10").unwrap(),
                    amount: Money::positive_from_cents(500).unwrap(),
                    applied_at: now(),
                },
            }
        );
    }

    #[test]
    fn status_commands_convert() {
        let ready = pb::MarkOrderReadyRequest {
            order_id: ORDER.into(),
            ..Default::default()
        };
        assert_eq!(
            mark_order_ready(&ready, now()).unwrap().command,
            OrderCommand::MarkReady { at: now() }
        );

        let out = pb::SendOutForDeliveryRequest {
            order_id: ORDER.into(),
            driver_name: "Luigi".into(),
            ..Default::default()
        };
        assert_eq!(
            send_out_for_delivery(&out, now()).unwrap().command,
            OrderCommand::SendOutForDelivery {
                driver_name: DriverName::parse("Luigi").unwrap(),
                at: now(),
            }
        );

        let delivered = pb::MarkOrderDeliveredRequest {
            order_id: ORDER.into(),
            ..Default::default()
        };
        assert_eq!(
            mark_order_delivered(&delivered, now()).unwrap().command,
            OrderCommand::MarkDelivered { at: now() }
        );

        let cancel = pb::CancelOrderRequest {
            order_id: ORDER.into(),
            reason: "customer called".into(),
            ..Default::default()
        };
        assert_eq!(
            cancel_order(&cancel, now()).unwrap(),
            Converted {
                options: no_options(),
                id: order_id(),
                command: OrderCommand::CancelOrder {
                    reason: CancellationReason::parse("customer called").unwrap(),
                    at: now(),
                },
            }
        );
    }

    #[test]
    fn an_empty_order_id_is_a_violation() {
        let r = pb::MarkOrderReadyRequest::default();
        assert_eq!(
            violations(mark_order_ready(&r, now())),
            vec![pair("order_id", "must not be empty")]
        );
    }

    #[test]
    fn a_command_id_must_be_a_uuid() {
        let r = pb::MarkOrderDeliveredRequest {
            command_id: "retry-1".into(),
            order_id: "order-1".into(),
            ..Default::default()
        };
        assert_eq!(
            violations(mark_order_delivered(&r, now())),
            vec![
                pair("command_id", "must be a UUID"),
                pair("order_id", "must be a UUID"),
            ]
        );
    }

    #[test]
    fn every_invalid_item_field_is_reported_with_its_path() {
        let r = place(vec![
            margherita(),
            pb::OrderItem {
                name: "  ".into(),
                size: pb::PizzaSize::Unspecified.into(),
                quantity: 0,
                unit_price_cents: 0,
            },
            pb::OrderItem {
                size: 99,
                quantity: 21,
                unit_price_cents: Money::MAX_INPUT_CENTS + 1,
                ..margherita()
            },
        ]);
        assert_eq!(
            fields(place_order(&r, now())),
            vec![
                "items[1].name",
                "items[1].size",
                "items[1].quantity",
                "items[1].unit_price_cents",
                "items[2].size",
                "items[2].quantity",
                "items[2].unit_price_cents",
            ]
        );
    }

    #[test]
    fn items_must_number_one_to_fifty() {
        assert_eq!(
            violations(place_order(&place(vec![]), now())),
            vec![pair("items", "must not be empty")]
        );
        assert!(place_order(&place(vec![margherita(); 50]), now()).is_ok());
        assert_eq!(
            violations(place_order(&place(vec![margherita(); 51]), now())),
            vec![pair("items", "must contain at most 50 items")]
        );
        // Too many lines are refused as a whole, without a violation per bad line.
        let bad = pb::OrderItem::default();
        assert_eq!(
            fields(place_order(&place(vec![bad; 51]), now())),
            vec!["items"]
        );
    }

    #[test]
    fn estimated_delivery_is_required_and_must_be_in_the_future() {
        assert_eq!(
            violations(confirm_order(&confirm(None), now())),
            vec![pair("estimated_delivery", "must be specified")]
        );
        for past in [in_minutes(-1), in_minutes(0)] {
            assert_eq!(
                violations(confirm_order(&confirm(past), now())),
                vec![pair(
                    "estimated_delivery",
                    "must be later than the current time"
                )]
            );
        }
    }

    #[test]
    fn estimated_delivery_parts_outside_the_timestamp_spec_are_refused() {
        let seconds = (now() + Duration::hours(1)).timestamp();
        for nanos in [-1, 1_000_000_000, i32::MAX] {
            assert_eq!(
                fields(confirm_order(&confirm(Some((seconds, nanos))), now())),
                vec!["estimated_delivery.nanos"],
                "{nanos}"
            );
        }
        for seconds in [i64::MAX, i64::MIN, 253_402_300_800] {
            assert_eq!(
                fields(confirm_order(&confirm(Some((seconds, 0))), now())),
                vec!["estimated_delivery.seconds"],
                "{seconds}"
            );
        }
        assert!(confirm_order(&confirm(Some((seconds, 999_999_999))), now()).is_ok());
    }

    #[test]
    fn unspecified_and_unknown_enums_are_refused() {
        let mut r = place(vec![pb::OrderItem {
            size: pb::PizzaSize::Unspecified.into(),
            ..margherita()
        }]);
        assert_eq!(
            violations(place_order(&r, now())),
            vec![pair("items[0].size", "must be specified")]
        );
        if let Some(item) = r.items.first_mut() {
            item.size = 7;
        }
        assert_eq!(
            violations(place_order(&r, now())),
            vec![pair("items[0].size", "unknown value 7")]
        );

        let mut payment = pb::ProcessPaymentRequest {
            order_id: ORDER.into(),
            method: pb::PaymentMethod::Unspecified.into(),
            amount_cents: 100,
            ..Default::default()
        };
        assert_eq!(
            violations(process_payment(&payment, now())),
            vec![pair("method", "must be specified")]
        );
        payment.method = -3;
        assert_eq!(
            violations(process_payment(&payment, now())),
            vec![pair("method", "unknown value -3")]
        );
    }

    #[test]
    fn all_violations_of_a_request_are_collected() {
        let r = pb::ProcessPaymentRequest {
            command_id: "x".into(),
            method: pb::PaymentMethod::Unspecified.into(),
            amount_cents: -1,
            payment_reference: "r".repeat(65),
            ..Default::default()
        };
        assert_eq!(
            fields(process_payment(&r, now())),
            vec![
                "command_id",
                "order_id",
                "method",
                "amount_cents",
                "payment_reference"
            ]
        );

        let discount = pb::ApplyDiscountRequest {
            order_id: ORDER.into(),
            code: "10%OFF".into(),
            amount_cents: 0,
            ..Default::default()
        };
        assert_eq!(
            fields(apply_discount(&discount, now())),
            vec!["code", "amount_cents"]
        );
    }

    #[test]
    fn a_nul_byte_in_a_name_is_refused() {
        let r = pb::RegisterCustomerRequest {
            name: "Ada\0Lovelace".into(),
            email: "ada@example.com".into(),
            ..Default::default()
        };
        assert_eq!(
            violations(register_customer(&r, now())),
            vec![pair("name", "must not contain control characters")]
        );

        let item = pb::OrderItem {
            name: "Marg\0herita".into(),
            ..margherita()
        };
        assert_eq!(
            fields(place_order(&place(vec![item]), now())),
            vec!["items[0].name"]
        );
    }
}
