#!/usr/bin/env bash
# Runs the model-based test of the API (kg-server/tests/api/model.rs) for longer than
# `cargo test` does: random sequences of every operation against a kg-server process on
# embedded SQLite and on PostgreSQL, each answer compared with an in-memory model, and a
# failing sequence shrunk to a minimal one, printed with the seed that reproduces it.
#
#   ./scripts/model-test.sh                          40 sequences per backend, a random seed
#   ./scripts/model-test.sh --cases 2000 --ops 60    more and longer sequences
#   ./scripts/model-test.sh --seed 42 --backend sqlite   rerun what a failure printed
#   ./scripts/model-test.sh --runs 5                 five runs, seeds S, S+1, ... (S random
#                                                    unless --seed), each on a fresh node
#
# --backend is sqlite, postgres, redis (PostgreSQL with the Redis read cache), two (two nodes
# over one database: SQLite, and PostgreSQL with Redis) or both (every one of these).
# The PostgreSQL node gets a fresh kgtest_* database on the server at KG_TEST_DATABASE_URL
# (an admin URL, as for scripts/test.sh), or, without one, on a throwaway server of its own;
# the cache is the Redis at KG_TEST_REDIS_URL, or a throwaway one. Exits non-zero on the first failing run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

cases=40
ops=40
seed=""
backend=both
runs=1
while [ $# -gt 0 ]; do
    case $1 in
    --cases) cases=${2:?--cases takes a number}; shift 2 ;;
    --ops) ops=${2:?--ops takes a number}; shift 2 ;;
    --seed) seed=${2:?--seed takes a number}; shift 2 ;;
    --runs) runs=${2:?--runs takes a number}; shift 2 ;;
    --backend) backend=${2:?--backend takes sqlite, postgres, redis, two or both}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
    esac
done
whole_numbers "$cases" "$ops" "$runs"
[ -z "$seed" ] || [[ "$seed" =~ ^[0-9]+$ ]] || fail "'$seed' is not a seed (a whole number)"
case $backend in
sqlite) filter=model::sqlite:: ;;
postgres) filter=model::postgres:: ;;
redis) filter=model::postgres_with_redis:: ;;
two) filter=two_nodes ;;
# Both backends' tests (PostgreSQL's also with the Redis cache), not the planted bug's.
both) filter=random_operation_sequences_answer_as_the_model_says ;;
*) fail "--backend takes sqlite, postgres, redis, two or both, not '$backend'" ;;
esac

ensure_build_tools
work=""
finish() {
    local status=$?
    if [ -n "$work" ]; then
        [ -s "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null
        stop_postgres "$work/postgres" 2>/dev/null || true
        purge_postgres "$work/postgres"
        rm -rf "$work"
    fi
    exit "$status"
}
trap finish EXIT
needs_postgres=0
needs_redis=0
[ "$backend" != sqlite ] && [ -z "${KG_TEST_DATABASE_URL:-}" ] && needs_postgres=1
[ "$backend" = redis ] || [ "$backend" = two ] || [ "$backend" = both ] && [ -z "${KG_TEST_REDIS_URL:-}" ] && needs_redis=1
if [ "$needs_postgres" = 1 ] || [ "$needs_redis" = 1 ]; then
    work=$(mktemp -d /tmp/keygrid-model.XXXXXX)
    chmod 755 "$work" # its PostgreSQL runs as the postgres user
fi
if [ "$needs_postgres" = 1 ]; then
    ensure_packages initdb:postgresql
    port=$(free_port)
    start_postgres "$work/postgres" "$port" "$work/postgres.log"
    export KG_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
if [ "$needs_redis" = 1 ]; then
    ensure_packages redis-server:redis-server redis-cli:redis-tools
    port=$(free_port)
    start_redis "$port" "$work"
    export KG_TEST_REDIS_URL="redis://127.0.0.1:$port"
fi

step "building the test"
cargo test --locked -p kg-server --test api --no-run

[ -n "$seed" ] || seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
for run in $(seq 0 $((runs - 1))); do
    step "run $((run + 1)) of $runs: seed $((seed + run)), $cases sequences of up to $ops ops per backend ($backend)"
    KG_MODEL_CASES=$cases KG_MODEL_OPS=$ops KG_MODEL_SEED=$((seed + run)) \
        cargo test --locked -q -p kg-server --test api "$filter" -- --nocapture --test-threads 1
done
