-- A tenant's reservations by status first, then month, so that no index but the
-- primary key fits a reservation's key.
--
-- `reservations_by_period (tenant_id, period, status)` shared the primary key's first
-- two columns. The projector reads a reservation by its whole key (tenant, month,
-- id) whenever an event settles one it does not hold in memory, and on a table with
-- no statistics yet (a new database: the first minute, until autovacuum analyses it)
-- the planner priced that index and the key the same and took the index: every read
-- then filtered all of the tenant's reservations of the month. In the benchmark's
-- hot-tenant workload that was 1 ms a read, half a core of the database
-- (docs/benchmarks.md). With status second, the index matches one column of such a
-- read and the key all three, so the key wins on any statistics; the projector's key
-- reads are planned per call (`projector/src/batch.rs`), so no generic plan made on
-- an empty table is kept.
--
-- The list of a tenant's open reservations of a month (`GET /v1/budget/reservations`)
-- is served by the new index as well (tenant, status, month); the list of all of them
-- by the primary key (tenant, month).

SET LOCAL search_path = read_models, pg_temp;

CREATE INDEX reservations_by_status ON reservations (tenant_id, status, period);
DROP INDEX reservations_by_period;
