-- Chained appends (eventlog/src/chain.rs): an append decided on an earlier append's
-- outcome must not land without it.
--
-- The command side may queue a stream's next append before the previous one has
-- committed, deciding it on the state the previous one leaves; both then usually run
-- in one batch. If the earlier one is refused (say another process wrote to the
-- stream first), the later one's expected version can still match, through the other
-- writer's events, which its decision never saw. So this version of
-- `tidemark_append_batch` takes one more array, `chains`: the chain each request
-- belongs to (NULL: none), an id the writer's process hands out. A request of a chain
-- that already had a request refused earlier in the batch is refused too, without
-- running, with the outcome 'after_failed'. Across batches the writer keeps the rule
-- itself, before it sends a batch. Requests outside any chain are untouched: two
-- independent appenders racing on one stream still each get their own answer.
--
-- A new overload, not a replacement: a process of the previous release still calls
-- the sixteen-argument function during a rolling upgrade. That one now hands its
-- batch to this one with no chains, which answers exactly as it did, so the batch
-- loop lives in one function.

SET LOCAL search_path = public, pg_temp;

CREATE FUNCTION tidemark_append_batch(
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
    newest bigint;
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
            newest := last_position;
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
    -- Delivered to every listening session of the database when the batch commits.
    IF newest IS NOT NULL THEN
        PERFORM pg_notify('tidemark_events', newest::text);
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION tidemark_append_batch(uuid[], text[], bigint[], uuid[], uuid[],
    text[], integer[], uuid[], text[], bigint[], timestamptz[], jsonb[], text[], text[],
    integer[], jsonb[], bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tidemark_append_batch(
    tenants uuid[],
    streams text[],
    expected_versions bigint[],
    correlation_ids uuid[],
    causation_ids uuid[],
    actors text[],
    event_counts integer[],
    event_ids uuid[],
    event_types text[],
    schema_versions bigint[],
    occurred_ats timestamptz[],
    payloads jsonb[],
    idempotency_keys text[],
    request_hashes text[],
    response_statuses integer[],
    response_bodies jsonb[])
RETURNS TABLE (
    outcome text,
    stream_version bigint,
    first_position bigint,
    last_position bigint,
    error_code text,
    error_message text)
LANGUAGE sql VOLATILE
SET search_path = public, pg_temp
AS $$
    SELECT * FROM tidemark_append_batch(
        tenants, streams, expected_versions, correlation_ids, causation_ids, actors,
        event_counts, event_ids, event_types, schema_versions, occurred_ats, payloads,
        idempotency_keys, request_hashes, response_statuses, response_bodies,
        NULL::bigint[])
$$;
