-- Followers of the log's head learn it from the writer, not each from the database.
--
-- Until now `tidemark_append_batch` ran `pg_notify('tidemark_events', <last position>)`
-- inside the batch, and every listening store answered the notification by reading
-- the head itself (`tidemark_log_head()`, which looks at `pg_stat_activity`). With
-- three processes on one database that was four head reads per commit, the writer's
-- own included (docs/benchmarks.md has what that cost).
--
-- The writer already reads the visible head right after its commit, before it
-- answers. It now sends that value, as `head:<position>`, in the same statement
-- (`eventlog/src/postgres.rs`, `publish_head`), and followers take it as it is: a
-- head read after a commit is visible to every later snapshot of every session. So
-- this version of the batch function no longer notifies; the notification moves out
-- of the batch's transaction to just after it. Nothing else changes.
--
-- During a rolling upgrade a process of the previous release still listens on the
-- same channel and re-reads the head on any notification, so it keeps following.
-- Its own appends, though, no longer wake anyone: the other stores see them on their
-- next head notification or their periodic re-read (one second by default).

SET LOCAL search_path = public, pg_temp;

CREATE OR REPLACE FUNCTION tidemark_append_batch(
    tenants uuid[],
    streams text[],
    expected_versions bigint[],       -- NULL elements: any version
    correlation_ids uuid[],
    causation_ids uuid[],
    actors text[],
    event_counts integer[],
    event_ids uuid[],
    event_types text[],
    schema_versions bigint[],
    occurred_ats timestamptz[],
    payloads jsonb[],
    idempotency_keys text[],          -- NULL elements: no idempotency record
    request_hashes text[],
    response_statuses integer[],
    response_bodies jsonb[],
    chains bigint[])                  -- NULL elements: not part of a chain
RETURNS TABLE (
    outcome text,
    stream_version bigint,
    first_position bigint,
    last_position bigint,
    error_code text,
    error_message text)
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    next_position bigint;
    event_offset integer := 1;
    request integer;
    n integer;
    body jsonb;
    appended record;
    total bigint := (SELECT sum(c) FROM unnest(event_counts) AS c);
    -- Chains with a refused request in this batch so far.
    refused_chains bigint[] := '{}';
BEGIN
    next_position := tidemark_reserve_positions(streams, total) - total + 1;
    FOR request IN 1 .. cardinality(streams) LOOP
        n := event_counts[request];
        body := response_bodies[request];
        -- The answer to replay includes where the events land.
        IF jsonb_typeof(body) = 'object' THEN
            body := body || jsonb_build_object('position', next_position + n - 1);
        END IF;
        IF chains[request] IS NOT NULL AND chains[request] = ANY (refused_chains) THEN
            -- Decided, maybe, on the refused request's outcome: it must not land
            -- without it, even where the stream's version would let it.
            outcome := 'after_failed';
            stream_version := NULL;
            error_code := NULL;
            error_message := NULL;
            first_position := NULL;
            last_position := NULL;
            event_offset := event_offset + n;
            RETURN NEXT;
            CONTINUE;
        END IF;
        appended := tidemark_append(
            tenants[request], streams[request], expected_versions[request], next_position,
            correlation_ids[request], causation_ids[request], actors[request],
            event_ids[event_offset : event_offset + n - 1],
            event_types[event_offset : event_offset + n - 1],
            schema_versions[event_offset : event_offset + n - 1],
            occurred_ats[event_offset : event_offset + n - 1],
            payloads[event_offset : event_offset + n - 1],
            idempotency_keys[request], request_hashes[request], response_statuses[request],
            body);
        outcome := appended.outcome;
        stream_version := appended.stream_version;
        error_code := appended.error_code;
        error_message := appended.error_message;
        IF appended.outcome = 'appended' THEN
            first_position := next_position;
            last_position := next_position + n - 1;
            next_position := next_position + n;
        ELSE
            first_position := NULL;
            last_position := NULL;
            IF chains[request] IS NOT NULL THEN
                refused_chains := refused_chains || chains[request];
            END IF;
        END IF;
        event_offset := event_offset + n;
        RETURN NEXT;
    END LOOP;
END
$$;
