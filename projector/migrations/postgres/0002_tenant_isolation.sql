-- Row-level security on the read models: the database's own refusal of cross-tenant
-- access (DESIGN principle 2), the same rules as the event store's
-- (eventlog/migrations/postgres/0003 and docs/adr/0002).
--
-- Every tenant-scoped transaction — each query of `ReadModels`, and the projector
-- before it applies an event — first runs `SELECT set_config('app.tenant', $1, true)`
-- (SET LOCAL). A row is visible, updatable, deletable and insertable only when its
-- `tenant_id` equals that setting. With no setting there are no rows: an unset custom
-- setting reads as NULL, one set earlier in the session and since reset reads as ''
-- (NULLIF makes that NULL too), and `tenant_id = NULL` is never true.
--
-- FORCE applies the policies to the tables' owner as well. The one exception is
-- reading: the owner may SELECT every tenant's rows, because the cross-tenant views of
-- 0003 run with their owner's rights and need it. Non-owner roles reach other
-- tenants' rows only through those views, which show a few columns of a few rows.
-- `checkpoints` belongs to no tenant and has no policy. (Superusers and BYPASSRLS
-- roles ignore all of this; the runtime role must be neither —
-- `ReadModels::setup_app_role` checks.)

SET LOCAL search_path = read_models, pg_temp;

ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE budgets FORCE ROW LEVEL SECURITY;
ALTER TABLE reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE reservations FORCE ROW LEVEL SECURITY;
ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
ALTER TABLE posts FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON budgets
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY tenant_isolation ON reservations
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY tenant_isolation ON posts
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

-- CURRENT_USER is resolved now, to the role running the migrations: the owner.
CREATE POLICY owner_scans_every_tenant ON budgets
    FOR SELECT TO CURRENT_USER
    USING (true);

CREATE POLICY owner_scans_every_tenant ON reservations
    FOR SELECT TO CURRENT_USER
    USING (true);

CREATE POLICY owner_scans_every_tenant ON posts
    FOR SELECT TO CURRENT_USER
    USING (true);
