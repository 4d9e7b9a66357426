-- The cross-tenant scans: the scheduler's due posts, the expiry sweeper's due months,
-- a rebuild's list of tenants and `projections status`'s row counts. The same views
-- exist on SQLite (migrations/sqlite/0003), so the queries are one SQL text.
--
-- Here they are also the way across the tenant wall. A view is not security_invoker
-- by default, so PostgreSQL checks its base tables — privileges and row-level
-- security — as the view's owner, the role running these migrations, which may read
-- every tenant's rows (0002). The runtime role gets SELECT on the views, not a policy
-- of its own: it sees other tenants only through these columns of these rows (ids,
-- versions, months, due times and counts — no bodies, amounts or purposes), and it
-- still cannot write a row outside the tenant it set. This is the approach the event
-- store takes with its SECURITY DEFINER log readers (docs/adr/0002); a view gives the
-- same rights to the same owner and keeps one SQL text for both backends (docs/adr/0003).

SET LOCAL search_path = read_models, pg_temp;

CREATE VIEW scheduled_posts AS
SELECT tenant_id, post_id, version, publish_at
FROM posts
WHERE status = 'scheduled';

CREATE VIEW open_reservations AS
SELECT tenant_id, period, expires_at
FROM reservations
WHERE status = 'open';

CREATE VIEW read_model_tenants AS
SELECT tenant_id FROM budgets
UNION
SELECT tenant_id FROM reservations
UNION
SELECT tenant_id FROM posts;

CREATE VIEW read_model_row_counts AS
SELECT 'budgets'::text AS table_name, COUNT(*) AS row_count FROM budgets
UNION ALL
SELECT 'reservations'::text AS table_name, COUNT(*) AS row_count FROM reservations
UNION ALL
SELECT 'posts'::text AS table_name, COUNT(*) AS row_count FROM posts;
