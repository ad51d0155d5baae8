#!/usr/bin/env bash
# What history costs a PUT: PUT /api/key with the history trigger on (every PUT over a
# preloaded key keeps the version it replaced in kg_history), against the same PUTs with the
# trigger disabled, in alternating rounds of the same run, on one node. Prints requests/s of
# each and their ratio (target: at least 0.9, history slowing PUT by at most 10%), and how
# many versions the run kept.
#
#   ./scripts/bench-history.sh [--rounds N] [--seconds N] [--connections N] [--keys N]
#
# One release node (KG_PROFILE=debug: a debug build, for a smoke run) with the Redis cache, on
# a fresh database in the PostgreSQL at KG_BENCH_DATABASE_URL and a key prefix of its own in
# the Redis at KG_BENCH_REDIS_URL (defaults: the machine's, as for the tests). Load from wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rounds=4
seconds=10
connections=64
keys=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$rounds" "$seconds" "$connections" "$keys"

admin_url="${KG_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${KG_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
ensure_packages wrk:wrk psql:postgresql-client bc:bc curl:curl
psql "$admin_url" -qAtc 'select 1' >/dev/null || fail "PostgreSQL is not reachable at $admin_url"

case "${KG_PROFILE:-release}" in
    release) build=(--release); bin=target/release ;;
    debug | dev) build=(); bin=target/debug ;;
    *) fail "KG_PROFILE must be release or debug, not $KG_PROFILE" ;;
esac
step "building kg-server (${KG_PROFILE:-release})"
cargo build "${build[@]}" --locked -p kg-server

database="kghist_$$"
bench_url="${admin_url%/*}/$database"
workdir=$(mktemp -d)
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    psql "$admin_url" -qc "drop database if exists $database with (force)" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT
psql "$admin_url" -qc "create database $database" >/dev/null

port=$(free_port)
step "starting a node on 127.0.0.1:$port with the Redis cache"
RUST_LOG=warn "$bin/kg-server" --listen "127.0.0.1:$port" --database-url "$bench_url" \
    --node-id bench-history --redis-url "$redis_url" --redis-prefix "kghist-$$" \
    >"$workdir/node.log" 2>&1 &
node_pid=$!
wait_for_status "http://127.0.0.1:$port/api/ready" 200 30 || fail "the node did not start: $(cat "$workdir/node.log")"
psql "$bench_url" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt -f scripts/bench/preload.sql >/dev/null

# rate: PUT requests/s of a wrk run of --seconds.
rate() {
    KG_KEYS=$keys wrk -t2 -c"$connections" -d"${seconds}s" \
        -s scripts/bench/put.lua "http://127.0.0.1:$port" >"$workdir/wrk.txt" 2>&1
    grep -q 'non-2xx: 0, socket errors: 0' "$workdir/wrk.txt" ||
        fail "PUTs got errors: $(cat "$workdir/wrk.txt")"
    awk '/Requests\/sec/ {print $2}' "$workdir/wrk.txt"
}
history_trigger() {
    psql "$bench_url" -qc "alter table kg_keys $1 trigger kg_keys_history" >/dev/null
}

ratios=()
for round in $(seq "$rounds"); do
    step "round $round/$rounds"
    # Which goes first alternates, so that neither always meets a warmer table.
    if [ $((round % 2)) = 1 ]; then
        history_trigger enable; with=$(rate)
        history_trigger disable; without=$(rate)
    else
        history_trigger disable; without=$(rate)
        history_trigger enable; with=$(rate)
    fi
    ratios+=("$(echo "$with / $without" | bc -l)")
    printf '  PUT with history %.0f/s, without %.0f/s (%.3f)\n' "$with" "$without" "${ratios[-1]}"
done
history_trigger enable
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf '\nPUTs with history / PUTs without, requests/s: %.3f (median of %s rounds: %s)\n' \
    "$(median "${ratios[@]}")" "$rounds" "$(printf '%.3f ' "${ratios[@]}")"
printf 'versions kept: %s\n' "$(psql "$bench_url" -qAtc 'select count(*) from kg_history')"
printf 'target: at least 0.9 (%s connections, %s keys, %ss per row, on %s cores)\n' \
    "$connections" "$keys" "$seconds" "$(nproc)"
