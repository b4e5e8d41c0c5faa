-- One schema per projection (runtime::generations): its own tables and the runtime's
-- bookkeeping beside them (stream_progress, applied_events, projector_state, dead_letters), so
-- that each projection has its own checkpoint, per-stream progress, dead letters and
-- generation, and is rebuilt alone.
--
-- The tables of migration 0001 move into the schema `read_model`, the pizzeria's projection of
-- orders, customers and sales; the order timeline becomes a projection of its own,
-- `order_timeline`, starting from exactly where read_model is (it was written by the same
-- transactions, so its bookkeeping is read_model's).

-- Dead letter ids come from one sequence for every projection and generation: RetryDeadLetter
-- and SkipDeadLetter name a dead letter by id alone.
CREATE SEQUENCE public.dead_letter_ids;
SELECT setval('public.dead_letter_ids', GREATEST((SELECT max(id) FROM public.dead_letters), 0) + 1, false);
ALTER TABLE public.dead_letters ALTER COLUMN id DROP IDENTITY;
ALTER TABLE public.dead_letters ALTER COLUMN id SET DEFAULT nextval('public.dead_letter_ids');

-- Policies are made again by protect_tenant_tables, so it can be called for a schema whose
-- moved tables have them already.
CREATE OR REPLACE FUNCTION protect_tenant_tables(target name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tbl name;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO pizzeria_tenant', target);
    FOR tbl IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = target AND c.column_name = 'tenant_id'
          AND t.table_type = 'BASE TABLE'
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', target, tbl);
        EXECUTE format('GRANT SELECT ON %I.%I TO pizzeria_tenant', target, tbl);
        EXECUTE format('DROP POLICY IF EXISTS tenant_reads ON %I.%I', target, tbl);
        EXECUTE format(
            'CREATE POLICY tenant_reads ON %I.%I FOR SELECT TO pizzeria_tenant
             USING (tenant_id = NULLIF(current_setting(''pizzeria.tenant_id'', true), '''')::uuid)',
            target, tbl);
    END LOOP;
END
$$;

-- The schema of a new projection with the runtime's bookkeeping tables, registered in
-- `projections`. A projection's migration calls it, then creates its own tables in the schema
-- and calls protect_tenant_tables. Tables already there are kept.
CREATE FUNCTION create_projection_schema(projection name) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', projection);
    -- Last applied version of every stream.
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.stream_progress (
        tenant_id    uuid   NOT NULL,
        stream_id    text   NOT NULL,
        last_version bigint NOT NULL,
        PRIMARY KEY (tenant_id, stream_id))', projection);
    -- Exactly the events under the watermark (runtime::watermark).
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.applied_events (
        global_position bigint      PRIMARY KEY,
        applied_at      timestamptz NOT NULL DEFAULT now())', projection);
    -- The watermark: the last event done in commit order.
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.projector_state (
        id                     integer     PRIMARY KEY CHECK (id = 1),
        last_position          bigint      NOT NULL,
        last_transaction_id    bigint      NOT NULL,
        last_event_recorded_at timestamptz NOT NULL,
        updated_at             timestamptz NOT NULL DEFAULT now())', projection);
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I.dead_letters (
        id              bigint      PRIMARY KEY DEFAULT nextval(''public.dead_letter_ids''),
        tenant_id       uuid        NOT NULL,
        stream_id       text        NOT NULL,
        stream_version  bigint      NOT NULL,
        global_position bigint      NOT NULL,
        event_id        text        NOT NULL,
        event_type      text        NOT NULL,
        error           text        NOT NULL,
        attempts        integer     NOT NULL,
        record          bytea       NOT NULL,
        status          text        NOT NULL DEFAULT ''PENDING''
                                    CHECK (status IN (''PENDING'', ''RETRIED'', ''SKIPPED'')),
        first_failed_at timestamptz NOT NULL DEFAULT now(),
        resolved_at     timestamptz,
        last_failed_at  timestamptz NOT NULL DEFAULT now(),
        held_version    bigint,
        resolution      text)', projection);
    EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_one_pending_per_stream
        ON %I.dead_letters (tenant_id, stream_id) WHERE status = ''PENDING''', projection);
    INSERT INTO public.projections (name) VALUES (projection) ON CONFLICT (name) DO NOTHING;
    PERFORM protect_tenant_tables(projection);
END
$$;

-- read_model: the tables of migration 0001, as they are.
CREATE SCHEMA read_model;
ALTER TABLE public.stream_progress SET SCHEMA read_model;
ALTER TABLE public.applied_events SET SCHEMA read_model;
ALTER TABLE public.projector_state SET SCHEMA read_model;
ALTER TABLE public.dead_letters SET SCHEMA read_model;
ALTER TABLE public.customer_views SET SCHEMA read_model;
ALTER TABLE public.order_views SET SCHEMA read_model;
ALTER TABLE public.order_history SET SCHEMA read_model;
ALTER TABLE public.daily_sales SET SCHEMA read_model;
ALTER TABLE public.daily_item_sales SET SCHEMA read_model;
SELECT create_projection_schema('read_model');

-- order_timeline: the timeline table, and read_model's bookkeeping as it stands.
SELECT create_projection_schema('order_timeline');
ALTER TABLE public.order_timeline SET SCHEMA order_timeline;
INSERT INTO order_timeline.stream_progress SELECT * FROM read_model.stream_progress
    WHERE stream_id LIKE 'order-%';
INSERT INTO order_timeline.applied_events SELECT * FROM read_model.applied_events;
INSERT INTO order_timeline.projector_state SELECT * FROM read_model.projector_state;
INSERT INTO order_timeline.dead_letters (tenant_id, stream_id, stream_version, global_position,
        event_id, event_type, error, attempts, record, status, first_failed_at, resolved_at,
        last_failed_at, held_version, resolution)
    SELECT tenant_id, stream_id, stream_version, global_position, event_id, event_type, error,
        attempts, record, status, first_failed_at, resolved_at, last_failed_at, held_version,
        resolution
    FROM read_model.dead_letters WHERE stream_id LIKE 'order-%' AND status = 'PENDING';
SELECT protect_tenant_tables('order_timeline');
