#!/usr/bin/env bash
# Starts the whole KeyGrid stack with one command: a PostgreSQL and a Redis of its own, three
# supervised kg-server nodes (n1, n2, n3 on 8001-8003) and nginx (API on :8000, web view on
# :8080). Everything lives under .keygrid/; ./scripts/stop.sh stops it without losing data.
#
#   ./scripts/start.sh            build and start the local stack (no Docker needed)
#   ./scripts/start.sh --docker   the same with `docker compose up -d --build`
#   ./scripts/start.sh --no-build start from binaries built earlier
#   ./scripts/start.sh --ha       the same with a replicated data tier (scripts/ha.sh):
#                                 PostgreSQL x3 under Patroni and etcd behind HAProxy on 5442,
#                                 Redis primary, replica and three Sentinels
#
# KG_AUTH_TOKENS_FILE=FILE turns on bearer tokens on the local nodes (the script's own checks
# present the file's first token); --docker always uses them (.keygrid/auth-tokens).
#
# Run it again while the stack runs and it says so, starting only what is missing.
# Environment: see the stack section of scripts/lib.sh (KG_STATE_DIR, KG_PG_PORT, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

build=1
ha=0
for arg in "$@"; do
    case "$arg" in
        --ha) ha=1 ;;
    esac
done
case "${1:-}" in
    "" | --ha) [ "${2:-}" = --no-build ] && build=0 ;;
    --no-build) build=0 ;;
    --docker)
        command -v docker >/dev/null 2>&1 || fail "--docker needs a Docker engine; without one, run ./scripts/start.sh"
        # The nodes require bearer tokens from this file (the compose file's secret).
        if [ -z "${KG_AUTH_TOKENS:-}" ] && [ ! -f .keygrid/auth-tokens ]; then
            write_auth_tokens .keygrid/auth-tokens
            echo "wrote bearer tokens to .keygrid/auth-tokens (export KG_TOKEN=<a token> for kg)"
        fi
        if docker compose version >/dev/null 2>&1; then
            exec docker compose up -d --build
        fi
        exec docker-compose up -d --build
        ;;
    -h | --help)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) fail "unknown option '$1' (try --help)" ;;
esac

step "checking prerequisites"
ensure_packages curl:curl psql:postgresql-client initdb:postgresql \
    redis-server:redis-server redis-cli:redis-tools nginx:nginx
if [ "$build" = 1 ]; then ensure_build_tools; fi
mkdir -p "$KG_RUN" "$KG_LOGS" "$KG_STATE_DIR/nginx/tmp"
# KG_PROFILE, or the binaries of the stack that is already running.
bin=$(kg_bin_dir)

if [ "$build" = 1 ]; then
    profile_flag=()
    [ "$(basename "$bin")" = release ] && profile_flag=(--release)
    step "building kg-server and kg ($(basename "$bin"))"
    cargo build "${profile_flag[@]}" --locked -p kg-server -p kg-cli
    if [ -f web/package.json ]; then
        require_node
        step "building the web view"
        (cd web && npm ci --no-audit --no-fund && npm run build)
    fi
fi
[ -x "$bin/kg-server" ] || fail "$bin/kg-server is missing; run without --no-build"
# node.sh (restarts, the drill) uses the binaries this start chose.
echo "$bin" >"$KG_RUN/bin-dir"

already=0

if [ "$ha" = 1 ]; then
    [ -s "$KG_STATE_DIR/postgres/PG_VERSION" ] && fail "$KG_STATE_DIR holds a single-server stack; stop it with ./scripts/stop.sh --purge, or use another KG_STATE_DIR"
    scripts/ha.sh up
    touch "$KG_RUN/ha"
elif [ -e "$KG_RUN/ha" ]; then
    fail "$KG_STATE_DIR holds an --ha stack; start it with --ha, or stop it with ./scripts/stop.sh --purge"
fi

# --- PostgreSQL --------------------------------------------------------------------------------
# A cluster of its own on KG_PG_PORT, TCP only, with fsync and synchronous_commit on: a commit
# that KeyGrid acknowledged survives a power cut, throwaway instance or not.
if [ "$ha" = 1 ]; then
    : # Patroni's, behind HAProxy on KG_PG_PORT
elif postgres_running "$KG_STATE_DIR/postgres"; then
    echo "PostgreSQL is already running on $KG_PG_PORT"
    already=$((already + 1))
else
    start_postgres "$KG_STATE_DIR/postgres" "$KG_PG_PORT" "$KG_LOGS/postgres.log"
