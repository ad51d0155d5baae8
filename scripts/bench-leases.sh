#!/usr/bin/env bash
# What live leases cost a node's GETs and PUTs: the node's CPU time per request (user + system,
# from /proc) with and without N leases kept alive every TTL/3 by `kg-bench leases`, in
# alternating rounds of the same run, and the ratio. Target: at most 1.05 with 10,000 leases.
# Two ratios: "total" counts the keep-alives' own work against the GETs and PUTs; "net"
# first takes off what the keep-alives cost alone (measured in the same round, with no other
# load), so it shows whether live leases make a GET or a PUT itself dearer. The rows without
# leases run before and after those with them, and the ratio is against their mean.
#
#   ./scripts/bench-leases.sh [--rounds N] [--seconds N] [--leases N] [--ttl SECONDS]
#                             [--connections N] [--keys N] [--per-request N]
#
# --per-request N: leases per keep-alive request (kg-bench leases --per-request). 1, the
# default, is a request per keep-alive; more is a client that keeps many leases alive at once
# through POST /api/leases/keepalive.
#
# One release node (KG_PROFILE=debug: a debug build, for a smoke run) with the Redis cache, on
# a fresh database in the PostgreSQL at KG_BENCH_DATABASE_URL and a key prefix of its own in
# the Redis at KG_BENCH_REDIS_URL (defaults: the machine's, as for the tests). GET is a warm
# cache hit, PUT a random key of --keys, both from wrk. Nothing is restarted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rounds=3
seconds=10
leases=10000
ttl=60
connections=32
keys=10000
per_request=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --leases) leases=$2; shift 2 ;;
        --ttl) ttl=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --per-request) per_request=$2; shift 2 ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$rounds" "$seconds" "$leases" "$ttl" "$connections" "$keys" "$per_request"

admin_url="${KG_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${KG_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
ensure_packages wrk:wrk psql:postgresql-client bc:bc curl:curl
psql "$admin_url" -qAtc 'select 1' >/dev/null || fail "PostgreSQL is not reachable at $admin_url"

case "${KG_PROFILE:-release}" in
    release) build=(--release); bin=target/release ;;
    debug | dev) build=(); bin=target/debug ;;
    *) fail "KG_PROFILE must be release or debug, not $KG_PROFILE" ;;
esac
step "building kg-server and kg-bench (${KG_PROFILE:-release})"
cargo build "${build[@]}" --locked -p kg-server -p kg-bench

database="kgleases_$$"
bench_url="${admin_url%/*}/$database"
workdir=$(mktemp -d)
node_pid=""
holder_pid=""
cleanup() {
    for pid in $holder_pid $node_pid; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    psql "$admin_url" -qc "drop database if exists $database" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT
psql "$admin_url" -qc "create database $database" >/dev/null

port=$(free_port)
step "starting a node on 127.0.0.1:$port with the Redis cache"
RUST_LOG=warn "$bin/kg-server" --listen "127.0.0.1:$port" --database-url "$bench_url" \
    --node-id bench-leases --redis-url "$redis_url" --redis-prefix "kgleases-$$" \
    >"$workdir/node.log" 2>&1 &
node_pid=$!
wait_for_status "http://127.0.0.1:$port/api/ready" 200 30 || fail "the node did not start: $(cat "$workdir/node.log")"
psql "$bench_url" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt -f scripts/bench/preload.sql >/dev/null
KG_KEYS=$keys wrk -t2 -c"$connections" -d"$(( keys / 4000 + 3 ))s" -s scripts/bench/warm.lua \
    "http://127.0.0.1:$port" >"$workdir/warm.txt" 2>&1

ticks=$(getconf CLK_TCK)
# cpu_seconds: the node's user + system CPU so far.
cpu_seconds() {
    awk -v hz="$ticks" '{print ($14 + $15) / hz}' "/proc/$node_pid/stat"
}
# batches: "sum count" of the node's write batch sizes so far (kg_write_batch_size).
batches() {
    curl -fsS "http://127.0.0.1:$port/metrics" | awk '
        $1 == "kg_write_batch_size_sum" {s = $2} $1 == "kg_write_batch_size_count" {c = $2}
        END {print s + 0, c + 0}'
}
# row LUA [BACKGROUND]: "requests total_us net_us batch" for a wrk run of --seconds: the node's
# CPU per request, the same less BACKGROUND CPU-seconds per second (default 0), and the mean
# write batch during the run (0 without writes).
row() {
    local before after requests batches_before batches_after
    batches_before=$(batches)
    before=$(cpu_seconds)
    KG_KEYS=$keys wrk -t2 -c"$connections" -d"${seconds}s" -s "scripts/bench/$1" \
        "http://127.0.0.1:$port" >"$workdir/wrk.txt" 2>&1
    after=$(cpu_seconds)
    batches_after=$(batches)
    grep -q 'non-2xx: 0, socket errors: 0' "$workdir/wrk.txt" ||
        fail "$1 got errors: $(cat "$workdir/wrk.txt")"
    requests=$(awk '/requests in/ {print $1}' "$workdir/wrk.txt")
    echo "$requests $(echo "($after - $before) * 1000000 / $requests" | bc -l)" \
        "$(echo "($after - $before - ${2:-0} * $seconds) * 1000000 / $requests" | bc -l)" \
        "$(echo "$batches_before $batches_after" |
            awk '{c = $4 - $2; printf "%.1f", (c > 0 ? ($3 - $1) / c : 0)}')"
}

