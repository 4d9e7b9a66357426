-- Read models of the embedded (SQLite) deployment. Every row carries its tenant.
-- Each projector commits its checkpoint in the same transaction as its changes.

CREATE TABLE checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);

CREATE TABLE budgets (
    tenant_id            TEXT NOT NULL,
    period               TEXT NOT NULL,
    soft_limit_micros    INTEGER NOT NULL DEFAULT 0,
    hard_limit_micros    INTEGER NOT NULL DEFAULT 0,
    alert_thresholds_pct TEXT NOT NULL DEFAULT '[]',
    committed_micros     INTEGER NOT NULL DEFAULT 0,
    reserved_micros      INTEGER NOT NULL DEFAULT 0,
    overrun_micros       INTEGER NOT NULL DEFAULT 0,
    thresholds_crossed   TEXT NOT NULL DEFAULT '[]',
    inherited_from       TEXT,
    limits_set           INTEGER NOT NULL DEFAULT 0,
    version              INTEGER NOT NULL,
    updated_at           TEXT NOT NULL,
    PRIMARY KEY (tenant_id, period)
);

CREATE TABLE reservations (
    tenant_id      TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    period         TEXT NOT NULL,
    amount_micros  INTEGER NOT NULL,
    purpose        TEXT NOT NULL,
    status         TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    actual_micros  INTEGER,
    created_at     TEXT NOT NULL,
    settled_at     TEXT,
    PRIMARY KEY (tenant_id, reservation_id)
);
CREATE INDEX reservations_by_period ON reservations (tenant_id, period, status);
CREATE INDEX reservations_due ON reservations (status, expires_at);

CREATE TABLE posts (
    tenant_id        TEXT NOT NULL,
    post_id          TEXT NOT NULL,
    channel          TEXT NOT NULL,
    body             TEXT NOT NULL,
    campaign_id      TEXT,
    status           TEXT NOT NULL,
    publish_at       TEXT,
    network_post_id  TEXT,
    url              TEXT,
    failure_reason   TEXT,
    version          INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, post_id)
);
CREATE INDEX posts_keyset ON posts (tenant_id, created_position);
CREATE INDEX posts_by_status ON posts (tenant_id, status, created_position);
CREATE INDEX posts_due ON posts (status, publish_at);
