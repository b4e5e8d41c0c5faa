-- The raw SQL of placing an order: a new stream and its first event, one transaction.
-- Variables: tenant (-D). Run with -M prepared.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO streams (tenant_id, stream_id, aggregate_type, version)
VALUES (:tenant, 'order-' || :client_id || '-' || :n, 'order', 1) ON CONFLICT DO NOTHING;
INSERT INTO events (tenant_id, stream_id, aggregate_type, aggregate_id, stream_version,
                    event_id, event_type, schema_version, payload, metadata)
VALUES (:tenant, 'order-' || :client_id || '-' || :n, 'order', gen_random_uuid(), 1,
        gen_random_uuid(), 'OrderPlaced', 1,
        '{"customer_id": "0190a0b0-0000-7000-8000-000000000001", "items": [{"name": "Margherita", "size": "large", "quantity": 2, "unit_price_cents": 1299}]}',
        '{"correlation_id": "0190a0b0-0000-7000-8000-000000000002"}');
COMMIT;
