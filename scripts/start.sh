#!/usr/bin/env bash
# Starts the whole KeyGrid stack with one command: a PostgreSQL and a Redis of its own, three
# supervised kg-server nodes (n1, n2, n3 on 8001-8003) and nginx (API on :8000, web view on
# :8080). Everything lives under .keygrid/ (the --ha stack's under .keygrid-ha/, so that
# switching stacks keeps each one's data); ./scripts/stop.sh stops it without losing data.
#
#   ./scripts/start.sh            build and start the local stack (no Docker needed)
#   ./scripts/start.sh --docker   the same with docker-compose.yml (through podman where no
#                                 Docker engine answers: README, Docker): the API open, as
#                                 the seed's README uses it, published on 127.0.0.1 only
#   ./scripts/start.sh --docker --auth   with bearer tokens (docker-compose.secure.yml; the
#                                 tokens file .keygrid/secrets/auth-tokens is written if missing)
#   ./scripts/start.sh --no-build start from binaries built earlier
#   ./scripts/start.sh --ha       the same with a replicated data tier (scripts/ha.sh):
#                                 PostgreSQL x3 under Patroni and etcd behind HAProxy on 5442,
#                                 Redis primary, replica and three Sentinels
#   ./scripts/start.sh --hosts    the --ha stack laid out as hosts: every member in a network
#                                 namespace of its own, on one bridge (scripts/hosts.sh; root
#                                 only), in three zones; the API and the web view still on
#                                 localhost:8000 and :8080, the nodes on :8001-8003; the
#                                 network between them breaks with scripts/net.sh
#
# KG_AUTH_TOKENS_FILE=FILE turns on bearer tokens on the local nodes (the script's own checks
# present the file's first token); --docker --auth on the compose stack.
#
# Run it again while the stack runs and it says so, starting only what is missing.
# Environment: see the stack section of scripts/lib.sh (KG_STATE_DIR, KG_PG_PORT, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

build=1
ha=0
hosts=0
for arg in "$@"; do
    case "$arg" in
        --ha) ha=1 ;;
        --hosts) ha=1 hosts=1 ;;
        --no-build) build=0 ;;
        --docker | --auth | -h | --help) ;;
        *) fail "unknown option '$arg' (try --help)" ;;
    esac
done
case "${1:-}" in
    "" | --ha | --hosts | --no-build) ;;
    --docker)
        compose_files=docker-compose.yml
        [ "${2:-}" = --auth ] && compose_files=docker-compose.yml:docker-compose.secure.yml
        export COMPOSE_FILE=$compose_files
        # With --auth the nodes require bearer tokens from this file (the secure override's
        # secret). Compose bind-mounts it, and the image's non-root user must read it: the
        # file is readable by all, the directory around it only by its owner.
        if [ "${2:-}" = --auth ] && [ -z "${KG_AUTH_TOKENS:-}" ]; then
            mkdir -p .keygrid/secrets
            chmod 700 .keygrid/secrets
            if [ ! -f .keygrid/secrets/auth-tokens ]; then
                write_auth_tokens .keygrid/secrets/auth-tokens
                echo "wrote bearer tokens to .keygrid/secrets/auth-tokens (export KG_TOKEN=<a token> for kg)"
            fi
            chmod 644 .keygrid/secrets/auth-tokens
        fi
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            compose up -d --build
            exit 0
        fi
        # No Docker engine: podman's Docker API serves docker-compose, with images built here
        # from Debian's packages (no registry needed) and the binaries built on this machine.
        step "no Docker engine answers: podman stands in (scripts/compose-images.sh)"
        ensure_packages docker-compose:docker-compose curl:curl
        prepare_local_compose "${KG_PROFILE:-release}"
        mkdir -p "$KG_RUN" "$KG_LOGS"
        if ! pid_alive "$KG_RUN/podman-api.pid"; then
            start_podman_api "$KG_RUN/podman.sock" "$KG_LOGS/podman-api.log"
            echo "$PODMAN_API_PID" >"$KG_RUN/podman-api.pid"
            [ -z "$PODMAN_HEALTH_PID" ] || echo "$PODMAN_HEALTH_PID" >"$KG_RUN/podman-health.pid"
        fi
        # Compose reads .env from this directory on every command, so `docker-compose stop
        # backend1` and the rest of the seed's commands reach the same stack without exports.
        if [ -f .env ] && ! head -n 1 .env | grep -q '^# Written by scripts/start.sh --docker'; then
            fail ".env exists and is not start.sh's; add to it: DOCKER_HOST=unix://$KG_RUN/podman.sock and the variables scripts/compose-images.sh prints"
        fi
        {
            echo "# Written by scripts/start.sh --docker: podman's Docker API and the local images."
            echo "DOCKER_HOST=unix://$KG_RUN/podman.sock"
            echo "COMPOSE_FILE=$compose_files"
            echo "COMPOSE_DOCKER_CLI_BUILD=0"
            env | grep -E '^(KG_BASE_[A-Z]+|KG_BINARIES)=' | sort
        } >.env
        export DOCKER_HOST=unix://$KG_RUN/podman.sock
        if [ -n "$(docker-compose ps -q 2>/dev/null)" ]; then
            # docker-compose 1.x compares the network's IPAM options with podman's answer,
            # which names its "host-local" driver, and refuses a second `up` of a network it
            # made itself; so a stack that exists is only started.
            step "the compose stack exists: docker-compose start (./scripts/stop.sh first to rebuild it)"
            docker-compose start
        else
            step "docker-compose up -d --build (through podman)"
            docker-compose up -d --build
        fi
        # docker-compose 1.x returns once the containers exist; nginx answers when a node does.
        for _ in $(seq 240); do
            curl -fsS -m 2 -o /dev/null http://127.0.0.1:8000/api/health 2>/dev/null && break
            sleep 0.5
        done
        curl -fsS -m 2 -o /dev/null http://127.0.0.1:8000/api/health ||
            fail "the stack did not become healthy in 120 s; see docker-compose ps and docker-compose logs"
        cat <<DONE

