-- How positions are handed out and how the global log is read, as functions so every
-- process follows the same protocol. The reasoning (why these two halves together
-- make tailing by position gap-safe) is in the module docs of src/postgres.rs.
--
-- All four are owned by the migrating role. The two readers are SECURITY DEFINER:
-- they run as the owner, the one role that may SELECT every tenant's events (0003),
-- so the projector and the relay can follow the whole log while the runtime role's
-- own queries stay tenant-scoped. The reservation is SECURITY DEFINER so the runtime
-- role never needs rights on the sequence itself (it could otherwise rewind it).
-- EXECUTE is revoked from PUBLIC; `postgres::setup_roles` grants it to the app role.

SET LOCAL search_path = public, pg_temp;

-- Starts an append batch: locks the streams it will append to, then reserves
-- `how_many` consecutive positions for the calling transaction and returns the last.
--
-- The stream locks are transaction-level advisory locks, taken in key order (so two
-- batches cannot deadlock on them) and held until commit. They need no transaction
-- id, so a batch waiting for a busy stream does not hold back the log's readers. And
-- because a batch reserves only once it holds its streams, two batches appending to
-- one stream get their positions in the order they append: a stream's versions
-- increase with position in the log, across processes.
--
-- The reservation must be the transaction's first write: it assigns the transaction
-- id and takes the positions under one lock, so among log writers a later
-- transaction id always holds later positions. That lock is taken inside a
-- subtransaction that is then rolled back, which releases it at once (the sequence
-- and the top-level transaction id are not transactional and stay); holding it until
-- commit would serialize every writer of the database.
CREATE FUNCTION tidemark_reserve_positions(stream_ids text[], how_many bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    stream_key bigint;
    last_position bigint;
BEGIN
    IF how_many IS NULL OR how_many < 1 THEN
        RAISE EXCEPTION 'tidemark: cannot reserve % positions', how_many;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'tidemark: positions must be reserved before the transaction writes anything'
            USING HINT = 'call tidemark_reserve_positions first in the transaction';
    END IF;
    FOR stream_key IN
        SELECT DISTINCT hashtextextended(s, 0) AS k FROM unnest(stream_ids) AS s ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(stream_key);
    END LOOP;
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
-- oldest one still running in this database (or prepared in it), else the current
-- snapshot's xmax. Every event with a smaller transaction id is final — committed
-- and visible to any later snapshot, or rolled back — and so is every position below
-- it. Per database rather than pg_snapshot_xmin: transactions in other databases of
-- the cluster hold no positions here and must not stall this log's readers.
CREATE FUNCTION tidemark_log_horizon() RETURNS xid8
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
    -- pg_stat_activity is cached for the rest of a transaction once read; a stale
    -- copy could miss a writer that started since.
    PERFORM pg_stat_clear_snapshot();
    SELECT COALESCE(
        (SELECT min(running.xid)
           FROM pg_snapshot_xip(pg_current_snapshot()) AS running (xid)
          WHERE xid(running.xid) IN (
                    SELECT a.backend_xid
                      FROM pg_stat_activity AS a
                     WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND a.backend_xid IS NOT NULL
                       -- Autovacuum never reserves positions, so its ANALYZE need not
                       -- hold readers back. (Without pg_read_all_stats the type of
                       -- another role's backend reads as NULL, which is kept: safe.)
                       AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
                    UNION ALL
                    SELECT p.transaction
                      FROM pg_prepared_xacts AS p
                     WHERE p.database = current_database())),
        pg_snapshot_xmax(pg_current_snapshot()))
    INTO horizon;
    RETURN horizon;
END
$$;

-- Up to `max_events` events after `after_position`, in position order, stopping
-- below the horizon. The horizon is taken in one statement and the events are read in
-- the next, with a newer snapshot: that order is what the proof needs.
CREATE FUNCTION tidemark_read_log(after_position bigint, max_events bigint) RETURNS SETOF events
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8;
BEGIN
    horizon := tidemark_log_horizon();
    RETURN QUERY
        SELECT *
          FROM events AS e
         WHERE e.global_position > after_position
           AND e.transaction_id < horizon
         ORDER BY e.global_position
         LIMIT max_events;
END
$$;

-- The highest position `tidemark_read_log` would return now (0 for an empty log).
CREATE FUNCTION tidemark_log_head() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8;
BEGIN
    horizon := tidemark_log_horizon();
    RETURN COALESCE(
        (SELECT max(e.global_position) FROM events AS e WHERE e.transaction_id < horizon),
        0);
END
$$;

REVOKE EXECUTE ON FUNCTION tidemark_reserve_positions(text[], bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tidemark_log_horizon() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tidemark_read_log(bigint, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tidemark_log_head() FROM PUBLIC;
