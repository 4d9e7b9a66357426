-- The global event log and the per-stream version index, for PostgreSQL.
--
-- `events` is append-only. `global_position` is handed out by the store in blocks
-- from the `event_positions` sequence (see `tidemark_reserve_positions` in 0004), not
-- by a column default, because the order in which positions are handed out has to
-- match the order of the writers' transaction ids for tailing to be gap-safe.
-- `transaction_id` is the top-level id of the transaction that wrote the row; readers
-- of the global log use it to return only events no in-flight writer can undercut.
-- `streams` holds one row per stream with its owner and current version: appends lock
-- that row, so the expected-version check holds across processes, not only within one.
-- Ids are uuid, timestamps timestamptz (microseconds), payloads jsonb.

-- Everything the store creates lives in `public`; the functions in 0004 pin the same
-- search path, so a caller's search path can never redirect them.
SET LOCAL search_path = public, pg_temp;

CREATE SEQUENCE event_positions AS bigint MINVALUE 1 START WITH 1 CACHE 1 NO CYCLE;

CREATE TABLE streams (
    stream_id text   NOT NULL PRIMARY KEY,
    tenant_id uuid   NOT NULL,
    version   bigint NOT NULL CHECK (version >= 0),
    -- The target of the events' foreign key, so an event's tenant is its stream's.
    UNIQUE (tenant_id, stream_id)
);

CREATE TABLE events (
    global_position bigint      NOT NULL PRIMARY KEY CHECK (global_position >= 1),
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    tenant_id       uuid        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_type      text        NOT NULL,
    schema_version  bigint      NOT NULL CHECK (schema_version BETWEEN 0 AND 4294967295),
    occurred_at     timestamptz NOT NULL,
    -- The start of the group commit that stored the event: the database's clock.
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    actor           text        NOT NULL,
    data            jsonb       NOT NULL,
    UNIQUE (stream_id, version),
    FOREIGN KEY (tenant_id, stream_id) REFERENCES streams (tenant_id, stream_id)
);
