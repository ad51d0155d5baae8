#!/usr/bin/env bash
# The replicated data tier of `./scripts/start.sh --ha`, on loopback: PostgreSQL 15 x3 under
# Patroni (etcd x3 as its store; synchronous_mode_strict), HAProxy on 5442 routing to the
# current primary, and Redis (a primary, a replica, three Sentinels). Everything but Patroni is
# Debian's; Patroni is PyPI's, pinned in deploy/patroni/requirements.txt (Debian's 3.0.2 lets
# a leader that wakes from a pause overwrite the new leader's key: docs/high-availability.md).
#
#   ./scripts/ha.sh up                  start every member that is not running; wait until
#                                       there is a leader with a sync standby and a Redis master
#   ./scripts/ha.sh down [--purge]      stop every member (stop.sh does this); --purge deletes
#                                       the tier's data too
#   ./scripts/ha.sh status [--json]     every member: kind, name, port, pid, role
#   ./scripts/ha.sh kill|stop|start|pause|resume MEMBER|all
#   ./scripts/ha.sh switchover [pg]     a planned switchover (patronictl) to the sync standby
#   ./scripts/ha.sh sync|async [pg]     synchronous replication on (the tier's setting) or off
#                                       (only for the negative control of chaos.sh --ha)
#   ./scripts/ha.sh pid MEMBER
#   ./scripts/ha.sh resolve NAME        the members NAME stands for (pg-leader: the one now)
#   ./scripts/ha.sh zombie [pg-leader]  the deterministic zombie primary (needs the stack started
#                                       with KG_HA_TEST_HOOKS=1): freeze the leader's Patroni
#                                       inside its leader-key update, and its postmaster, then
#                                       wait until another member leads and has committed
#                                       writes; `resume pg-leader` wakes it
#
# KG_HA_PATRONI=debian runs Debian's Patroni (3.0.2) instead, for the zombie drill's negative
# control only. KG_HA_TEST_HOOKS=1 loads tests/ha/sitecustomize.py into Patroni (inert until
# `zombie` arms it).
#
# Members: etcd1-etcd3 (clients on 2379/2479/2579), pg1-pg3 (PostgreSQL on 5451-5453 with its
# Patroni, REST on 8008-8010: kill, pause and resume act on both), haproxy (5442), redis1 and
# redis2 (6389, 6390), sentinel1-sentinel3 (26389-26391). pg-leader, etcd-leader and
# redis-master name whichever member holds that role now; pg-walsenders the leader's WAL
# senders (pid, pause, resume); pg and redis name every member of the kind that is down
# (for start). n1-n3 are passed to scripts/node.sh, so the fault runtime of kg-bench chaos
# can act on the whole stack through this one script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

HA_DIR="$KG_STATE_DIR/ha"
ETCD_CLIENT=(2379 2479 2579)
ETCD_PEER=(2380 2480 2580)
PG_PORTS=(5451 5452 5453)
REST_PORTS=(8008 8009 8010)
REDIS_PORTS=("$KG_REDIS_PORT" "$((KG_REDIS_PORT + 1))")
IFS=, read -r -a SENTINEL_ADDRESSES <<<"$KG_HA_SENTINELS"
SENTINEL_PORTS=("${SENTINEL_ADDRESSES[@]##*:}")
# The name the Sentinels and the nodes (--redis-master) know the Redis primary by.
REDIS_MASTER_NAME=keygrid

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

