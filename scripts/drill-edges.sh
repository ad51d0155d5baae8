#!/usr/bin/env bash
# Edge drills (issue 47): load that reaches the timing edges random load rarely does, against
# single kg-server nodes this script starts itself on free ports, each verdict judged by
# `kg-bench judge`. Then each drill again against a node started with a planted bug
# (KG_PLANTED_BUG, kg-server/src/planted.rs): the drill must catch it.
#
#   ./scripts/drill-edges.sh            every drill, longer runs
#   ./scripts/drill-edges.sh --quick    every drill, short runs (for scripts/test.sh)
#   ./scripts/drill-edges.sh --keep     keep the histories, reports and logs (path printed)
#
# The drills:
#   retries   every write kind (put, cas, delete, prefix delete, txn) sent a second time with
#             the same Idempotency-Key after a delay, some after their first connection was cut;
#             a retry the node applied again fails the verdict.
#             Plant: prefix-delete-ignores-idempotency-key (issue 47 item 5).
#
# Backends: embedded SQLite, and PostgreSQL on a fresh database of KG_TEST_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres), dropped at the end. Builds
# kg-server and kg-bench in the debug profile: only debug builds honour planted bugs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

quick=
keep=
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --keep) keep=1 ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$arg' (try --help)" ;;
    esac
done

pg_url=${KG_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ -n "$quick" ]; then seconds=10; rate=150; else seconds=40; rate=250; fi

step "building kg-server and kg-bench (debug)"
CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only} \
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
    if [ -n "$keep" ]; then echo "kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# edge_database NAME: a fresh PostgreSQL database for one node; prints its URL.
edge_database() {
    local db="kgtest_edges_$$_${1//-/_}"
    PGOPTIONS="-c client_min_messages=warning" psql -q "$pg_url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    databases+=("$db")
    printf '%s/%s\n' "${pg_url%/*}" "$db"
}

# start_edge_node NAME BACKEND PLANT: a node on a free port (PLANT: KG_PLANTED_BUG, or empty),
# on BACKEND (sqlite or postgres); sets node_url and node_db.
start_edge_node() {
    local name=$1 backend=$2 plant=$3 port
    case "$backend" in
        sqlite) node_db="sqlite://$work/$name.db" ;;
        postgres) node_db=$(edge_database "$name") ;;
        *) fail "unknown backend $backend" ;;
    esac
    port=$(free_port)
    KG_LISTEN="127.0.0.1:$port" KG_NODE_ID="$name" KG_DATABASE_URL="$node_db" \
        KG_PLANTED_BUG="$plant" "$bin/kg-server" >"$work/$name.log" 2>&1 &
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

failures=()
# run_drill DRILL BACKEND [PLANT]: one drill on a fresh node; without PLANT the verdict must
# pass, with it fail.
run_drill() {
    local drill=$1 backend=$2 plant=${3:-} name status=0 started=$SECONDS
    name="$drill-$backend${plant:+-planted}"
    step "$name${plant:+ (KG_PLANTED_BUG=$plant: the verdict must fail)}"
    start_edge_node "$name" "$backend" "$plant"
    "drill_$drill" "$name" "$node_url" || status=$?
    stop_edge_node
    if [ -z "$plant" ] && [ "$status" != 0 ]; then
        failures+=("$name: the verdict failed (status $status)")
    elif [ -n "$plant" ] && [ "$status" != 1 ]; then
        failures+=("$name: the planted bug $plant was not caught (status $status)")
    fi
    echo "$name: $((SECONDS - started)) s"
}

for backend in sqlite postgres; do
    run_drill retries "$backend"
done
run_drill retries sqlite prefix-delete-ignores-idempotency-key

if [ ${#failures[@]} -gt 0 ]; then
    printf '\nFAILED:\n' >&2
    printf '  %s\n' "${failures[@]}" >&2
    keep=1
    exit 1
fi
printf '\nevery edge drill passed, and caught every planted bug\n'
