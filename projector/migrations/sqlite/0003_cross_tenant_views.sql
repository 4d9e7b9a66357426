-- The cross-tenant scans, as views, so the workflows and operators ask them with the
-- same SQL text on SQLite and on PostgreSQL (docs/adr/0003). On SQLite a view is only
-- a name for its query; on PostgreSQL the same views are what lets a tenant-scoped
-- role see across tenants, and only these columns (see migrations/postgres/0003).

-- Scheduled posts, for the scheduler: which post, of which tenant, at which version.
CREATE VIEW scheduled_posts AS
SELECT tenant_id, post_id, version, publish_at
FROM posts
WHERE status = 'scheduled';

-- Open reservations, for the expiry sweeper: which month of which tenant, and when.
CREATE VIEW open_reservations AS
SELECT tenant_id, period, expires_at
FROM reservations
WHERE status = 'open';

-- Every tenant that has a row, for a rebuild that clears the models tenant by tenant.
CREATE VIEW read_model_tenants AS
SELECT tenant_id FROM budgets
UNION
SELECT tenant_id FROM reservations
UNION
SELECT tenant_id FROM posts;

-- Row counts per table, for `tidemark projections status`.
CREATE VIEW read_model_row_counts AS
SELECT 'budgets' AS table_name, COUNT(*) AS row_count FROM budgets
UNION ALL
SELECT 'reservations' AS table_name, COUNT(*) AS row_count FROM reservations
UNION ALL
SELECT 'posts' AS table_name, COUNT(*) AS row_count FROM posts;
