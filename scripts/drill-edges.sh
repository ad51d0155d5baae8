#!/usr/bin/env bash
# Edge drills (issue 47): load that reaches the timing edges random load rarely does, against
# single kg-server nodes this script starts itself on free ports, each verdict judged by
# `kg-bench judge`. Then each drill again against a node started with a planted bug
# (KG_PLANTED_BUG, kg-server/src/planted.rs): the drill must catch it.
#
#   ./scripts/drill-edges.sh            every drill, longer runs
#   ./scripts/drill-edges.sh --quick    every drill, short runs (for scripts/test.sh)
#   ./scripts/drill-edges.sh --keep     keep the histories, reports and logs (path printed)
#   ./scripts/drill-edges.sh --only leases   one drill (retries, leases, watch, locks)
#
# The drills:
#   retries   every write kind (put, cas, delete, prefix delete, txn) sent a second time with
#             the same Idempotency-Key after a delay, some after their first connection was cut;
#             a retry the node applied again fails the verdict.
#             Plant: prefix-delete-ignores-idempotency-key (issue 47 item 5).
#   leases    `kg-bench lease-edges`: short leases (1-3 s), keep-alives at gaps around the TTL,
#             revokes, reads by GET and by transaction through the deadline, while another
#             session holds the database's locks past the node's --db-timeout (1 s here):
#             SQLite's write lock (BEGIN IMMEDIATE); on PostgreSQL the revision lock (kg_meta
#             FOR UPDATE) or every lease's row, in turn. A key read alive after a read found
#             it gone fails the verdict. Plant: lease-refresh-revives-expired (item 1).
#   watch     three watchers beside a load over 1,000 keys with many deletes (one live, one
#             slow that replays from the compact revision every 300 ms, one that resumes from
#             its last id), and compactions aimed inside the slow one's replays; the node
#             replays one key per page (KG_TEST_REPLAY_PAGE=1, debug builds only) so that a
#             compaction lands mid-replay. A change sent wrong, out of order or not at all
#             fails the verdict (kg-bench's watchers module); a compaction notice is right.
#             Plant: watch-replay-ignores-compaction (item 4).
#   locks     a node on PostgreSQL with the Redis cache under a load of GETs and CASes (few
#             PUTs, prefix deletes, transfers) while another session holds the revision
#             lock for 1.5 to 3 s, past the node's 1 s --db-timeout, every 1 to 2 s: writes
#             are answered 503 and commit when the lock is let go (the answer lost after the
#             commit landed); a cached value older than such a commit must never be served,
#             and three watchers beside it (restarting every 1.5 s) must get every change.
#             Plant: abandoned-writes-uncached (a write whose caller gave up before it
#             committed is taken to have changed nothing: its key's cache mark goes without
#             its new value).
#
# Backends: embedded SQLite, and PostgreSQL on a fresh database of KG_TEST_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres), dropped at the end; the locks drill's
# cache is on KG_TEST_REDIS_URL (default redis://127.0.0.1:6379), under a key prefix of its
# own, deleted at the end. Builds kg-server and kg-bench in the debug profile: only debug
# builds honour planted bugs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

quick=
keep=
only=
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
        --quick) quick=1 ;;
        --keep) keep=1 ;;
        --only) only=${1:?--only needs a drill}; shift ;;
        -h | --help) sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$arg' (try --help)" ;;
    esac
done

