-- Row-level security: the database's own refusal of cross-tenant access (DESIGN
-- principle 2, docs/adr/0002-postgres-tenant-isolation.md).
--
-- Every tenant-scoped transaction runs `SELECT set_config('app.tenant', $1, true)`
-- (SET LOCAL) first. A row is visible, updatable and insertable only when its
-- `tenant_id` equals that setting. With no setting there are no rows: an unset custom
-- setting reads as NULL, and one that was set earlier in the session and has since
-- been reset reads as '' (NULLIF turns that into NULL too), and `tenant_id = NULL` is
-- never true.
--
-- FORCE applies the policies to the tables' owner as well, so a process that connects
-- as the owner by mistake is still tenant-scoped. The one exception is reading the
-- global log: the owner may SELECT every tenant's events, because the projector and
-- the relay read the whole log through the SECURITY DEFINER functions of 0004, which
-- run as the owner. Non-owner roles can reach other tenants' events only through
-- those functions, and no role can read other tenants' streams or idempotency keys or
-- write another tenant's rows. (Superusers and BYPASSRLS roles ignore all of this; the
-- runtime role must be neither — `postgres::setup_roles` checks.)

SET LOCAL search_path = public, pg_temp;

ALTER TABLE streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE streams FORCE ROW LEVEL SECURITY;
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON streams
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid);

CREATE POLICY tenant_isolation ON events
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid);

CREATE POLICY tenant_isolation ON idempotency_keys
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid);

-- CURRENT_USER is resolved now, to the role running the migrations: the owner.
CREATE POLICY owner_reads_the_global_log ON events
    FOR SELECT TO CURRENT_USER
    USING (true);
