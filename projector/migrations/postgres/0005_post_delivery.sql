-- Post delivery: the columns and view of migrations/sqlite/0005 (see there), with
-- the view granted to the runtime role by `grant_app_role`.

SET LOCAL search_path = read_models, pg_temp;

ALTER TABLE posts ADD COLUMN delivery_state TEXT COLLATE "C";
ALTER TABLE posts ADD COLUMN network TEXT COLLATE "C";
ALTER TABLE posts ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE posts ADD COLUMN next_attempt_at TEXT COLLATE "C";
ALTER TABLE posts ADD COLUMN delivery_attempts TEXT NOT NULL DEFAULT '[]';

CREATE VIEW open_deliveries AS
SELECT tenant_id, post_id, version, delivery_state, next_attempt_at
FROM posts
WHERE delivery_state IN ('pending', 'publishing', 'failed_retryable');
