-- The raw SQL of GetOrder: one read-model row by primary key, on orders loadgen seeded
-- (ids 00000000-0000-4000-8000-<n, 12 digits>). Variables: tenant, orders (-D).
\set n random(1, :orders)
SELECT * FROM read_model.order_views
 WHERE tenant_id = :tenant
   AND order_id = ('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid;
