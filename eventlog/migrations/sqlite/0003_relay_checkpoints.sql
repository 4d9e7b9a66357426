-- How far each relay has copied the global log to its destination (the Kafka topic).
--
-- It lives in the event store's own file rather than beside it: a restored backup of
-- the store then carries a checkpoint that is never ahead of the events it holds, so
-- a relay can never skip positions that the restore handed out again. `position` is
-- the highest global position every message up to which the destination acknowledged.

CREATE TABLE relay_checkpoints (
    name       TEXT    NOT NULL PRIMARY KEY,
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at TEXT    NOT NULL
) WITHOUT ROWID;
