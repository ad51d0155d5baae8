#!/usr/bin/env bash
# Tests the API against its own OpenAPI document with schemathesis (PyPI), every check, with
# schema-valid and schema-violating requests: no 5xx, every status and body as documented,
# valid data accepted, invalid data refused with a 4xx. It runs twice, against a node on
# embedded SQLite and against one on PostgreSQL, since each refuses different things (a NUL
# is fine in SQLite text and a 500 waiting to happen in PostgreSQL's). Each node is its own,
# on a free port; schemathesis is installed into a venv under .keygrid/. Exits non-zero on
# any failure.
#
#   ./scripts/schema-test.sh              50 cases per operation (scripts/test.sh runs this)
#   ./scripts/schema-test.sh -n 500       more; any other option goes to `schemathesis run`
#
# The PostgreSQL node gets a fresh database on the server at KG_TEST_DATABASE_URL (an admin
# URL, as for scripts/test.sh), or, without one, on a throwaway server of its own.
# /api/watch is left out: it is a stream that does not end, and schemathesis waits for a body.
# Its parameters are tested in kg-server/tests/api/watch.rs. KG_PROFILE picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

schemathesis=$(pip_tool schemathesis schemathesis)

build_tools
bin=$(kg_bin_dir)
work=$(mktemp -d /tmp/keygrid-schema.XXXXXX)
chmod 755 "$work" # a throwaway PostgreSQL runs as the postgres user
node=""
admin_url=${KG_TEST_DATABASE_URL:-}
database=""
finish() {
    local status=$?
    [ -n "$node" ] && kill "$node" 2>/dev/null && wait "$node" 2>/dev/null
    [ "$status" -ne 0 ] && [ -f "$work/node.log" ] && { echo "--- tail of the node's log"; tail -n 20 "$work/node.log"; }
    [ -n "$database" ] && psql "$admin_url" -qc "drop database if exists $database with (force)" >/dev/null 2>&1
    stop_postgres "$work/postgres" 2>/dev/null || true
    purge_postgres "$work/postgres"
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT

# run_schemathesis LABEL [kg-server flags...]: a node of its own with the flags, then every check.
run_schemathesis() {
    local label=$1 port
    shift
    port=$(free_port)
    (cd "$work" && exec "$bin/kg-server" --listen "127.0.0.1:$port" "$@") >"$work/node.log" 2>&1 &
    node=$!
    wait_for_status "http://127.0.0.1:$port/api/health" 200 10 || fail "the $label node did not start"
    step "schemathesis against a $label node: http://127.0.0.1:$port/api/openapi.json"
    "$schemathesis" --config-file tests/schema/schemathesis.toml run \
        "http://127.0.0.1:$port/api/openapi.json" --checks all --mode all \
        --exclude-path /api/watch --max-examples 50 --seed 1 --no-color "${extra[@]}"
    kill "$node" && wait "$node" 2>/dev/null || true
    node=""
}

extra=("$@")
run_schemathesis "SQLite"

if [ -z "$admin_url" ]; then
    ensure_packages psql:postgresql-client initdb:postgresql
    port=$(free_port)
    start_postgres "$work/postgres" "$port" "$work/postgres.log"
    admin_url="postgres://postgres@127.0.0.1:$port/postgres"
fi
database="kgschema_$$"
psql "$admin_url" -qc "create database $database" >/dev/null
run_schemathesis "PostgreSQL" --database-url "${admin_url%/*}/$database"
