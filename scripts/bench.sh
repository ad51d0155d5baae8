#!/usr/bin/env bash
# KeyGrid against the physical limits and its peers, in one run: starts the local cluster (three
# release nodes, nginx, a throwaway PostgreSQL and Redis from scripts/start.sh), preloads the
# keys, and measures each row next to its baseline on the same machine in the same run:
#
#   PUT through nginx        kg-bench and wrk    vs  pgbench single-row upsert
#   GET (cache hit), nginx   kg-bench and wrk    vs  nginx proxying to a static `return 200`,
#                                                    and redis-benchmark GET
#   GET direct to n1         wrk                 vs  the same
#   90/10 mix through nginx  kg-bench
#   GET p99 latency          kg-bench, open model    vs  nginx->static at the same rate
#                            at half the measured GET rate
#   server RSS               peak resident set (VmHWM) of each node
#
# Prints a table of rate, p50, p99 and ratio, and writes it as JSON to target/bench/ (one file
# per run plus latest.json). Targets: PUT >= 0.8x pgbench, GET (hit) >= 0.5x nginx->static,
# GET p99 < 5 ms, RSS < 150 MB; the table says which are met (the script does not fail on them).
#
#   ./scripts/bench.sh                 20 s per row, 64 connections, 100,000 keys
#   ./scripts/bench.sh --quick         2 s per row over 2,000 keys: checks the script and its JSON
#   ./scripts/bench.sh --ha [...]      the cost of the replicated data tier (scripts/bench-ha.sh)
#   options: --duration SECONDS --rounds N --connections N --keys N --no-build
#   Each row and its baselines run in --rounds (4) alternating rounds that add up to --duration;
#   a ratio is the median of the per-round ratios.
# The cluster uses the ports of scripts/start.sh (8000-8003, 8080, 5442, 6389): stop your own
# stack first. KG_PROFILE=debug measures debug binaries (test.sh's smoke run does).
set -euo pipefail
cd "$(dirname "$0")/.."
# --ha is its own benchmark, of two stacks side by side.
for arg in "$@"; do
    if [ "$arg" = --ha ]; then
        args=()
        for other in "$@"; do [ "$other" = --ha ] || args+=("$other"); done
        exec scripts/bench-ha.sh "${args[@]}"
    fi
done
source scripts/lib.sh

duration=20
rounds=4
connections=64
keys=100000
build=1
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; duration=2; rounds=1; keys=2000; shift ;;
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$duration" "$rounds" "$connections" "$keys"

ensure_packages wrk:wrk pgbench:postgresql-contrib psql:postgresql-client \
    redis-benchmark:redis-tools nginx:nginx curl:curl
stack_ports_free "the benchmark"
if [ "$build" = 1 ]; then build_tools; else build_tools --no-build; fi
bin=$(kg_bin_dir)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$KG_ROOT/target/bench/run-$stamp"
mkdir -p "$out"

