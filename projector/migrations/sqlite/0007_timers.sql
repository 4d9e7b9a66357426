-- Timers (issue 5): what is due at a time, in one table the timer workflow scans.
--
-- `kind` is `post_publish` (a scheduled post: publish the post `subject` at `due_at`
-- with its `version` as the expected version) or `reservation_expiry` (an open
-- reservation: expire the due holds of the month `subject` at `due_at`; `version` is
-- NULL). `timer_key` is unique per tenant and kind: the post id, or
-- `<month>/<reservation id>`. The projector sets and clears timers from events; the
-- timer workflow only reads them, through `timer_schedule`.

CREATE TABLE timers (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    timer_key TEXT NOT NULL,
    subject   TEXT NOT NULL,
    due_at    TEXT NOT NULL,
    version   INTEGER,
    PRIMARY KEY (tenant_id, kind, timer_key)
);
CREATE INDEX timers_due ON timers (due_at, tenant_id, kind, timer_key);

-- The timers of what exists already: scheduled posts and open reservations.
INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
SELECT tenant_id, 'post_publish', post_id, post_id, publish_at, version
FROM posts WHERE status = 'scheduled';
INSERT INTO timers (tenant_id, kind, timer_key, subject, due_at, version)
SELECT tenant_id, 'reservation_expiry', period || '/' || reservation_id, period, expires_at, NULL
FROM reservations WHERE status = 'open';

-- The timer workflow's cross-tenant scan replaces the scheduler's and the sweeper's.
DROP VIEW scheduled_posts;
DROP VIEW open_reservations;
CREATE VIEW timer_schedule AS
SELECT tenant_id, kind, timer_key, subject, due_at, version
FROM timers;

DROP VIEW read_model_tenants;
CREATE VIEW read_model_tenants AS
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
SELECT 'budgets' AS table_name, COUNT(*) AS row_count FROM budgets
UNION ALL
SELECT 'reservations' AS table_name, COUNT(*) AS row_count FROM reservations
UNION ALL
SELECT 'posts' AS table_name, COUNT(*) AS row_count FROM posts
UNION ALL
SELECT 'post_targets' AS table_name, COUNT(*) AS row_count FROM post_targets
UNION ALL
SELECT 'generations' AS table_name, COUNT(*) AS row_count FROM generations
UNION ALL
SELECT 'generation_attempts' AS table_name, COUNT(*) AS row_count FROM generation_attempts
UNION ALL
SELECT 'timers' AS table_name, COUNT(*) AS row_count FROM timers;
