-- Row-level security on the read tables: a second wall between tenants, behind the tenant check
-- in every query.
--
-- QueryService reads run each transaction as the role pizzeria_tenant with pizzeria.tenant_id
-- naming the tenant (shared::connect::begin_as_tenant): that role may only SELECT, and only the
-- rows of that tenant. The projector, rebuilds and the admin rpcs work across tenants as the
-- service's login role, which owns the tables (it runs these migrations).
--
-- The role is shared with command-svc's event store (its migration 0002 says more).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pizzeria_tenant') THEN
        CREATE ROLE pizzeria_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'pizzeria_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT pizzeria_tenant TO %I', current_user);
    END IF;
END
$$;

-- Every table of `target` with a tenant_id column: readable by pizzeria_tenant, one tenant's rows
-- at a time. Tables without one (applied_events, projector_state) stay closed to it. A rebuild
-- calls this for the tables it creates in the schema `rebuild`; the policies move with the
-- tables when they are swapped into `public`.
CREATE FUNCTION protect_tenant_tables(target name) RETURNS void
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
        EXECUTE format(
            'CREATE POLICY tenant_reads ON %I.%I FOR SELECT TO pizzeria_tenant
             USING (tenant_id = NULLIF(current_setting(''pizzeria.tenant_id'', true), '''')::uuid)',
            target, tbl);
    END LOOP;
END
$$;

SELECT protect_tenant_tables('public');
