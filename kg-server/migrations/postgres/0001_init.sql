-- KeyGrid schema for PostgreSQL: one row per key (deleted keys stay as revisioned tombstones
-- so that watchers can replay deletes), and one row holding the cluster-wide revision.

CREATE TABLE kg_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    -- The last revision handed out. Every write bumps it under this row's lock, so revisions
    -- are strictly increasing in commit order and never reused.
    revision bigint NOT NULL,
    -- Tombstones at or below this revision have been purged; replay cannot go below it.
    compact_revision bigint NOT NULL DEFAULT 0
);
INSERT INTO kg_meta (id, revision) VALUES (1, 0);

CREATE TABLE kg_keys (
    -- "C" collation makes ORDER BY key byte order, which is what listing promises.
    key text COLLATE "C" PRIMARY KEY,
    -- NULL marks a tombstone: the key was deleted at mod_revision.
    value bytea,
    create_revision bigint NOT NULL,
    mod_revision bigint NOT NULL,
    version bigint NOT NULL,
    -- Who committed the key's last change and when, so replayed change events carry the same
    -- `node` and `at` as live ones.
    mod_node text NOT NULL,
    mod_at timestamptz NOT NULL
);
CREATE INDEX kg_keys_mod_revision ON kg_keys (mod_revision);

-- Outcomes of writes sent with an Idempotency-Key, so that a retried write (by a client, or by
-- nginx after a node died mid-request) is answered with the original outcome instead of being
-- applied again. Purged with the tombstones.
CREATE TABLE kg_idempotency (
    id text PRIMARY KEY,
    -- SHA-256 of the request, to refuse a key reused for a different request.
    fingerprint text NOT NULL,
    status smallint NOT NULL,
    revision bigint,
    create_revision bigint,
    version bigint,
    created_at timestamptz NOT NULL
);
CREATE INDEX kg_idempotency_created_at ON kg_idempotency (created_at);

-- Applies a batch of writes by node p_node in order, in one transaction, under the revision lock.
-- p_expect: NULL = unconditional, -1 = must not exist, -2 = must exist, n = mod_revision must be n.
-- p_idem / p_fingerprint: the write's Idempotency-Key and request fingerprint, or NULL.
-- out_status: 0 applied, 1 not found (delete of a missing key), 2 precondition failed,
-- 3 idempotency key already used for a different request. out_replayed: the outcome is the
-- one recorded for the idempotency key; nothing was written.
CREATE FUNCTION kg_apply(p_node text, p_delete boolean[], p_keys text[], p_values bytea[],
                         p_expect bigint[], p_idem text[], p_fingerprint text[])
RETURNS TABLE (out_status smallint, out_revision bigint, out_create_revision bigint,
               out_version bigint, out_replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    rev bigint;
    cur record;
    prior record;
    live boolean;
    expect bigint;
BEGIN
    SELECT m.revision INTO rev FROM kg_meta m WHERE m.id = 1 FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        out_replayed := false;
        IF p_idem[i] IS NOT NULL THEN
            SELECT * INTO prior FROM kg_idempotency d WHERE d.id = p_idem[i];
            IF FOUND THEN
                out_replayed := true;
                IF prior.fingerprint <> p_fingerprint[i] THEN
                    out_status := 3; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
                ELSE
                    out_status := prior.status; out_revision := prior.revision;
                    out_create_revision := prior.create_revision; out_version := prior.version;
                END IF;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        SELECT k.value IS NOT NULL AS live, k.create_revision, k.mod_revision, k.version
            INTO cur FROM kg_keys k WHERE k.key = p_keys[i];
        live := FOUND AND cur.live;
        expect := p_expect[i];
        IF (expect = -1 AND live)
            OR (expect = -2 AND NOT live)
            OR (expect >= 0 AND (NOT live OR cur.mod_revision <> expect)) THEN
            out_status := 2; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
        ELSIF p_delete[i] AND NOT live THEN
            out_status := 1; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
        ELSIF p_delete[i] THEN
            rev := rev + 1;
            UPDATE kg_keys SET value = NULL, create_revision = 0, mod_revision = rev, version = 0,
                    mod_node = p_node, mod_at = now()
                WHERE key = p_keys[i];
            out_status := 0; out_revision := rev; out_create_revision := 0; out_version := 0;
        ELSE
            rev := rev + 1;
            IF live THEN
                out_create_revision := cur.create_revision;
                out_version := cur.version + 1;
            ELSE
                out_create_revision := rev;
                out_version := 1;
            END IF;
            INSERT INTO kg_keys AS k (key, value, create_revision, mod_revision, version, mod_node, mod_at)
                VALUES (p_keys[i], p_values[i], out_create_revision, rev, out_version, p_node, now())
                ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                    create_revision = excluded.create_revision,
                    mod_revision = excluded.mod_revision, version = excluded.version,
                    mod_node = excluded.mod_node, mod_at = excluded.mod_at;
            out_status := 0; out_revision := rev;
        END IF;
        IF p_idem[i] IS NOT NULL THEN
            INSERT INTO kg_idempotency (id, fingerprint, status, revision, create_revision, version, created_at)
                VALUES (p_idem[i], p_fingerprint[i], out_status, out_revision, out_create_revision,
                        out_version, now());
        END IF;
        RETURN NEXT;
    END LOOP;
    UPDATE kg_meta SET revision = rev WHERE id = 1;
END
$$;