KG_STATE_DIR=$(mktemp -d /tmp/keygrid-bench.XXXXXX)
chmod 755 "$KG_STATE_DIR" # the stack's PostgreSQL runs as the postgres user
export KG_STATE_DIR
baseline_dir="$KG_STATE_DIR/baseline-nginx"
finish() {
    local status=$?
    [ -s "$baseline_dir/nginx.pid" ] &&
        nginx -p "$baseline_dir" -c "$baseline_dir/nginx.conf" -s stop 2>/dev/null
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT
step "starting the cluster ($KG_PROFILE binaries, state in $KG_STATE_DIR)"
./scripts/start.sh --no-build >"$out/start.log" 2>&1 || { cat "$out/start.log"; fail "the cluster did not start"; }
# Refresh the variables lib.sh derived from KG_STATE_DIR.
source scripts/lib.sh
api=http://127.0.0.1:$KG_API_PORT

step "preloading $keys keys (one kg_apply batch) and pgbench's table, both 128-byte values"
psql "$KG_DATABASE_URL" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt -f scripts/bench/preload.sql >/dev/null
# redis-benchmark's keys hold 128-byte values too, so its GETs find them.
redis-benchmark -p "$KG_REDIS_PORT" -c "$connections" -n "$keys" -r "$keys" -d 128 -t set -q \
    >/dev/null 2>&1

# --- the baseline nginx: the stack's own nginx configuration, upstream replaced by a static
# `return 200` of a GET's answer, so the proxy path (logging, headers, keepalive) is the same.
static_port=$(free_port)
proxy_port=$(free_port)
web_port=$(free_port)
mkdir -p "$baseline_dir/tmp"
sed -e "s|$KG_STATE_DIR/nginx|$baseline_dir|g" -e "s|$KG_STATE_DIR/logs|$baseline_dir|g" \
    "$KG_STATE_DIR/nginx/nginx.conf" >"$baseline_dir/nginx.conf"
sed -e "s|127.0.0.1:800[123]|127.0.0.1:$static_port|" -e "s|listen 8000;|listen $proxy_port;|" \
    -e "s|listen 8080;|listen $web_port;|" -e "s|$KG_STATE_DIR/logs|$baseline_dir|g" \
    "$KG_STATE_DIR/nginx/keygrid.conf" >"$baseline_dir/keygrid.conf"
answer=$(curl -fs "$api/api/key?key=bench/00000000")
cat >>"$baseline_dir/keygrid.conf" <<CONF

server {
    listen 127.0.0.1:$static_port;
    access_log off;
    keepalive_requests 100000;
    location / {
        default_type application/json;
        return 200 '$answer';
    }
}
CONF
nginx -p "$baseline_dir" -c "$baseline_dir/nginx.conf" -t -q 2>"$out/baseline-nginx-check.log" ||
    fail "the baseline nginx configuration is invalid: $(cat "$out/baseline-nginx-check.log")"
nginx -p "$baseline_dir" -c "$baseline_dir/nginx.conf"
wait_for_status "http://127.0.0.1:$proxy_port/api/key?key=bench/00000000" 200 5 ||
    fail "the baseline nginx did not start"

# The machine drifts by 20% and more over minutes, so a row and its baseline measured minutes
# apart can land on different sides of a drift. Each row and its baselines are therefore
# measured in --rounds alternating rounds of duration / rounds seconds, and `kg-bench
# summarize` takes each ratio as the median of the per-round ratios.
round_s=$((duration / rounds > 0 ? duration / rounds : 1))

# wrk_run NAME URL LUA: a wrk run with latency percentiles, saved as NAME.wrk.
wrk_run() {
    KG_KEYS=$keys wrk -t2 -c"$connections" -d"${round_s}s" --latency -s "scripts/bench/$3" "$2" \
        >"$out/$1.wrk" 2>&1 || fail "wrk failed: $(cat "$out/$1.wrk")"
}
# bench_run NAME SECONDS ENDPOINT [ARGS...]: a kg-bench run, saved as NAME.json, with its
# charts in NAME.html.
bench_run() {
    local name=$1 seconds=$2 endpoint=$3
    shift 3
    "$bin/kg-bench" --endpoint "$endpoint" --concurrency "$connections" --duration "${seconds}s" \
        --warmup 1s --keys "$keys" --value-size 128 --output json --report "$out/$name.html" "$@" \
        >"$out/$name.json" || fail "kg-bench $name failed"
}
# pgbench_run NAME SCRIPT: pgbench with per-transaction logs, saved as NAME.txt and NAME.<pid>*.
pgbench_run() {
    (cd "$out" && pgbench -n -M prepared -c "$connections" -j 2 -T "$round_s" -l \
        --log-prefix="$1" -f "$2" "$KG_DATABASE_URL" >"$1.txt" 2>&1) ||
        fail "pgbench failed: $(cat "$out/$1.txt")"
}
# cache_total RESULT: kg_cache_requests_total{result=RESULT} summed over the nodes.
cache_total() { cache_count "$1" 8001 8002 8003; }

cat >"$KG_STATE_DIR/upsert.sql" <<SQL
\set k random(0, $keys - 1)
INSERT INTO bench_kv VALUES ('bench/' || lpad(:k::text, 8, '0'), convert_to(repeat('v', 128), 'UTF8'), nextval('bench_revision'))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision;
SQL
for r in $(seq "$rounds"); do
    step "PUT round $r/$rounds: through nginx with kg-bench, then wrk, then the pgbench upsert (${round_s}s each, $connections connections)"
    bench_run "put-nginx-kgbench.r$r" "$round_s" "$api" --mix put=100
    wrk_run "put-nginx-wrk.r$r" "$api" put.lua
    pgbench_run "pgbench-upsert.r$r" "$KG_STATE_DIR/upsert.sql"
done

step "warming the cache: one GET of every key through nginx"
KG_KEYS=$keys wrk -t2 -c"$connections" -d"$((keys / 4000 + 3))s" -s scripts/bench/warm.lua "$api" \
    >"$out/warm.wrk" 2>&1
hits_before=$(cache_total hit)
misses_before=$(cache_total miss)
for r in $(seq "$rounds"); do
    step "GET (cache hit) round $r/$rounds: through nginx and nginx->static with kg-bench, the same with wrk, then direct to n1"
    bench_run "get-nginx-kgbench.r$r" "$round_s" "$api" --mix get=100
    bench_run "static-nginx-kgbench.r$r" "$round_s" "http://127.0.0.1:$proxy_port" --mix get=100
    wrk_run "get-nginx-wrk.r$r" "$api" get.lua
    wrk_run "static-nginx-wrk.r$r" "http://127.0.0.1:$proxy_port" get.lua
    wrk_run "get-direct-wrk.r$r" "http://127.0.0.1:$(node_port n1)" get.lua
done
echo "{\"hits\": $(($(cache_total hit) - hits_before)), \"misses\": $(($(cache_total miss) - misses_before))}" \
    >"$out/cache.json"
step "GET baseline: redis-benchmark GET"
redis-benchmark -p "$KG_REDIS_PORT" -c "$connections" -n $((duration * 50000)) -r "$keys" -d 128 \
    -t get --csv >"$out/redis-get.csv" 2>/dev/null || fail "redis-benchmark failed"

step "90/10 GET/PUT mix through nginx: kg-bench (${duration}s)"
bench_run mix-nginx-kgbench "$duration" "$api" --mix get=90,put=10
# Half the GET rate through nginx, as kg-bench measured it over the rounds.
# (A report's own rate is its one top-level "rps" line; the per-second series are nested deeper.)
get_rate=$(awk '/^  "rps": / { gsub(",", "", $2); sum += $2; n++ } END { if (n) printf "%d", sum / n / 2 }' \
    "$out"/get-nginx-kgbench.r*.json)
[[ "$get_rate" =~ ^[1-9][0-9]*$ ]] || fail "no GET rate in the kg-bench reports of $out"
step "GET latency through nginx: kg-bench open model at $get_rate req/s (half the GET rate), then its floor, nginx->static at the same rate (${duration}s each)"
bench_run get-latency-kgbench "$duration" "$api" --mix get=100 --rate "$get_rate"
bench_run static-latency-kgbench "$duration" "http://127.0.0.1:$proxy_port" --mix get=100 \
    --rate "$get_rate"

for node in "${KG_NODES[@]}"; do
    pid=$(cat "$KG_RUN/$node.pid")
    awk -v node="$node" '/^VmHWM:/ {printf "{\"node\": \"%s\", \"peak_rss_kb\": %d}\n", node, $2}' \
        "/proc/$pid/status"
done >"$out/rss.jsonl"

"$bin/kg-bench" summarize "$out" --save "$KG_ROOT/target/bench/bench-$stamp.json" --meta "$(cat <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "profile": "$KG_PROFILE", "quick": $([ $quick = 1 ] && echo true || echo false),
 "duration_s": $duration, "rounds": $rounds, "connections": $connections, "keys": $keys, "cores": $(nproc),
 "cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
 "commit": "$(git describe --always --dirty 2>/dev/null || echo unknown)"}
JSON
)" || fail "the benchmark measured the wrong thing (errors, or a row without a rate): see above"
cp "$KG_ROOT/target/bench/bench-$stamp.json" "$KG_ROOT/target/bench/latest.json"
echo "raw outputs in $out"
