-- Snapshots: a stream's folded state as of one of its versions, so the command side's
-- cold load reads one row plus the events after it instead of the whole stream.
--
-- A cache, never a source of truth: only that cold load reads it, and deleting every
-- row is always safe. One row per stream and format version (`snapshot_version`, the
-- version of the state's stored shape in `schemas::states`): a reader asks for the
-- format it understands, so a new format never meets an old row. A save never
-- replaces a newer snapshot of the same format (see `SqliteStore::save_snapshot`).
-- Rows can be megabytes (a busy month's budget), so this is a rowid table.

CREATE TABLE snapshots (
    stream_id        TEXT    NOT NULL REFERENCES streams (stream_id),
    snapshot_version INTEGER NOT NULL CHECK (snapshot_version >= 1),
    tenant_id        TEXT    NOT NULL,
    version          INTEGER NOT NULL CHECK (version >= 1),
    data             TEXT    NOT NULL CHECK (json_valid(data)),
    taken_at         TEXT    NOT NULL,
    UNIQUE (stream_id, snapshot_version)
);
