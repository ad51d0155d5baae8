#!/usr/bin/env bash
# Benchmarks one kg-server node on PostgreSQL and Redis against those servers themselves, in
# the same run, at the same concurrency over the same keys, and prints each rate and ratio:
#   PUT /api/key with wrk               vs  pgbench doing the same single-row upsert
#   GET /api/key, cache off, with wrk   vs  pgbench doing the same single-row select
#   GET /api/key, warm cache, with wrk  vs  redis-benchmark GET
# Targets: PUT >= 0.8x the pgbench upsert rate; GET (hit) >= 0.35x redis-benchmark GET.
#
# Usage: scripts/bench-server.sh [--duration SECONDS] [--connections N] [--keys N] [--rounds N]
# The warm-cache GET is measured in --rounds (5) alternating rounds of kg and redis-benchmark,
# each kg round half of --duration, and the median ratio is reported.
# Uses the PostgreSQL at KG_BENCH_DATABASE_URL (default: the machine's, as for the tests) and
# creates a fresh database in it; nothing is restarted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=20
connections=64
keys=100000
rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        *) fail "unknown option $1 (see the header of $0)" ;;
    esac
done

admin_url="${KG_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${KG_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
redis_host=$(echo "$redis_url" | sed -E 's|redis://([^:/]+).*|\1|')
redis_port=$(echo "$redis_url" | sed -nE 's|redis://[^:/]+:([0-9]+).*|\1|p')
redis_port=${redis_port:-6379}
ensure_packages wrk:wrk pgbench:postgresql-contrib psql:postgresql-client bc:bc curl:curl \
    redis-benchmark:redis-tools
psql "$admin_url" -qAtc 'select 1' >/dev/null || fail "PostgreSQL is not reachable at $admin_url"

step "building kg-server (release)"
cargo build --release --locked -p kg-server