ratios_get=()
ratios_put=()
net_get=()
net_put=()
share_get=()
share_put=()
# Each round measures without leases before and after the rows with them (GET, PUT, leases:
# GET, PUT, then PUT, GET), and compares with the mean of the two: the node's cost per request
# drifts during a run (PUTs get dearer as the history and idempotency tables grow), and a row
# always measured after its baseline would be charged the drift.
for round in $(seq "$rounds"); do
    step "round $round/$rounds: GET and PUT without leases"
    read -r _ get_before _ _ <<<"$(row get.lua)"
    read -r _ put_before _ batch_before <<<"$(row put.lua)"
    step "round $round/$rounds: $leases leases of ${ttl}s granted, kept alive every $(( ttl / 3 ))s"
    hold_leases "$bin/kg-bench" "http://127.0.0.1:$port" "$(( 2 * seconds + seconds / 2 + 5 ))s" \
        "$workdir/holder.txt" 60
    # What the keep-alives cost the node alone, in CPU-seconds per second.
    before=$(cpu_seconds)
    sleep "$(( seconds / 2 ))"
    background=$(echo "($(cpu_seconds) - $before) / $(( seconds / 2 ))" | bc -l)
    read -r get_n get_leased get_net _ <<<"$(row get.lua "$background")"
    read -r put_n put_leased put_net batch_leased <<<"$(row put.lua "$background")"
    wait "$holder_pid" || fail "keep-alives failed: $(tail -n 1 "$workdir/holder.txt")"
    holder_pid=""
    keepalive_rate=$(tail -n 1 "$workdir/holder.txt" |
        sed -E 's/.*"keepalives":([0-9]+).*"seconds":([0-9.]+).*/\1 \2/' | awk '{printf "%.0f", $1 / $2}')
    # They hold no keys, so dropping the rows is all a revoke would do.
    psql "$bench_url" -qAtc 'DELETE FROM kg_leases' >/dev/null
    step "round $round/$rounds: PUT and GET without leases again"
    read -r _ put_after _ batch_after <<<"$(row put.lua)"
    read -r _ get_after _ _ <<<"$(row get.lua)"
    get_plain=$(echo "($get_before + $get_after) / 2" | bc -l)
    put_plain=$(echo "($put_before + $put_after) / 2" | bc -l)
    ratios_get+=("$(echo "$get_leased / $get_plain" | bc -l)")
    ratios_put+=("$(echo "$put_leased / $put_plain" | bc -l)")
    net_get+=("$(echo "$get_net / $get_plain" | bc -l)")
    net_put+=("$(echo "$put_net / $put_plain" | bc -l)")
    printf '  without leases GET %.1f, %.1f us/request (before, after), PUT %.1f, %.1f\n' \
        "$get_before" "$get_after" "$put_before" "$put_after"
    printf '  with them GET %.1f (%s, %s requests), PUT %.1f (%s, %s); %s keep-alives/s\n' \
        "$get_leased" "$(printf '%.3f' "${ratios_get[-1]}")" "$get_n" \
        "$put_leased" "$(printf '%.3f' "${ratios_put[-1]}")" "$put_n" "$keepalive_rate"
    printf '  net of the keep-alives alone (%.1f%% of a core): GET %.1f (%.3f), PUT %.1f (%.3f)\n' \
        "$(echo "$background * 100" | bc -l)" "$get_net" "${net_get[-1]}" "$put_net" "${net_put[-1]}"
    # The keep-alives' CPU against the node's CPU for the load itself: what they add per
    # request if leases make no request dearer, and a figure the machine's drift moves less
    # than a ratio of two rows.
    share_get+=("$(echo "$background * $seconds * 100 / ($get_n * $get_net / 1000000)" | bc -l)")
    share_put+=("$(echo "$background * $seconds * 100 / ($put_n * $put_net / 1000000)" | bc -l)")
    printf '  keep-alives / the load'"'"'s own CPU: GET %.1f%%, PUT %.1f%%\n' \
        "${share_get[-1]}" "${share_put[-1]}"
    printf '  mean write batch of the PUT rows: %s before, %s with leases, %s after\n' \
        "$batch_before" "$batch_leased" "$batch_after"
done
printf '\n%-6s %s\n' "row" "node CPU per request, with / without $leases leases (TTL ${ttl}s), median of $rounds rounds"
printf '%-10s %.3f   rounds: %s\n' "GET total" "$(median "${ratios_get[@]}")" "$(printf '%.3f ' "${ratios_get[@]}")"
printf '%-10s %.3f   rounds: %s\n' "PUT total" "$(median "${ratios_put[@]}")" "$(printf '%.3f ' "${ratios_put[@]}")"
printf '%-10s %.3f   rounds: %s\n' "GET net" "$(median "${net_get[@]}")" "$(printf '%.3f ' "${net_get[@]}")"
printf '%-10s %.3f   rounds: %s\n' "PUT net" "$(median "${net_put[@]}")" "$(printf '%.3f ' "${net_put[@]}")"
printf '%-10s %.1f%%   rounds: %s\n' "GET share" "$(median "${share_get[@]}")" "$(printf '%.1f%% ' "${share_get[@]}")"
printf '%-10s %.1f%%   rounds: %s\n' "PUT share" "$(median "${share_put[@]}")" "$(printf '%.1f%% ' "${share_put[@]}")"
printf 'target: at most 1.05 (%s connections, %s keys, %ss per row, %s leases per keep-alive request, on %s cores)\n' \
    "$connections" "$keys" "$seconds" "$per_request" "$(nproc)"
