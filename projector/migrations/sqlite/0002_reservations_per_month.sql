-- A reservation id is unique within one month's ledger, not across months: each month
-- is its own stream, and a client may use an id again in a later month. Key the rows
-- by month too, so such a reservation gets its own row instead of failing the
-- projection (which would stop the read models for every tenant).

CREATE TABLE reservations_by_month (
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
    PRIMARY KEY (tenant_id, period, reservation_id)
);
INSERT INTO reservations_by_month (tenant_id, reservation_id, period, amount_micros, purpose, status,
                                   expires_at, actual_micros, created_at, settled_at)
SELECT tenant_id, reservation_id, period, amount_micros, purpose, status,
       expires_at, actual_micros, created_at, settled_at
FROM reservations;
DROP TABLE reservations;
ALTER TABLE reservations_by_month RENAME TO reservations;
CREATE INDEX reservations_by_period ON reservations (tenant_id, period, status);
CREATE INDEX reservations_due ON reservations (status, expires_at);
