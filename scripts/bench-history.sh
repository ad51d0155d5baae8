#!/usr/bin/env bash
# What history costs a PUT: PUT /api/key with the history trigger on (every PUT over a
# preloaded key keeps the version it replaced in kg_history), against the same PUTs with the
# trigger dropped, in alternating rounds of the same run, on one node. Prints requests/s of
# each and their ratio (target: at least 0.9, history slowing PUT by at most 10%), the CPU
# PostgreSQL used per PUT in each and its ratio, and how many versions the run kept.
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

# Without history is without the trigger, not with it disabled: PostgreSQL captures a
# statement's old and new rows for a transition-table trigger whether it is enabled or not,
# so a disabled trigger still costs the capture.
trigger_def=$(psql "$bench_url" -qAtc \
    "select pg_get_triggerdef(oid) from pg_trigger where tgname = 'kg_keys_history'")
[ -n "$trigger_def" ] || fail "kg_keys has no kg_keys_history trigger"
history_trigger() {
    PGOPTIONS='-c client_min_messages=warning' psql "$bench_url" -qc \
        "drop trigger if exists kg_keys_history on kg_keys" >/dev/null
    [ "$1" = disable ] || psql "$bench_url" -qc "$trigger_def" >/dev/null
}

# put_row: one wrk run of PUTs; prints its requests/s and the CPU the machine's PostgreSQL
# processes used per PUT, in microseconds. The CPU per PUT moves far less between rounds than
# the rate does on a machine whose two cores wrk, the node and PostgreSQL share.
hz=$(getconf CLK_TCK)
put_row() {
    local before rate
    before=$(cpu_ticks)
    rate=$(wrk_rate put.lua)
    { echo "$before"; echo "--"; cpu_ticks; } | awk -v rate="$rate" -v s="$seconds" -v hz="$hz" '
        $1 == "--" { after = 1; next }
        $1 == "postgres" { if (after) t += $2; else t -= $2 }
        END { printf "%s %.1f\n", rate, t / hz * 1e6 / (rate * s) }'
}

ratios=()
cpu_ratios=()
for round in $(seq "$rounds"); do
    step "round $round/$rounds"
    # Which goes first alternates, so that neither always meets a warmer table.
    if [ $((round % 2)) = 1 ]; then
        history_trigger enable; read -r with with_us < <(put_row)
        history_trigger disable; read -r without without_us < <(put_row)
    else
        history_trigger disable; read -r without without_us < <(put_row)
        history_trigger enable; read -r with with_us < <(put_row)
    fi
    ratios+=("$(echo "$with / $without" | bc -l)")
    cpu_ratios+=("$(echo "$with_us / $without_us" | bc -l)")
    printf '  PUT with history %.0f/s, without %.0f/s (%.3f); PostgreSQL CPU per PUT %s us, %s us (%.3f)\n' \
        "$with" "$without" "${ratios[-1]}" "$with_us" "$without_us" "${cpu_ratios[-1]}"
done
history_trigger enable
printf '\nPUTs with history / PUTs without, requests/s: %.3f (median of %s rounds: %s)\n' \
    "$(median "${ratios[@]}")" "$rounds" "$(printf '%.3f ' "${ratios[@]}")"
printf 'PostgreSQL CPU per PUT, with history / without: %.3f (median of rounds: %s)\n' \
    "$(median "${cpu_ratios[@]}")" "$(printf '%.3f ' "${cpu_ratios[@]}")"
printf 'versions kept: %s\n' "$(psql "$bench_url" -qAtc 'select count(*) from kg_history')"
printf 'target: at least 0.9 (%s connections, %s keys, %ss per row, on %s cores)\n' \
    "$connections" "$keys" "$seconds" "$(nproc)"
