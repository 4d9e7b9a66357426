-- Several tenants per statement for the projector's write-back (docs/adr/0006).
--
-- The projector holds a batch's rows in memory and writes them back per table. Under
-- the policies of 0002 a statement may hold one tenant's rows only, so a batch that
-- touches a thousand tenants cost a thousand round trips per table. The write-back
-- now names the tenants of one statement in `app.tenants`, a comma-separated list of
-- exactly the tenants whose rows that statement holds, and `app.tenant` is empty
-- meanwhile. A row is visible, changeable and insertable when its tenant is
-- `app.tenant`, as before, or one of `app.tenants`.
--
-- What stays true: every query of `ReadModels` still scopes itself to one tenant and
-- never sets `app.tenants`; with neither setting there are no rows; and a statement
-- can never touch a row outside the tenants its transaction names. The runtime role
-- could always name any one tenant in `app.tenant`, so a list gives it no reach it did
-- not have. Tenant ids are UUIDs in canonical text form, without commas, and the list
-- is searched with its delimiters, so one id never matches a part of another.

SET LOCAL search_path = read_models, pg_temp;

-- One expression for every tenant table, in USING and WITH CHECK alike.
DO $$
DECLARE
    in_scope CONSTANT text := $in_scope$
        tenant_id = NULLIF(current_setting('app.tenant', true), '')
        OR strpos((',' || NULLIF(current_setting('app.tenants', true), '') || ',') COLLATE "C",
                  ',' || tenant_id || ',') > 0
    $in_scope$;
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['budgets', 'reservations', 'posts', 'post_targets',
                                        'generations', 'generation_attempts', 'timers']
    LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I USING (%s) WITH CHECK (%s)',
                       tenant_table, in_scope, in_scope);
    END LOOP;
END
$$;
