-- Post delivery (the publishing issue): the state of a post's one delivery target
-- and its attempts.
--
-- `delivery_state` is pending | publishing | published | failed_retryable |
-- failed_permanent | unconfirmed (NULL before publishing was requested);
-- `next_attempt_at` is set while failed_retryable. `delivery_attempts` is the JSON
-- list of the attempts, oldest first: {attempt, network, status, code, reason,
-- started_at, ended_at}. A post has a handful of attempts at most, so they live on
-- its row rather than in a table of their own.

ALTER TABLE posts ADD COLUMN delivery_state TEXT;
ALTER TABLE posts ADD COLUMN network TEXT;
ALTER TABLE posts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE posts ADD COLUMN next_attempt_at TEXT;
ALTER TABLE posts ADD COLUMN delivery_attempts TEXT NOT NULL DEFAULT '[]';

-- Deliveries the publisher must act on, across tenants: waiting for a first
-- attempt, due for a retry, or found in flight (after a crash).
CREATE VIEW open_deliveries AS
SELECT tenant_id, post_id, version, delivery_state, next_attempt_at
FROM posts
WHERE delivery_state IN ('pending', 'publishing', 'failed_retryable');
