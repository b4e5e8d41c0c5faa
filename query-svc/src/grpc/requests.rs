//! Every QueryService request parsed into the query it asks, with `TryFrom<&pb::...>`: each
//! field is checked and every violation collected (an `INVALID_ARGUMENT` with all of them), as
//! command-svc parses its commands. Handlers take the parsed query and never look at raw fields.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDate, Utc};
use shared::{
    grpc::FieldViolation,
    proto::v1::{self as pb, get_order_as_of_request::AsOf as PbAsOf},
};
use uuid::Uuid;

use crate::{
    projections::read_model::order_view::Status as OrderStatus,
    store::queries::{AsOf, OrderFilter},
};

/// The longest date range GetSalesAnalytics answers.
const MAX_ANALYTICS_DAYS: i64 = 366;

type Violations = Vec<FieldViolation>;

/// GetOrder and GetOrderTimeline: one order.
#[derive(Debug, Clone, Copy)]
pub struct OrderQuery {
    pub order_id: Uuid,
    pub min_position: u64,
}

impl TryFrom<&pb::GetOrderRequest> for OrderQuery {
    type Error = Violations;

    fn try_from(request: &pb::GetOrderRequest) -> Result<Self, Violations> {
        Ok(Self {
            order_id: required_uuid(&request.order_id, "order_id")?,
            min_position: request.min_position,
        })
    }
}

impl TryFrom<&pb::GetOrderTimelineRequest> for OrderQuery {
    type Error = Violations;

    fn try_from(request: &pb::GetOrderTimelineRequest) -> Result<Self, Violations> {
        Ok(Self {
            order_id: required_uuid(&request.order_id, "order_id")?,
            min_position: request.min_position,
        })
    }
}

/// GetCustomer.
#[derive(Debug, Clone, Copy)]
pub struct CustomerQuery {
    pub customer_id: Uuid,
    pub min_position: u64,
}

impl TryFrom<&pb::GetCustomerRequest> for CustomerQuery {
    type Error = Violations;

    fn try_from(request: &pb::GetCustomerRequest) -> Result<Self, Violations> {
        Ok(Self {
            customer_id: required_uuid(&request.customer_id, "customer_id")?,
            min_position: request.min_position,
        })
    }
}

/// GetOrderAsOf.
#[derive(Debug, Clone, Copy)]
pub struct OrderAsOfQuery {
    pub order_id: Uuid,
    pub as_of: AsOf,
    pub min_position: u64,
}

impl TryFrom<&pb::GetOrderAsOfRequest> for OrderAsOfQuery {
    type Error = Violations;

    fn try_from(request: &pb::GetOrderAsOfRequest) -> Result<Self, Violations> {
        let mut violations = Vec::new();
        let order_id = uuid_field(&request.order_id, "order_id", &mut violations);
        let as_of = match &request.as_of {
            Some(PbAsOf::Version(version)) => {
                Some(AsOf::Version(i64::try_from(*version).unwrap_or(i64::MAX)))
            }
            Some(PbAsOf::At(at)) => match time(at) {
                Some(at) => Some(AsOf::Time(at)),
                None => {
                    violations.push(FieldViolation::new("at", "is not a valid timestamp"));
                    None
                }
            },
            None => {
                violations.push(FieldViolation::new("as_of", "set version or at"));
                None
            }
        };
        match (order_id, as_of) {
            (Some(order_id), Some(as_of)) => Ok(Self {
                order_id,
                as_of,
                min_position: request.min_position,
            }),
            _ => Err(violations),
        }
    }
}

/// ListOrders: the filters, where the page starts, and its size.
#[derive(Debug, Clone)]
pub struct OrderListQuery {
    pub filter: OrderFilter,
    /// Identifies the filters, so that a page token is only used with the ones it was issued
    /// for.
    pub fingerprint: String,
    pub page_size: u32,
    pub min_position: u64,
}

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;

impl TryFrom<&pb::ListOrdersRequest> for OrderListQuery {
    type Error = Violations;