# index MEMBER PREFIX: 1 for pg1 with prefix pg, ...; fails for a name outside 1-3.
index() {
    local n=${1#"$2"}
    [[ "$n" =~ ^[1-3]$ ]] || fail "unknown member '$1'"
    echo "$n"
}

# The directory Patroni's PostgreSQL data lives in: under the state directory when the
# postgres user can reach it, else under /var/lib/keygrid (as start_postgres does).
pg_root() {
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$KG_STATE_DIR"; then
        echo "/var/lib/keygrid/$(printf '%s' "$HA_DIR" | md5sum | cut -c1-12)/pg"
    else
        echo "$HA_DIR/pg"
    fi
}

pid_of() { # pid_of FILE: the pid in FILE if that process runs
    pid_alive "$1" && cat "$1"
}

# --- etcd ---------------------------------------------------------------------------------------
etcd_start() {
    local i=$1 cluster="" j
    pid_alive "$HA_DIR/etcd$i.pid" && return 0
    for j in 1 2 3; do cluster+="${cluster:+,}etcd$j=http://$(addr_of "etcd$j"):${ETCD_PEER[j - 1]}"; done
    mkdir -p "$HA_DIR/etcd$i"
    local state=new address
    address=$(addr_of "etcd$i")
    [ -d "$HA_DIR/etcd$i/member" ] && state=existing
    host_prefix "etcd$i"
    "${HOST_PREFIX[@]}" setsid nohup etcd --name "etcd$i" --data-dir "$HA_DIR/etcd$i" \
        --listen-client-urls "http://$address:${ETCD_CLIENT[i - 1]}" \
        --advertise-client-urls "http://$address:${ETCD_CLIENT[i - 1]}" \
        --listen-peer-urls "http://$address:${ETCD_PEER[i - 1]}" \
        --initial-advertise-peer-urls "http://$address:${ETCD_PEER[i - 1]}" \
        --initial-cluster "$cluster" --initial-cluster-token keygrid-ha \
        --initial-cluster-state "$state" >>"$KG_LOGS/etcd$i.log" 2>&1 </dev/null &
    echo $! >"$HA_DIR/etcd$i.pid"
}

# --- Patroni and PostgreSQL ---------------------------------------------------------------------
# The directory of the Patroni that runs the tier: PyPI's from deploy/patroni/requirements.txt,
# or Debian's with KG_HA_PATRONI=debian (the zombie drill's negative control). `up` records the
# choice, so that a member started later (a drill's repair) runs the same Patroni.
patroni_bin() {
    if [ -s "$HA_DIR/patroni-bin" ]; then
        cat "$HA_DIR/patroni-bin"
        return
    fi
    local venv
    case "${KG_HA_PATRONI:-pypi}" in
        pypi)
            venv=$(patroni_venv)
            echo "$venv/bin"
            ;;
        debian)
            ensure_packages patroni:patroni
            echo /usr/bin
            ;;
        *) fail "KG_HA_PATRONI must be pypi or debian, not $KG_HA_PATRONI" ;;
    esac
}
patronictl() { "$(patroni_bin)/patronictl" "$@"; }
# sync_mode: the tier's synchronous_mode: quorum, or true on Debian's Patroni 3.0.2.
sync_mode() { if [ "$(patroni_bin)" = /usr/bin ]; then echo true; else echo quorum; fi; }