pg_url=${KG_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
redis_url=${KG_TEST_REDIS_URL:-redis://127.0.0.1:6379}
redis_prefix="kgtest-edges-$$:"
if [ -n "$quick" ]; then seconds=10; rate=150; else seconds=40; rate=250; fi

# The lock holders are other sessions: sqlite3's and psql's; free ports come from python3.
ensure_packages sqlite3:sqlite3 psql:postgresql-client python3:python3 redis-cli:redis-tools
# The debug profile as `cargo test` builds it, so that in scripts/test.sh this is a no-op
# (a profile of its own rebuilt every dependency).
step "building kg-server and kg-bench (debug)"
cargo build --locked -p kg-server -p kg-bench
bin="$KG_ROOT/target/debug"

work=$(mktemp -d "${TMPDIR:-/tmp}/kg-drill-edges.XXXXXX")
node_pids=()
databases=()
cleanup() {
    local pid db
    for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for db in "${databases[@]}"; do
        psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    redis-cli -u "$redis_url" --scan --pattern "$redis_prefix*" 2>/dev/null |
        xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
    if [ -n "$keep" ]; then echo "kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# edge_database NAME: a fresh PostgreSQL database for one node, dropped at the end; sets
# node_db to its URL (not printed: a command substitution's subshell would lose `databases`).
edge_database() {
    local db="kgtest_edges_$$_${1//-/_}"
    PGOPTIONS="-c client_min_messages=warning" psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    databases+=("$db")
    node_db="${pg_url%/*}/$db"
}

# start_edge_node NAME BACKEND PLANT: a node on a free port (PLANT: KG_PLANTED_BUG, or empty),
# on BACKEND (sqlite or postgres); sets node_url and node_db.
start_edge_node() {
    local name=$1 backend=$2 plant=$3 port cache=()
    case "$backend" in
        sqlite) node_db="sqlite://$work/$name.db" ;;
        postgres) edge_database "$name" ;;
        postgres-redis)
            edge_database "$name"
            cache=(KG_REDIS_URL="$redis_url" KG_REDIS_PREFIX="$redis_prefix$name:") ;;
        *) fail "unknown backend $backend" ;;
    esac
    port=$(free_port)
    env "${cache[@]}" KG_LISTEN="127.0.0.1:$port" KG_NODE_ID="$name" KG_DATABASE_URL="$node_db" \
        KG_DB_TIMEOUT=1s KG_PLANTED_BUG="$plant" KG_TEST_REPLAY_PAGE=1 "$bin/kg-server" \
        >"$work/$name.log" 2>&1 &
    node_pids+=($!)
    node_url="http://127.0.0.1:$port"
    wait_for_status "$node_url/api/ready" 200 30 || fail "$name did not become ready; see $work/$name.log"
}

# stop_edge_node: stops the node started last.
stop_edge_node() {
    local pid=${node_pids[-1]}
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'node_pids[-1]'
}

# hold_locks DB_URL STOP_FILE [revision]: until STOP_FILE exists, every 1 to 2 s, holds a lock
# of the database from a session of its own for 1.5 to 3 s (past the node's 1 s
# --db-timeout); on PostgreSQL the revision lock and the leases' rows in turn, or with
# `revision` the revision lock only.
hold_locks() {
    local url=$1 stop=$2 only=${3:-} hold turn=0
    while [ ! -e "$stop" ]; do
        sleep "$((1 + RANDOM % 2))"
        hold="$((15 + RANDOM % 16))e-1"
        case "$url" in
            sqlite://*)
                printf 'BEGIN IMMEDIATE;\n.shell sleep %s\nROLLBACK;\n' "$hold" |
                    sqlite3 "${url#sqlite://}" >/dev/null 2>&1 || true ;;
            *)
                local lock="SELECT revision FROM kg_meta WHERE id = 1 FOR UPDATE"
                [ $((turn % 2)) = 1 ] && [ -z "$only" ] && lock="SELECT id FROM kg_leases FOR UPDATE"
                psql -q "$url" -c "BEGIN" -c "$lock" -c "SELECT pg_sleep($hold)" \
                    -c "ROLLBACK" >/dev/null 2>&1 || true ;;
        esac
        turn=$((turn + 1))
    done
}

# drill_leases NAME URL: the lease drill's load under held locks, and its verdict.
drill_leases() {
    local name=$1 url=$2 holder status=0
    hold_locks "$node_db" "$work/$name.stop" &
    holder=$!
    # A planted bug's run is longer: the edge it needs comes a few times a minute.
    "$bin/kg-bench" lease-edges -e "$url" -c 16 -d "$((plant_run ? seconds * 2 : seconds))s" \
        --record "$work/$name.jsonl" >"$work/$name.load.json" || status=$?
    touch "$work/$name.stop"
    wait "$holder" || true
    echo "load: $(cat "$work/$name.load.json")"
    [ "$status" = 0 ] || return "$status"
    "$bin/kg-bench" judge "$work/$name.jsonl" --name "$name" --save "$work/$name.verdict.json"
}

# drill_retries NAME URL: the retries drill's load and its verdict; returns the judge's status.
drill_retries() {
    local name=$1 url=$2
    # Few keys, so that a prefix delete's ten keys are written again between its attempts,
    # and the retry of one that ignored its key deletes them.
    "$bin/kg-bench" -e "$url" -c 8 --rate "$rate" -d "${seconds}s" --keys 100 \
        --mix get=30,put=20,cas=15,delete=5,delete_prefix=15,txn=15 \
        --retry-share 0.4 --retry-delay 300ms --retry-cut 0.2 \
        --record "$work/$name.jsonl" -o json >"$work/$name.report.json"
    "$bin/kg-bench" judge "$work/$name.jsonl" --report "$work/$name.report.json" \
        --name "$name" --save "$work/$name.verdict.json"
}

