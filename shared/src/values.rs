//! Validated value types carried by commands and events: ids, money, names and codes.
//!
//! Constructors parse untrusted input and refuse anything invalid ("parse, don't validate").
//! Deserialization does *not* re-validate: a stored event is a fact, and it must still load after a
//! rule is tightened. Only new input meets the current rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a raw input value was refused. The gRPC boundary adds the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("is not a valid email address")]
    InvalidEmail,
    #[error("must be a UUID")]
    InvalidUuid,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("may only contain letters A-Z, digits, '-' and '_'")]
    InvalidDiscountCode,
    #[error("must be specified")]
    Unspecified,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// A new time-ordered (v7) id. Only the application layer calls this: domain logic
            /// receives ids inside commands, so it stays deterministic.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the canonical text form of a UUID.
            pub fn parse(raw: &str) -> Result<Self, ValueError> {
                if raw.is_empty() {
                    return Err(ValueError::Empty);
                }
                Uuid::try_parse(raw).map(Self).map_err(|_| ValueError::InvalidUuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// Identifies an order; its stream is `order-<id>`.
    OrderId
);
uuid_id!(
    /// Identifies a customer; its stream is `customer-<id>`.
    CustomerId
);
uuid_id!(
    /// Identifies a training plan; its stream is `training_plan-<id>`.
    PlanId
);
uuid_id!(
    /// The athlete a training plan is for.
    AthleteId
);
uuid_id!(
    /// Identifies a training block within its plan.
    BlockId
);
uuid_id!(
    /// Identifies a workout within its plan.
    WorkoutId
);
uuid_id!(
    /// Identifies one stored event; the relay publishes it as `Es-Event-Id`.
    EventId
);
uuid_id!(
    /// A client-chosen idempotency key: the same command id returns the stored reply.
    CommandId
);
uuid_id!(
    /// The tenant that owns a stream. Every row carries one.
    TenantId
);

/// An amount of money in integer cents. Never negative; arithmetic is checked.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);
    /// Upper bound for any single amount taken from input: ten million cents (100,000.00).
    pub const MAX_INPUT_CENTS: i64 = 10_000_000;

    /// An amount from input: `0..=MAX_INPUT_CENTS` cents.
    pub fn from_cents(cents: i64) -> Result<Self, ValueError> {
        if (0..=Self::MAX_INPUT_CENTS).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(ValueError::OutOfRange {
                min: 0,
                max: Self::MAX_INPUT_CENTS,
            })
        }
    }

    /// An amount from input that must be at least one cent.
    pub fn positive_from_cents(cents: i64) -> Result<Self, ValueError> {
        if (1..=Self::MAX_INPUT_CENTS).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(ValueError::OutOfRange {
                min: 1,
                max: Self::MAX_INPUT_CENTS,
            })
        }
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, or `None` if the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).filter(|c| *c >= 0).map(Money)
    }

    /// `self + other`, capped at the largest amount. For folding facts, which must not fail.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// `self - other`, floored at zero. For folding facts, which must not fail.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0).max(0))
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn checked_mul(self, quantity: u32) -> Option<Money> {
        self.0.checked_mul(i64::from(quantity)).map(Money)
    }
}

impl fmt::Display for Money {
    /// Formats as units and two-digit cents, e.g. `25.98`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Checks length (in characters) and refuses control characters, including NUL, which Postgres
/// `text` cannot store.
fn bounded_text(raw: &str, min: usize, max: usize) -> Result<String, ValueError> {
    let text = raw.trim();
    let length = text.chars().count();
    if length < min {
        return Err(ValueError::Empty);
    }
    if length > max {
        return Err(ValueError::TooLong { max });
    }
    if text.chars().any(char::is_control) {
        return Err(ValueError::ControlCharacter);
    }
    Ok(text.to_owned())
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Shortest accepted length, in characters, after trimming.
            pub const MIN_CHARS: usize = $min;
            /// Longest accepted length, in characters, after trimming.
            pub const MAX_CHARS: usize = $max;

            /// Trims surrounding whitespace, then checks length and characters.
            pub fn parse(raw: &str) -> Result<Self, ValueError> {
                bounded_text(raw, $min, $max).map(Self)
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// A customer's display name.
    CustomerName, 1, 100
);
bounded_text!(
    /// The name of a menu item, e.g. "Margherita".
    ItemName, 1, 80
);
bounded_text!(
    /// Free-text notes for the kitchen; may be empty.
    KitchenNotes, 0, 500
);
bounded_text!(
    /// Why an order was cancelled.
    CancellationReason, 1, 500
);
bounded_text!(
    /// Who takes the order out for delivery.
    DriverName, 1, 100
);
bounded_text!(
    /// The payment processor's reference for a payment; may be empty (cash).
    PaymentReference, 0, 64
);
bounded_text!(
    /// A training plan's name, e.g. "Spring marathon".
    PlanName, 1, 100
);
bounded_text!(
    /// A training block's name, e.g. "Base".
    BlockName, 1, 100
);
bounded_text!(
    /// What a training block works on, e.g. "aerobic endurance"; may be empty.
    BlockFocus, 0, 200
);
bounded_text!(
    /// Why a workout was skipped.
    SkipReason, 1, 500
);

/// An email address: trimmed, at most 254 characters, one `@` with a non-empty local part and a
/// dotted domain, no whitespace. Deliverability is not checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Longest accepted address (RFC 5321 path limit).
    pub const MAX_CHARS: usize = 254;

    /// Parses an address.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let text = bounded_text(raw, 1, Self::MAX_CHARS)?;
        let (local, domain) = text.split_once('@').ok_or(ValueError::InvalidEmail)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if local.is_empty() || !domain_ok || text.chars().any(char::is_whitespace) {
            return Err(ValueError::InvalidEmail);
        }
        Ok(Self(text))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A discount code: 1-32 of `A-Z 0-9 - _`, case-insensitive, kept upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiscountCode(String);

impl DiscountCode {
    /// Longest accepted code.
    pub const MAX_CHARS: usize = 32;

    /// Parses a code and upper-cases it, so `welcome10` and `WELCOME10` are the same code.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let code = bounded_text(raw, 1, Self::MAX_CHARS)?.to_ascii_uppercase();
        if code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            Ok(Self(code))
        } else {
            Err(ValueError::InvalidDiscountCode)
        }
    }

    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DiscountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many of one item: 1-20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    /// Most of one item per order line.
    pub const MAX: u32 = 20;

