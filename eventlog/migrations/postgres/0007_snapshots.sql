-- Snapshots: a stream's folded state as of one of its versions, so the command side's
-- cold load reads one row plus the events after it instead of the whole stream.
--
-- A cache, never a source of truth: only that cold load reads it, and deleting every
-- row is always safe. One row per stream and format version (`snapshot_version`, the
-- version of the state's stored shape in `schemas::states`): a reader asks for the
-- format it understands, so a new format never meets an old row. A save never
-- replaces a newer snapshot of the same format (the upsert's WHERE in
-- `PostgresStore::save_snapshot`). `data` is `json`, not `jsonb`: it is stored and
-- returned as the text it was written, with no re-encoding on either side of a
-- megabyte-sized row, and nothing ever queries inside it.
--
-- Tenant isolation as for `events` (0003): row-level security forced, one policy per
-- tenant. Dropping every tenant's snapshots at once (`tidemark snapshots drop|rebuild`)
-- goes through `tidemark_drop_snapshots`, which runs as the owner; the owner's DELETE
-- policy exists for that function only, and the runtime role has no DELETE privilege.

SET LOCAL search_path = public, pg_temp;

CREATE TABLE snapshots (
    stream_id        text        NOT NULL,
    snapshot_version integer     NOT NULL CHECK (snapshot_version >= 1),
    tenant_id        uuid        NOT NULL,
    version          bigint      NOT NULL CHECK (version >= 1),
    data             json        NOT NULL,
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, snapshot_version),
    FOREIGN KEY (tenant_id, stream_id) REFERENCES streams (tenant_id, stream_id)
);

ALTER TABLE snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE snapshots FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON snapshots
    USING (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant', true), '')::uuid);

-- CURRENT_USER is resolved now, to the role running the migrations: the owner.
CREATE POLICY owner_drops_snapshots ON snapshots
    FOR DELETE TO CURRENT_USER
    USING (true);

-- Deletes every tenant's snapshots; answers how many there were.
CREATE FUNCTION tidemark_drop_snapshots() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    dropped bigint;
BEGIN
    DELETE FROM snapshots;
    GET DIAGNOSTICS dropped = ROW_COUNT;
    RETURN dropped;
END
$$;

REVOKE EXECUTE ON FUNCTION tidemark_drop_snapshots() FROM PUBLIC;
