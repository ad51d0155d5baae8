-- Preloads the benchmark keys: :keys keys named as kg-bench names them (bench/00000000 ...)
-- with 128-byte values, in one kg_apply batch, and the same rows in bench_kv, the table of
-- pgbench's upsert and select baselines. Then VACUUM ANALYZE, so both start from fresh
-- statistics. Run with psql -v keys=N -f scripts/bench/preload.sql.
SELECT count(*) FROM kg_apply(
    'preload',
    array_fill(false, ARRAY[:keys]),
    ARRAY(SELECT 'bench/' || lpad(g::text, 8, '0') FROM generate_series(0, :keys - 1) g),
    ARRAY(SELECT convert_to(repeat('v', 128), 'UTF8') FROM generate_series(1, :keys)),
    array_fill(NULL::bigint, ARRAY[:keys]),
    array_fill(NULL::text, ARRAY[:keys]),
    array_fill(NULL::text, ARRAY[:keys]),
    array_fill(NULL::bigint, ARRAY[:keys]));
CREATE TABLE bench_kv (key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL, revision bigint NOT NULL);
INSERT INTO bench_kv SELECT 'bench/' || lpad(g::text, 8, '0'), convert_to(repeat('v', 128), 'UTF8'), g
    FROM generate_series(0, :keys - 1) g;
CREATE SEQUENCE bench_revision;
VACUUM ANALYZE;