# A member's files (its configuration, its data directory, the zombie drill's trigger) live
# in one directory that the postgres user owns: Patroni runs as that user.
patroni_conf() { echo "$(pg_root)$1/patroni.yml"; }
# Patroni's pid (as root, the postgres user's).
patroni_pid() {
    local owner=()
    [ "$(id -u)" -eq 0 ] && owner=(-u postgres)
    pgrep "${owner[@]}" -f "patroni $(patroni_conf "$1")\$" | head -n 1
}
postmaster_pid() {
    local file
    file="$(pg_root)$1/data/postmaster.pid"
    [ -s "$file" ] || return 1
    local pid
    pid=$(head -n 1 "$file")
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

patroni_start() {
    local i=$1 root conf hosts="" j bin
    [ -n "$(patroni_pid "$i")" ] && return 0
    root="$(pg_root)$i"
    conf=$(patroni_conf "$i")
    bin=$(patroni_bin)
    mkdir -p "$root"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$root" "$(dirname "$root")" && chmod 700 "$root"
    for j in 1 2 3; do hosts+="${hosts:+,}$(addr_of "etcd$j"):${ETCD_CLIENT[j - 1]}"; done
    local address listen hba=""
    address=$(addr_of "pg$i")
    listen=$address
    # On a host of its own PostgreSQL listens on its address (the others) and on loopback (its
    # Patroni's local checks), and trusts the hosts' subnet as loopback is trusted here.
    if hosts_mode; then
        listen="$address,127.0.0.1"
        hba="    - host all all $KG_HOSTS_SUBNET.0/24 trust
    - host replication all $KG_HOSTS_SUBNET.0/24 trust"
    fi
    # Failover timing. The leader key lives ttl seconds, so a dead leader is replaced about
    # ttl seconds after its last renewal, and the new leader then needs a synchronous standby
    # before it commits (strict mode). Patroni 3.2 and later refuse a ttl under 20 s and
    # enforce loop_wait + 2 * retry_timeout <= ttl, so that a leader cannot lose its key while
    # it still retries a slow etcd. Within that: a renewal every 2 s, and 5 s for each etcd
    # call, room for a loaded 2-core machine, where a slow etcd round trip must not turn into
    # a failover (8 s of margin above the rule).
    cat >"$conf" <<YAML
scope: keygrid
name: pg$i
log:
  level: INFO
restapi:
  listen: $address:${REST_PORTS[i - 1]}
  connect_address: $address:${REST_PORTS[i - 1]}
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 0
    # While etcd cannot be reached (its leader died and the others are electing another),
    # the leader keeps leading as long as every other member answers it over Patroni's REST
    # API, instead of demoting itself after retry_timeout: losing an etcd member must change
    # nothing a client sees.
    failsafe_mode: true
    # A commit is acknowledged only once a standby has it (ANY 1 of the two), and with no
    # standby the primary refuses commits rather than run alone. Quorum rather than one named
    # synchronous standby: with one named, the other replica streams too and may hold WAL the
    # synchronous one has not got yet when the leader dies; the synchronous one is promoted,
    # the other has to be rewound before it can stream again, and strict mode commits nothing
    # until it does (8 s more, in 1 of 20 kill and 1 of 20 pause drills). In quorum mode the
    # most advanced replica is promoted and the other only catches up.
    # (Debian's 3.0.2, the zombie drill's control, has no quorum mode: one named standby.)
    synchronous_mode: $(sync_mode)
    synchronous_node_count: 1
    synchronous_mode_strict: true
    postgresql:
      use_pg_rewind: true
      # No replication slots: Patroni makes a member's slot on the leader only a loop or
      # two after a promotion, and until then the surviving standby cannot stream, so
      # strict mode holds every commit that long. wal_keep_size keeps the WAL a standby
      # needs to come back after a short absence instead; a member gone for longer has no
      # slot either, since Patroni drops the slots of members that leave the cluster.
      use_slots: false
      parameters:
        fsync: 'on'
        synchronous_commit: 'on'
        full_page_writes: 'on'
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 512MB
        # A standby whose attempt to stream fails waits this long before the next. After a
        # failover the surviving standby re-points to the new leader as it is promoted,
        # and an attempt that comes too early fails; strict mode holds every commit until
        # a standby streams again, so PostgreSQL's default of 5 s would be added to the
        # write outage.
        wal_retrieve_retry_interval: 250ms
  initdb:
    - encoding: UTF8
    - locale: C
    - auth: trust
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
$hba
postgresql:
  listen: $listen:${PG_PORTS[i - 1]}
  connect_address: $address:${PG_PORTS[i - 1]}
  data_dir: $root/data
  bin_dir: $(pg_bin_dir)
  pgpass: $root/pgpass
  # Loopback with trust: the passwords are never asked for, but initdb wants one.
  authentication:
    superuser:
      username: postgres
      password: keygrid-local
    replication:
      username: postgres
      password: keygrid-local
  parameters:
    unix_socket_directories: $root
YAML
    local as_postgres=() hooks=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$conf"
        # setpriv execs Patroni as postgres, where runuser would stay as its parent: runuser
        # stops itself when its child stops (a pause drill's SIGSTOP), and a SIGCONT that
        # reaches it before Patroni's stop does could leave it stopped for good.
        as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups
            env HOME="$(getent passwd postgres | cut -d: -f6)" USER=postgres LOGNAME=postgres)
    fi
    if [ "${KG_HA_TEST_HOOKS:-0}" = 1 ]; then
        # The zombie drill's hook, copied where the postgres user can read it.
        mkdir -p "$(dirname "$root")/hooks"
        cp "$KG_ROOT/tests/ha/sitecustomize.py" "$(dirname "$root")/hooks/"
        chmod -R a+rX "$(dirname "$root")/hooks"
        hooks=(env PYTHONPATH="$(dirname "$root")/hooks" KG_ZOMBIE_TRIGGER="$root/zombie"
            KG_ZOMBIE_PGDATA="$root/data")
    fi
    host_prefix "pg$i"
    "${HOST_PREFIX[@]}" setsid nohup "${as_postgres[@]}" "${hooks[@]}" "$bin/patroni" "$conf" \
        >>"$KG_LOGS/patroni$i.log" 2>&1 </dev/null &
}

