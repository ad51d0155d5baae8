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
#   ./scripts/profile-node.sh --leases N          also with N leases kept alive (issue 21's
#                                                 measure of what live leases cost a request)
#   options: --seconds N (load per row, default 12), --keys N (default 1000),
#            --keep DIR (keep the callgrind files there, for callgrind_annotate),
#            with --leases: --ttl SECONDS (default 60), --per-request N (default 64)
#
# Rows: GET (cache hit) and PUT, from wrk at 8 connections, against one node with one request
# thread over the machine's PostgreSQL (a fresh database) and Redis (a key prefix of its own),
# at the default log level. Uses KG_BENCH_DATABASE_URL and KG_BENCH_REDIS_URL like
# scripts/bench-server.sh; nothing is restarted.
#
# With --leases, `kg-bench leases` then holds N leases on the node, each kept alive every TTL/3,
# and more rows follow: the keep-alives alone (instructions per keep-alive request), GET and
# PUT with the leases held, and, the leases gone, PUT and GET again; the rows without leases
# are the mean of before and after. Under valgrind the node serves a small fraction of its
# usual rate while the keep-alives keep theirs, so a leased row's count per request
# ("total") overstates them; the script splits it instead. "net" is a leased row's count less
# the keep-alives the node answered during it, at their cost alone: whether live leases make a
# request itself dearer. "share" is the keep-alives a node at full speed answers (every lease
# once per TTL/3) against the requests it serves then, at the rate the same node reaches
# without valgrind (wrk, 32 connections, measured in this run). "ratio", net + share, is the
# node's instructions per request with the leases against without: issue 21 bounds it at 1.05.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=12
keys=1000
baseline=""
keep=""
leases=0
ttl=60
per_request=64
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --keys) keys=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        --leases) leases=$2; shift 2 ;;
        --ttl) ttl=$2; shift 2 ;;
        --per-request) per_request=$2; shift 2 ;;
        -h | --help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$seconds" "$keys" "$ttl" "$per_request"
[[ "$leases" =~ ^[0-9]+$ ]] || fail "--leases must be a whole number, not '$leases'"
[ -z "$baseline" ] || [ -x "$baseline" ] || fail "--baseline $baseline is not an executable"
[ -z "$baseline" ] || [ "$leases" = 0 ] || fail "--leases and --baseline go in separate runs"
[ "$ttl" -ge 3 ] || fail "--ttl must be at least 3 (keep-alives go every TTL/3 seconds)"

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
packages=(-p kg-server)
[ "$leases" = 0 ] || packages+=(-p kg-bench)
step "building ${packages[*]//-p /} (${KG_PROFILE:-release})"
cargo build "${build[@]}" --locked "${packages[@]}"
bench_bin="$(dirname "$node_bin")/kg-bench"

