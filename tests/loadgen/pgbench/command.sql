-- The raw SQL of one command on an existing order, the straightforward way: load the stream,
-- claim the next version, append the event, record the command id; one transaction.
-- Variables: tenant, streams (-D). Run with -M prepared on a database seeded by loadgen.
\set n random(1, :streams)
BEGIN;
SELECT stream_version, event_type, schema_version, payload
  FROM events WHERE tenant_id = :tenant AND stream_id = 'pgb-' || :n ORDER BY stream_version;
UPDATE streams SET version = version + 1
 WHERE tenant_id = :tenant AND stream_id = 'pgb-' || :n RETURNING version AS v \gset
INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                    event_id, event_type, schema_version, payload, metadata)
VALUES (:tenant, 'pgb-' || :n, 'order', md5('pgb-' || :n)::uuid, :v,
        gen_random_uuid(), 'OrderConfirmed', 1, '{"estimated_delivery": "2026-11-22T20:00:00Z"}',
        '{"correlation_id": "0190a0b0-0000-7000-8000-000000000002"}');
INSERT INTO processed_commands (tenant_id, command_id, rpc, request, aggregate_type,
                                aggregate_id, stream_version, global_position, events_appended)
VALUES (:tenant, gen_random_uuid(), 'ConfirmOrder', '\x0a24', 'order', md5('pgb-' || :n)::uuid, :v, 0, 1);
COMMIT;
