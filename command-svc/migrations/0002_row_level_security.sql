-- Row-level security: a second wall between tenants, behind the tenant check in every query.
--
-- Tenant-scoped work (commands, ReadStream, snapshots) runs each transaction as the role
-- pizzeria_tenant with the setting pizzeria.tenant_id naming the tenant
-- (shared::tenancy::begin_as_tenant). That role owns nothing and bypasses nothing: it sees and
-- writes only rows of that tenant, and cannot delete. The service's login role owns the tables
-- (it runs these migrations) and reads across tenants where that is the job: the relay and
-- ReadAll, which are not tenant-scoped.
--
-- Roles belong to the whole cluster: created once, shared by every database (and by query-svc).
-- The migrating role needs CREATEROLE, or an administrator creates pizzeria_tenant beforehand and
-- grants it to the service's login role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pizzeria_tenant') THEN
        CREATE ROLE pizzeria_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
    END IF;
EXCEPTION
    -- Another database's migration created it at the same moment.
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

GRANT SELECT, INSERT, UPDATE ON streams, events, processed_commands, snapshots TO pizzeria_tenant;

ALTER TABLE streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE processed_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE snapshots ENABLE ROW LEVEL SECURITY;

-- NULLIF: a transaction-local setting reads as '' once its transaction has ended. No tenant set
-- means no rows.
CREATE POLICY tenant_isolation ON streams TO pizzeria_tenant
    USING (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON events TO pizzeria_tenant
    USING (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON processed_commands TO pizzeria_tenant
    USING (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON snapshots TO pizzeria_tenant
    USING (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('pizzeria.tenant_id', true), '')::uuid);
