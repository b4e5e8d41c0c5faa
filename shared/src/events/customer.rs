//! Events of the `customer` aggregate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{domain_events, occurred_at};
use crate::values::{CustomerId, CustomerName, Email};

domain_events! {
    /// Everything that can happen to a customer. Type names are stable forever.
    pub enum CustomerEvent for "customer" upcast by (super::upcasters::CUSTOMER_UPCASTERS) {
        /// A new customer signed up.
        Registered(CustomerRegistered) = "CustomerRegistered" v 1,
        /// The customer's email address changed.
        EmailChanged(CustomerEmailChanged) = "CustomerEmailChanged" v 1,
        /// The customer's name changed.
        Renamed(CustomerRenamed) = "CustomerRenamed" v 1,
    }
}

occurred_at! {
    CustomerRegistered => registered_at,
    CustomerEmailChanged => changed_at,
    CustomerRenamed => renamed_at,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: CustomerId,
    pub name: CustomerName,
    pub email: Email,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerEmailChanged {
    pub email: Email,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRenamed {
    pub name: CustomerName,
    pub renamed_at: DateTime<Utc>,
}
