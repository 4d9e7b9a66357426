-- Timers: the table, backfill and view of migrations/sqlite/0007 (see there), column
-- for column (see 0001 for the type rules), with the row-level security of 0002; the
-- runtime role's grants are extended by `grant_app_role`. `timer_schedule` is how the
-- runtime role sees other tenants' timers: ids, months, due times and versions, no
-- bodies or amounts (see 0003).

SET LOCAL search_path = read_models, pg_temp;

CREATE TABLE timers (
    tenant_id TEXT COLLATE "C" NOT NULL,
    kind      TEXT COLLATE "C" NOT NULL,
    timer_key TEXT COLLATE "C" NOT NULL,
    subject   TEXT COLLATE "C" NOT NULL,
    due_at    TEXT COLLATE "C" NOT NULL,
    version   BIGINT,
    PRIMARY KEY (tenant_id, kind, timer_key)
);
CREATE INDEX timers_due ON timers (due_at, tenant_id, kind, timer_key);

INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
SELECT tenant_id, 'post_publish', post_id, post_id, publish_at, version
FROM posts WHERE status = 'scheduled';
INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
SELECT tenant_id, 'reservation_expiry', period || '/' || reservation_id, period, expires_at, NULL
FROM reservations WHERE status = 'open';

ALTER TABLE timers ENABLE ROW LEVEL SECURITY;
ALTER TABLE timers FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON timers
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY owner_scans_every_tenant ON timers
    FOR SELECT TO CURRENT_USER
    USING (true);

DROP VIEW scheduled_posts;
DROP VIEW open_reservations;
CREATE VIEW timer_schedule AS
SELECT tenant_id, kind, timer_key, subject, due_at, version
FROM timers;

CREATE OR REPLACE VIEW read_model_tenants AS
SELECT tenant_id FROM budgets
UNION
SELECT tenant_id FROM reservations
UNION
SELECT tenant_id FROM posts
UNION
SELECT tenant_id FROM post_targets
UNION
SELECT tenant_id FROM generations
UNION
SELECT tenant_id FROM generation_attempts
UNION
SELECT tenant_id FROM timers;

DROP VIEW read_model_row_counts;
CREATE VIEW read_model_row_counts AS
SELECT 'budgets'::text AS table_name, COUNT(*) AS row_count FROM budgets
UNION ALL
SELECT 'reservations'::text AS table_name, COUNT(*) AS row_count FROM reservations
UNION ALL
SELECT 'posts'::text AS table_name, COUNT(*) AS row_count FROM posts
UNION ALL
SELECT 'post_targets'::text AS table_name, COUNT(*) AS row_count FROM post_targets
UNION ALL
SELECT 'generations'::text AS table_name, COUNT(*) AS row_count FROM generations
UNION ALL
SELECT 'generation_attempts'::text AS table_name, COUNT(*) AS row_count FROM generation_attempts
UNION ALL
SELECT 'timers'::text AS table_name, COUNT(*) AS row_count FROM timers;