fi
admin_url="postgres://postgres@127.0.0.1:$KG_PG_PORT/postgres"
if [ "$ha" = 0 ] && [ -z "$(psql "$admin_url" -qAtc "select 1 from pg_database where datname = 'keygrid'")" ]; then
    psql "$admin_url" -qc "create database keygrid" >/dev/null
fi

# --- Redis -------------------------------------------------------------------------------------
# Only a cache and an event bus: it keeps nothing on disk, and the nodes distrust its entries
# after a restart (see docs/consistency.md).
if [ "$ha" = 1 ]; then
    : # ha.sh's primary, replica and Sentinels
elif pid_alive "$KG_RUN/redis.pid"; then
    echo "Redis is already running on $KG_REDIS_PORT"
    already=$((already + 1))
else
    port_in_use "$KG_REDIS_PORT" && fail "port $KG_REDIS_PORT is taken by something else; set KG_REDIS_PORT"
    step "starting Redis on 127.0.0.1:$KG_REDIS_PORT"
    start_redis
fi

# --- the nodes ---------------------------------------------------------------------------------
for node in "${KG_NODES[@]}"; do
    if pid_alive "$KG_RUN/$node.supervisor.pid"; then
        echo "$node is already running on $(node_port "$node")"
        already=$((already + 1))
    else
        scripts/node.sh start "$node" --no-wait
    fi
done

# --- nginx -------------------------------------------------------------------------------------
nginx_dir="$KG_STATE_DIR/nginx"
user_line=""
if [ "$(id -u)" -eq 0 ]; then
    # Workers must read web/dist, which may sit in a directory only root can enter.
    user_line="user root;"
fi
sed -e "s|@STATE@|$KG_STATE_DIR|g" -e "s|@USER@|$user_line|" \
    nginx/nginx.local.conf.in >"$nginx_dir/nginx.conf"
sed -e 's|backend\([0-9]\):|127.0.0.1:|' \
    -e "s|/var/log/nginx/|$KG_LOGS/|" \
    -e "s|/usr/share/nginx/html|$KG_ROOT/web/dist|" \
    nginx/keygrid.conf >"$nginx_dir/keygrid.conf"
if pid_alive "$nginx_dir/nginx.pid"; then
    echo "nginx is already running on $KG_API_PORT and $KG_WEB_PORT (configuration reloaded)"
    nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -s reload 2>>"$KG_LOGS/nginx-error.log"
    already=$((already + 1))
else
    for port in "$KG_API_PORT" "$KG_WEB_PORT"; do
        port_in_use "$port" && fail "port $port is taken by something else (nginx needs $KG_API_PORT and $KG_WEB_PORT)"
    done
    step "starting nginx on :$KG_API_PORT (API) and :$KG_WEB_PORT (web view)"
    nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -t -q 2>"$KG_LOGS/nginx-check.log" ||
        fail "nginx rejected its configuration: $(cat "$KG_LOGS/nginx-check.log")"
    nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf"
fi

# --- ready? ------------------------------------------------------------------------------------
step "waiting for the nodes to be ready"
for node in "${KG_NODES[@]}"; do
    port=$(node_port "$node")
    wait_for_status "http://127.0.0.1:$port/api/ready" 200 60 ||
        fail "$node is not ready on $port; see $KG_LOGS/$node.log"
    echo "$node ready on http://127.0.0.1:$port"
done
wait_for_status "http://127.0.0.1:$KG_API_PORT/api/health" 200 10 ||
    fail "nginx does not reach the nodes; see $KG_LOGS/nginx-error.log"

if [ "$already" -eq $((${#KG_NODES[@]} + 3)) ]; then
    step "KeyGrid is already running"
else
    step "KeyGrid is running"
fi
web_note=""
[ -f web/dist/index.html ] || web_note="  (web/dist is not built: run without --no-build)"
cat <<EOF
  API        http://127.0.0.1:$KG_API_PORT/api/health   (round-robin over n1-n3)
  web view   http://127.0.0.1:$KG_WEB_PORT/$web_note
  Swagger    http://127.0.0.1:$KG_API_PORT/api/docs/
  nodes      http://127.0.0.1:8001  http://127.0.0.1:8002  http://127.0.0.1:8003
  CLI        $bin/kg --endpoint http://127.0.0.1:$KG_API_PORT health
  logs       $KG_LOGS/
  stop       ./scripts/stop.sh      one node: ./scripts/node.sh stop|start|kill n2
EOF