# The Patroni member that leads now (asked of each REST API in turn).
pg_leader() {
    local i
    for i in 1 2 3; do
        if [ "$(http_status "http://$(addr_of "pg$i"):${REST_PORTS[i - 1]}/primary")" = 200 ]; then
            echo "pg$i"
            return 0
        fi
    done
    fail "no PostgreSQL member is the leader now"
}

# --- HAProxy ------------------------------------------------------------------------------------
# haproxy_start [I]: the proxy to the PostgreSQL primary on 127.0.0.1:KG_PG_PORT. With --hosts
# one per node host (haproxy1 beside n1, ...), inside it, as a sidecar: a node cut from the
# PostgreSQL hosts is cut from them through its own proxy, as on a machine of its own.
haproxy_start() {
    local i=${1:-} name=haproxy host=""
    [ -n "$i" ] && name=haproxy$i host=n$i
    pid_alive "$HA_DIR/$name.pid" && return 0
    # Each member is checked on its Patroni REST API: /primary answers 200 on the leader only.
    # A member marked down has its sessions cut, so no node keeps talking to a deposed primary.
    cat >"$HA_DIR/$name.cfg" <<CFG
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind 127.0.0.1:$KG_PG_PORT
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
$(for j in 1 2 3; do echo "    server pg$j $(addr_of "pg$j"):${PG_PORTS[j - 1]} maxconn 300 check port ${REST_PORTS[j - 1]}"; done)
CFG
    haproxy -f "$HA_DIR/$name.cfg" -c -q || fail "haproxy rejected $HA_DIR/$name.cfg"
    if [ -n "$host" ]; then
        in_host "$host" haproxy -f "$HA_DIR/$name.cfg" -D -p "$HA_DIR/$name.pid" 2>>"$KG_LOGS/$name.log"
    else
        haproxy -f "$HA_DIR/$name.cfg" -D -p "$HA_DIR/$name.pid" 2>>"$KG_LOGS/$name.log"
    fi
}

# The proxies: one on loopback, or one per node host with --hosts.
proxies() { if hosts_mode; then echo haproxy1 haproxy2 haproxy3; else echo haproxy; fi; }

# --- Redis and Sentinel -------------------------------------------------------------------------
redis_start() {
    local i=$1 replica=() host=()
    pid_alive "$HA_DIR/redis$i/redis.pid" && return 0
    # redis2 starts as redis1's replica; later the Sentinels decide who replicates whom.
    [ "$i" = 2 ] && [ ! -e "$HA_DIR/redis2.started" ] &&
        replica=(--replicaof "$(addr_of redis1)" "${REDIS_PORTS[0]}")
    if hosts_mode; then
        # Its host's address for the others (and what it tells the Sentinels it is), loopback
        # for the checks made inside the host.
        # Protected mode would refuse every other host: the bridge is this machine's own,
        # reachable from no other.
        host=(--bind "$(addr_of "redis$i") 127.0.0.1" --replica-announce-ip "$(addr_of "redis$i")"
            --protected-mode no)
        REDIS_RUN=(ip netns exec "$(host_ns "redis$i")")
    fi
    start_redis "${REDIS_PORTS[i - 1]}" "$HA_DIR/redis$i" "${replica[@]}" "${host[@]}"
    REDIS_RUN=()
    touch "$HA_DIR/redis$i.started"
}

sentinel_start() {
    local i=$1 port=${SENTINEL_PORTS[$1 - 1]} conf="$HA_DIR/sentinel$1.conf" bind=127.0.0.1 announce=""
    pid_alive "$HA_DIR/sentinel$i.pid" && return 0
    if hosts_mode; then
        bind="$(addr_of "sentinel$i") 127.0.0.1"
        announce="sentinel announce-ip $(addr_of "sentinel$i")
protected-mode no"
    fi
    # A Sentinel rewrites its file as the topology changes; an existing one is kept.
    if [ ! -f "$conf" ]; then
        cat >"$conf" <<CONF
port $port
bind $bind
$announce
sentinel monitor $REDIS_MASTER_NAME $(addr_of redis1) ${REDIS_PORTS[0]} 2
sentinel down-after-milliseconds $REDIS_MASTER_NAME 1000
sentinel failover-timeout $REDIS_MASTER_NAME 10000
sentinel parallel-syncs $REDIS_MASTER_NAME 1
CONF
    fi
    in_host "sentinel$i" redis-server "$conf" --sentinel --daemonize yes \
        --pidfile "$HA_DIR/sentinel$i.pid" --logfile "$KG_LOGS/sentinel$i.log" --dir "$HA_DIR" >/dev/null
}

# sentinel_ask ARGS...: the first Sentinel's answer to SENTINEL ARGS, asking each in turn.
sentinel_ask() {
    local i answer
    for i in 1 2 3; do
        answer=$(redis-cli -h "$(addr_of "sentinel$i")" -p "${SENTINEL_PORTS[i - 1]}" sentinel "$@" 2>/dev/null) &&
            [ -n "$answer" ] && { printf '%s\n' "$answer"; return 0; }
    done
    return 1
}

redis_master_port() {
    sentinel_ask get-master-addr-by-name "$REDIS_MASTER_NAME" | sed -n 2p
}

redis_master() {
    local port i
    port=$(redis_master_port)
    for i in 1 2; do
        [ "$port" = "${REDIS_PORTS[i - 1]}" ] && { echo "redis$i"; return 0; }
    done
    fail "the Sentinels name no Redis master"
}

# etcd_leader: the etcd member that leads now, as its metrics say.
etcd_leader() {
    local i metrics
    for i in 1 2 3; do
        # Read whole before grep: grep -q would stop reading and fail curl (pipefail).
        metrics=$(curl -fsS --max-time 1 "http://$(addr_of "etcd$i"):${ETCD_CLIENT[i - 1]}/metrics" 2>/dev/null) || continue
        if grep -q '^etcd_server_is_leader 1' <<<"$metrics"; then
            echo "etcd$i"
            return 0
        fi
    done
    fail "no etcd member leads"
}

# --- members ------------------------------------------------------------------------------------
# pids MEMBER: every process the member is (PostgreSQL: Patroni, the postmaster, its children).
pids() {
    local member=$1 pid
    case "$member" in
        etcd?) pid_of "$HA_DIR/etcd$(index "$member" etcd).pid" || true ;;
        pg?)
            local i
            i=$(index "$member" pg)
            patroni_pid "$i" || true
            if pid=$(postmaster_pid "$i"); then
                echo "$pid"
                pgrep -P "$pid" || true
            fi
            ;;
        # The leader's WAL senders alone: the negative control stops them, so that the
        # leader's asynchronous commits reach no standby. (Stopping the standbys' receivers
        # instead does not do it: what the senders still send waits in the receivers' socket
        # buffers and is read once they resume.)
        pg-walsenders)
            local i
            for i in 1 2 3; do
                pid=$(postmaster_pid "$i") || continue
                pgrep -P "$pid" -f walsender || true
            done
            ;;
        haproxy | haproxy?) pid_of "$HA_DIR/$member.pid" || true ;;
        redis?) pid_of "$HA_DIR/redis$(index "$member" redis)/redis.pid" || true ;;
        sentinel?) pid_of "$HA_DIR/sentinel$(index "$member" sentinel).pid" || true ;;
        *) fail "unknown member '$member'" ;;
    esac
}

