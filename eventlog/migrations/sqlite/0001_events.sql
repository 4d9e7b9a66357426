-- The global event log and the per-stream version index.
--
-- `events` is append-only. `global_position` is the rowid; AUTOINCREMENT makes
-- SQLite never hand out a position again, even if rows were ever removed, so a
-- tailer that remembers a position can never be handed a different event under it.
-- `streams` holds one row per stream with its owner and current version, so the
-- expected-version and owner checks read one small row instead of scanning events.
-- Timestamps are RFC 3339 in UTC with nine fractional digits, so text order is
-- time order. Uuids are lowercase hyphenated text.

CREATE TABLE streams (
    stream_id TEXT    NOT NULL PRIMARY KEY,
    tenant_id TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version >= 0)
) WITHOUT ROWID;

CREATE TABLE events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    tenant_id       TEXT    NOT NULL,
    stream_id       TEXT    NOT NULL REFERENCES streams (stream_id),
    version         INTEGER NOT NULL CHECK (version >= 1),
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 0),
    occurred_at     TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    correlation_id  TEXT    NOT NULL,
    causation_id    TEXT,
    actor           TEXT    NOT NULL,
    data            TEXT    NOT NULL CHECK (json_valid(data)),
    UNIQUE (stream_id, version)
);
