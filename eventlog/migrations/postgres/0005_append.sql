-- Appends, a whole group commit in one round trip.
--
-- A group commit runs many requests in one transaction; each must succeed or leave no
-- trace on its own. Issued statement by statement from the client, a request costs
-- about six round trips (savepoint, tenant, lock, insert, release, …), and on a busy
-- server those, not the commit, bound the throughput. `tidemark_append_batch` takes a
-- writer's whole batch instead: it locks the streams and reserves the positions
-- (`tidemark_reserve_positions`), runs every request through `tidemark_append` in
-- order, and signals the commit. `tidemark_append`'s EXCEPTION block is the request's
-- savepoint (PL/pgSQL runs it as a subtransaction), and every way a request can fail
-- comes back as an outcome instead of aborting the batch's transaction.
--
-- Both run as the caller (SECURITY INVOKER), so row-level security applies exactly as
-- to the caller's own statements; each request scopes the transaction to its tenant.
-- Outcomes: 'appended' (stream_version = the new version), 'conflict'
-- (stream_version = the actual version), 'wrong_tenant', 'key_taken', and 'failed'
-- with the error's SQLSTATE and message (nothing of the request was kept).

SET LOCAL search_path = public, pg_temp;

CREATE FUNCTION tidemark_append(
    tenant uuid,
    stream text,
    expected_version bigint,          -- NULL: any version
    first_position bigint,            -- the first of the positions reserved for it
    correlation_id uuid,
    causation_id uuid,
    actor text,
    event_ids uuid[],
    event_types text[],
    schema_versions bigint[],
    occurred_ats timestamptz[],
    payloads jsonb[],
    idempotency_key text,             -- NULL: no idempotency record
    request_hash text,
    response_status integer,
    response_body jsonb,              -- stored as is (the caller adds the position)
    OUT outcome text,
    OUT stream_version bigint,
    OUT error_code text,
    OUT error_message text)
LANGUAGE plpgsql VOLATILE
SET search_path = public, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    current_version bigint;
BEGIN
    PERFORM set_config('app.tenant', tenant::text, true);
    BEGIN
        -- Lock the stream's row; create it at version 0 if the name is free. Row-level
        -- security hides another tenant's stream, so "invisible but taken" is theirs.
        SELECT s.version INTO current_version
          FROM streams AS s WHERE s.stream_id = stream FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO streams (stream_id, tenant_id, version) VALUES (stream, tenant, 0)
                ON CONFLICT (stream_id) DO NOTHING
                RETURNING version INTO current_version;
            IF NOT FOUND THEN
                -- Taken: by this tenant since the first look (a new statement sees
                -- that commit), or by another tenant.
                SELECT s.version INTO current_version
                  FROM streams AS s WHERE s.stream_id = stream FOR UPDATE;
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'TMTEN', MESSAGE = 'wrong tenant';
                END IF;
            END IF;
        END IF;

        -- The key is claimed before the version is checked: a retry of a command that
        -- already succeeded should hear "already done", not "someone else wrote first".
        IF idempotency_key IS NOT NULL THEN
            INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body)
                VALUES (tenant, idempotency_key, request_hash, response_status, response_body)
                ON CONFLICT (tenant_id, key) DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'TMKEY', MESSAGE = 'idempotency key taken';
            END IF;
        END IF;

        IF expected_version IS NOT NULL AND expected_version <> current_version THEN
            RAISE EXCEPTION USING ERRCODE = 'TMVER', MESSAGE = 'version conflict';
        END IF;

        UPDATE streams AS s
           SET version = current_version + cardinality(event_ids)
         WHERE s.stream_id = stream;
        INSERT INTO events (global_position, event_id, tenant_id, stream_id, version,
                            event_type, schema_version, occurred_at, correlation_id,
                            causation_id, actor, data)
        SELECT first_position + e.n - 1, e.event_id, tenant, stream, current_version + e.n,
               e.event_type, e.schema_version, e.occurred_at, correlation_id,
               causation_id, actor, e.data
          FROM unnest(event_ids, event_types, schema_versions, occurred_ats, payloads)
               WITH ORDINALITY
               AS e (event_id, event_type, schema_version, occurred_at, data, n);

        outcome := 'appended';
        stream_version := current_version + cardinality(event_ids);
    EXCEPTION
        WHEN SQLSTATE 'TMTEN' THEN
            outcome := 'wrong_tenant';
        WHEN SQLSTATE 'TMKEY' THEN
            outcome := 'key_taken';
        WHEN SQLSTATE 'TMVER' THEN
            outcome := 'conflict';
            stream_version := current_version;
        WHEN OTHERS THEN
            outcome := 'failed';
            error_code := SQLSTATE;
            error_message := SQLERRM;
    END;
END
$$;

REVOKE EXECUTE ON FUNCTION tidemark_append(uuid, text, bigint, bigint, uuid, uuid, text,
    uuid[], text[], bigint[], timestamptz[], jsonb[], text, text, integer, jsonb) FROM PUBLIC;

-- One writer's batch: request i has the scalars at index i of the first arrays and
-- `event_counts[i]` events, which follow those of request i - 1 in the event arrays.
-- Answers one row per request, in order. A failed request's positions go to the next
-- one, so a batch in which every request succeeds leaves no gap in the log.
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
    response_bodies jsonb[])
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
BEGIN
    next_position := tidemark_reserve_positions(streams, total) - total + 1;
    FOR request IN 1 .. cardinality(streams) LOOP
        n := event_counts[request];
        body := response_bodies[request];
        -- The answer to replay includes where the events land.
        IF jsonb_typeof(body) = 'object' THEN
            body := body || jsonb_build_object('position', next_position + n - 1);
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
    integer[], jsonb[]) FROM PUBLIC;