member_start() {
    case "$1" in
        etcd?) etcd_start "$(index "$1" etcd)" ;;
        pg?) patroni_start "$(index "$1" pg)" ;;
        haproxy) haproxy_start ;;
        haproxy?) haproxy_start "$(index "$1" haproxy)" ;;
        redis?) redis_start "$(index "$1" redis)" ;;
        sentinel?) sentinel_start "$(index "$1" sentinel)" ;;
        *) fail "unknown member '$1'" ;;
    esac
}

# signal_member MEMBER SIGNAL: sends SIGNAL to every process of MEMBER.
signal_member() {
    local list
    list=$(pids "$1")
    [ -n "$list" ] || { echo "$1 is not running"; return 0; }
    # shellcheck disable=SC2086
    kill "-$2" $list 2>/dev/null || true
}

member_stop() {
    local member=$1 signal=$2 pid
    case "$member" in
        pg?)
            # Patroni first, so that it does not restart the postmaster; a kill takes both at
            # once, as a crash of the machine would.
            if [ "$signal" = KILL ]; then
                signal_member "$member" KILL
            else
                pid=$(patroni_pid "$(index "$member" pg)" || true)
                [ -n "$pid" ] && kill -TERM "$pid"
                # Patroni stops its PostgreSQL first (a fast shutdown); past a minute, a kill.
                for _ in $(seq 600); do
                    [ -n "$(patroni_pid "$(index "$member" pg)" || true)" ] || break
                    sleep 0.1
                done
                [ -n "$(pids "$member")" ] && signal_member "$member" KILL
            fi
            ;;
        *) signal_member "$member" "$signal" ;;
    esac
    # Wait until the member is gone.
    for _ in $(seq 300); do
        [ -z "$(pids "$member")" ] && break
        sleep 0.1
    done
    echo "$member stopped ($signal)"
}

# shellcheck disable=SC2207
ALL=(etcd1 etcd2 etcd3 pg1 pg2 pg3 $(proxies) redis1 redis2 sentinel1 sentinel2 sentinel3)

# host_of MEMBER: the host a member runs on with --hosts (a proxy on its node's).
host_of() {
    case "$1" in
        haproxy?) echo "n${1#haproxy}" ;;
        haproxy) echo - ;;
        *) echo "$1" ;;
    esac
}

# pg_admin ARGS...: psql to the primary through the proxy (with --hosts, n1's sidecar).
pg_admin() {
    if hosts_mode; then
        in_host n1 psql "postgres://postgres@127.0.0.1:$KG_PG_PORT/postgres" "$@"
    else
        psql "postgres://postgres@127.0.0.1:$KG_PG_PORT/postgres" "$@"
    fi
}

# resolve MEMBER: the members a name stands for.
resolve() {
    case "$1" in
        all) printf '%s\n' "${ALL[@]}" ;;
        pg-leader) pg_leader ;;
        redis-master) redis_master ;;
        etcd-leader) etcd_leader ;;
        pg) printf '%s\n' pg1 pg2 pg3 ;;
        redis) printf '%s\n' redis1 redis2 ;;
        *) echo "$1" ;;
    esac
}

