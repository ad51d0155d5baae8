#!/usr/bin/env bash
# Runs every check KeyGrid has: formatting, clippy with -D warnings, the whole cargo test
# suite against PostgreSQL, Redis and embedded SQLite, the deployment files (docker-compose,
# Kubernetes), the real compose stack through podman (scripts/test-compose.sh: images built
# here from Debian's packages, cached in podman's store), and then the cluster tests against a stack of its own from scripts/start.sh
# (nginx on 8000/8080, nodes on 8001-8003: stop your own stack first), and last the fault
# drills, the replicated data tier's too (start.sh --ha: etcd on 2379-2580, PostgreSQL on
# 5451-5453, Patroni on 8008-8010, Redis on 6389-6390, Sentinels on 26389-26391).
#
# It needs nothing running: unless told otherwise it starts a throwaway PostgreSQL (initdb +
# pg_ctl, trust, fsync on) and a throwaway Redis on free ports, the same way start.sh starts
# the stack's, and stops and deletes them at the end. Given a server, it uses that one, and
# fails loudly when it cannot reach it; nothing is skipped. Tests that stop a server start
# their own throwaway one; the cluster's PostgreSQL and Redis are the stack's own.
#
#   KG_TEST_DATABASE_URL  admin URL of a PostgreSQL the tests create databases in
#                         (e.g. postgres://postgres@127.0.0.1:5432/postgres)
#   KG_TEST_REDIS_URL     a Redis the tests share, each under its own key prefix
#                         (e.g. redis://127.0.0.1:6379)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Each step's banner says how long the one before took, and the total so far: CI's budget is
# spent here, and the log should say where.
step_started=$SECONDS
step_name=""
step() {
    if [ -n "$step_name" ]; then
        printf '    (%s: %d s; %d s in all)\n' "$step_name" $((SECONDS - step_started)) "$SECONDS"
    fi
    step_name=$*
    step_started=$SECONDS
    printf '\n==> %s\n' "$*"
}

step "checking prerequisites"
ensure_packages psql:postgresql-client initdb:postgresql redis-server:redis-server redis-cli:redis-tools \
    tmux:tmux python3:python3 curl:curl etcd:etcd-server patroni:patroni haproxy:haproxy \
    faketime:faketime
python3 -c 'import ensurepip' 2>/dev/null || ensure_packages python3-venv:python3-venv
ensure_build_tools

# Everything this script starts is stopped by one handler, whichever step fails.
servers_dir=""
cluster_started=0
finish() {
    local status=$?
    if [ "$cluster_started" = 1 ]; then
        if [ "$status" -ne 0 ] && [ -d "$KG_STATE_DIR/logs" ]; then
            for log in "$KG_STATE_DIR"/logs/{n1,n2,n3,nginx-error}.log; do
                [ -f "$log" ] && { echo "--- tail of $log"; tail -n 40 "$log"; }
            done
        fi
        ./scripts/stop.sh --purge >/dev/null 2>&1 || true
    fi
    if [ -n "$servers_dir" ]; then
        stop_postgres "$servers_dir/postgres" || true
        [ -s "$servers_dir/redis.pid" ] && kill "$(cat "$servers_dir/redis.pid")" 2>/dev/null
        purge_postgres "$servers_dir/postgres"
        rm -rf "$servers_dir"
    fi
    exit "$status"
}
trap finish EXIT

if [ -z "${KG_TEST_DATABASE_URL:-}" ] || [ -z "${KG_TEST_REDIS_URL:-}" ]; then
    servers_dir=$(mktemp -d /tmp/keygrid-test-servers.XXXXXX)
    chmod 755 "$servers_dir" # its PostgreSQL runs as the postgres user
fi
if [ -z "${KG_TEST_DATABASE_URL:-}" ]; then
    port=$(free_port)
    start_postgres "$servers_dir/postgres" "$port" "$servers_dir/postgres.log"
    export KG_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
if [ -z "${KG_TEST_REDIS_URL:-}" ]; then
    port=$(free_port)
    step "starting Redis on 127.0.0.1:$port"
    start_redis "$port" "$servers_dir"
    export KG_TEST_REDIS_URL="redis://127.0.0.1:$port"
fi
echo "tests use PostgreSQL at $KG_TEST_DATABASE_URL and Redis at $KG_TEST_REDIS_URL"
if ! psql "$KG_TEST_DATABASE_URL" -qAtc 'select 1' >/dev/null 2>&1; then
    fail "PostgreSQL is not reachable at $KG_TEST_DATABASE_URL; the tests need it (unset KG_TEST_DATABASE_URL to use a throwaway one)"
