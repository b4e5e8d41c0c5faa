//! One readable line per order event: the order's audit trail.

use shared::events::OrderEvent;

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

/// What happened, in words.
pub fn describe(event: &OrderEvent) -> String {
    match event {
        OrderEvent::Placed(e) => {
            let lines: Vec<String> = e
                .items
                .as_slice()
                .iter()
                .map(|l| format!("{} x {} ({:?})", l.quantity.get(), l.name.as_str(), l.size))
                .collect();
            format!(
                "Order placed: {}; subtotal {}",
                lines.join(", "),
                money(e.subtotal.cents())
            )
        }
        OrderEvent::Confirmed(e) => format!(
            "Order confirmed by the kitchen; estimated delivery {}",
            e.estimated_delivery.format("%Y-%m-%d %H:%M UTC")
        ),
        OrderEvent::DiscountApplied(e) => format!(
            "Discount {} applied: -{}",
            e.code.as_str(),
            money(e.amount.cents())
        ),
        OrderEvent::PaymentProcessed(e) => {
            format!(
                "Payment of {} received by {}",
                money(e.amount.cents()),
                e.method
            )
        }
        OrderEvent::CookingStarted(_) => "Cooking started".to_owned(),
        OrderEvent::Ready(_) => "Order ready for delivery".to_owned(),
        OrderEvent::OutForDelivery(e) => {
            format!("Out for delivery with {}", e.driver_name.as_str())
        }
        OrderEvent::Delivered(_) => "Order delivered".to_owned(),
        OrderEvent::Cancelled(e) => format!("Order cancelled: {}", e.reason.as_str()),
        OrderEvent::PaymentRefunded(e) => format!("Refund of {} issued", money(e.amount.cents())),
    }
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn money_is_shown_with_two_decimals() {
        assert_eq!(money(2598), "25.98");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-500), "-5.00");
    }
}
