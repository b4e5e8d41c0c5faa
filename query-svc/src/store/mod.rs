//! The read database: applying events to the read tables, and reading them.

// SQL both ways of applying (`apply`, one event; `apply_page`, a page) must share: how an
// order's change is added to the day's sales and to its customer's figures. Macros, so that
// `concat!` builds each statement at compile time. Defined before the modules that use them.

/// `ON CONFLICT` of an insert into `daily_sales AS d`: the change is added.
macro_rules! add_to_daily_sales {
    () => {
        " ON CONFLICT (tenant_id, day) DO UPDATE SET
             orders = d.orders + EXCLUDED.orders,
             confirmed = d.confirmed + EXCLUDED.confirmed,
             cancelled = d.cancelled + EXCLUDED.cancelled,
             delivered = d.delivered + EXCLUDED.delivered,
             gross_cents = d.gross_cents + EXCLUDED.gross_cents,
             discount_cents = d.discount_cents + EXCLUDED.discount_cents,
             paid_cents = d.paid_cents + EXCLUDED.paid_cents,
             refunded_cents = d.refunded_cents + EXCLUDED.refunded_cents,
             items_sold = d.items_sold + EXCLUDED.items_sold "
    };
}

/// The `SET` list of an insert into `customer_views AS c` that adds order figures: counts and
/// spend added, the latest order kept (ties to the one added), `last_updated` the latest.
macro_rules! add_customer_figures {
    () => {
        " order_count = c.order_count + EXCLUDED.order_count,
          cancelled_order_count = c.cancelled_order_count + EXCLUDED.cancelled_order_count,
          lifetime_spend_cents = c.lifetime_spend_cents + EXCLUDED.lifetime_spend_cents,
          last_order_id = CASE WHEN EXCLUDED.last_order_at IS NOT NULL
                                AND (c.last_order_at IS NULL
                                     OR EXCLUDED.last_order_at >= c.last_order_at)
                               THEN EXCLUDED.last_order_id ELSE c.last_order_id END,
          last_order_at = GREATEST(c.last_order_at, EXCLUDED.last_order_at),
          last_updated = GREATEST(c.last_updated, EXCLUDED.last_updated) "
    };
}

pub mod apply;
pub mod apply_page;
pub mod dead_letters;
pub mod generations;
pub mod queries;
pub mod watermark;

/// Embedded migrations of the read model, run at start-up under sqlx's advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