    fn try_from(request: &pb::ListOrdersRequest) -> Result<Self, Violations> {
        let mut violations = Vec::new();
        let mut filter = OrderFilter::default();
        if !request.customer_id.is_empty() {
            filter.customer_id = uuid_field(&request.customer_id, "customer_id", &mut violations);
        }
        match pb::OrderStatus::try_from(request.status) {
            Ok(pb::OrderStatus::Unspecified) => {}
            Ok(status) => filter.status = OrderStatus::from_proto(status).map(OrderStatus::as_str),
            Err(_) => violations.push(FieldViolation::new("status", "unknown order status")),
        }
        filter.placed_from = request.placed_from.as_ref().and_then(time);
        filter.placed_to = request.placed_to.as_ref().and_then(time);
        if let (Some(from), Some(to)) = (filter.placed_from, filter.placed_to)
            && to <= from
        {
            violations.push(FieldViolation::new(
                "placed_to",
                "must be after placed_from",
            ));
        }
        let fingerprint = filters_fingerprint(request);
        if !request.page_token.is_empty() {
            match PageToken::decode(&request.page_token) {
                Some(token) if token.filters == fingerprint => {
                    filter.after = Some((token.placed_at, token.order_id));
                }
                Some(_) => violations.push(FieldViolation::new(
                    "page_token",
                    "was issued for other filters",
                )),
                None => violations.push(FieldViolation::new(
                    "page_token",
                    "is not a valid page token",
                )),
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            filter,
            fingerprint,
            page_size: match request.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE),
            },
            min_position: request.min_position,
        })
    }
}

/// The page token: the last order of the page plus a fingerprint of the filters it was
/// issued for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct PageToken {
    pub placed_at: DateTime<Utc>,
    pub order_id: Uuid,
    pub filters: String,
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn filters_fingerprint(request: &pb::ListOrdersRequest) -> String {
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(String::new(), |t| format!("{}.{}", t.seconds, t.nanos))
    };
    format!(
        "{}|{}|{}|{}",
        request.customer_id,
        request.status,
        ts(&request.placed_from),
        ts(&request.placed_to)
    )
}

/// GetSalesAnalytics.
#[derive(Debug, Clone, Copy)]
pub struct SalesQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub top_items_limit: u32,
    pub min_position: u64,
}

const DEFAULT_TOP_ITEMS: u32 = 10;
const MAX_TOP_ITEMS: u32 = 100;

impl TryFrom<&pb::GetSalesAnalyticsRequest> for SalesQuery {
    type Error = Violations;

    fn try_from(request: &pb::GetSalesAnalyticsRequest) -> Result<Self, Violations> {
        let mut violations = Vec::new();
        let from = parse_date(&request.from_date, "from_date", &mut violations);
        let to = parse_date(&request.to_date, "to_date", &mut violations);
        let (Some(from), Some(to)) = (from, to) else {
            return Err(violations);
        };
        if from > to {
            return Err(vec![FieldViolation::new(
                "to_date",
                "must not be before from_date",
            )]);
        }
        if (to - from).num_days() >= MAX_ANALYTICS_DAYS {
            return Err(vec![FieldViolation::new(
                "to_date",
                "the range is longer than 366 days",
            )]);
        }
        Ok(Self {
            from,
            to,
            top_items_limit: match request.top_items_limit {
                0 => DEFAULT_TOP_ITEMS,
                n => n.min(MAX_TOP_ITEMS),
            },
            min_position: request.min_position,
        })
    }
}

/// WatchOrders.
#[derive(Debug, Clone, Copy)]
pub struct WatchQuery {
    pub customer_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub from_position: u64,
    pub min_position: u64,
}

impl TryFrom<&pb::WatchOrdersRequest> for WatchQuery {
    type Error = Violations;

    fn try_from(request: &pb::WatchOrdersRequest) -> Result<Self, Violations> {
        let mut violations = Vec::new();
        let customer_id = (!request.customer_id.is_empty())
            .then(|| uuid_field(&request.customer_id, "customer_id", &mut violations))
            .flatten();
        let order_id = (!request.order_id.is_empty())
            .then(|| uuid_field(&request.order_id, "order_id", &mut violations))
            .flatten();
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            customer_id,
            order_id,
            from_position: request.from_position,
            min_position: request.min_position,
        })
    }
}

fn uuid_field(raw: &str, field: &str, violations: &mut Violations) -> Option<Uuid> {
    match Uuid::try_parse(raw) {
        Ok(id) => Some(id),
        Err(_) => {
            violations.push(FieldViolation::new(field, "must be a UUID"));
            None
        }
    }
}

fn required_uuid(raw: &str, field: &str) -> Result<Uuid, Violations> {
    let mut violations = Vec::new();
    uuid_field(raw, field, &mut violations).ok_or(violations)
}

fn time(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn parse_date(raw: &str, field: &str, violations: &mut Violations) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        Ok(date) => Some(date),
        Err(_) => {
            violations.push(FieldViolation::new(field, "must be a date YYYY-MM-DD"));
            None
        }
    }
}
