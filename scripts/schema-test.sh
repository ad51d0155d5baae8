#!/usr/bin/env bash
# Tests the API against its own OpenAPI document with schemathesis (PyPI), every check, with
# schema-valid and schema-violating requests: no 5xx, every status and body as documented,
# valid data accepted, invalid data refused with a 4xx. It starts an embedded node of its own
# (SQLite, a free port, a temporary directory) and installs schemathesis into a venv under
# .keygrid/. Exits non-zero on any failure.
#
#   ./scripts/schema-test.sh              50 cases per operation (scripts/test.sh runs this)
#   ./scripts/schema-test.sh -n 500       more; any other option goes to `schemathesis run`
#
# /api/watch is left out: it is a stream that does not end, and schemathesis waits for a body.
# Its parameters are tested in kg-server/tests/api/watch.rs. KG_PROFILE picks the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

schemathesis=$(pip_tool schemathesis schemathesis)

build_tools
bin=$(kg_bin_dir)
work=$(mktemp -d /tmp/keygrid-schema.XXXXXX)
port=$(free_port)
node=""
finish() {
    local status=$?
    [ -n "$node" ] && kill "$node" 2>/dev/null && wait "$node" 2>/dev/null
    [ "$status" -ne 0 ] && [ -f "$work/node.log" ] && { echo "--- tail of the node's log"; tail -n 20 "$work/node.log"; }
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT
(cd "$work" && exec "$bin/kg-server" --listen "127.0.0.1:$port") >"$work/node.log" 2>&1 &
node=$!
wait_for_status "http://127.0.0.1:$port/api/health" 200 10 || fail "the node did not start"

step "schemathesis against http://127.0.0.1:$port/api/openapi.json"
"$schemathesis" --config-file tests/schema/schemathesis.toml run \
    "http://127.0.0.1:$port/api/openapi.json" --checks all --mode all \
    --exclude-path /api/watch --max-examples 50 --seed 1 --no-color "$@"
