-- Several delivery targets per post: the table, backfill and views of
-- migrations/sqlite/0006 (see there), column for column (see 0001 for the type
-- rules), with the row-level security of 0002, and the runtime role's grants
-- extended by `grant_app_role`.

SET LOCAL search_path = read_models, pg_temp;

CREATE TABLE post_targets (
    tenant_id         TEXT COLLATE "C" NOT NULL,
    post_id           TEXT COLLATE "C" NOT NULL,
    channel           TEXT COLLATE "C" NOT NULL,
    position          BIGINT NOT NULL,
    state             TEXT COLLATE "C",
    network           TEXT COLLATE "C",
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   TEXT COLLATE "C",
    network_post_id   TEXT,
    url               TEXT,
    failure_reason    TEXT,
    delivery_attempts TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, post_id, channel)
);
CREATE INDEX post_targets_open ON post_targets (state, next_attempt_at);
CREATE INDEX post_targets_by_channel ON post_targets (tenant_id, channel);

INSERT INTO post_targets (tenant_id, post_id, channel, position, state, network, attempts,
                          next_attempt_at, network_post_id, url, failure_reason, delivery_attempts)
SELECT tenant_id, post_id, channel, 0,
       CASE WHEN status = 'removed' THEN 'removed' ELSE delivery_state END,
       network, attempts, next_attempt_at, network_post_id, url, failure_reason, delivery_attempts
FROM posts;

DROP VIEW open_deliveries;
ALTER TABLE posts DROP COLUMN network_post_id;
ALTER TABLE posts DROP COLUMN url;
ALTER TABLE posts DROP COLUMN failure_reason;
ALTER TABLE posts DROP COLUMN delivery_state;
ALTER TABLE posts DROP COLUMN network;
ALTER TABLE posts DROP COLUMN attempts;
ALTER TABLE posts DROP COLUMN next_attempt_at;
ALTER TABLE posts DROP COLUMN delivery_attempts;

CREATE VIEW open_deliveries AS
SELECT tenant_id, post_id, channel, state AS delivery_state, next_attempt_at
FROM post_targets
WHERE state IN ('pending', 'publishing', 'failed_retryable');

ALTER TABLE post_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE post_targets FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON post_targets
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY owner_scans_every_tenant ON post_targets
    FOR SELECT TO CURRENT_USER
    USING (true);

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
SELECT tenant_id FROM generation_attempts;

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
SELECT 'generation_attempts'::text AS table_name, COUNT(*) AS row_count FROM generation_attempts;
