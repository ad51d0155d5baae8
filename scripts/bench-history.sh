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

source scripts/bench/one-node.sh
start_bench_node bench-history

history_trigger() {
    psql "$bench_url" -qc "alter table kg_keys $1 trigger kg_keys_history" >/dev/null
}

ratios=()
for round in $(seq "$rounds"); do
    step "round $round/$rounds"
    # Which goes first alternates, so that neither always meets a warmer table.
    if [ $((round % 2)) = 1 ]; then
        history_trigger enable; with=$(wrk_rate put.lua)
        history_trigger disable; without=$(wrk_rate put.lua)
    else
        history_trigger disable; without=$(wrk_rate put.lua)
        history_trigger enable; with=$(wrk_rate put.lua)
    fi
    ratios+=("$(echo "$with / $without" | bc -l)")
    printf '  PUT with history %.0f/s, without %.0f/s (%.3f)\n' "$with" "$without" "${ratios[-1]}"
done
history_trigger enable
printf '\nPUTs with history / PUTs without, requests/s: %.3f (median of %s rounds: %s)\n' \
    "$(median "${ratios[@]}")" "$rounds" "$(printf '%.3f ' "${ratios[@]}")"
printf 'versions kept: %s\n' "$(psql "$bench_url" -qAtc 'select count(*) from kg_history')"
printf 'target: at least 0.9 (%s connections, %s keys, %ss per row, on %s cores)\n' \
    "$connections" "$keys" "$seconds" "$(nproc)"
