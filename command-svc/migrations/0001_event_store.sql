-- The event store. Postgres is the only source of truth: a command is done when this
-- transaction commits, and everything downstream (JetStream, read models) is re-derivable from it.

-- One row per stream, holding its current version. The append transaction's FIRST write is the
-- optimistic-concurrency UPDATE (or INSERT for a new stream) of this row. That ordering matters:
-- a transaction gets its xid at its first write, so a later writer of the same stream always has a
-- larger xid, and the relay's (transaction_id, global_position) order is also per-stream order.
CREATE TABLE streams (
    tenant_id      uuid   NOT NULL,
    stream_id      text   NOT NULL,
    aggregate_type text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (tenant_id, stream_id)
);

CREATE TABLE events (
    -- Assigned at INSERT, visible at COMMIT: a lower position can commit after a higher one,
    -- so readers of the whole log must not use it alone as a cursor (see transaction_id).
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 64-bit, epoch-extended transaction id (never the 32-bit xid, which wraps). The relay reads
    -- only rows with transaction_id < pg_snapshot_xmin(pg_current_snapshot()), i.e. from
    -- transactions that have all ended, so a late commit is never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id       uuid        NOT NULL,
    stream_id       text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL,
    -- Stable forever; a changed shape is a new schema_version plus an upcaster, never an edit.
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    payload         jsonb       NOT NULL,
    -- command id, correlation id, causation id, actor, trace context.
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_key UNIQUE (tenant_id, stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The relay and ReadAll scan in commit order.
CREATE INDEX events_commit_order ON events (transaction_id, global_position);

-- Durable command idempotency: the first successful outcome of a command id, stored in the same
-- transaction as its events. A retry with the same id and the same request gets this reply back
-- and appends nothing; the same id with a different request is refused ("command id reused").
CREATE TABLE processed_commands (
    tenant_id       uuid        NOT NULL,
    command_id      uuid        NOT NULL,
    -- The rpc name and the encoded request, compared byte for byte on a retry.
    rpc             text        NOT NULL,
    request         bytea       NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    stream_version  bigint      NOT NULL,
    global_position bigint      NOT NULL,
    events_appended integer     NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, command_id)
);

-- Latest snapshot per stream, written off the command path every N events. A snapshot whose
-- state_schema_version differs from the code's is ignored (the state is rebuilt from events).
CREATE TABLE snapshots (
    tenant_id            uuid        NOT NULL,
    stream_id            text        NOT NULL,
    state_schema_version integer     NOT NULL,
    stream_version       bigint      NOT NULL,
    state                jsonb       NOT NULL,
    taken_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stream_id)
);

-- What the relay last published, for lag reporting. The relay's real checkpoint is the last
-- message in JetStream (its Es-Txid / Es-Pos headers), so a NATS that lost its tail is refilled
-- from here by construction; this row is only bookkeeping.
CREATE TABLE relay_state (
    id                  integer PRIMARY KEY CHECK (id = 1),
    last_transaction_id xid8,
    last_position       bigint,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
