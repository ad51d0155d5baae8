-- kg_apply's plan, made once per session and kept (plan_cache_mode = force_generic_plan), no
-- longer depends on the tables' statistics when it was made.
--
-- 0002 relied on enable_seqscan = off to keep every lookup a primary-key probe. That was not
-- enough: a session that planned kg_apply while the statistics said kg_idempotency was empty
-- (a fresh database after VACUUM ANALYZE, before any write) joined against a materialised
-- full index scan of kg_idempotency, filtered per write, and kept that plan. Every batch then
-- read the whole table, which grows by one row per write: on a fresh stack PUTs fell from
-- ~10,000/s to under 500/s within two minutes. It happened in some runs and not others: it
-- depends on how big kg_idempotency was when each session first planned a batch.
--
-- Now each lookup is a LATERAL subquery behind OFFSET 0, which the planner cannot flatten into
-- a join: it runs once per write, with the write's key as a parameter, and the only way to
-- answer it is the primary-key probe. The delete's UPDATE ... FROM join is gone too: deletes
-- go through the same INSERT ... ON CONFLICT as puts. Same arguments, same results.
-- (tests/api/store.rs: postgres_apply_probes_by_key_whatever_the_statistics_said_at_planning)

CREATE OR REPLACE FUNCTION kg_apply(p_node text, p_delete boolean[], p_keys text[], p_values bytea[],
                         p_expect bigint[], p_idem text[], p_fingerprint text[])
RETURNS TABLE (out_status smallint, out_revision bigint, out_create_revision bigint,
               out_version bigint, out_replayed boolean)
LANGUAGE plpgsql
-- A custom plan of the statement below costs ~0.9 ms to make, more than running it, so each
-- session plans it once and keeps the plan. That plan must not depend on the tables' sizes at
-- the time: see the note at the top.
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
        -- One primary-key probe per write, whatever the statistics say. OFFSET 0 keeps each
        -- lookup a subquery run per write with the write's key; without it the planner turns
        -- the lookup into an ordinary join, free to read the whole table.
        FROM input i
        LEFT JOIN LATERAL (SELECT * FROM kg_idempotency d WHERE d.id = i.idem OFFSET 0) prior
            ON true
        LEFT JOIN LATERAL (SELECT * FROM kg_keys k WHERE k.key = i.key OFFSET 0) cur ON true
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
    -- Deletes too: an applied delete's key is live, so its row conflicts and becomes the
    -- tombstone (no value, create_revision and version 0). One arbiter-index probe per write,
    -- where an UPDATE ... FROM would be a join the planner could again turn into a scan.
    written AS (
        INSERT INTO kg_keys AS k (key, value, create_revision, mod_revision, version, mod_node, mod_at)
        SELECT o.key, CASE WHEN o.del THEN NULL ELSE o.value END, o.create_revision,
            o.revision, o.version, p_node, now()
        FROM outcome o WHERE o.status = 0
        ON CONFLICT (key) DO UPDATE SET value = excluded.value,
            create_revision = excluded.create_revision, mod_revision = excluded.mod_revision,
            version = excluded.version, mod_node = excluded.mod_node, mod_at = excluded.mod_at
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
