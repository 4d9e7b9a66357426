-- A batch's appends run together in one subtransaction, one statement each, and only
-- a request that is refused (or fails) runs alone.
--
-- Until now `tidemark_append_batch` called `tidemark_append` for every request: a
-- function call that sets its own search path, a subtransaction (its EXCEPTION
-- block) and four statements (the tenant, the stream row, the events, the foreign key
-- check), each with its own executor start-up, and a fresh copy of the events'
-- CHECK constraints, which PostgreSQL compiles anew for every statement. A profile of
-- the batch function (docs/benchmarks.md) had executor start-up, CHECK compiling and
-- the events' `unnest` at about a third of its time. And on one stream written many
-- times in a batch (a hot tenant's budget), each subtransaction locked the stream's
-- row after another had updated it, so PostgreSQL kept the lockers in multixacts that
-- every later look at the row had to read (`GetMultiXactIdMembers`, 8 % of the
-- writer's backend).
--
-- Now the requests run in segments. A segment is one subtransaction in which each
-- request is one statement, the stream row's insert or update and the events' insert
-- together (a data-modifying WITH), after the tenant is set by an assignment (no
-- statement at all). The stream step carries the version check: a new stream is
-- inserted `ON CONFLICT DO NOTHING`, an existing one updated `WHERE version =
-- expected`. When it finds nothing to do (a conflict, another tenant's stream, a new
-- stream under "any version", a chain already refused), the request has written
-- nothing: the segment ends before it, keeping what it did, and that request runs
-- alone through `tidemark_append`, exactly as before, which gives its outcome. Then a
-- new segment starts after it. A request that fails after writing (its idempotency key
-- was taken, or a statement raised) rolls its segment back; the segment's requests
-- before it run again in a new segment and it runs alone. Every request therefore ends
-- as `tidemark_append` alone would have ended it, in the same order, on the same
-- state, with the same positions: a segment is a shortcut for requests that succeed,
-- never a different outcome. Nothing else changes: same signature, same answers.

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
    requests integer := cardinality(streams);
    -- Events in the batch, counted with the requests' starts below.
    total bigint;
    -- Per request: its first event in the event arrays, and its answer.
    starts integer[] := '{}';
    outcomes text[] := '{}';
    versions bigint[] := '{}';
    firsts bigint[] := '{}';
    lasts bigint[] := '{}';
    codes text[] := '{}';
    messages text[] := '{}';
    -- Chains with a refused request in this batch so far.
    refused_chains bigint[] := '{}';
    next_position bigint;
    segment_position bigint;
    -- The first request not settled yet.
    pos integer := 1;
    -- The request to run alone next (NULL: none known).
    alone integer;
    -- One past the last request the current segment keeps.
    kept integer;
    -- The request the current segment is at, should it fail.
    at integer;
    request integer;
    event_count integer;
    first_event integer;
    stored_body jsonb;
    -- The stream's version before the request's events, and after them (NULL when
    -- none were written).
    current_version bigint;
    landed_version bigint;
    scope text;
    appended record;
BEGIN
    first_event := 1;
    FOR request IN 1 .. requests LOOP
        starts[request] := first_event;
        first_event := first_event + event_counts[request];
    END LOOP;
    total := first_event - 1;
    next_position := tidemark_reserve_positions(streams, total) - total + 1;

    WHILE pos <= requests LOOP
        IF pos = alone THEN
            -- One request alone, in its own subtransaction (tidemark_append's), as
            -- every request ran before this migration.
            request := pos;
            event_count := event_counts[request];
            first_event := starts[request];
            IF chains[request] IS NOT NULL AND chains[request] = ANY (refused_chains) THEN
                -- Decided, maybe, on the refused request's outcome: it must not land
                -- without it, even where the stream's version would let it.
                outcomes[request] := 'after_failed';
                versions[request] := NULL;
                firsts[request] := NULL;
                lasts[request] := NULL;
                codes[request] := NULL;
                messages[request] := NULL;
            ELSE
                stored_body := response_bodies[request];
                -- The answer to replay includes where the events land.
                IF jsonb_typeof(stored_body) = 'object' THEN
                    stored_body := stored_body
                        || jsonb_build_object('position', next_position + event_count - 1);
                END IF;
                appended := tidemark_append(
                    tenants[request], streams[request], expected_versions[request],
                    next_position, correlation_ids[request], causation_ids[request],
                    actors[request],
                    event_ids[first_event : first_event + event_count - 1],
                    event_types[first_event : first_event + event_count - 1],
                    schema_versions[first_event : first_event + event_count - 1],
                    occurred_ats[first_event : first_event + event_count - 1],
                    payloads[first_event : first_event + event_count - 1],
                    idempotency_keys[request], request_hashes[request],
                    response_statuses[request], stored_body);
                outcomes[request] := appended.outcome;
                versions[request] := appended.stream_version;
                codes[request] := appended.error_code;
                messages[request] := appended.error_message;
                IF appended.outcome = 'appended' THEN
                    firsts[request] := next_position;
                    lasts[request] := next_position + event_count - 1;
                    next_position := next_position + event_count;
                ELSE
                    firsts[request] := NULL;
                    lasts[request] := NULL;
                    IF chains[request] IS NOT NULL THEN
                        refused_chains := refused_chains || chains[request];
                    END IF;
                END IF;
            END IF;
            pos := pos + 1;
            alone := NULL;
            CONTINUE;
        END IF;

        -- A segment: requests pos .. kept - 1 in one subtransaction, up to the next
        -- request known to run alone.
        kept := COALESCE(alone, requests + 1);
        segment_position := next_position;
        BEGIN
            FOR request IN pos .. kept - 1 LOOP
                at := request;
                event_count := event_counts[request];
                first_event := starts[request];
                IF chains[request] IS NOT NULL AND chains[request] = ANY (refused_chains) THEN
                    alone := request;
                    kept := request;
                    EXIT;
                END IF;
                -- SET LOCAL, by an assignment: plpgsql evaluates it without a statement.
                scope := set_config('app.tenant', tenants[request]::text, true);
                IF event_count = 1 AND expected_versions[request] = 0 THEN
                    WITH stream AS (
                        INSERT INTO streams (stream_id, tenant_id, version)
                        VALUES (streams[request], tenants[request], 1)
                        ON CONFLICT (stream_id) DO NOTHING
                        RETURNING 0::bigint AS current_version)
                    , written AS (
                    INSERT INTO events (global_position, event_id, tenant_id, stream_id,
                                        version, event_type, schema_version, occurred_at,
                                        correlation_id, causation_id, actor, data)
                    SELECT next_position, event_ids[first_event], tenants[request],
                           streams[request], s.current_version + 1, event_types[first_event],
                           schema_versions[first_event], occurred_ats[first_event],
                           correlation_ids[request], causation_ids[request],
                           actors[request], payloads[first_event]
                      FROM stream AS s
                    RETURNING version)
                    SELECT w.version INTO landed_version FROM written AS w;
                ELSIF event_count = 1 THEN
                    -- Row-level security hides another tenant's stream: no row, as for
                    -- a stream that does not exist or a version that does not match.
                    WITH stream AS (
                        UPDATE streams AS s
                           SET version = s.version + 1
                         WHERE s.stream_id = streams[request]
                           AND s.version = COALESCE(expected_versions[request], s.version)
                        RETURNING s.version - 1 AS current_version)
                    , written AS (
                    INSERT INTO events (global_position, event_id, tenant_id, stream_id,
                                        version, event_type, schema_version, occurred_at,
                                        correlation_id, causation_id, actor, data)
                    SELECT next_position, event_ids[first_event], tenants[request],
                           streams[request], s.current_version + 1, event_types[first_event],
                           schema_versions[first_event], occurred_ats[first_event],
                           correlation_ids[request], causation_ids[request],
                           actors[request], payloads[first_event]
                      FROM stream AS s
                    RETURNING version)
                    SELECT w.version INTO landed_version FROM written AS w;
                ELSE
                    -- Several events: the stream step, then the events. (The one-event
                    -- statements above do both in one; `unnest` costs more than it saves
                    -- when there is one event.) RETURNING INTO leaves NULL when the step
                    -- found nothing to do.
                    IF expected_versions[request] = 0 THEN
                        INSERT INTO streams (stream_id, tenant_id, version)
                        VALUES (streams[request], tenants[request], event_count)
                        ON CONFLICT (stream_id) DO NOTHING
                        RETURNING 0::bigint INTO current_version;
                    ELSE
                        UPDATE streams AS s
                           SET version = s.version + event_count
                         WHERE s.stream_id = streams[request]
                           AND s.version = COALESCE(expected_versions[request], s.version)
                        RETURNING s.version - event_count INTO current_version;
                    END IF;
                    landed_version := NULL;
                    IF current_version IS NOT NULL THEN
                        INSERT INTO events (global_position, event_id, tenant_id, stream_id,
                                            version, event_type, schema_version, occurred_at,
                                            correlation_id, causation_id, actor, data)
                        SELECT next_position + e.n - 1, e.event_id, tenants[request],
                               streams[request], current_version + e.n, e.event_type,
                               e.schema_version, e.occurred_at, correlation_ids[request],
                               causation_ids[request], actors[request], e.data
                          FROM unnest(event_ids[first_event : first_event + event_count - 1],
                                      event_types[first_event : first_event + event_count - 1],
                                      schema_versions[first_event : first_event + event_count - 1],
                                      occurred_ats[first_event : first_event + event_count - 1],
                                      payloads[first_event : first_event + event_count - 1])
                               WITH ORDINALITY
                               AS e (event_id, event_type, schema_version, occurred_at, data, n);
                        landed_version := current_version + event_count;
                    END IF;
                END IF;
                IF landed_version IS NULL THEN
                    -- The stream step found nothing to do, so nothing was written: the
                    -- segment keeps what came before, and this request runs alone.
                    alone := request;
                    kept := request;
                    EXIT;
                END IF;
                IF idempotency_keys[request] IS NOT NULL THEN
                    stored_body := response_bodies[request];
                    IF jsonb_typeof(stored_body) = 'object' THEN
                        stored_body := stored_body
                            || jsonb_build_object('position', next_position + event_count - 1);
                    END IF;
                    INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body)
                        VALUES (tenants[request], idempotency_keys[request],
                                request_hashes[request], response_statuses[request],
                                stored_body)
                        ON CONFLICT (tenant_id, key) DO NOTHING;
                    IF NOT FOUND THEN
                        -- Its events are written already: undo the segment.
                        RAISE EXCEPTION USING ERRCODE = 'TMKEY', MESSAGE = 'idempotency key taken';
                    END IF;
                END IF;
                outcomes[request] := 'appended';
                versions[request] := landed_version;
                firsts[request] := next_position;
                lasts[request] := next_position + event_count - 1;
                codes[request] := NULL;
                messages[request] := NULL;
                next_position := next_position + event_count;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            -- Everything the segment did is undone; its requests before the failing
            -- one run again in the next segment, and the failing one alone.
            next_position := segment_position;
            kept := pos;
            alone := at;
        END;
        pos := kept;
    END LOOP;

    FOR request IN 1 .. requests LOOP
        outcome := outcomes[request];
        stream_version := versions[request];
        first_position := firsts[request];
        last_position := lasts[request];
        error_code := codes[request];
        error_message := messages[request];
        RETURN NEXT;
    END LOOP;
END
$$;
