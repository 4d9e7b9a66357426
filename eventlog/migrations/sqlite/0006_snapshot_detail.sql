-- A snapshot's detail: the part of a stored state that a cold load does not read, and
-- that the command side fetches by itself only when a decision needs it
-- (`EventStore::load_snapshot_detail`). `budget.state` v3 keeps a month's settled
-- reservations here (about a megabyte in a busy month) and only a Bloom filter of
-- their ids in `data`. The column comes after `data`, so a read of `data` alone never
-- touches the detail's overflow pages.
--
-- No json_valid check, unlike `data`: the one write connection saves snapshots between
-- appends, and checking a megabyte would hold them up; `schemas` checks the detail when
-- it is read back. NULL for formats without a detail.

ALTER TABLE snapshots ADD COLUMN detail TEXT;
