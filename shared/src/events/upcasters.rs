//! The pizzeria's upcasters: how older stored shapes of its events read as the current ones.
//! Each event family names its table in its `domain_events!` declaration.

use serde_json::{Map, Value};

use crate::upcasting::{Step, Upcasters};

/// Order events' steps.
pub const ORDER_UPCASTERS: Upcasters = Upcasters::new(&[Step {
    event_type: "OrderPlaced",
    from_version: 1,
    apply: order_placed_v1_to_v2,
}]);

/// Customer events have never changed shape.
pub const CUSTOMER_UPCASTERS: Upcasters = Upcasters::NONE;

/// Training plan events have never changed shape.
pub const TRAINING_PLAN_UPCASTERS: Upcasters = Upcasters::NONE;

/// `OrderPlaced` v1 is what the Python prototype stored:
/// `{order_id, customer_id, items: [{name, quantity, price: "12.99"}], total_amount: "25.98", placed_at}`.
/// Prices were decimal strings (sometimes JSON numbers) and every pizza was one size.
/// v2 keeps money in integer cents and records a size per line:
/// `{order_id, customer_id, items: [{name, size, quantity, unit_price_cents}], subtotal_cents, placed_at}`.
/// The prototype sold only medium pizzas, so old lines become `medium`.
fn order_placed_v1_to_v2(payload: Value) -> Result<Value, String> {
    let Value::Object(mut v1) = payload else {
        return Err("payload is not an object".into());
    };
    let items = match v1.remove("items") {
        Some(Value::Array(items)) => items,
        _ => return Err("items is missing or not a list".into()),
    };
    let items = items
        .into_iter()
        .map(|item| {
            let Value::Object(mut item) = item else {
                return Err("an item is not an object".to_owned());
            };
            let price = item.remove("price").ok_or("an item has no price")?;
            let mut line = Map::new();
            line.insert("name".into(), item.remove("name").unwrap_or(Value::Null));
            line.insert("size".into(), Value::from("medium"));
            line.insert(
                "quantity".into(),
                item.remove("quantity").unwrap_or(Value::from(1)),
            );
            line.insert("unit_price_cents".into(), Value::from(cents(&price)?));
            Ok(Value::Object(line))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total = v1.remove("total_amount").ok_or("total_amount is missing")?;

    let mut v2 = Map::new();
    for key in ["order_id", "customer_id", "placed_at"] {
        v2.insert(key.into(), v1.remove(key).unwrap_or(Value::Null));
    }
    v2.insert("items".into(), Value::Array(items));
    v2.insert("subtotal_cents".into(), Value::from(cents(&total)?));
    Ok(Value::Object(v2))
}

/// Parses a decimal amount (`"12.99"`, `"12.5"`, `12`, `12.5`) into exact cents without floating
/// point. More than two decimals cannot be represented in cents and is refused, not rounded.
fn cents(amount: &Value) -> Result<i64, String> {
    let text = match amount {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("amount {other} is not a number")),
    };
    let bad = || format!("amount {text:?} is not a decimal with at most two places");
    let (units, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 2
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let units: i64 = units.parse().map_err(|_| bad())?;
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    units
        .checked_mul(100)
        .and_then(|c| c.checked_add(fraction))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        events::{DomainEvent, OrderEvent},
        upcasting::UpcastError,
    };

    /// A row exactly as the prototype stored it (event_type `OrderPlaced`, schema_version 1).
    const STORED_V1: &str = r#"{
        "order_id": "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e",
        "customer_id": "0190b8f6-0000-7000-8000-000000000001",
        "items": [
            {"name": "Margherita", "quantity": 2, "price": "12.99"},
            {"name": "Quattro Formaggi", "quantity": 1, "price": 14.5}
        ],
        "total_amount": "40.48",
        "placed_at": "2025-06-01T18:30:00Z"
    }"#;

    #[test]
    fn order_placed_v1_row_decodes_as_v2() {
        let stored: Value = serde_json::from_str(STORED_V1).unwrap();
        let OrderEvent::Placed(placed) = OrderEvent::decode("OrderPlaced", 1, stored).unwrap()
        else {
            panic!("decoded to another event type");
        };
        assert_eq!(placed.subtotal.cents(), 4048);
        let lines = placed.items.as_slice();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].name.as_str(), "Margherita");
        assert_eq!(lines[0].unit_price.cents(), 1299);
        assert_eq!(lines[0].quantity.get(), 2);
        assert_eq!(lines[1].unit_price.cents(), 1450);
        assert!(
            lines
                .iter()
                .all(|l| l.size == crate::values::PizzaSize::Medium)
        );
        assert_eq!(placed.subtotal, placed.items.subtotal());
    }

    #[test]
    fn upcast_then_decode_equals_decode_of_the_current_shape() {
        let v2 = ORDER_UPCASTERS
            .upcast(
                "OrderPlaced",
                1,
                2,
                serde_json::from_str(STORED_V1).unwrap(),
            )
            .unwrap();
        assert_eq!(
            v2,
            json!({
                "order_id": "0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e",
                "customer_id": "0190b8f6-0000-7000-8000-000000000001",
                "items": [
                    {"name": "Margherita", "size": "medium", "quantity": 2, "unit_price_cents": 1299},
                    {"name": "Quattro Formaggi", "size": "medium", "quantity": 1, "unit_price_cents": 1450}
                ],
                "subtotal_cents": 4048,
                "placed_at": "2025-06-01T18:30:00Z"
            })
        );
        let from_v1 =
            OrderEvent::decode("OrderPlaced", 1, serde_json::from_str(STORED_V1).unwrap());
        let from_v2 = OrderEvent::decode("OrderPlaced", 2, v2).unwrap();
        assert_eq!(from_v1.unwrap(), from_v2);
        // And the current shape round-trips through its own encoding.
        let encoded = from_v2.encode();
        assert_eq!(encoded.schema_version, 2);
        assert_eq!(
            OrderEvent::decode(encoded.event_type, 2, encoded.payload).unwrap(),
            from_v2
        );
    }

    #[test]
    fn amounts_parse_exactly_or_not_at_all() {
        assert_eq!(cents(&json!("12.99")), Ok(1299));
        assert_eq!(cents(&json!("12.5")), Ok(1250));
        assert_eq!(cents(&json!("7")), Ok(700));
        assert_eq!(cents(&json!(0.1)), Ok(10));
        assert!(cents(&json!("12.999")).is_err());
        assert!(cents(&json!("-3.00")).is_err());
        assert!(cents(&json!("1e3")).is_err());
        assert!(cents(&json!(null)).is_err());
    }

    #[test]
    fn order_placed_unknown_versions_and_malformed_payloads_are_errors_not_panics() {
        assert!(matches!(
            ORDER_UPCASTERS.upcast("OrderPlaced", 3, 2, json!({})),
            Err(UpcastError::UnknownVersion { .. })
        ));
        assert!(matches!(
            ORDER_UPCASTERS.upcast("OrderPlaced", 0, 2, json!({})),
            Err(UpcastError::UnknownVersion { .. })
        ));
        assert!(matches!(
            ORDER_UPCASTERS.upcast("OrderConfirmed", 1, 2, json!({})),
            Err(UpcastError::MissingStep { .. })
        ));
        assert!(matches!(
            ORDER_UPCASTERS.upcast("OrderPlaced", 1, 2, json!({"items": "none"})),
            Err(UpcastError::Malformed { .. })
        ));
    }
}
