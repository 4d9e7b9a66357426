-- Content generations and their provider attempts (the AI generation issue).
--
-- `generations` holds one row per generation with its latest state and the totals of
-- its attempts. `generation_attempts` holds one row per provider attempt, priced at the
-- model that ran it; the usage queries sum it by day, model, provider or campaign.
-- `day` is the UTC date (YYYY-MM-DD) the attempt finished, so a day's usage is an
-- index range.

CREATE TABLE generations (
    tenant_id           TEXT NOT NULL,
    generation_id       TEXT NOT NULL,
    status              TEXT NOT NULL,
    brief               TEXT NOT NULL,
    channel             TEXT NOT NULL,
    campaign_id         TEXT,
    priority            TEXT NOT NULL,
    mode                TEXT NOT NULL DEFAULT 'normal',
    requested_model     TEXT,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    reservation_id      TEXT NOT NULL,
    period              TEXT NOT NULL,
    reserved_micros     INTEGER NOT NULL,
    text                TEXT,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cost_micros         INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    failure_reason      TEXT,
    version             INTEGER NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, generation_id)
);
CREATE INDEX generations_by_status ON generations (tenant_id, status);

CREATE TABLE generation_attempts (
    tenant_id           TEXT NOT NULL,
    generation_id       TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    provider            TEXT NOT NULL,
    model               TEXT NOT NULL,
    reason              TEXT NOT NULL,
    status              TEXT NOT NULL,
    error               TEXT,
    campaign_id         TEXT,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cost_micros         INTEGER NOT NULL DEFAULT 0,
    latency_ms          INTEGER,
    price_version       TEXT,
    day                 TEXT,
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    PRIMARY KEY (tenant_id, generation_id, attempt)
);
CREATE INDEX generation_attempts_by_day ON generation_attempts (tenant_id, day);

DROP VIEW read_model_tenants;
CREATE VIEW read_model_tenants AS
SELECT tenant_id FROM budgets
UNION
SELECT tenant_id FROM reservations
UNION
SELECT tenant_id FROM posts
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
SELECT 'generations' AS table_name, COUNT(*) AS row_count FROM generations
UNION ALL
SELECT 'generation_attempts' AS table_name, COUNT(*) AS row_count FROM generation_attempts;