# --- up, down, status ---------------------------------------------------------------------------
up() {
    ensure_packages etcd:etcd-server haproxy:haproxy redis-server:redis-server \
        redis-cli:redis-tools psql:postgresql-client initdb:postgresql
    mkdir -p "$HA_DIR" "$KG_LOGS"
    local member port
    if hosts_mode; then
        # On their own hosts the members' ports are theirs; the hosts must be there.
        scripts/hosts.sh check
    else
        for member in "${ALL[@]}"; do
            [ -n "$(pids "$member")" ] && continue
            port=$(port_of "$member")
            port_in_use "$port" && fail "port $port ($member) is taken by something else"
        done
    fi
    # Which Patroni, decided once (see patroni_bin), and whether it carries the test hook.
    local bin
    bin=$(patroni_bin)
    echo "$bin" >"$HA_DIR/patroni-bin"
    if [ "${KG_HA_TEST_HOOKS:-0}" = 1 ]; then touch "$HA_DIR/test-hooks"; else rm -f "$HA_DIR/test-hooks"; fi
    for i in 1 2 3; do etcd_start "$i"; done
    for _ in $(seq 100); do
        [ "$(http_status "http://$(addr_of etcd1):${ETCD_CLIENT[0]}/health")" = 200 ] && break
        sleep 0.1
    done
    for i in 1 2 3; do patroni_start "$i"; done
    if hosts_mode; then
        for i in 1 2 3; do haproxy_start "$i"; done
    else
        haproxy_start
    fi
    for i in 1 2; do redis_start "$i"; done
    for i in 1 2 3; do sentinel_start "$i"; done
    step "waiting for a PostgreSQL leader with a synchronous standby"
    local deadline=$((SECONDS + 120))
    until [ "$(pg_admin -qAtc 'select not pg_is_in_recovery()' 2>/dev/null)" = t ] &&
        curl -fs "http://$(addr_of pg1):${REST_PORTS[0]}/cluster" | grep -Eq '"(sync|quorum)_standby"'; do
        [ "$SECONDS" -lt "$deadline" ] || fail "no PostgreSQL leader with a sync standby within 120 s; see $KG_LOGS/patroni*.log"
        sleep 0.5
    done
    if [ -z "$(pg_admin -qAtc "select 1 from pg_database where datname = 'keygrid'")" ]; then
        pg_admin -qc "create database keygrid" >/dev/null
    fi
    step "waiting for the Sentinels to agree on a Redis master"
    until [ -n "$(redis_master_port)" ] &&
        sentinel_ask replicas "$REDIS_MASTER_NAME" | grep -q .; do
        [ "$SECONDS" -lt "$deadline" ] || fail "the Sentinels name no master with a replica; see $KG_LOGS/sentinel*.log"
        sleep 0.2
    done
    local proxy="127.0.0.1:$KG_PG_PORT"
    hosts_mode && proxy="127.0.0.1:$KG_PG_PORT on each node's host"
    echo "data tier up: PostgreSQL leader $(pg_leader) behind $proxy, Redis master $(redis_master)"
}

down() {
    local member
    for member in sentinel3 sentinel2 sentinel1 redis2 redis1 $(proxies) pg3 pg2 pg1; do
        [ -n "$(pids "$member")" ] && member_stop "$member" TERM >/dev/null
    done
    # etcd last: Patroni keeps its lock in it until it has stopped PostgreSQL.
    for member in etcd3 etcd2 etcd1; do
        [ -n "$(pids "$member")" ] && member_stop "$member" TERM >/dev/null
    done
    echo "data tier stopped"
}

role_of() {
    local member=$1 i
    case "$member" in
        etcd?)
            i=$(index "$member" etcd)
            local status
            status=$(curl -fs -m 2 -X POST "http://$(addr_of "$member"):${ETCD_CLIENT[i - 1]}/v3/maintenance/status" -d '{}' 2>/dev/null) || { echo -; return; }
            local id leader
            id=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$status")
            leader=$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$status")
            if [ -n "$id" ] && [ "$id" = "$leader" ]; then echo leader; else echo follower; fi
            ;;
        pg?)
            i=$(index "$member" pg)
            local cluster
            cluster=$(curl -fs -m 2 "http://$(addr_of "$member"):${REST_PORTS[i - 1]}/cluster" 2>/dev/null) || { echo -; return; }
            # {"members": [{"name": "pg1", "role": "leader", ...}, ...]}
            sed -n "s/.*{\"name\": \"$member\", \"role\": \"\([a-z_]*\)\".*/\1/p" <<<"$cluster" |
                sed -e 's/sync_standby/sync standby/' -e 's/quorum_standby/quorum standby/' | grep . || echo -
            ;;
        haproxy | haproxy?) echo "proxy to $(pg_leader 2>/dev/null || echo nothing)" ;;
        redis?)
            i=$(index "$member" redis)
            redis-cli -h "$(addr_of "$member")" -p "${REDIS_PORTS[i - 1]}" info replication 2>/dev/null |
                sed -n 's/^role:\([a-z]*\).*/\1/p' | sed 's/slave/replica/' | grep . || echo -
            ;;
        sentinel?) echo sentinel ;;
    esac
}