database="kgprofile_$$"
profile_url="${admin_url%/*}/$database"
workdir=$(mktemp -d)
node_pid=""
cleanup() {
    [ -n "${holder_pid:-}" ] && kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null
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

now() { date +%s.%N; }

# measure ROW PORT OUT: one row under callgrind, from zeroing the counters to dumping them.
# ROW is get or put (wrk's load for --seconds) or idle (no load, for --seconds). Sets
# row_instructions, row_requests (wrk's, or the node's for idle), row_node_requests (every
# request the node answered: with leases held, the keep-alives too) and row_seconds.
dumps=0
measure() {
    local row=$1 port=$2 out=$3 requests_before started
    requests_before=$(requests_total "$port")
    callgrind_control -z "$node_pid" >/dev/null
    started=$(now)
    if [ "$row" = idle ]; then
        sleep "$seconds"
    else
        KG_KEYS=$keys wrk -t1 -c8 -d"${seconds}s" -s "scripts/bench/${row%-*}.lua" \
            "http://127.0.0.1:$port" >"$out/wrk-$row.txt" 2>&1
    fi
    callgrind_control --dump="$row" "$node_pid" >/dev/null
    row_seconds=$(echo "$(now) - $started" | bc -l)
    dumps=$((dumps + 1))
    # The status call before the row is counted too, once it has answered.
    row_node_requests=$(($(requests_total "$port") - requests_before - 1))
    if [ "$row" = idle ]; then
        row_requests=$row_node_requests
    else
        # wrk's own count, not the node's: with leases held the node also answers keep-alives.
        row_requests=$(awk '/requests in/ {print $1}' "$out/wrk-$row.txt")
        [ "${row_requests:-0}" -gt 0 ] || fail "no $row requests reached the node"
        grep -q 'non-2xx: 0,' "$out/wrk-$row.txt" ||
            fail "$row requests failed: $(cat "$out/wrk-$row.txt")"
    fi
    row_instructions=$(callgrind_annotate "$out/callgrind.$node_pid.$dumps" 2>/dev/null |
        awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
}

holder_pid=""

# profile NAME BIN: runs BIN under callgrind; sets figures to "GET PUT", its instructions per
# request (with --leases, the mean of before and after), and with --leases also lease_figures
# to GET's total and net, then PUT's, per request with the leases held, keepalive_cost (the
# instructions of one keep-alive request alone) and keepalive_requests (their rate under
# valgrind).
profile() {
    local name=$1 bin=$2 port out row after=()
    figures=()
    lease_figures=()
    dumps=0
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
        measure "$row" "$port" "$out"
        figures+=("$((row_instructions / row_requests))")
    done
    if [ "$leases" != 0 ]; then
        step "holding $leases leases of ${ttl}s on the $name node, $per_request per keep-alive request"
        hold_leases "$bench_bin" "http://127.0.0.1:$port" "$((4 * seconds + 10))s" "$out/holder.txt" 300
        measure idle "$port" "$out"
        [ "$row_requests" -gt 0 ] || fail "no keep-alive reached the node in ${seconds}s"
        keepalive_requests=$(echo "$row_requests / $row_seconds" | bc -l)
        keepalive_cost=$((row_instructions / row_requests))
        for row in get-leased put-leased; do
            measure "$row" "$port" "$out"
            lease_figures+=("$((row_instructions / row_requests))")
            # Less the keep-alives the node answered during the row, at their cost alone.
            lease_figures+=("$(((row_instructions - keepalive_cost * (row_node_requests - row_requests)) / row_requests))")
        done
        kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null || true
        holder_pid=""
        # They held no keys, so dropping the rows is all a revoke would do.
        psql "$profile_url" -qAtc 'DELETE FROM kg_leases' >/dev/null
        # The rows without leases again, in the other order, and the baseline is the mean of
        # before and after: a node's count per request drifts during a run (caches warm, the
        # history table grows), and a row always measured after its baseline would be
        # charged the drift.
        for row in put get; do
            measure "$row" "$port" "$out"
            after+=("$((row_instructions / row_requests))")
        done
        plain_rows="GET ${figures[0]} before, ${after[1]} after; PUT ${figures[1]} before, ${after[0]} after"
        figures=("$(((figures[0] + after[1]) / 2))" "$(((figures[1] + after[0]) / 2))")
    fi
    kill "$node_pid" && wait "$node_pid" 2>/dev/null || true
    node_pid=""
    [ -z "$keep" ] || { mkdir -p "$keep/$name" && cp "$out"/callgrind.* "$keep/$name/"; }
}

# full_speed: GET and PUT requests/s of the node without valgrind (wrk, 32 connections), as
# "GET PUT".
full_speed() {
    local port out=$workdir/full rates=() row
    port=$(free_port)
    mkdir -p "$out"
    "$node_bin" --listen "127.0.0.1:$port" --node-id profile-full --database-url "$profile_url" \
        --redis-url "$redis_url" --redis-prefix "kgprofile-$$-full" >"$out/node.log" 2>&1 &
    node_pid=$!
    wait_for_status "http://127.0.0.1:$port/api/ready" 200 30 ||
        fail "the node did not start: $(tail -n 5 "$out/node.log")"
    KG_KEYS=$keys wrk -t2 -c32 -d"$((keys / 4000 + 2))s" -s scripts/bench/warm.lua \
        "http://127.0.0.1:$port" >/dev/null 2>&1
    for row in get put; do
        KG_KEYS=$keys wrk -t2 -c32 -d"${seconds}s" -s "scripts/bench/$row.lua" \
            "http://127.0.0.1:$port" >"$out/wrk-$row.txt" 2>&1
        grep -q 'non-2xx: 0, socket errors: 0' "$out/wrk-$row.txt" ||
            fail "$row requests failed at full speed: $(cat "$out/wrk-$row.txt")"
        rates+=("$(awk '/^Requests\/sec/ {print $2}' "$out/wrk-$row.txt")")
    done
    kill "$node_pid" && wait "$node_pid" 2>/dev/null || true
    node_pid=""
    echo "${rates[*]}"
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

if [ "$leases" != 0 ]; then
    step "the same node without valgrind: GET and PUT at full speed (${seconds}s each)"
    read -r full_get full_put <<<"$(full_speed)"
    printf '\nwith %s leases of %ss kept alive every %ss, %s per keep-alive request:\n' \
        "$leases" "$ttl" "$((ttl / 3))" "$per_request"
    printf 'without leases, instructions/request: %s\n' "$plain_rows"
    # What a node at full speed answers: every lease once per TTL/3.
    keepalive_rate=$(echo "$leases / ($ttl / 3) / $per_request" | bc -l)
    printf 'keep-alives alone: %s instructions per request (%.1f requests/s under valgrind, %.1f at full speed)\n' \
        "$keepalive_cost" "$keepalive_requests" "$keepalive_rate"
    printf '%-12s %14s %8s %14s %8s %12s %8s %8s\n' "row" "total/request" "total" \
        "net/request" "net" "full speed/s" "share" "ratio"
    for row in get put; do
        case $row in
            get) label="GET (hit)"; plain=$get; total=${lease_figures[0]}; net=${lease_figures[1]}; rate=$full_get ;;
            put) label="PUT"; plain=$put; total=${lease_figures[2]}; net=${lease_figures[3]}; rate=$full_put ;;
        esac
        net_ratio=$(echo "$net / $plain" | bc -l)
        share=$(echo "$keepalive_rate * $keepalive_cost / ($rate * $plain)" | bc -l)
        printf '%-12s %14s %8.3f %14s %8.3f %12.0f %7.1f%% %8.3f\n' "$label" "$total" \
            "$(echo "$total / $plain" | bc -l)" "$net" "$net_ratio" "$rate" \
            "$(echo "$share * 100" | bc -l)" "$(echo "$net_ratio + $share" | bc -l)"
    done
    # "total" carries far more keep-alives per request than a node at full speed serves, so
    # it bounds "ratio" from above unless live leases make a request dearer at full speed.
    printf 'total: with the leases against without under valgrind, where the keep-alives weigh far more per request\n'
    printf 'ratio: instructions per request with the leases against without, at full speed (net + share); target: at most 1.05\n'
fi
