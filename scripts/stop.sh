#!/usr/bin/env bash
# Stops the local stack that scripts/start.sh started, without losing data: nginx finishes its
# requests, each node drains, and PostgreSQL shuts down cleanly. The data stays under
# .keygrid/ (the --ha stack's under .keygrid-ha/) for the next start; `--purge` deletes it
# afterwards. It acts on the stack that runs; with none running, on the single-server one, or
# with `--ha` (`--hosts`) on that one. The --hosts stack's namespaces, bridge and links go too. The compose stack that `start.sh --docker` runs through podman
# is taken down too (`--purge`: with its volumes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

purge=0
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        --ha | --hosts)
            if [ -z "$KG_STATE_DIR_SET" ] && ! stack_alive "$KG_STATE_DIR"; then
                export KG_STATE_DIR=$KG_HA_STATE_DIR
                [ "$arg" = --hosts ] && export KG_STATE_DIR=$KG_HOSTS_STATE_DIR
                source scripts/lib.sh
            fi
            ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$arg' (try --help)" ;;
    esac
done

# The compose stack that `start.sh --docker` runs through podman (its .env names the socket).
if pid_alive "$KG_RUN/podman-api.pid"; then
    volumes=()
    if [ "$purge" = 1 ]; then
        step "stopping the compose stack and deleting its volumes (docker-compose down --volumes)"
        volumes=(--volumes)
    else
        step "stopping the compose stack (docker-compose down; the named volumes keep the data)"
    fi
    DOCKER_HOST=unix://$KG_RUN/podman.sock docker-compose down "${volumes[@]}" --timeout 30 ||
        echo "docker-compose down failed; the containers may still run (podman ps)" >&2
    for pidfile in "$KG_RUN/podman-health.pid" "$KG_RUN/podman-api.pid"; do
        pid_alive "$pidfile" && kill -- "-$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    done
fi

if pid_alive "$KG_STATE_DIR/front-haproxy.pid"; then
    step "stopping the front door (localhost to the hosts)"
    kill "$(cat "$KG_STATE_DIR/front-haproxy.pid")"
fi

nginx_pid="$KG_STATE_DIR/nginx/nginx.pid"
if pid_alive "$nginx_pid"; then
    step "stopping nginx"
    pid=$(cat "$nginx_pid")
    kill -QUIT "$pid" # graceful: finish the requests in flight
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"
fi

step "stopping the nodes"
for node in "${KG_NODES[@]}"; do
    scripts/node.sh stop "$node" &
done
wait

if pid_alive "$KG_RUN/redis.pid"; then
    step "stopping Redis"
    redis-cli -p "$KG_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$KG_RUN/redis.pid")"
    rm -f "$KG_RUN/redis.pid"
fi

if [ -d "$KG_STATE_DIR/ha" ]; then
    step "stopping the replicated data tier"
    if [ "$purge" = 1 ]; then scripts/ha.sh down --purge; else scripts/ha.sh down; fi
fi

if [ -f "$KG_RUN/hosts" ] || [ -f "$KG_RUN/hosts.making" ]; then
    step "removing the hosts (network namespaces, the bridge, the links)"
    scripts/net.sh heal >/dev/null 2>&1 || true
    scripts/hosts.sh down
fi

pgdata="$KG_STATE_DIR/postgres"
if [ -s "$pgdata/postmaster.pid" ]; then
    step "stopping PostgreSQL"
    stop_postgres "$pgdata"
fi

rm -f "$KG_RUN/bin-dir"
if [ "$purge" = 1 ]; then
    # start.sh --docker's .env names a socket that is gone now.
    if [ -f .env ] && head -n 1 .env | grep -q '^# Written by scripts/start.sh --docker'; then
        rm -f .env
    fi
    step "deleting $KG_STATE_DIR"
    purge_postgres "$pgdata"
    rm -rf "$KG_STATE_DIR"
fi
step "KeyGrid is stopped"
