-- A request that expects a new stream makes the stream's row in one statement.
--
-- `tidemark_append` (0005) looked for the stream's row (`SELECT … FOR UPDATE`), made it
-- at version 0 when the name was free, and then updated it to the version the events
-- take it to: three statements and two row versions for every new stream, and every
-- `create-post` is one. Measured with pg_stat_statements at concurrency 64
-- (docs/benchmarks.md), the look and the update were 0.025 and 0.036 ms of the
-- request's 0.2 ms of statements. Now a request whose expected version is 0 inserts
-- the row at its new version first (`ON CONFLICT DO NOTHING`); only if the name is
-- taken does it go the old way, which tells a stream of its own (then the version
-- check refuses the request as a conflict) from another tenant's. The idempotency key
-- is still claimed before the version is checked, and a refusal still rolls back the
-- request's subtransaction, the new row with it. Nothing else changes: same
-- signature, same outcomes.

SET LOCAL search_path = public, pg_temp;

CREATE OR REPLACE FUNCTION tidemark_append(
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
    -- The stream was made by this request, at its new version: nothing to update.
    created boolean := false;
BEGIN
    PERFORM set_config('app.tenant', tenant::text, true);
    BEGIN
        -- A request that expects a new stream (version 0) makes it at once, at the
        -- version its events take it to: one statement where the other path below
        -- costs three (look, insert, update). If the name is taken, that path sorts out
        -- whose it is and the version check refuses it.
        IF expected_version = 0 THEN
            INSERT INTO streams (stream_id, tenant_id, version)
                VALUES (stream, tenant, cardinality(event_ids))
                ON CONFLICT (stream_id) DO NOTHING;
            created := FOUND;
        END IF;
        IF created THEN
            current_version := 0;
        ELSE
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

        IF NOT created THEN
            UPDATE streams AS s
               SET version = current_version + cardinality(event_ids)
             WHERE s.stream_id = stream;
        END IF;
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
