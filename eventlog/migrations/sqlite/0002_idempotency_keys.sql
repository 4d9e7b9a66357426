-- Answers already given to commands, kept under their `Idempotency-Key` so a retry
-- gets the same answer. Keys are scoped to a tenant: two tenants may use the same key.
-- A row is written in the same transaction as the events it produced (or alone, for
-- a rejection), so the events and the memory of having produced them never disagree.

CREATE TABLE idempotency_keys (
    tenant_id    TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL CHECK (json_valid(body)),
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
