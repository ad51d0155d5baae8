#!/usr/bin/env bash
# Controls one member of the local stack (scripts/start.sh): a node, its PostgreSQL or its
# Redis. The fault runtime of kg failover-drill and kg-bench chaos acts through it, and so do
# the cluster tests.
#
#   ./scripts/node.sh stop n2         graceful: finish in-flight requests, then exit; stays down
#   ./scripts/node.sh start n2        start it (again) and wait until it is ready
#   ./scripts/node.sh kill n2         SIGKILL, as a crash would; stays down, like `docker kill`
#   ./scripts/node.sh restart n2      stop, then start
#   ./scripts/node.sh pid n2          the process to signal (pause and resume send it STOP/CONT)
#   ./scripts/node.sh status          every node: up or down, pid, readiness
#   ./scripts/node.sh kill postgres   a crash: pg_ctl stop -m immediate (no checkpoint)
#   ./scripts/node.sh stop|start|pid postgres, and kill|stop|start|pid|flush redis
#   ./scripts/node.sh lock-revision postgres   another session holds the revision lock
#                                     (kg_meta FOR UPDATE): every write waits, past the
#                                     nodes' --db-timeout, and commits when it is let go
#   ./scripts/node.sh lock-table postgres      another session holds kg_keys in ACCESS EXCLUSIVE
#                                     mode: every statement on the keys waits, reads too
#   ./scripts/node.sh unlock postgres          ends every lock the two above hold
#
# Each node runs under a small supervisor that restarts it a second after it dies on its own,
# as the seed's `restart: unless-stopped` does; stop and kill tell the supervisor to let it be.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

# The supervisor: runs the node, restarts it when it exits unless asked to stay down.
supervise() {
    local node=$1 port bin status child
    port=$(node_port "$node")
    bin=$(kg_bin_dir)
    echo $$ >"$KG_RUN/$node.supervisor.pid"
    # stop.sh or a stray SIGTERM: take the node down with us, gracefully.
    trap 'touch "$KG_RUN/$node.down"; [ -n "${child:-}" ] && kill -TERM "$child" 2>/dev/null' TERM INT
    # With the replicated data tier (start.sh --ha), Redis is found through its Sentinels; the
    # database URL is the same, HAProxy's, which follows the PostgreSQL primary, and database
    # reads are fenced so that a deposed primary cannot answer one (docs/consistency.md).
    local redis=("KG_REDIS_URL=$KG_STACK_REDIS_URL")
    [ -e "$KG_RUN/ha" ] && redis=("KG_REDIS_SENTINEL=$KG_HA_SENTINELS" "KG_REDIS_MASTER=keygrid" "KG_READ_FENCE=true")
    # With --hosts the node runs on its own host, on its address; its database URL is the same,
    # its host's HAProxy sidecar on loopback.
    host_prefix "$node"
    while [ ! -e "$KG_RUN/$node.down" ]; do
        "${HOST_PREFIX[@]}" env KG_LISTEN="$(addr_of "$node"):$port" KG_NODE_ID="$node" \
            KG_DATABASE_URL="$KG_DATABASE_URL" "${redis[@]}" KG_WORKER_THREADS="$KG_WORKER_THREADS" \
            "$bin/kg-server" &
        child=$!
        echo "$child" >"$KG_RUN/$node.pid"
        status=0
        # `wait` returns early when a trapped signal arrives; wait again for the drain.
        wait "$child" || status=$?
        while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
        rm -f "$KG_RUN/$node.pid"
        [ -e "$KG_RUN/$node.down" ] && break
        echo "supervisor: $node exited with status $status; restarting in 1 s" >&2
        sleep 1
    done
    rm -f "$KG_RUN/$node.supervisor.pid"
}

start() {
    local node=$1 wait=${2:-} port
    port=$(node_port "$node")
    mkdir -p "$KG_RUN" "$KG_LOGS"
    if pid_alive "$KG_RUN/$node.supervisor.pid"; then
        echo "$node is already running"
    else
        [ -x "$(kg_bin_dir)/kg-server" ] || fail "$(kg_bin_dir)/kg-server is missing; run ./scripts/start.sh"
        hosts_mode || ! port_in_use "$port" || fail "port $port is taken by something else"
        rm -f "$KG_RUN/$node.down"
        setsid nohup "$0" supervise "$node" >>"$KG_LOGS/$node.log" 2>&1 </dev/null &
        echo "$node starting on $(addr_of "$node"):$port (log: $KG_LOGS/$node.log)"
    fi
    if [ "$wait" != --no-wait ]; then
        wait_for_status "http://$(addr_of "$node"):$port/api/ready" 200 30 ||
            fail "$node did not become ready; see $KG_LOGS/$node.log"
        echo "$node is ready"
    fi
}