database="kgbench_$$"
bench_url="${admin_url%/*}/$database"
workdir=$(mktemp -d)
server_pid=""
cached_pid=""
cleanup() {
    for pid in $server_pid $cached_pid; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    psql "$admin_url" -qc "drop database if exists $database" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT
psql "$admin_url" -qc "create database $database" >/dev/null

# start_node PORT NAME [ARGS...]: a release node in the background; its pid in $started_pid.
start_node() {
    local port=$1 name=$2
    shift 2
    KG_LOG_FORMAT=json RUST_LOG=warn ./target/release/kg-server --listen "127.0.0.1:$port" \
        --database-url "$bench_url" --node-id "$name" "$@" >"$workdir/$name.log" 2>&1 &
    started_pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/api/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$workdir/$name.log"
    fail "node $name did not become ready"
}
port=$(free_port)
step "starting a node on 127.0.0.1:$port over PostgreSQL, without cache"
start_node "$port" bench
server_pid=$started_pid

step "preloading $keys keys (one kg_apply batch) and the pgbench table"
psql "$bench_url" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt -f scripts/bench/preload.sql >/dev/null

cat >"$workdir/upsert.sql" <<SQL
\set k random(0, $keys - 1)
INSERT INTO bench_kv VALUES ('bench/' || lpad(:k::text, 8, '0'), convert_to(repeat('v', 128), 'UTF8'), nextval('bench_revision'))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision;
SQL
cat >"$workdir/select.sql" <<SQL
\set k random(0, $keys - 1)
SELECT value FROM bench_kv WHERE key = 'bench/' || lpad(:k::text, 8, '0');
SQL

# wrk_rate LUA [PORT]: requests/s of a wrk run against a node.
wrk_rate() {
    KG_KEYS=$keys wrk -t2 -c"$connections" -d"${duration}s" -s "scripts/bench/$1" \
        "http://127.0.0.1:${2:-$port}" >"$workdir/wrk-$1-${2:-$port}.txt" 2>&1
    grep -E 'non-2xx' "$workdir/wrk-$1-${2:-$port}.txt" >&2 || true
    awk '/^Requests\/sec:/ {print $2}' "$workdir/wrk-$1-${2:-$port}.txt"
}
# pgbench_rate SCRIPT: transactions/s of pgbench with prepared statements.
pgbench_rate() {
    pgbench -n -M prepared -c "$connections" -j 2 -T "$duration" -f "$workdir/$1" "$bench_url" \
        >"$workdir/pgbench-$1.txt" 2>&1
    awk '/^tps = / {print $3}' "$workdir/pgbench-$1.txt"
}

step "PUT: kg-server via wrk (${duration}s, $connections connections)"
put_rate=$(wrk_rate put.lua)
step "PUT baseline: pgbench single-row upsert"
upsert_rate=$(pgbench_rate upsert.sql)
step "GET: kg-server via wrk"
get_rate=$(wrk_rate get.lua)
step "GET baseline: pgbench single-row select"
select_rate=$(pgbench_rate select.sql)

cached_port=$(free_port)
step "starting a second node on 127.0.0.1:$cached_port with the Redis cache ($redis_url)"
start_node "$cached_port" bench-cached --redis-url "$redis_url" --redis-prefix "kgbench-$$"
cached_pid=$started_pid
step "warming the cache: one GET of every key"
KG_KEYS=$keys wrk -t2 -c"$connections" -d"$(( keys / 4000 + 5 ))s" -s scripts/bench/warm.lua \
    "http://127.0.0.1:$cached_port" >"$workdir/wrk-warm.txt" 2>&1
hits_before=$(cache_count hit "$cached_port")
misses_before=$(cache_count miss "$cached_port")
# The machine's speed drifts by ±20% over minutes, so one kg run then one redis-benchmark run
# can land on different sides of a drift. Instead, alternate shorter rounds of the two and
# report the median of the per-round ratios (and every round).
round_duration=$(( duration / 2 > 5 ? duration / 2 : 5 ))
round_ratios=()
cached_rates=()
redis_rates=()
for round in $(seq "$rounds"); do
    step "GET (warm cache) round $round/$rounds: kg-server via wrk (${round_duration}s), then redis-benchmark GET"
    rate=$(KG_KEYS=$keys wrk -t2 -c"$connections" -d"${round_duration}s" -s scripts/bench/get.lua \
        "http://127.0.0.1:$cached_port" | awk '/Requests\/sec/ {print $2}')
    baseline=$(redis-benchmark -h "$redis_host" -p "$redis_port" -c "$connections" -n 400000 \
        -r "$keys" -d 128 -t get --csv 2>/dev/null | awk -F'"' '$2 == "GET" {print $4}')
    cached_rates+=("$rate")
    redis_rates+=("$baseline")
    round_ratios+=("$(echo "$rate / $baseline" | bc -l)")
    printf '  kg %.0f/s, redis-benchmark %.0f/s, ratio %.3f\n' "$rate" "$baseline" "${round_ratios[-1]}"
done
hits=$(( $(cache_count hit "$cached_port") - hits_before ))
misses=$(( $(cache_count miss "$cached_port") - misses_before ))
cached_rate=$(median "${cached_rates[@]}")
redis_rate=$(median "${redis_rates[@]}")
cached_ratio=$(median "${round_ratios[@]}")

batch=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '
    /^kg_write_batch_size_sum/ {sum=$2} /^kg_write_batch_size_count/ {count=$2}
    END {if (count > 0) printf "%.1f", sum / count; else print "n/a"}')

printf '\n%-34s %12s %12s %8s\n' "what" "kg-server/s" "baseline/s" "ratio"
printf '%-34s %12.0f %12.0f %8.2f\n' "PUT vs pgbench upsert" "$put_rate" "$upsert_rate" \
    "$(echo "$put_rate / $upsert_rate" | bc -l)"
printf '%-34s %12.0f %12.0f %8.2f\n' "GET vs pgbench select" "$get_rate" "$select_rate" \
    "$(echo "$get_rate / $select_rate" | bc -l)"
printf '%-34s %12.0f %12.0f %8.2f\n' "GET (cache hit) vs redis-benchmark" "$cached_rate" \
    "$redis_rate" "$cached_ratio"
printf 'GET (cache hit) rounds: %s (median of per-round ratios above; rates are medians too)\n' \
    "$(printf '%.3f ' "${round_ratios[@]}")"
printf 'cache hit ratio during the warm GET run: %s (%s hits, %s misses)\n' \
    "$(echo "scale=4; $hits / ($hits + $misses)" | bc -l)" "$hits" "$misses"
printf 'mean write batch size during the PUT run: %s\n' "$batch"
printf 'targets: PUT >= 0.80, GET (hit) >= 0.35 (%s connections, %s keys, %ss each, on %s cores)\n' \
    "$connections" "$keys" "$duration" "$(nproc)"
