-- Several delivery targets per post (issue 5).
--
-- `post_targets` holds one row per channel of a post, in the order the channels were
-- given (`position` from 0; position 0 is `posts.channel`). `state` is pending |
-- publishing | published | failed_retryable | failed_permanent | unconfirmed | removed
-- (NULL before publishing was requested); `next_attempt_at` is set while
-- failed_retryable; `delivery_attempts` is the JSON list of the target's attempts,
-- oldest first. The post's `status` is derived from its targets' states
-- (`domain::post::status_of`). The delivery columns of `posts` move here.

CREATE TABLE post_targets (
    tenant_id         TEXT NOT NULL,
    post_id           TEXT NOT NULL,
    channel           TEXT NOT NULL,
    position          INTEGER NOT NULL,
    state             TEXT,
    network           TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    network_post_id   TEXT,
    url               TEXT,
    failure_reason    TEXT,
    delivery_attempts TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, post_id, channel)
);
CREATE INDEX post_targets_open ON post_targets (state, next_attempt_at);
CREATE INDEX post_targets_by_channel ON post_targets (tenant_id, channel);

-- Every existing post had one channel: its target is its delivery so far. A removed
-- post's delivery was left `published`; its target is `removed`.
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

-- Deliveries the publisher must act on, one per target, across tenants: waiting for
-- a first attempt, due for a retry, or found in flight (after a crash).
CREATE VIEW open_deliveries AS
SELECT tenant_id, post_id, channel, state AS delivery_state, next_attempt_at
FROM post_targets
WHERE state IN ('pending', 'publishing', 'failed_retryable');

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
SELECT tenant_id FROM generation_attempts;

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
SELECT 'generation_attempts' AS table_name, COUNT(*) AS row_count FROM generation_attempts;