port_of() {
    case "$1" in
        etcd?) echo "${ETCD_CLIENT[$(index "$1" etcd) - 1]}" ;;
        pg?) echo "${PG_PORTS[$(index "$1" pg) - 1]}" ;;
        haproxy | haproxy?) echo "$KG_PG_PORT" ;;
        redis?) echo "${REDIS_PORTS[$(index "$1" redis) - 1]}" ;;
        sentinel?) echo "${SENTINEL_PORTS[$(index "$1" sentinel) - 1]}" ;;
    esac
}

status() {
    local json=${1:-} member kind pid role first=1 host address
    [ "$json" = --json ] && printf '['
    [ "$json" = --json ] || printf '%-10s %-10s %-10s %-13s %-6s %-8s %s\n' KIND NAME HOST ADDRESS PORT PID ROLE
    for member in "${ALL[@]}"; do
        kind=${member%%[0-9]*}
        pid=$(pids "$member" | head -n 1 || true)
        if [ -n "$pid" ]; then role=$(role_of "$member"); else role=down; fi
        host=$(host_of "$member")
        if hosts_mode; then
            address=$(host_ip "$host")
            # A sidecar listens on its host's loopback.
            [[ "$member" == haproxy* ]] && address=127.0.0.1
        else
            host=localhost address=127.0.0.1
        fi
        if [ "$json" = --json ]; then
            [ "$first" = 1 ] || printf ','
            first=0
            printf '{"kind":"%s","name":"%s","host":"%s","address":"%s","port":%s,"pid":%s,"role":"%s"}' \
                "$kind" "$member" "$host" "$address" "$(port_of "$member")" "${pid:-null}" "$role"
        else
            printf '%-10s %-10s %-10s %-13s %-6s %-8s %s\n' "$kind" "$member" "$host" "$address" \
                "$(port_of "$member")" "${pid:--}" "$role"
        fi
    done
    [ "$json" = --json ] && printf ']\n'
    if [ "$json" != --json ] && [ -s "$HA_DIR/patroni-bin" ]; then
        echo "$("$(cat "$HA_DIR/patroni-bin")/patroni" --version 2>/dev/null || echo "patroni ?") from $(cat "$HA_DIR/patroni-bin")"
    fi
    return 0
}

# replication sync|async: Patroni's synchronous mode on (strict, no lag allowed on failover:
# the tier's settings) or off, with any lag allowed on failover. Off is only for the negative
# control, which shows that the judge sees the writes an asynchronous failover loses.
replication() {
    local mode=$1 settings deadline=$((SECONDS + 30))
    case "$mode" in
        sync) settings=(-s "synchronous_mode=$(sync_mode)" -s synchronous_mode_strict=true -s maximum_lag_on_failover=0) ;;
        async) settings=(-s synchronous_mode=false -s synchronous_mode_strict=false -s maximum_lag_on_failover=1073741824) ;;
        *) fail "replication sync|async" ;;
    esac
    patronictl -c "$(patroni_conf 1)" edit-config keygrid --force "${settings[@]}" >/dev/null
    # Patroni applies it on its next loop: until then a commit may still wait for a standby.
    local want=0 named
    [ "$mode" = async ] && want=1
    while :; do
        named=0
        sync_standby_named || named=$?
        [ "$named" = "$want" ] && break
        [ "$SECONDS" -lt "$deadline" ] || fail "Patroni did not turn replication $mode within 30 s"
        sleep 0.2
    done
    echo "replication $mode"
}

# sync_standby_named: whether a member of the cluster is its synchronous standby now.
sync_standby_named() {
    local i cluster
    for i in 1 2 3; do
        cluster=$(curl -fsS --max-time 1 "http://$(addr_of "pg$i"):${REST_PORTS[i - 1]}/cluster" 2>/dev/null) || continue
        grep -Eq '"(sync|quorum)_standby"' <<<"$cluster"
        return
    done
    return 2
}