    /// Parses a quantity.
    pub fn new(quantity: u32) -> Result<Self, ValueError> {
        if (1..=Self::MAX).contains(&quantity) {
            Ok(Self(quantity))
        } else {
            Err(ValueError::OutOfRange {
                min: 1,
                max: i64::from(Self::MAX),
            })
        }
    }

    /// The count.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Pizza sizes on the menu. Stored names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PizzaSize {
    Small,
    Medium,
    Large,
    Family,
}

/// How an order was paid. Stored names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    Cash,
    Online,
}

impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaymentMethod::Card => "card",
            PaymentMethod::Cash => "cash",
            PaymentMethod::Online => "online",
        })
    }
}

/// One line of an order. `unit_price` is at least one cent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub name: ItemName,
    pub size: PizzaSize,
    pub quantity: Quantity,
    #[serde(rename = "unit_price_cents")]
    pub unit_price: Money,
}

impl OrderLine {
    /// `quantity × unit_price`. Cannot overflow within input limits (20 × 10⁷ cents).
    pub fn line_total(&self) -> Money {
        Money(
            self.unit_price
                .0
                .saturating_mul(i64::from(self.quantity.get())),
        )
    }
}

/// The lines of an order: 1 to `MAX_LINES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderLines(Vec<OrderLine>);

impl OrderLines {
    /// Most lines one order may have.
    pub const MAX_LINES: usize = 50;

    /// Accepts 1 to `MAX_LINES` lines.
    pub fn new(lines: Vec<OrderLine>) -> Result<Self, ValueError> {
        if lines.is_empty() {
            Err(ValueError::Empty)
        } else if lines.len() > Self::MAX_LINES {
            Err(ValueError::TooLong {
                max: Self::MAX_LINES,
            })
        } else {
            Ok(Self(lines))
        }
    }

    /// The lines, in the order given.
    pub fn as_slice(&self) -> &[OrderLine] {
        &self.0
    }

    /// Sum of the line totals. Within input limits (50 × 20 × 10⁷ cents) this fits easily.
    pub fn subtotal(&self) -> Money {
        self.0
            .iter()
            .map(OrderLine::line_total)
            .fold(Money::ZERO, Money::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(CustomerName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert_eq!(CustomerName::parse("   "), Err(ValueError::Empty));
        assert_eq!(
            CustomerName::parse(&"x".repeat(101)),
            Err(ValueError::TooLong { max: 100 })
        );
        // 100 multi-byte characters are 100 characters, not 200 bytes.
        assert!(CustomerName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(
            CustomerName::parse("Ada\0Lovelace"),
            Err(ValueError::ControlCharacter)
        );
        assert!(KitchenNotes::parse("").is_ok());
    }

    #[test]
    fn email_needs_local_part_and_dotted_domain() {
        assert!(Email::parse("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "ada@.com",
            "ada@example.",
            "a b@example.com",
            "a@b@example.com",
        ] {
            assert_eq!(Email::parse(bad), Err(ValueError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn discount_codes_are_upper_cased_and_restricted() {
        assert_eq!(
            DiscountCode::parse("welcome-10").unwrap().as_str(),
            "WELCOME-10"
        );
        assert_eq!(
            DiscountCode::parse("10%OFF"),
            Err(ValueError::InvalidDiscountCode)
        );
        assert_eq!(
            DiscountCode::parse("Ünï"),
            Err(ValueError::InvalidDiscountCode)
        );
    }

    #[test]
    fn money_never_goes_negative() {
        let five = Money::from_cents(500).unwrap();
        let three = Money::from_cents(300).unwrap();
        assert_eq!(five.checked_sub(three), Some(Money(200)));
        assert_eq!(three.checked_sub(five), None);
        assert!(Money::from_cents(-1).is_err());
        assert!(Money::positive_from_cents(0).is_err());
        assert_eq!(Money(2598).to_string(), "25.98");
        assert_eq!(Money(5).to_string(), "0.05");
    }

    #[test]
    fn ids_parse_canonical_uuids_only() {
        assert!(OrderId::parse("0190b8f6-3f2e-7c2a-9d1e-5f6a7b8c9d0e").is_ok());
        assert_eq!(OrderId::parse(""), Err(ValueError::Empty));
        assert_eq!(OrderId::parse("order-1"), Err(ValueError::InvalidUuid));
    }

    #[test]
    fn quantities_and_lines_are_bounded() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(21).is_err());
        let line = OrderLine {
            name: ItemName::parse("Margherita").unwrap(),
            size: PizzaSize::Large,
            quantity: Quantity::new(2).unwrap(),
            unit_price: Money::positive_from_cents(1299).unwrap(),
        };
        assert_eq!(OrderLines::new(vec![]), Err(ValueError::Empty));
        assert!(OrderLines::new(vec![line.clone(); 51]).is_err());
        let lines = OrderLines::new(vec![line.clone(), line]).unwrap();
        assert_eq!(lines.subtotal(), Money(5196));
    }
}
