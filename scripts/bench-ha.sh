#!/usr/bin/env bash
# The cost of the replicated data tier, as ratios taken in one run (scripts/bench.sh --ha): the
# same kg-bench loads through nginx, PUT and GET (cache hit), against the single-server stack
# (scripts/start.sh) and the replicated one (scripts/start.sh --ha), in --rounds alternating
# rounds; each round starts each stack afresh, preloads its keys through the API (which also
# fills the cache) and measures PUT, then GET. The table's ratios are the medians of the
# per-round ratios. Targets: PUT >= 0.7x and GET hit >= 0.95x the single-server stack's.
#
#   ./scripts/bench.sh --ha               20 s per row in 2 rounds, 64 connections, 5,000 keys
#   ./scripts/bench.sh --ha --quick       2 s per row in 1 round over 1,000 keys
#   options: --duration SECONDS --rounds N --connections N --keys N --no-build
# Uses the ports of scripts/start.sh and start.sh --ha: stop your own stack first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=20
rounds=2
connections=64
keys=5000
build=1
quick=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; duration=2; rounds=1; keys=1000; shift ;;
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$duration" "$rounds" "$connections" "$keys"

stack_ports_free "the benchmark"
if [ "$build" = 1 ]; then build_tools; else build_tools --no-build; fi
bin=$(kg_bin_dir)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$KG_ROOT/target/bench/ha-run-$stamp"
mkdir -p "$out"
round_s=$((duration / rounds > 0 ? duration / rounds : 1))

finish() {
    local status=$?
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT

# measure MODE ROUND: one stack (single or ha) started afresh, PUT then GET through its nginx.
measure() {
    local mode=$1 round=$2 flags=(--no-build)
    [ "$mode" = ha ] && flags+=(--ha)
    KG_STATE_DIR=$(mktemp -d "/tmp/keygrid-bench-$mode.XXXXXX")
    chmod 755 "$KG_STATE_DIR" # the stack's PostgreSQL runs as the postgres user
    export KG_STATE_DIR
    step "round $round/$rounds, $mode stack: starting it"
    ./scripts/start.sh "${flags[@]}" >"$out/start-$mode.r$round.log" 2>&1 ||
        { cat "$out/start-$mode.r$round.log"; fail "the $mode stack did not start"; }
    source scripts/lib.sh # KG_RUN and friends under the new KG_STATE_DIR
    local api=http://127.0.0.1:$KG_API_PORT
    step "round $round/$rounds, $mode stack: PUT, then GET (cache hit), ${round_s}s each"
    "$bin/kg-bench" --endpoint "$api" --concurrency "$connections" --duration "${round_s}s" \
        --warmup 1s --keys "$keys" --value-size 128 --preload --mix put=100 --output json \
        >"$out/put-$mode.r$round.json" || fail "kg-bench PUT on the $mode stack failed"
    "$bin/kg-bench" --endpoint "$api" --concurrency "$connections" --duration "${round_s}s" \
        --warmup 1s --keys "$keys" --value-size 128 --mix get=100 --output json \
        >"$out/get-$mode.r$round.json" || fail "kg-bench GET on the $mode stack failed"
    ./scripts/stop.sh --purge >/dev/null 2>&1
    rm -rf "$KG_STATE_DIR"
}

for r in $(seq "$rounds"); do
    # Which stack goes first alternates too, so that a drift over the run favours neither.
    if [ $((r % 2)) = 1 ]; then order=(single ha); else order=(ha single); fi
    for mode in "${order[@]}"; do measure "$mode" "$r"; done
done

"$bin/kg-bench" summarize "$out" --save "$KG_ROOT/target/bench/bench-ha-$stamp.json" --meta "$(cat <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "profile": "$KG_PROFILE", "quick": $([ $quick = 1 ] && echo true || echo false),
 "duration_s": $round_s, "rounds": $rounds, "connections": $connections, "keys": $keys, "cores": $(nproc),
 "cpu": "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)",
 "commit": "$(git describe --always --dirty 2>/dev/null || echo unknown)"}
JSON
)" || fail "the benchmark measured the wrong thing (errors, or a row without a rate): see above"
echo "raw outputs in $out"
