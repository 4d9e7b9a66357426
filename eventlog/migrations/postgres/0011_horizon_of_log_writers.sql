-- The log's horizon waits only for transactions that can add events to it.
--
-- Until now `tidemark_log_horizon()` stopped at the oldest transaction of this
-- database that had a transaction id, whatever it was doing. The read models, the
-- projectors' checkpoints and the relay's checkpoint live in the same database, so a
-- projector's batch (a write transaction of tens of milliseconds, one after another
-- under load) held back `tidemark_read_log` and `tidemark_log_head` for as long as it
-- ran, and a `tidemark projections rebuild` (one transaction for the whole log) froze
-- the relay and every read-your-writes wait until it committed. Sampled during a
-- benchmark run, such a transaction was open in about half of the samples
-- (docs/benchmarks.md).
--
-- A transaction adds events only through `tidemark_reserve_positions`, which refuses a
-- transaction that already has an id, and which takes a transaction-level advisory
-- lock on each of the batch's streams (one-key locks) before it gives the transaction
-- its id; they are held until the transaction ends. So every log writer, of this
-- release or an earlier one, holds a one-key advisory lock from before its id exists
-- until it ends. The horizon is now the oldest transaction of the snapshot's
-- in-progress list whose backend holds a one-key advisory lock in this database (or a
-- transaction prepared in it, which pg_locks shows without a backend), else the
-- snapshot's xmax. The proof of gap-safety in `eventlog/src/postgres.rs` is the same
-- with "holds a one-key advisory lock" for "belongs to a backend of this database".
--
-- Anything else that holds a one-key advisory lock with a transaction id (a migration
-- under sqlx's lock, the read-model schema's setup) is taken for a writer too, which
-- only delays readers while it runs. The projectors' partition leases are two-key
-- locks (`eventlog/src/kafka/leases.rs`) and do not count. Because the rule rests on
-- locks that writers of earlier releases already take, it holds during a rolling
-- upgrade from the moment this migration commits. The reservation now refuses a batch
-- that names no stream: it would hold no such lock.
--
-- The horizon no longer reads pg_stat_activity (a copy of every backend's status,
-- taken anew for each call), but pg_locks, once per call.

SET LOCAL search_path = public, pg_temp;

CREATE OR REPLACE FUNCTION tidemark_reserve_positions(stream_ids text[], how_many bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    stream_key bigint;
    last_position bigint;
    locked boolean := false;
BEGIN
    IF how_many IS NULL OR how_many < 1 THEN
        RAISE EXCEPTION 'tidemark: cannot reserve % positions', how_many;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'tidemark: positions must be reserved before the transaction writes anything'
            USING HINT = 'call tidemark_reserve_positions first in the transaction';
    END IF;
    -- These locks also mark the transaction as a log writer for the horizon below, so
    -- they are taken at the top level (the block further down is rolled back) and
    -- before the transaction has an id.
    FOR stream_key IN
        SELECT DISTINCT hashtextextended(s, 0) AS k
          FROM unnest(stream_ids) AS s WHERE s IS NOT NULL ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(stream_key);
        locked := true;
    END LOOP;
    IF NOT locked THEN
        RAISE EXCEPTION 'tidemark: a reservation names at least one stream';
    END IF;
    BEGIN
        -- 8388346167743836779 is "tidemark" in ASCII, read as a big-endian integer.
        PERFORM pg_advisory_xact_lock(8388346167743836779);
        PERFORM pg_current_xact_id();
        last_position := setval('event_positions', nextval('event_positions') + how_many - 1);
        RAISE EXCEPTION USING ERRCODE = 'TMRLS', MESSAGE = 'releasing the position lock';
    EXCEPTION WHEN SQLSTATE 'TMRLS' THEN
        NULL;
    END;
    RETURN last_position;
END
$$;

-- The oldest transaction id that may still add events to this database's log: the
-- oldest log writer still running in this database (one whose backend holds a one-key
-- advisory lock, or a transaction prepared in it), else the current snapshot's xmax. Every event with a
-- smaller transaction id is final — committed and visible to any later snapshot, or
-- rolled back — and so is every position below it. Transactions that write other
-- tables (read models, checkpoints), and transactions in other databases of the
-- cluster, hold no positions and must not stall this log's readers.
CREATE OR REPLACE FUNCTION tidemark_log_horizon() RETURNS xid8
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8;
BEGIN
    -- The readers below rely on each statement taking a fresh snapshot.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'tidemark: read the global log at READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    WITH locks AS MATERIALIZED (
        -- One read of the lock table: every one-key advisory lock, and every
        -- transaction id a backend holds as its own.
        SELECT l.locktype, l.pid, l.transactionid, l.database
          FROM pg_locks AS l
         WHERE l.granted
           AND ((l.locktype = 'advisory' AND l.objsubid = 1)
                OR (l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'))
    )
    SELECT COALESCE(
        (SELECT min(running.xid)
           FROM pg_snapshot_xip(pg_current_snapshot()) AS running (xid)
          WHERE xid(running.xid) IN (
                    SELECT own.transactionid
                      FROM locks AS writer
                      JOIN locks AS own ON own.pid = writer.pid
                     WHERE writer.locktype = 'advisory'
                       AND writer.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND own.locktype = 'transactionid'
                    UNION ALL
                    SELECT p.transaction
                      FROM pg_prepared_xacts AS p
                     WHERE p.database = current_database())),
        pg_snapshot_xmax(pg_current_snapshot()))
    INTO horizon;
    RETURN horizon;
END
$$;
