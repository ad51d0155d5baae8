#!/usr/bin/env bash
# The web view's tests: Vitest unit tests, the production build, and the browser end-to-end
# test (Debian's chromium driven by playwright-core) against a real kg-server that serves
# web/dist on a free port, on embedded SQLite, with authentication on (the page must ask for
# a token). Installs chromium and the npm packages itself.
#
#   KG_PROFILE  which kg-server binary to use: debug (default) or release
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

KG_PROFILE=${KG_PROFILE:-debug}
KG_PROFILE_SET=1
require_node
ensure_packages chromium:chromium curl:curl

step "web: npm ci"
(cd web && npm ci --no-audit --no-fund)

step "web: unit tests (vitest)"
(cd web && npm test)

step "web: type-check and build"
(cd web && npm run build)

bin=$(kg_bin_dir)
if [ ! -x "$bin/kg-server" ]; then
    profile_flag=()
    [ "$KG_PROFILE" = release ] && profile_flag=(--release)
    cargo build "${profile_flag[@]}" --locked -p kg-server
fi
dir=$(mktemp -d /tmp/kg-web-e2e.XXXXXX)
port=$(free_port)
write_auth_tokens "$dir/tokens"
token=$(KG_AUTH_TOKENS_FILE="$dir/tokens" auth_token) # the first line's: the write token
"$bin/kg-server" --listen "127.0.0.1:$port" --node-id web-e2e --auth-tokens-file "$dir/tokens" \
    --database-url "sqlite://$dir/kg.db" --web-dir web/dist >"$dir/node.log" 2>&1 &
node_pid=$!
trap 'kill "$node_pid" 2>/dev/null; wait "$node_pid" 2>/dev/null; rm -rf "$dir"' EXIT
wait_for_status "http://127.0.0.1:$port/api/health" 200 30 || fail "kg-server did not start: $(cat "$dir/node.log")"

step "web: end-to-end in chromium"
(cd web && KG_E2E_URL="http://127.0.0.1:$port" KG_E2E_TOKEN="$token" KG_E2E_SHOTS="$KG_ROOT/target/e2e" npm run e2e)
