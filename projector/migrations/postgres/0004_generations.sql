-- Content generations and their provider attempts: the tables of
-- migrations/sqlite/0004, column for column (see 0001 for the type rules), with the
-- row-level security of 0002 and the cross-tenant views of 0003 extended to them.

SET LOCAL search_path = read_models, pg_temp;

CREATE TABLE generations (
    tenant_id           TEXT COLLATE "C" NOT NULL,
    generation_id       TEXT COLLATE "C" NOT NULL,
    status              TEXT COLLATE "C" NOT NULL,
    brief               TEXT NOT NULL,
    channel             TEXT COLLATE "C" NOT NULL,
    campaign_id         TEXT COLLATE "C",
    priority            TEXT COLLATE "C" NOT NULL,
    mode                TEXT COLLATE "C" NOT NULL DEFAULT 'normal',
    requested_model     TEXT COLLATE "C",
    provider            TEXT COLLATE "C" NOT NULL,
    model               TEXT COLLATE "C" NOT NULL,
    reservation_id      TEXT COLLATE "C" NOT NULL,
    period              TEXT COLLATE "C" NOT NULL,
    reserved_micros     BIGINT NOT NULL,
    text                TEXT,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cost_micros         BIGINT NOT NULL DEFAULT 0,
    attempts            BIGINT NOT NULL DEFAULT 0,
    failure_reason      TEXT,
    version             BIGINT NOT NULL,
    created_at          TEXT COLLATE "C" NOT NULL,
    updated_at          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, generation_id)
);
CREATE INDEX generations_by_status ON generations (tenant_id, status);

CREATE TABLE generation_attempts (
    tenant_id           TEXT COLLATE "C" NOT NULL,
    generation_id       TEXT COLLATE "C" NOT NULL,
    attempt             BIGINT NOT NULL,
    provider            TEXT COLLATE "C" NOT NULL,
    model               TEXT COLLATE "C" NOT NULL,
    reason              TEXT COLLATE "C" NOT NULL,
    status              TEXT COLLATE "C" NOT NULL,
    error               TEXT,
    campaign_id         TEXT COLLATE "C",
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cost_micros         BIGINT NOT NULL DEFAULT 0,
    latency_ms          BIGINT,
    price_version       TEXT COLLATE "C",
    day                 TEXT COLLATE "C",
    started_at          TEXT COLLATE "C" NOT NULL,
    finished_at         TEXT COLLATE "C",
    PRIMARY KEY (tenant_id, generation_id, attempt)
);
CREATE INDEX generation_attempts_by_day ON generation_attempts (tenant_id, day);

ALTER TABLE generations ENABLE ROW LEVEL SECURITY;
ALTER TABLE generations FORCE ROW LEVEL SECURITY;
ALTER TABLE generation_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE generation_attempts FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON generations
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY tenant_isolation ON generation_attempts
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), ''));

CREATE POLICY owner_scans_every_tenant ON generations
    FOR SELECT TO CURRENT_USER
    USING (true);

CREATE POLICY owner_scans_every_tenant ON generation_attempts
    FOR SELECT TO CURRENT_USER
    USING (true);

CREATE OR REPLACE VIEW read_model_tenants AS
SELECT tenant_id FROM budgets
UNION
SELECT tenant_id FROM reservations
UNION
SELECT tenant_id FROM posts
UNION
SELECT tenant_id FROM generations
UNION
SELECT tenant_id FROM generation_attempts;

CREATE OR REPLACE VIEW read_model_row_counts AS
SELECT 'budgets'::text AS table_name, COUNT(*) AS row_count FROM budgets
UNION ALL
SELECT 'reservations'::text AS table_name, COUNT(*) AS row_count FROM reservations
UNION ALL
SELECT 'posts'::text AS table_name, COUNT(*) AS row_count FROM posts
UNION ALL
SELECT 'generations'::text AS table_name, COUNT(*) AS row_count FROM generations
UNION ALL
SELECT 'generation_attempts'::text AS table_name, COUNT(*) AS row_count FROM generation_attempts;