# A planned switchover: Patroni hands the leader lock to the synchronous standby.
switchover() {
    local leader deadline=$((SECONDS + 60)) now
    leader=$(pg_leader)
    patronictl -c "$(patroni_conf 1)" switchover keygrid --leader "$leader" --force >/dev/null
    until now=$(pg_leader 2>/dev/null) && [ "$now" != "$leader" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "no new leader within 60 s of the switchover from $leader"
        sleep 0.2
    done
    echo "switched over from $leader to $now"
}

# zombie: the deterministic zombie primary (kg-bench chaos pg-zombie). The leader's Patroni,
# started with the test hook (tests/ha/sitecustomize.py), freezes itself and its postmaster
# inside its next leader-key update; this waits until it has, then until another member leads
# and KeyGrid's revision has advanced on it (writes committed there, on the new timeline),
# and leaves the frozen member for `resume pg-leader`, which wakes it inside that update.
zombie() {
    [ -e "$HA_DIR/test-hooks" ] || fail "the tier runs without the test hook: start it with KG_HA_TEST_HOOKS=1"
    local leader i root deadline=$((SECONDS + 120)) now before="" revision=""
    leader=$(pg_leader)
    i=$(index "$leader" pg)
    root="$(pg_root)$i"
    rm -f "$root/zombie.frozen"
    touch "$root/zombie"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$root/zombie"
    until [ -s "$root/zombie.frozen" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$leader did not freeze in its leader-key update within 120 s"
        sleep 0.1
    done
    echo "$leader" >"$HA_DIR/last-pg-leader"
    echo "$leader frozen inside its leader-key update (pids $(cat "$root/zombie.frozen"))" >&2
    until now=$(pg_leader 2>/dev/null) && [ "$now" != "$leader" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "no member took over from the frozen $leader within 120 s"
        sleep 0.2
    done
    local url="postgres://postgres@$(addr_of "$now"):${PG_PORTS[$(index "$now" pg) - 1]}/keygrid"
    # KeyGrid's writes commit on the new leader once it has a synchronous standby.
    until before=$(psql "$url" -qAtc 'select revision from kg_meta' 2>/dev/null) && [ -n "$before" ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$now does not answer"
        sleep 0.2
    done
    until revision=$(psql "$url" -qAtc 'select revision from kg_meta' 2>/dev/null) &&
        [ -n "$revision" ] && [ "$revision" -ge $((before + 20)) ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$now committed no writes within 120 s of the freeze"
        sleep 0.2
    done
    echo "$now leads and committed revisions $((before + 1))-$revision while $leader was frozen" >&2
    # The frozen member, alone on stdout: the fault runtime resumes its pids.
    echo "$leader"
}

action=${1:-}
target=${2:-}
case "$action" in
    up) up ;;
    switchover) switchover ;;
    zombie) zombie ;;
    # The members a name stands for (pg-leader, redis-master, etcd-leader: the holder now).
    resolve) [ -n "$target" ] || { usage; exit 2; }; resolve "$target" ;;
    # MEMBER is pg (the fault runtime names the kind it acts on).
    sync | async) replication "$action" ;;
    down)
        down
        if [ "$target" = --purge ]; then
            rm -rf "$(dirname "$(pg_root)")" "$HA_DIR"
        fi
        ;;
    status) status "$target" ;;
    kill | stop | start | pause | resume | pid)
        [ -n "$target" ] || { usage; exit 2; }
        case "$target" in
            n[1-9]) exec scripts/node.sh "$action" "$target" ;;
        esac
        # A fault on a role (pg-leader, redis-master) is undone on the member that held it
        # then, not on the one that holds it after the failover.
        remembered="$HA_DIR/last-$target"
        case "$action:$target" in
            # The holder now: the fault runtime (kg-bench) pauses the pids this names, and
            # resumes the same pids itself.
            pid:*) members=$(resolve "$target") ;;
            kill:*-leader | kill:redis-master | pause:*-leader | pause:redis-master | stop:*-leader | stop:redis-master)
                members=$(resolve "$target")
                echo "$members" >"$remembered"
                ;;
            *:pg-leader | *:etcd-leader | *:redis-master)
                if [ -s "$remembered" ]; then members=$(cat "$remembered"); else members=$(resolve "$target"); fi
                [ "$action" = start ] || [ "$action" = resume ] && rm -f "$remembered"
                ;;
            *) members=$(resolve "$target") ;;
        esac
        for member in $members; do
            case "$action" in
                kill) member_stop "$member" KILL ;;
                stop) member_stop "$member" TERM ;;
                start)
                    if [ -z "$(pids "$member")" ]; then member_start "$member"; echo "$member started"; fi
                    ;;
                pause) signal_member "$member" STOP; echo "$member paused" ;;
                resume) signal_member "$member" CONT; echo "$member resumed" ;;
                # Every process of the member, one per line: the fault runtime pauses them all.
                pid) pids "$member" ;;
            esac
        done
        ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