fi
if [ "$(redis-cli -u "$KG_TEST_REDIS_URL" ping 2>/dev/null)" != "PONG" ]; then
    fail "Redis is not reachable at $KG_TEST_REDIS_URL; the tests need it (unset KG_TEST_REDIS_URL to use a throwaway one)"
fi
# Each test creates its own kgtest_* database; drop what earlier runs left behind.
psql "$KG_TEST_DATABASE_URL" -qAtc \
    "select format('drop database if exists %I;', datname) from pg_database where datname like 'kgtest\_%'" |
    psql "$KG_TEST_DATABASE_URL" -q >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --features kg-cli/cluster-tests --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "scripts/drill-edges.sh --quick: retries of every write kind, leases at their deadlines, watchers overtaken by compactions, commits whose answer was lost, judged; each with the planted bug it must catch"
./scripts/drill-edges.sh --quick

step "schemathesis: the API against its OpenAPI document (every check, valid and invalid data)"
KG_PROFILE=debug ./scripts/schema-test.sh

step "web view: unit tests, build, browser end-to-end"
KG_PROFILE=debug ./scripts/test-web.sh

step "deployment files"
./scripts/check-deploy.sh

step "the compose stack through podman: health, the seed's drill word for word, volumes, restarts"
KG_PROFILE=debug ./scripts/test-compose.sh

step "switching stacks keeps data: the single-server stack, --ha, and back (scripts/test-stacks.sh)"
KG_PROFILE=debug ./scripts/test-stacks.sh

step "cluster: starting a stack of its own"
for port in 8000 8001 8002 8003 8080; do
    port_in_use "$port" && fail "port $port is in use; the cluster tests need 8000-8003 and 8080 (./scripts/stop.sh stops a running stack)"
done
KG_STATE_DIR=$(mktemp -d /tmp/keygrid-test.XXXXXX)
chmod 755 "$KG_STATE_DIR" # the stack's PostgreSQL runs as the postgres user
export KG_STATE_DIR KG_PROFILE=debug
cluster_started=1
./scripts/start.sh

step "cluster tests (failover drills, kills, restarts, kg failover-drill)"
cargo test -p kg-cli --features cluster-tests --locked --test cluster -- --nocapture

step "kg-bench through nginx: every node answers, no errors"
cargo build --locked -p kg-bench
# Every node must answer a fair share through nginx (three nodes, none under 20%).
target/debug/kg-bench --endpoint http://127.0.0.1:8000 --concurrency 8 --duration 3s \
    --keys 1000 --preload --threshold 'errors<0.1%' --threshold 'nodes>=3' \
    --threshold 'node_share>20%'

step "the seed's k6 script, on a short run"
DURATION=5s VUS=2 ./scripts/load-k6.sh http://127.0.0.1:8000 --quiet

step "scripts/bench.sh --quick: the benchmark runs, every row without errors (no figure is asserted)"
./scripts/stop.sh --purge >/dev/null
./scripts/bench.sh --quick

step "scripts/profile-node.sh --leases, briefly: one debug node's instructions per request, with and without leases held (no figure is asserted)"
profile_out=$(KG_BENCH_DATABASE_URL=$KG_TEST_DATABASE_URL KG_BENCH_REDIS_URL=$KG_TEST_REDIS_URL \
    ./scripts/profile-node.sh --seconds 2 --keys 200 --leases 200 --ttl 3 --per-request 16 2>&1) ||
    { printf '%s\n' "$profile_out" | tail -n 30; fail "scripts/profile-node.sh failed"; }
printf '%s\n' "$profile_out" | tail -n 8
grep -Eq '^GET \(hit\) +[1-9][0-9]+$' <<<"$profile_out" && grep -Eq '^PUT +[1-9][0-9]+$' <<<"$profile_out" ||
    fail "scripts/profile-node.sh printed no instruction counts"
grep -Eq '^GET \(hit\)( +-?[0-9.]+%?){7}$' <<<"$profile_out" && grep -Eq '^PUT( +-?[0-9.]+%?){7}$' <<<"$profile_out" ||
    fail "scripts/profile-node.sh --leases printed no figures with the leases held"

step "scripts/chaos.sh --quick: fault drills under load, judged for lost writes, stale reads, linearizability"
./scripts/chaos.sh --quick

step "scripts/chaos.sh --ha --quick: the replicated data tier (Patroni, etcd, HAProxy, Sentinel) under failover"
./scripts/chaos.sh --ha --quick

step "scripts/bench.sh --ha --quick: the HA cost benchmark runs, both stacks without errors (no figure is asserted)"
./scripts/bench.sh --ha --quick --no-build

step "all checks passed"
printf '    (%d s in all)\n' "$SECONDS"
