#!/usr/bin/env bash
# Counts the instructions one kg-server node executes per request, under valgrind's callgrind.
# Unlike a rate, the count does not move with the machine's load, so on this noisy 2-core box
# it measures what a change did to the node's own code exactly, where a throughput run cannot
# see 5% through a ±10% drift. It counts user-space instructions only: the kernel's share of a
# request (loopback TCP, wake-ups) is not in it, and neither are nginx, Redis or PostgreSQL.
#
#   ./scripts/profile-node.sh                     the release build (KG_PROFILE=debug: debug)
#   ./scripts/profile-node.sh --baseline BIN      BIN too (say, a build of main), in the same
#                                                 run, and each figure as a ratio to BIN's
#   options: --seconds N (load per row, default 12), --keys N (default 1000),
#            --keep DIR (keep the callgrind files there, for callgrind_annotate)
#
# Rows: GET (cache hit) and PUT, from wrk at 8 connections, against one node with one request
# thread over the machine's PostgreSQL (a fresh database) and Redis (a key prefix of its own),
# at the default log level. Uses KG_BENCH_DATABASE_URL and KG_BENCH_REDIS_URL like
# scripts/bench-server.sh; nothing is restarted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=12
keys=1000
baseline=""
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$seconds" "$keys"
[ -z "$baseline" ] || [ -x "$baseline" ] || fail "--baseline $baseline is not an executable"

admin_url="${KG_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${KG_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
ensure_packages valgrind:valgrind callgrind_control:valgrind wrk:wrk psql:postgresql-client \
    curl:curl bc:bc
psql "$admin_url" -qAtc 'select 1' >/dev/null || fail "PostgreSQL is not reachable at $admin_url"

# KG_PROFILE=debug profiles a debug build: its counts mean little, but test.sh's smoke run of
# this script then needs no release build.
case "${KG_PROFILE:-release}" in
    release) build=(--release); node_bin=target/release/kg-server ;;
    debug | dev) build=(); node_bin=target/debug/kg-server ;;
    *) fail "KG_PROFILE must be release or debug, not $KG_PROFILE" ;;
esac
step "building kg-server (${KG_PROFILE:-release})"
cargo build "${build[@]}" --locked -p kg-server

database="kgprofile_$$"
profile_url="${admin_url%/*}/$database"
workdir=$(mktemp -d)
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    psql "$admin_url" -qc "drop database if exists $database" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT
psql "$admin_url" -qc "create database $database" >/dev/null

# requests_total PORT: the node's count of answered requests.
requests_total() {
    # /api/status is compact JSON whose "requests" object starts with "total" (kg-api's
    # RequestCounters).
    curl -fs "http://127.0.0.1:$1/api/status" | sed -n 's/.*"requests":{"total":\([0-9]*\).*/\1/p'
}

# profile NAME BIN: runs BIN under callgrind; sets figures to "GET PUT", its instructions per
# request.
profile() {
    local name=$1 bin=$2 port out row lua requests_before requests instructions dumps=0
    figures=()
    port=$(free_port)
    out="$workdir/$name"
    mkdir -p "$out"
    KG_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p" \
        "$bin" --listen "127.0.0.1:$port" --node-id "profile-$name" --database-url "$profile_url" \
        --redis-url "$redis_url" --redis-prefix "kgprofile-$$-$name" >"$out/node.log" 2>&1 &
    node_pid=$!
    wait_for_status "http://127.0.0.1:$port/api/ready" 200 120 ||
        fail "the $name node did not start under valgrind: $(tail -n 5 "$out/node.log")"
    # Every key written (so the PUTs replace values) and read once (so GETs hit).
    if [ "$name" = candidate ]; then
        psql "$profile_url" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt \
            -f scripts/bench/preload.sql >/dev/null
    fi
    KG_KEYS=$keys wrk -t2 -c8 -d"$((keys / 200 + 3))s" -s scripts/bench/warm.lua \
        "http://127.0.0.1:$port" >/dev/null 2>&1
    for row in get put; do
        lua=scripts/bench/$row.lua
        requests_before=$(requests_total "$port")
        callgrind_control -z "$node_pid" >/dev/null
        KG_KEYS=$keys wrk -t1 -c8 -d"${seconds}s" -s "$lua" "http://127.0.0.1:$port" \
            >"$out/wrk-$row.txt" 2>&1
        callgrind_control --dump="$row" "$node_pid" >/dev/null
        dumps=$((dumps + 1))
        # The status call before the load is counted too, once it has answered.
        requests=$(($(requests_total "$port") - requests_before - 1))
        [ "$requests" -gt 0 ] || fail "no $row requests reached the $name node"
        grep -q 'non-2xx: 0,' "$out/wrk-$row.txt" ||
            fail "$row requests failed against the $name node: $(cat "$out/wrk-$row.txt")"
        instructions=$(callgrind_annotate "$out/callgrind.$node_pid.$dumps" 2>/dev/null |
            awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        figures+=("$((instructions / requests))")
    done
    kill "$node_pid" && wait "$node_pid" 2>/dev/null || true
    node_pid=""
    [ -z "$keep" ] || { mkdir -p "$keep/$name" && cp "$out"/callgrind.* "$keep/$name/"; }
}

step "profiling $node_bin (${seconds}s of GET, then of PUT)"
profile candidate "$node_bin"
get=${figures[0]} put=${figures[1]}
if [ -n "$baseline" ]; then
    step "profiling the baseline $baseline"
    profile baseline "$baseline"
    base_get=${figures[0]} base_put=${figures[1]}
fi

printf '\n%-12s %22s' "row" "instructions/request"
[ -z "$baseline" ] || printf ' %12s %8s' "baseline" "ratio"
printf '\n'
for row in get put; do
    case $row in get) label="GET (hit)"; mine=$get; theirs=${base_get:-} ;; put) label="PUT"; mine=$put; theirs=${base_put:-} ;; esac
    printf '%-12s %22s' "$label" "$mine"
    [ -z "$baseline" ] || printf ' %12s %8.3f' "$theirs" "$(echo "$mine / $theirs" | bc -l)"
    printf '\n'
done