# stop_node NODE SIGNAL: marks the node down, signals it and waits for it to go.
stop_node() {
    local node=$1 signal=$2 pid
    node_port "$node" >/dev/null
    touch "$KG_RUN/$node.down"
    if ! pid_alive "$KG_RUN/$node.pid"; then
        echo "$node is not running"
    else
        pid=$(cat "$KG_RUN/$node.pid")
        kill "-$signal" "$pid" 2>/dev/null || true
        # A graceful stop drains in-flight requests; give it 30 s before forcing it.
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$node did not drain within 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "$node stopped ($signal)"
    fi
    # The supervisor sees the marker and exits.
    for _ in $(seq 50); do
        pid_alive "$KG_RUN/$node.supervisor.pid" || break
        sleep 0.1
    done
}

# postgres ACTION: the stack's PostgreSQL.
postgres() {
    local pgdata="$KG_STATE_DIR/postgres"
    case "$1" in
        start)
            start_postgres "$pgdata" "$KG_PG_PORT" "$KG_LOGS/postgres.log"
            echo "postgres is ready"
            ;;
        stop | kill)
            [ -s "$pgdata/postmaster.pid" ] || { echo "postgres is not running"; return 0; }
            # kill: every backend exits at once with no checkpoint; the start recovers.
            "${AS_POSTGRES[@]}" "$(pg_bin_dir)/pg_ctl" -D "$(pg_data "$pgdata")" -w -t 60 \
                -m "$([ "$1" = kill ] && echo immediate || echo fast)" stop >/dev/null
            echo "postgres stopped ($1)"
            ;;
        pid) head -n 1 "$pgdata/postmaster.pid" ;;
        lock-revision) hold_lock "SELECT revision FROM kg_meta WHERE id = 1 FOR UPDATE" ;;
        lock-table) hold_lock "LOCK TABLE kg_keys IN ACCESS EXCLUSIVE MODE" ;;
        unlock)
            # The holder sleeps inside its transaction: ending its backend ends the lock.
            psql -qtA "$KG_DATABASE_URL" -c "SELECT count(pg_terminate_backend(pid)) FROM
                pg_stat_activity WHERE application_name = 'kg-fault-lock'" >/dev/null
            echo "postgres: every held lock let go"
            ;;
        *) usage; exit 2 ;;
    esac
}

# hold_lock SQL: a session of its own takes the lock in a transaction and sleeps in it (up
# to 10 minutes) until `unlock postgres` ends it; returns once the lock is held. A holder left
# by an earlier run is ended first; one that does not get its lock after 100 checks (5 s and
# psql's start-ups) is ended too.
hold_lock() {
    postgres unlock >/dev/null
    PGAPPNAME=kg-fault-lock nohup psql -q "$KG_DATABASE_URL" -c "BEGIN" -c "$1" \
        -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
    local holding
    for _ in $(seq 1 100); do
        holding=$(psql -qtA "$KG_DATABASE_URL" -c "SELECT count(*) FROM pg_stat_activity
            WHERE application_name = 'kg-fault-lock' AND query LIKE 'SELECT pg_sleep%'") ||
            holding=
        [ "$holding" = 1 ] && { echo "postgres: lock held ($1)"; return 0; }
        sleep 0.05
    done
    postgres unlock >/dev/null || true
    fail "postgres: the lock holder did not get its lock ($1)"
}

# redis ACTION: the stack's Redis (persistence off: a restart comes back empty).
redis() {
    case "$1" in
        start) start_redis; echo "redis is ready" ;;
        stop | kill)
            if pid_alive "$KG_RUN/redis.pid"; then
                local pid
                pid=$(cat "$KG_RUN/redis.pid")
                kill "-$([ "$1" = kill ] && echo KILL || echo TERM)" "$pid"
                while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
                rm -f "$KG_RUN/redis.pid"
                echo "redis stopped ($1)"
            else
                echo "redis is not running"
            fi
            ;;
        flush) redis-cli -p "$KG_REDIS_PORT" flushall >/dev/null && echo "redis flushed" ;;
        pid) cat "$KG_RUN/redis.pid" ;;
        *) usage; exit 2 ;;
    esac
}

status() {
    local node port state ready
    printf '%-5s %-6s %-8s %s\n' NODE STATE PID READY
    for node in "${KG_NODES[@]}"; do
        port=$(node_port "$node")
        if pid_alive "$KG_RUN/$node.pid"; then state=up; else state=down; fi
        ready=$(http_status "http://$(addr_of "$node"):$port/api/ready")
        printf '%-5s %-6s %-8s %s\n' "$node" "$state" "$(cat "$KG_RUN/$node.pid" 2>/dev/null || echo -)" "$ready"
    done
}

case "${2:-}" in
    postgres) postgres "$1"; exit ;;
    redis) redis "$1"; exit ;;
esac
case "${1:-}" in
    pid) [ $# -eq 2 ] || { usage; exit 2; }; pid_alive "$KG_RUN/$2.pid" && cat "$KG_RUN/$2.pid" ;;
    start) [ $# -ge 2 ] || { usage; exit 2; }; start "$2" "${3:-}" ;;
    stop) [ $# -eq 2 ] || { usage; exit 2; }; stop_node "$2" TERM ;;
    kill) [ $# -eq 2 ] || { usage; exit 2; }; stop_node "$2" KILL ;;
    restart) [ $# -eq 2 ] || { usage; exit 2; }; stop_node "$2" TERM; start "$2" ;;
    status) status ;;
    supervise) supervise "$2" ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
