#!/usr/bin/env bash
# The web view's tests: Vitest unit tests, the production build, and the browser end-to-end
# test (Debian's chromium driven by playwright-core) against a real kg-server that serves
# web/dist on a free port, on embedded SQLite, with authentication on (the page must ask for
# a token), and a second node beside it over Redis (KG_TEST_REDIS_URL, or a throwaway one),
# which the test stops to see its chip go stale. Installs chromium and the npm packages itself.
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
peer_port=$(free_port)
write_auth_tokens "$dir/tokens"
token=$(KG_AUTH_TOKENS_FILE="$dir/tokens" auth_token) # the first line's: the write token
redis_pid=""
node_pid=""
peer_pid=""
trap 'kill $node_pid $peer_pid $redis_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
# Two nodes that hear each other's heartbeats over Redis, so that the page's node chips can be
# seen going stale when one stops: the test's Redis (KG_TEST_REDIS_URL), or one of its own.
redis_url=${KG_TEST_REDIS_URL:-}
if [ -z "$redis_url" ]; then
    ensure_packages redis-server:redis-server redis-cli:redis-tools
    redis_port=$(free_port)
    start_redis "$redis_port" "$dir"
    redis_pid=$(cat "$dir/redis.pid")
    redis_url="redis://127.0.0.1:$redis_port"
fi
node() { # node ID PORT: a node on the shared SQLite file and Redis prefix
    "$bin/kg-server" --listen "127.0.0.1:$2" --node-id "$1" --auth-tokens-file "$dir/tokens" \
        --database-url "sqlite://$dir/kg.db" --web-dir web/dist \
        --redis-url "$redis_url" --redis-prefix "kgweb-$$" >"$dir/$1.log" 2>&1 &
}
node web-e2e "$port"
node_pid=$!
wait_for_status "http://127.0.0.1:$port/api/health" 200 30 || fail "kg-server did not start: $(cat "$dir/web-e2e.log")"
node web-e2e-peer "$peer_port"
peer_pid=$!
wait_for_status "http://127.0.0.1:$peer_port/api/health" 200 30 || fail "the peer did not start: $(cat "$dir/web-e2e-peer.log")"

step "web: end-to-end in chromium"
(cd web && KG_E2E_URL="http://127.0.0.1:$port" KG_E2E_TOKEN="$token" KG_E2E_PEER_PID="$peer_pid" \
    KG_E2E_SHOTS="$KG_ROOT/target/e2e" npm run e2e)
