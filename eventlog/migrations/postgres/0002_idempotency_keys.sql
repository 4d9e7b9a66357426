-- Answers already given to commands, kept under their `Idempotency-Key` so a retry
-- gets the same answer. Keys are scoped to a tenant: two tenants may use the same key.
-- A row is written in the same transaction as the events it produced (or alone, for
-- a rejection), so the events and the memory of having produced them never disagree.

SET LOCAL search_path = public, pg_temp;

CREATE TABLE idempotency_keys (
    tenant_id    uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    status       integer     NOT NULL CHECK (status BETWEEN 0 AND 65535),
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
