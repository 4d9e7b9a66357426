-- Read models of the production (PostgreSQL) deployment: the tables of
-- migrations/sqlite, column for column, so that one SQL text serves both backends
-- through sqlx's Any driver (docs/adr/0003-read-models-on-sqlite-and-postgresql.md).
--
-- Hence the column types: ids, months, timestamps and JSON lists are TEXT, integers
-- BIGINT — the types that decode through the Any driver exactly as SQLite's do.
-- Timestamps are RFC 3339 in UTC with exactly six fractional digits, so text order is
-- time order. Every TEXT column that is compared or sorted is COLLATE "C" (byte
-- order, as SQLite compares), so no database locale can change an answer. The event
-- store, the source of truth, keeps native uuid, timestamptz and jsonb; these tables
-- are a disposable projection of it.
--
-- Everything lives in the schema `read_models` (created by the code before this runs,
-- together with sqlx's own `_sqlx_migrations`), so the read models can share a
-- database with the event store, whose objects and migration history are in `public`.

SET LOCAL search_path = read_models, pg_temp;

CREATE TABLE checkpoints (
    name     TEXT COLLATE "C" PRIMARY KEY,
    position BIGINT NOT NULL
);

CREATE TABLE budgets (
    tenant_id            TEXT COLLATE "C" NOT NULL,
    period               TEXT COLLATE "C" NOT NULL,
    soft_limit_micros    BIGINT NOT NULL DEFAULT 0,
    hard_limit_micros    BIGINT NOT NULL DEFAULT 0,
    alert_thresholds_pct TEXT NOT NULL DEFAULT '[]',
    committed_micros     BIGINT NOT NULL DEFAULT 0,
    reserved_micros      BIGINT NOT NULL DEFAULT 0,
    overrun_micros       BIGINT NOT NULL DEFAULT 0,
    thresholds_crossed   TEXT NOT NULL DEFAULT '[]',
    inherited_from       TEXT COLLATE "C",
    limits_set           BIGINT NOT NULL DEFAULT 0,
    version              BIGINT NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, period)
);

-- A reservation id is unique within one month's ledger, not across months (see
-- migrations/sqlite/0002), so the key includes the month.
CREATE TABLE reservations (
    tenant_id      TEXT COLLATE "C" NOT NULL,
    reservation_id TEXT COLLATE "C" NOT NULL,
    period         TEXT COLLATE "C" NOT NULL,
    amount_micros  BIGINT NOT NULL,
    purpose        TEXT NOT NULL,
    status         TEXT COLLATE "C" NOT NULL,
    expires_at     TEXT COLLATE "C" NOT NULL,
    actual_micros  BIGINT,
    created_at     TEXT COLLATE "C" NOT NULL,
    settled_at     TEXT COLLATE "C",
    PRIMARY KEY (tenant_id, period, reservation_id)
);
CREATE INDEX reservations_by_period ON reservations (tenant_id, period, status);
CREATE INDEX reservations_due ON reservations (status, expires_at);

CREATE TABLE posts (
    tenant_id        TEXT COLLATE "C" NOT NULL,
    post_id          TEXT COLLATE "C" NOT NULL,
    channel          TEXT COLLATE "C" NOT NULL,
    body             TEXT NOT NULL,
    campaign_id      TEXT COLLATE "C",
    status           TEXT COLLATE "C" NOT NULL,
    publish_at       TEXT COLLATE "C",
    network_post_id  TEXT,
    url              TEXT,
    failure_reason   TEXT,
    version          BIGINT NOT NULL,
    created_position BIGINT NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    updated_at       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, post_id)
);
CREATE INDEX posts_keyset ON posts (tenant_id, created_position);
CREATE INDEX posts_by_status ON posts (tenant_id, status, created_position);
CREATE INDEX posts_due ON posts (status, publish_at);
