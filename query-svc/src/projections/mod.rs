//! The pizzeria's read models, each a [`crate::runtime::Projection`] registered by name at
//! start-up ([`registry`]). Pure folds from events to rows, and the SQL that loads and writes
//! their tables; the runtime does everything else.
//!
//! - [`event`]: a pizzeria event as the projections see it, decoded and upcast.
//! - [`read_model`]: orders (views and history), customers and sales analytics.
//! - [`order_timeline`]: a readable line per order event.

pub mod event;
pub mod order_timeline;
pub mod read_model;

use std::sync::Arc;

use crate::runtime::Registry;
use order_timeline::OrderTimeline;
use read_model::ReadModel;

/// Every projection of the pizzeria, and the read model (whose changes WatchOrders follows).
pub fn registry() -> (Registry, Arc<ReadModel>) {
    let read_model = Arc::new(ReadModel::default());
    let registry = Registry::new()
        .with(read_model.clone())
        .with(Arc::new(OrderTimeline));
    (registry, read_model)
}
