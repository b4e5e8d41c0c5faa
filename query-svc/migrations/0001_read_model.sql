-- The read model of query-svc, in its own database. Everything here is derived from the event log
-- in command-svc's database and can be rebuilt from it; nothing here is a source of truth.
--
-- Exactly-once application: each batch of events is applied in one transaction together with
-- stream_progress (the last version applied per stream) and applied_events, and acknowledged to
-- JetStream only after COMMIT. A redelivered event finds its version already applied and is skipped.

-- Last applied version of every stream. An event at version <= last is a duplicate; at last + 1 it
-- is applied; above that, the missing versions are fetched from command-svc first.
CREATE TABLE stream_progress (
    tenant_id    uuid   NOT NULL,
    stream_id    text   NOT NULL,
    last_version bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream_id)
);

-- Global positions applied, for read-your-writes: a query with min_position = P waits until P is
-- here. (Positions are not applied in position order, so a single high-water mark cannot say it.)
CREATE TABLE applied_events (
    global_position bigint      PRIMARY KEY,
    applied_at      timestamptz NOT NULL DEFAULT now()
);

-- The projector's progress, for operators: the last event applied in commit order and when.
CREATE TABLE projector_state (
    id                    integer     PRIMARY KEY CHECK (id = 1),
    last_position         bigint      NOT NULL,
    last_transaction_id   bigint      NOT NULL,
    last_event_recorded_at timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_views (
    tenant_id             uuid        NOT NULL,
    customer_id           uuid        NOT NULL,
    name                  text        NOT NULL,
    email                 text        NOT NULL,
    order_count           integer     NOT NULL DEFAULT 0,
    cancelled_order_count integer     NOT NULL DEFAULT 0,
    lifetime_spend_cents  bigint      NOT NULL DEFAULT 0,
    last_order_id         uuid,
    last_order_at         timestamptz,
    registered_at         timestamptz,
    last_updated          timestamptz NOT NULL,
    -- Version of the customer's own stream; 0 while only order events have been seen.
    version               bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, customer_id)
);

-- The current view of every order. `state` is the folded view (projection::order_view::OrderState);
-- the columns beside it are copies for filtering, sorting and listing. The customer's name and
-- email are copied in and rewritten whenever the customer changes.
CREATE TABLE order_views (
    tenant_id      uuid        NOT NULL,
    order_id       uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    customer_name  text        NOT NULL DEFAULT '',
    customer_email text        NOT NULL DEFAULT '',
    status         text        NOT NULL,
    payment_status text        NOT NULL,
    item_count     integer     NOT NULL,
    total_cents    bigint      NOT NULL,
    placed_at      timestamptz NOT NULL,
    last_updated   timestamptz NOT NULL,
    version        bigint      NOT NULL,
    position       bigint      NOT NULL,
    state          jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);
-- ListOrders: newest first, ties by order id (keyset pagination), optionally per customer.
CREATE INDEX order_views_list ON order_views (tenant_id, placed_at DESC, order_id DESC);
CREATE INDEX order_views_by_customer ON order_views (tenant_id, customer_id, placed_at DESC, order_id DESC);

-- The order view after every version, for GetOrderAsOf (by version, or by when events occurred).
CREATE TABLE order_history (
    tenant_id   uuid        NOT NULL,
    order_id    uuid        NOT NULL,
    version     bigint      NOT NULL,
    occurred_at timestamptz NOT NULL,
    state       jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, order_id, version)
);

-- Every event of every order with a readable description and its metadata.
CREATE TABLE order_timeline (
    tenant_id       uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    version         bigint      NOT NULL,
    global_position bigint      NOT NULL,
    event_type      text        NOT NULL,
    description     text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL,
    actor           text        NOT NULL,
    command_id      text        NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    text        NOT NULL,
    details         jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, order_id, version)
);

-- Sales per UTC day of placement. Every order event adds the change of its order's contribution
-- (projection::analytics), so a later cancellation or refund lands on the day the order was placed.
CREATE TABLE daily_sales (
    tenant_id      uuid   NOT NULL,
    day            date   NOT NULL,
    orders         bigint NOT NULL DEFAULT 0,
    confirmed      bigint NOT NULL DEFAULT 0,
    cancelled      bigint NOT NULL DEFAULT 0,
    delivered      bigint NOT NULL DEFAULT 0,
    gross_cents    bigint NOT NULL DEFAULT 0,
    discount_cents bigint NOT NULL DEFAULT 0,
    paid_cents     bigint NOT NULL DEFAULT 0,
    refunded_cents bigint NOT NULL DEFAULT 0,
    items_sold     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

-- Pizzas sold per day and name (all sizes), for top items. Lines never change after placing.
CREATE TABLE daily_item_sales (
    tenant_id     uuid   NOT NULL,
    day           date   NOT NULL,
    name          text   NOT NULL,
    quantity      bigint NOT NULL DEFAULT 0,
    revenue_cents bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, name)
);

-- Events a projection could not apply after bounded retries. While a stream has an unresolved
-- dead letter, its later events are not applied (they are re-read from command-svc once the dead
-- letter is retried or skipped); other streams keep flowing.
CREATE TABLE dead_letters (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    global_position bigint      NOT NULL,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    record          bytea       NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'RETRIED', 'SKIPPED')),
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
CREATE UNIQUE INDEX dead_letters_one_pending_per_stream
    ON dead_letters (tenant_id, stream_id) WHERE status = 'PENDING';
