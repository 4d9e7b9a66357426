-- A snapshot's detail: the part of a stored state that a cold load does not read, and
-- that the command side fetches by itself only when a decision needs it
-- (`EventStore::load_snapshot_detail`). `budget.state` v3 keeps a month's settled
-- reservations here (about a megabyte in a busy month) and only a Bloom filter of
-- their ids in `data`, so the cold load of a month costs about the same on its last
-- day as on its first.
--
-- `text`, not `json`: the store never looks inside it, and `schemas` checks it when it
-- is read back. NULL for formats without a detail, and for rows a release before this
-- one wrote. The runtime role's column grants (`grant_runtime_privileges` in `postgres.rs`) add it.

SET LOCAL search_path = public, pg_temp;

ALTER TABLE snapshots ADD COLUMN detail text;
