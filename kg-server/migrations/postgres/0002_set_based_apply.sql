-- kg_apply in one set-based statement. The revision lock serialises every node's commits, so
-- the time a batch holds it bounds the whole cluster's write rate; the row-by-row loop of 0001
-- spent ~67 us per write under it. Same arguments, same results, same order.
--
-- The statement reads each key's and idempotency key's state once, before any write of the
-- batch, which is only right when no key and no idempotency key appears twice in the batch;
-- such a batch goes to the loop, kept as kg_apply_serial, as does a batch of one write.

ALTER FUNCTION kg_apply(text, boolean[], text[], bytea[], bigint[], text[], text[])
    RENAME TO kg_apply_serial;
-- Its lookups, too, must stay primary-key probes (see the plan note below).
ALTER FUNCTION kg_apply_serial(text, boolean[], text[], bytea[], bigint[], text[], text[])
    SET enable_seqscan = off;

CREATE FUNCTION kg_apply(p_node text, p_delete boolean[], p_keys text[], p_values bytea[],
                         p_expect bigint[], p_idem text[], p_fingerprint text[])
RETURNS TABLE (out_status smallint, out_revision bigint, out_create_revision bigint,
               out_version bigint, out_replayed boolean)
LANGUAGE plpgsql
-- A custom plan of the statement below costs ~0.9 ms to make, more than running it, so each
-- session plans it once. That plan must not depend on the tables' sizes at the time: planned
-- while kg_idempotency was empty, it would scan it for every write forever after, as it grows
-- by one row per write (seen: 4,400 PUTs/s falling to 1,000). Without sequential scans, every
-- lookup is a primary-key probe.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    base bigint;
BEGIN
    -- A batch of one is cheaper through the loop (0.34 ms against 0.47 ms here).
    IF coalesce(array_length(p_keys, 1), 0) = 1
        OR (SELECT count(DISTINCT k) <> count(*) FROM unnest(p_keys) k)
        OR (SELECT count(DISTINCT d) <> count(d) FROM unnest(p_idem) d) THEN
        RETURN QUERY SELECT * FROM kg_apply_serial(p_node, p_delete, p_keys, p_values, p_expect,
                                                   p_idem, p_fingerprint);
        RETURN;
    END IF;
    SELECT m.revision INTO base FROM kg_meta m WHERE m.id = 1 FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT t.ord, t.del, t.key, t.value, t.expect, t.idem, t.fp
        FROM unnest(p_delete, p_keys, p_values, p_expect, p_idem, p_fingerprint)
            WITH ORDINALITY AS t(del, key, value, expect, idem, fp, ord)
    ),
    judged AS (
        SELECT i.*,
            prior.id IS NOT NULL AS replayed, prior.fingerprint AS prior_fp,
            prior.status AS prior_status, prior.revision AS prior_revision,
            prior.create_revision AS prior_create, prior.version AS prior_version,
            cur.value IS NOT NULL AS live, cur.create_revision AS cur_create,
            cur.mod_revision AS cur_mod, cur.version AS cur_version
        -- LATERAL: one primary-key probe per write, whatever the statistics say; a hash join
        -- would scan both tables, and kg_idempotency grows with every write.
        FROM input i
        LEFT JOIN LATERAL (SELECT * FROM kg_idempotency d WHERE d.id = i.idem) prior ON true
        LEFT JOIN LATERAL (SELECT * FROM kg_keys k WHERE k.key = i.key) cur ON true
    ),
    decided AS (
        SELECT j.*,
            CASE
                WHEN j.replayed THEN NULL
                WHEN (j.expect = -1 AND j.live) OR (j.expect = -2 AND NOT j.live)
                    OR (j.expect >= 0 AND (NOT j.live OR j.cur_mod <> j.expect)) THEN 2
                WHEN j.del AND NOT j.live THEN 1
                ELSE 0
            END::smallint AS status
        FROM judged j
    ),
    numbered AS (
        -- Applied writes take the next revisions in batch order.
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
    upserted AS (
        INSERT INTO kg_keys AS k (key, value, create_revision, mod_revision, version, mod_node, mod_at)
        SELECT o.key, o.value, o.create_revision, o.revision, o.version, p_node, now()
        FROM outcome o WHERE o.status = 0 AND NOT o.del
        ON CONFLICT (key) DO UPDATE SET value = excluded.value,
            create_revision = excluded.create_revision, mod_revision = excluded.mod_revision,
            version = excluded.version, mod_node = excluded.mod_node, mod_at = excluded.mod_at
    ),
    deleted AS (
        UPDATE kg_keys k SET value = NULL, create_revision = 0, mod_revision = o.revision,
            version = 0, mod_node = p_node, mod_at = now()
        FROM outcome o WHERE o.status = 0 AND o.del AND k.key = o.key
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

-- kg_keys' updates change an indexed column (mod_revision), so they are never HOT: every write
-- leaves a dead row version and two dead index entries behind, and lookups of a hot key slow
-- down until a vacuum. Vacuum it after 1% of its rows changed, without throttling.
ALTER TABLE kg_keys SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

