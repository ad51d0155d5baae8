#!/usr/bin/env bash
# Whether transactions keep group commit's throughput: PUT /api/key against POST /api/txn
# carrying the same one put, and against a transaction of two puts, in alternating rounds of
# the same run, on one node. Prints requests/s of each, the ratio of one-put transactions to
# PUTs (target: at least 0.9), and the mean batch each commit carried (the node's
# kg_write_batch_size and kg_txn_batch_size), which shows that transactions that queue up
# share a commit as PUTs do.
#
#   ./scripts/bench-txn.sh [--rounds N] [--seconds N] [--connections N] [--keys N]
#
# One release node (KG_PROFILE=debug: a debug build, for a smoke run) with the Redis cache, on
# a fresh database in the PostgreSQL at KG_BENCH_DATABASE_URL and a key prefix of its own in
# the Redis at KG_BENCH_REDIS_URL (defaults: the machine's, as for the tests). Load from wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rounds=3
seconds=10
connections=64
keys=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$rounds" "$seconds" "$connections" "$keys"

source scripts/bench/one-node.sh
start_bench_node bench-txn

# batch NAME: the node's mean batch size so far, from its histogram's _sum and _count.
batch() {
    curl -fsS "http://127.0.0.1:$port/metrics" |
        awk -v m="$1" '$1 == m"_sum" {s=$2} $1 == m"_count" {c=$2} END {printf "%.1f", c ? s / c : 0}'
}

ratios=()
for round in $(seq "$rounds"); do
    step "round $round/$rounds"
    put=$(wrk_rate put.lua)
    txn=$(KG_TXN_PUTS=1 wrk_rate txn.lua)
    txn2=$(KG_TXN_PUTS=2 wrk_rate txn.lua)
    ratios+=("$(echo "$txn / $put" | bc -l)")
    printf '  PUT %.0f/s, one-put txn %.0f/s (%.3f), two-put txn %.0f/s\n' \
        "$put" "$txn" "${ratios[-1]}" "$txn2"
done
printf '\none-put transactions / PUTs, requests/s: %.3f (median of %s rounds: %s)\n' \
    "$(median "${ratios[@]}")" "$rounds" "$(printf '%.3f ' "${ratios[@]}")"
printf 'mean commit batch: %s PUTs, %s transactions\n' \
    "$(batch kg_write_batch_size)" "$(batch kg_txn_batch_size)"
printf 'target: at least 0.9 (%s connections, %s keys, %ss per row, on %s cores)\n' \
    "$connections" "$keys" "$seconds" "$(nproc)"