# drill_watch NAME URL: the watch drill's load, watchers and compactions, and its verdict.
drill_watch() {
    local name=$1 url=$2
    "$bin/kg-bench" -e "$url" -c 8 --rate "$rate" -d "${seconds}s" --keys 1000 \
        --mix get=30,put=35,cas=15,delete=15,delete_prefix=2,txn=3 \
        --watchers 3 --compact-every 1s --watch-restart 300ms \
        --record "$work/$name.jsonl" -o json >"$work/$name.report.json"
    # The judge reads NAME.watch.jsonl beside the history.
    "$bin/kg-bench" judge "$work/$name.jsonl" --report "$work/$name.report.json" \
        --name "$name" --save "$work/$name.verdict.json"
}

# drill_locks NAME URL: the fault drills' load under held revision locks, and its verdict.
drill_locks() {
    local name=$1 url=$2 holder status=0
    # Without a cache there is nothing for the plant to spoil: a clean verdict would say
    # nothing, so a Redis that does not answer fails the script.
    [ "$(redis-cli -u "$redis_url" ping 2>/dev/null)" = PONG ] ||
        fail "the locks drill needs the Redis at $redis_url (KG_TEST_REDIS_URL)"
    hold_locks "$node_db" "$work/$name.stop" revision &
    holder=$!
    # A planted bug's run is longer: the edge it needs (a GET of a key from the cache after
    # a CAS was refused for the commit the cache missed) comes a few times a minute. Few
    # PUTs: each one stores the key's value again, which ends the stale entry the plant left.
    "$bin/kg-bench" -e "$url" -c 8 --rate "$rate" -d "$((plant_run ? seconds * 2 : seconds))s" \
        --keys 10 --mix get=45,put=5,cas=40,delete_prefix=2,txn=8 --timeout 10s \
        --watchers 3 --compact-every 1s \
        --record "$work/$name.jsonl" -o json >"$work/$name.report.json" || status=$?
    touch "$work/$name.stop"
    wait "$holder" || true
    [ "$status" = 0 ] || return "$status"
    "$bin/kg-bench" judge "$work/$name.jsonl" --report "$work/$name.report.json" \
        --name "$name" --save "$work/$name.verdict.json"
}

failures=()
# run_drill DRILL BACKEND [PLANT]: one drill on a fresh node; without PLANT the verdict must
# pass, with it fail.
run_drill() {
    local drill=$1 backend=$2 plant=${3:-} name status=0 started=$SECONDS
    [ -z "$only" ] || [ "$only" = "$drill" ] || return 0
    name="$drill-$backend${plant:+-planted}"
    step "$name${plant:+ (KG_PLANTED_BUG=$plant: the verdict must fail)}"
    plant_run=$([ -n "$plant" ] && echo 1 || echo 0)
    # A planted bug is caught when the load meets its edge, which is likely in one run but not
    # certain (the lease plant needs a failed call while a lease is past its deadline): up to
    # three runs, each on a fresh node, and the first that catches it counts. A clean verdict
    # gets one run: any failure there fails the script.
    local attempt run_name
    for attempt in 1 2 3; do
        run_name=$name
        [ "$attempt" = 1 ] || run_name="$name-try$attempt"
        status=0
        start_edge_node "$run_name" "$backend" "$plant"
        "drill_$drill" "$run_name" "$node_url" || status=$?
        stop_edge_node
        [ -n "$plant" ] && [ "$status" != 1 ] && [ "$attempt" -lt 3 ] &&
            { echo "$run_name: the plant was not met in this run; again"; continue; }
        break
    done
    if [ -z "$plant" ] && [ "$status" != 0 ]; then
        failures+=("$name: the verdict failed (status $status)")
    elif [ -n "$plant" ] && [ "$status" != 1 ]; then
        failures+=("$name: the planted bug $plant was not caught (status $status)")
    fi
    echo "$name: $((SECONDS - started)) s"
}

for backend in sqlite postgres; do
    run_drill retries "$backend"
    run_drill leases "$backend"
    run_drill watch "$backend"
done
run_drill locks postgres-redis
run_drill retries sqlite prefix-delete-ignores-idempotency-key
run_drill leases sqlite lease-refresh-revives-expired
run_drill watch sqlite watch-replay-ignores-compaction
run_drill locks postgres-redis abandoned-writes-uncached

if [ ${#failures[@]} -gt 0 ]; then
    printf '\nFAILED:\n' >&2
    printf '  %s\n' "${failures[@]}" >&2
    keep=1
    exit 1
fi
printf '\nevery edge drill passed, and caught every planted bug\n'
