-- Leases: keys that are deleted when their lease's deadline passes or the lease is revoked.
--
-- Deadlines are Unix milliseconds by the database's clock, never a node's: nodes on skewed
-- clocks then agree on what has expired. (Milliseconds rather than timestamptz so that the
-- store's lease SQL is the same text on PostgreSQL and SQLite.)
--
-- A key whose lease's deadline has passed is gone for every read and every write from that
-- moment, before the sweeper deletes it: reads filter on the deadline, and kg_apply counts such
-- a key as absent. The sweeper (kg-server's lease task) then deletes it under the revision lock,
-- as a write with a revision and an event, exactly once: whichever node deletes the lease row
-- deletes its keys in the same transaction.

CREATE TABLE kg_leases (
    id bigserial PRIMARY KEY,
    -- Seconds, as granted; every keep-alive sets the deadline this far ahead again.
    ttl bigint NOT NULL,
    -- Unix milliseconds, database clock.
    deadline bigint NOT NULL
);
CREATE INDEX kg_leases_deadline ON kg_leases (deadline);

ALTER TABLE kg_keys
    -- The lease a live key is attached to; NULL for none and on tombstones.
    ADD COLUMN lease bigint,
    -- On a tombstone left by a lease: 'expired' or 'revoked', so that a replayed delete says
    -- why, as the live event did. NULL otherwise.
    ADD COLUMN reason text;
CREATE INDEX kg_keys_lease ON kg_keys (lease) WHERE lease IS NOT NULL;

-- The database's clock as Unix milliseconds, at the start of the transaction.
CREATE FUNCTION kg_now_ms() RETURNS bigint LANGUAGE sql STABLE
AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

DROP FUNCTION kg_apply(text, boolean[], text[], bytea[], bigint[], text[], text[]);
DROP FUNCTION kg_apply_serial(text, boolean[], text[], bytea[], bigint[], text[], text[]);

-- As 0001's kg_apply, with p_lease: the lease each put attaches its key to (NULL for none).
-- out_status 4: the put named a lease that does not exist or has expired; nothing written.
-- A key whose lease has expired counts as absent, whether or not the sweeper has run.
--
-- Every lease lookup is by id alone, its deadline compared outside the lookup: a lookup by id
-- AND deadline lets the planner answer it with a range scan of kg_leases_deadline filtered by
-- id, which costs nothing while the table is empty, when a session plans this once for good,
-- and reads every live lease for every write once there are thousands (seen: PUTs from 6,000/s
-- to 2,000/s with 10,000 leases, until the node's sessions were replaced).
CREATE FUNCTION kg_apply_serial(p_node text, p_delete boolean[], p_keys text[], p_values bytea[],
                         p_expect bigint[], p_idem text[], p_fingerprint text[], p_lease bigint[])
RETURNS TABLE (out_status smallint, out_revision bigint, out_create_revision bigint,
               out_version bigint, out_replayed boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    rev bigint;
    at bigint;
    cur record;
    prior record;
    live boolean;
    expect bigint;
BEGIN
    SELECT m.revision INTO rev FROM kg_meta m WHERE m.id = 1 FOR UPDATE;
    -- The clock after the lock, not at the transaction's start: the sweeper may have waited
    -- for the same lock, and expiry is judged at the moment the batch is applied.
    at := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
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
        SELECT k.value IS NOT NULL
                   AND (k.lease IS NULL
                        OR coalesce((SELECT l.deadline > at FROM kg_leases l WHERE l.id = k.lease), false))
                   AS live,
               k.create_revision, k.mod_revision, k.version
            INTO cur FROM kg_keys k WHERE k.key = p_keys[i];
        live := FOUND AND cur.live;
        expect := p_expect[i];
        IF (expect = -1 AND live)
            OR (expect = -2 AND NOT live)
            OR (expect >= 0 AND (NOT live OR cur.mod_revision <> expect)) THEN
            out_status := 2; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
        ELSIF NOT p_delete[i] AND p_lease[i] IS NOT NULL
            AND NOT coalesce((SELECT l.deadline > at FROM kg_leases l WHERE l.id = p_lease[i]), false) THEN
            out_status := 4; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
        ELSIF p_delete[i] AND NOT live THEN
            out_status := 1; out_revision := NULL; out_create_revision := NULL; out_version := NULL;
        ELSIF p_delete[i] THEN
            rev := rev + 1;
            UPDATE kg_keys SET value = NULL, create_revision = 0, mod_revision = rev, version = 0,
                    mod_node = p_node, mod_at = now(), lease = NULL, reason = NULL
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
            INSERT INTO kg_keys AS k (key, value, create_revision, mod_revision, version, mod_node,
                                      mod_at, lease, reason)
                VALUES (p_keys[i], p_values[i], out_create_revision, rev, out_version, p_node, now(),
                        p_lease[i], NULL)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                    create_revision = excluded.create_revision,
                    mod_revision = excluded.mod_revision, version = excluded.version,
                    mod_node = excluded.mod_node, mod_at = excluded.mod_at,
                    lease = excluded.lease, reason = NULL;
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

-- 0003's set-based kg_apply with p_lease; see 0003 for why every lookup is a LATERAL subquery
-- behind OFFSET 0, and kg_apply_serial above for what the lease changes.
CREATE FUNCTION kg_apply(p_node text, p_delete boolean[], p_keys text[], p_values bytea[],
                         p_expect bigint[], p_idem text[], p_fingerprint text[], p_lease bigint[])
RETURNS TABLE (out_status smallint, out_revision bigint, out_create_revision bigint,
               out_version bigint, out_replayed boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    base bigint;
    at bigint;
BEGIN
    IF coalesce(array_length(p_keys, 1), 0) = 1
        OR (SELECT count(DISTINCT k) <> count(*) FROM unnest(p_keys) k)
        OR (SELECT count(DISTINCT d) <> count(d) FROM unnest(p_idem) d) THEN
        RETURN QUERY SELECT * FROM kg_apply_serial(p_node, p_delete, p_keys, p_values, p_expect,
                                                   p_idem, p_fingerprint, p_lease);
        RETURN;
    END IF;
    SELECT m.revision INTO base FROM kg_meta m WHERE m.id = 1 FOR UPDATE;
    at := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    RETURN QUERY
    WITH input AS (
        SELECT t.ord, t.del, t.key, t.value, t.expect, t.idem, t.fp, t.lease
        FROM unnest(p_delete, p_keys, p_values, p_expect, p_idem, p_fingerprint, p_lease)
            WITH ORDINALITY AS t(del, key, value, expect, idem, fp, lease, ord)
    ),
    judged AS (
        SELECT i.*,
            prior.id IS NOT NULL AS replayed, prior.fingerprint AS prior_fp,
            prior.status AS prior_status, prior.revision AS prior_revision,
            prior.create_revision AS prior_create, prior.version AS prior_version,
            cur.value IS NOT NULL AND (cur.lease IS NULL OR coalesce(held.deadline > at, false))
                AS live,
            cur.create_revision AS cur_create,
            cur.mod_revision AS cur_mod, cur.version AS cur_version,
            i.lease IS NULL OR coalesce(granted.deadline > at, false) AS lease_ok
        FROM input i
        LEFT JOIN LATERAL (SELECT * FROM kg_idempotency d WHERE d.id = i.idem OFFSET 0) prior
            ON true
        LEFT JOIN LATERAL (SELECT * FROM kg_keys k WHERE k.key = i.key OFFSET 0) cur ON true
        -- The lease the key has now, and the lease the put attaches it to.
        LEFT JOIN LATERAL (SELECT l.deadline FROM kg_leases l WHERE l.id = cur.lease OFFSET 0) held
            ON true
        LEFT JOIN LATERAL (SELECT l.deadline FROM kg_leases l WHERE l.id = i.lease OFFSET 0) granted
            ON true
    ),
    decided AS (
        SELECT j.*,
            CASE
                WHEN j.replayed THEN NULL
                WHEN (j.expect = -1 AND j.live) OR (j.expect = -2 AND NOT j.live)
                    OR (j.expect >= 0 AND (NOT j.live OR j.cur_mod <> j.expect)) THEN 2
                WHEN NOT j.del AND NOT j.lease_ok THEN 4
                WHEN j.del AND NOT j.live THEN 1
                ELSE 0
            END::smallint AS status
        FROM judged j
    ),
    numbered AS (
        SELECT d.*,
            CASE WHEN d.status = 0 THEN
                base + count(*) FILTER (WHERE d.status = 0) OVER (ORDER BY d.ord)
            END AS revision
        FROM decided d
    ),
    outcome AS (
        SELECT n.*,
            CASE WHEN n.status <> 0 THEN NULL WHEN n.del THEN 0
                 WHEN n.live THEN n.cur_create ELSE n.revision END AS create_revision,
            CASE WHEN n.status <> 0 THEN NULL WHEN n.del THEN 0
                 WHEN n.live THEN n.cur_version + 1 ELSE 1 END AS version
        FROM numbered n
    ),
    written AS (
        INSERT INTO kg_keys AS k (key, value, create_revision, mod_revision, version, mod_node,
                                  mod_at, lease, reason)
        SELECT o.key, CASE WHEN o.del THEN NULL ELSE o.value END, o.create_revision,
            o.revision, o.version, p_node, now(), CASE WHEN o.del THEN NULL ELSE o.lease END, NULL
        FROM outcome o WHERE o.status = 0
        ON CONFLICT (key) DO UPDATE SET value = excluded.value,
            create_revision = excluded.create_revision, mod_revision = excluded.mod_revision,
            version = excluded.version, mod_node = excluded.mod_node, mod_at = excluded.mod_at,
            lease = excluded.lease, reason = NULL
    ),
    remembered AS (
        INSERT INTO kg_idempotency (id, fingerprint, status, revision, create_revision, version, created_at)
        SELECT o.idem, o.fp, o.status, o.revision, o.create_revision, o.version, now()
        FROM outcome o WHERE o.idem IS NOT NULL AND NOT o.replayed
    ),
    bumped AS (
        UPDATE kg_meta SET revision = coalesce((SELECT max(o.revision) FROM outcome o), base)
        WHERE id = 1
    )
    SELECT
        CASE WHEN NOT o.replayed THEN o.status
             WHEN o.prior_fp <> o.fp THEN 3::smallint ELSE o.prior_status END,
        CASE WHEN NOT o.replayed THEN o.revision
             WHEN o.prior_fp <> o.fp THEN NULL ELSE o.prior_revision END,
        CASE WHEN NOT o.replayed THEN o.create_revision
             WHEN o.prior_fp <> o.fp THEN NULL ELSE o.prior_create END,
        CASE WHEN NOT o.replayed THEN o.version
             WHEN o.prior_fp <> o.fp THEN NULL ELSE o.prior_version END,
        o.replayed
    FROM outcome o
    ORDER BY o.ord;
END
$$;