KeyGrid runs under compose through podman: API on :8000, web view on :8080.
docker-compose in this directory reaches it (.env names podman's socket), e.g.
  docker-compose ps; docker-compose stop backend1; docker-compose start backend1
For docker-compose exec and run, export COMPOSE_INTERACTIVE_NO_CLI=1 first: docker-compose
1.x runs them through the docker CLI, which reads no .env and would miss podman's socket.
./scripts/stop.sh stops it (docker-compose down: the named volumes keep the data).
DONE
        exit 0
        ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

# Each stack has a directory of its own (lib.sh): this mode's, unless KG_STATE_DIR names one.
# Both use the same ports, so one runs at a time; the other's data stays where it is.
stack_names=(single-server "--ha (replicated data tier)" "--hosts (replicated data tier on network namespaces)")
stack_dirs=("$KG_SINGLE_STATE_DIR" "$KG_HA_STATE_DIR" "$KG_HOSTS_STATE_DIR")
this=$((ha + hosts))
if [ -z "$KG_STATE_DIR_SET" ]; then
    for other in 0 1 2; do
        [ "$other" = "$this" ] || [ "${stack_dirs[other]}" = "${stack_dirs[this]}" ] && continue
        if stack_alive "${stack_dirs[other]}"; then
            fail "the ${stack_names[other]%% *} stack is running (state in ${stack_dirs[other]}); stop it first with ./scripts/stop.sh (its data stays)"
        fi
    done
    export KG_STATE_DIR=${stack_dirs[this]}
    source scripts/lib.sh
fi
echo "stack: ${stack_names[this]}, state in $KG_STATE_DIR"

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

if [ "$hosts" = 1 ] && [ -d "$KG_STATE_DIR/ha" ] && [ ! -e "$KG_RUN/hosts-stack" ]; then
    fail "$KG_STATE_DIR holds a loopback --ha stack, whose members' addresses are in its data; use another KG_STATE_DIR (or unset it: each stack then has its own)"
fi
if [ "$hosts" = 0 ] && [ -e "$KG_RUN/hosts-stack" ]; then
    fail "$KG_STATE_DIR holds a --hosts stack; start it with --hosts, use another KG_STATE_DIR, or delete it with ./scripts/stop.sh --purge"
fi
if [ "$ha" = 1 ]; then
    [ -s "$KG_STATE_DIR/postgres/PG_VERSION" ] && fail "$KG_STATE_DIR holds a single-server stack; use another KG_STATE_DIR (or unset it: each stack then has its own), or delete it with ./scripts/stop.sh --purge"
    if [ "$hosts" = 1 ] && ! hosts_mode; then
        scripts/hosts.sh up
        touch "$KG_RUN/hosts-stack"
        source scripts/lib.sh # the members' addresses (hosts_mode)
    fi
    scripts/ha.sh up
    touch "$KG_RUN/ha"
elif [ -e "$KG_RUN/ha" ]; then
    fail "$KG_STATE_DIR holds an --ha stack; start it with --ha, use another KG_STATE_DIR (or unset it: each stack then has its own), or delete it with ./scripts/stop.sh --purge"
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
# The nodes' addresses: loopback, or each node's host with --hosts.
backends=(-e 's|backend\([0-9]\):|127.0.0.1:|')
if hosts_mode; then
    backends=()
    for node in "${KG_NODES[@]}"; do backends+=(-e "s|backend${node#n}:|$(addr_of "$node"):|"); done
fi
sed "${backends[@]}" \
    -e "s|/var/log/nginx/|$KG_LOGS/|" \
    -e "s|/usr/share/nginx/html|$KG_ROOT/web/dist|" \
    nginx/keygrid.conf >"$nginx_dir/keygrid.conf"
if pid_alive "$nginx_dir/nginx.pid"; then
    echo "nginx is already running on $KG_API_PORT and $KG_WEB_PORT (configuration reloaded)"
    in_host nginx nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -s reload 2>>"$KG_LOGS/nginx-error.log"
    already=$((already + 1))
else
    if ! hosts_mode; then
        for port in "$KG_API_PORT" "$KG_WEB_PORT"; do
            port_in_use "$port" && fail "port $port is taken by something else (nginx needs $KG_API_PORT and $KG_WEB_PORT)"
        done
    fi
    step "starting nginx on $(addr_of nginx):$KG_API_PORT (API) and :$KG_WEB_PORT (web view)"
    in_host nginx nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -t -q 2>"$KG_LOGS/nginx-check.log" ||
        fail "nginx rejected its configuration: $(cat "$KG_LOGS/nginx-check.log")"
    in_host nginx nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf"
fi

# --- the front door (--hosts) ------------------------------------------------------------------
# The machine's users reach the stack where they always do: a TCP proxy of the machine's own
# (HAProxy, already a dependency) on localhost's 8000, 8080 and 8001-8003 to nginx's host and
# the nodes' hosts.
if hosts_mode; then
    front="$KG_STATE_DIR/front-haproxy"
    if pid_alive "$front.pid"; then
        echo "the front door (localhost to the hosts) is already running"
    else
        for port in "$KG_API_PORT" "$KG_WEB_PORT" 8001 8002 8003; do
            port_in_use "$port" && fail "port $port is taken by something else (the front door needs localhost's $KG_API_PORT, $KG_WEB_PORT and 8001-8003)"
        done
        {
            # Each connection takes two descriptors; the machine allows 20,000 to a process.
            printf 'global\n    maxconn 9000\ndefaults\n    mode tcp\n    timeout connect 2s\n'
            # Watch streams stay open for hours; nginx's and the nodes' own timeouts govern.
            printf '    timeout client 24h\n    timeout server 24h\n'
            printf 'listen api\n    bind 127.0.0.1:%s\n    server nginx %s:%s\n' "$KG_API_PORT" "$(addr_of nginx)" "$KG_API_PORT"
            printf 'listen web\n    bind 127.0.0.1:%s\n    server nginx %s:%s\n' "$KG_WEB_PORT" "$(addr_of nginx)" "$KG_WEB_PORT"
            for node in "${KG_NODES[@]}"; do
                printf 'listen %s\n    bind 127.0.0.1:%s\n    server %s %s:%s\n' "$node" "$(node_port "$node")" \
                    "$node" "$(addr_of "$node")" "$(node_port "$node")"
            done
        } >"$front.cfg"
        haproxy -f "$front.cfg" -c -q || fail "haproxy rejected $front.cfg"
        haproxy -f "$front.cfg" -D -p "$front.pid" 2>>"$KG_LOGS/front-haproxy.log"
    fi
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
