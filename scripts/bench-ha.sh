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

# The stacks' processes are long-lived, so cpu_ticks (lib.sh) around a row misses none of
# them; kg-bench has exited by the second reading, so row takes its time from the subshell
# that waited for it.

# node_counters: the nodes' write batch sizes (sum, count) and cache lookups by result.
node_counters() {
    local port
    for port in 8001 8002 8003; do
        curl -fsS -m 2 "http://127.0.0.1:$port/metrics" 2>/dev/null || true
    done | awk '/^kg_write_batch_size_sum/ { t["batch_sum"] += $NF }
        /^kg_write_batch_size_count/ { t["batch_count"] += $NF }
        /^kg_cache_requests_total/ { match($0, /result="[a-z]+"/)
            t["cache_" substr($0, RSTART + 8, RLENGTH - 9)] += $NF }
        END { for (k in t) print k, t[k] }'
}

# row MODE ROUND OP ARGS...: one kg-bench row, with the CPU it cost by process and the nodes'
# counters before and after it, under $out/diag (printed by diagnose).
row() {
    local mode=$1 round=$2 op=$3 diag="$out/diag/$1.r$2.$3"
    shift 3
    mkdir -p "$out/diag"
    node_counters >"$diag.nodes-before"
    cpu_ticks >"$diag.cpu-before"
    # The subshell's reaped-children fields are kg-bench's CPU time alone.
    (
        "$bin/kg-bench" "$@" >"$out/$op-$mode.r$round.json" || exit 1
        awk '{ split(substr($0, index($0, ") ") + 2), f, " "); print "kg-bench", f[14] + f[15] }' \
            "/proc/$BASHPID/stat" >"$diag.bench-ticks"
    ) || fail "kg-bench $op on the $mode stack failed"
    { cpu_ticks; cat "$diag.bench-ticks"; } >"$diag.cpu-after"
    node_counters >"$diag.nodes-after"
}

# diagnose: per row, the CPU seconds of the six busiest commands, the mean write batch (the
# PUT row's includes its preload) and the cache lookups by result.
diagnose() {
    local hz cpu diag
    hz=$(getconf CLK_TCK)
    echo
    echo "where the CPU went, per row (CPU seconds by command; mean write batch; cache lookups):"
    for cpu in "$out"/diag/*.cpu-after; do
        diag=${cpu%.cpu-after}
        printf '%-14s' "$(basename "$diag")"
        awk -v hz="$hz" 'FILENAME == ARGV[1] { before[$1] = $2; next }
            { d = ($2 - before[$1]) / hz; if (d >= 0.05) printf "%s %.1f\n", $1, d }' \
            "$diag.cpu-before" "$cpu" | sort -k2 -rn | head -6 | tr '\n' ' '
        awk 'FILENAME == ARGV[1] { before[$1] = $2; next } { d[$1] = $2 - before[$1] }
            END { if (d["batch_count"] > 0) printf "| batch %.1f ", d["batch_sum"] / d["batch_count"]
                  printf "| cache hit %d miss %d\n", d["cache_hit"], d["cache_miss"] }' \
            "$diag.nodes-before" "$diag.nodes-after"
    done
}

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
    row "$mode" "$round" put --endpoint "$api" --concurrency "$connections" \
        --duration "${round_s}s" --warmup 1s --keys "$keys" --value-size 128 --preload \
        --mix put=100 --output json
    row "$mode" "$round" get --endpoint "$api" --concurrency "$connections" \
        --duration "${round_s}s" --warmup 1s --keys "$keys" --value-size 128 --mix get=100 \
        --output json
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
diagnose
echo "raw outputs in $out"
