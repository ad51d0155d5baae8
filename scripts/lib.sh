#!/usr/bin/env bash
# Helpers shared by the scripts: step banners, failing loudly, and installing missing
# Debian packages (the scripts install what they need themselves, so a fresh machine works).

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
# whole_numbers VALUE...: fails unless each option value is a positive whole number.
whole_numbers() {
    local number
    for number in "$@"; do
        [[ "$number" =~ ^[1-9][0-9]*$ ]] || fail "'$number' is not a positive whole number (try --help)"
    done
}

# The newest PostgreSQL server binaries (initdb, pg_ctl) from Debian's packages.
pg_bin_dir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || return 1
    printf '%s\n' "$dir"
}

# ensure_packages COMMAND:PACKAGE ...: installs PACKAGE with apt-get when COMMAND is missing.
# initdb is looked up under /usr/lib/postgresql, where Debian keeps it off the PATH.
ensure_packages() {
    local missing=() pair command package
    for pair in "$@"; do
        command=${pair%%:*}
        package=${pair#*:}
        if [ "$command" = initdb ]; then
            pg_bin_dir >/dev/null && continue
        elif command -v "$command" >/dev/null 2>&1; then
            continue
        fi
        missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        fail "missing packages: ${missing[*]} (run as root, or apt-get install them)"
    fi
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages such as nginx start their service on install (nginx on :80); the scripts run
    # their own instances, so keep apt from starting any while it installs.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$status" = 0 ] || fail "apt-get install ${missing[*]} failed"
}

# ensure_build_tools: cargo, and the C toolchain it links with and that libsqlite3-sys compiles
# SQLite with: rustup brings no linker, and a fresh Debian has no cc.
ensure_build_tools() {
    command -v cargo >/dev/null 2>&1 || fail "cargo is missing; install Rust from https://rustup.rs"
    ensure_packages cc:gcc cc:libc6-dev
}

# ---------------------------------------------------------------------------------------------
# The local stack (start.sh, stop.sh, node.sh): where it lives and how to reach its parts.
#
#   KG_STATE_DIR  where the stack keeps its data, logs and pid files (default .keygrid)
#   KG_PG_PORT    the stack's own PostgreSQL (default 5442)
#   KG_REDIS_PORT the stack's own Redis (default 6389)
#   KG_PROFILE    cargo profile of the binaries: release (default) or debug
#   KG_WORKER_THREADS  request threads per node (default: cores / 3, at least 1)
# The nodes listen on 8001-8003, nginx on 8000 (API) and 8080 (web view).

KG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Each stack keeps its data in a directory of its own, so that trying one does not cost the
# other's data: the single-server stack in .keygrid, the --ha stack in .keygrid-ha (or in
# .keygrid, where an --ha stack was made before they were apart). Without KG_STATE_DIR the
# scripts act on the stack that runs, else on the single-server one.
KG_SINGLE_STATE_DIR="$KG_ROOT/.keygrid"
KG_HA_STATE_DIR="$KG_ROOT/.keygrid-ha"
[ -e "$KG_SINGLE_STATE_DIR/run/ha" ] && KG_HA_STATE_DIR=$KG_SINGLE_STATE_DIR
# The --hosts stack (the --ha stack on network namespaces) has one too: its members' addresses
# are in its configuration, so it cannot share the loopback stack's.
KG_HOSTS_STATE_DIR="$KG_ROOT/.keygrid-hosts"
# stack_alive DIR: true when a process of the stack in DIR runs (a node's supervisor, nginx,
# the single server's PostgreSQL or Redis, or an etcd of the --ha tier).
stack_alive() {
    local file pid
    for file in "$1"/run/*.supervisor.pid "$1/nginx/nginx.pid" "$1/run/redis.pid" \
        "$1/postgres/postmaster.pid" "$1"/ha/etcd?.pid; do
        [ -s "$file" ] || continue
        pid=$(head -n 1 "$file" 2>/dev/null) || continue
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}
KG_STATE_DIR_SET=${KG_STATE_DIR:+1}
if [ -z "${KG_STATE_DIR:-}" ]; then
    if [ "$KG_HA_STATE_DIR" != "$KG_SINGLE_STATE_DIR" ] && stack_alive "$KG_HA_STATE_DIR"; then
        KG_STATE_DIR=$KG_HA_STATE_DIR
    elif stack_alive "$KG_HOSTS_STATE_DIR"; then
        KG_STATE_DIR=$KG_HOSTS_STATE_DIR
    fi
fi
KG_STATE_DIR=$(realpath -m "${KG_STATE_DIR:-$KG_SINGLE_STATE_DIR}")
KG_PG_PORT=${KG_PG_PORT:-5442}
KG_REDIS_PORT=${KG_REDIS_PORT:-6389}
KG_PROFILE_SET=${KG_PROFILE:+1}
KG_PROFILE=${KG_PROFILE:-release}
KG_NODES=(n1 n2 n3)
# The nodes share the machine's cores, so each gets its share: three nodes with a thread per
# core each only take turns on the same cores (docs/performance.md has the figures).
KG_WORKER_THREADS=${KG_WORKER_THREADS:-$(($(nproc) / ${#KG_NODES[@]} > 1 ? $(nproc) / ${#KG_NODES[@]} : 1))}
KG_API_PORT=8000
KG_WEB_PORT=8080
KG_RUN="$KG_STATE_DIR/run"
KG_LOGS="$KG_STATE_DIR/logs"
KG_DATABASE_URL="postgres://postgres@127.0.0.1:$KG_PG_PORT/keygrid"
KG_STACK_REDIS_URL="redis://127.0.0.1:$KG_REDIS_PORT"
# With `start.sh --ha` (scripts/ha.sh) the nodes find the Redis primary through these (on
# their hosts' addresses with --hosts: below).
KG_HA_SENTINELS="127.0.0.1:26389,127.0.0.1:26390,127.0.0.1:26391"

# --- hosts (start.sh --hosts, scripts/hosts.sh) --------------------------------------------------
# With --hosts every member runs in a network namespace of its own, on KG_HOSTS_SUBNET's /24.
KG_HOSTS_SUBNET=${KG_HOSTS_SUBNET:-10.77.0}
KG_HOSTS_PREFIX=kgh-

# hosts_mode: true when the stack runs with --hosts.
hosts_mode() { [ -f "$KG_RUN/hosts" ]; }
# all_hosts: every host of --hosts, one per line.
all_hosts() {
    printf '%s\n' nginx n1 n2 n3 pg1 pg2 pg3 etcd1 etcd2 etcd3 redis1 redis2 sentinel1 sentinel2 sentinel3
}
# host_ns HOST: its namespace; net_ns: the bridge's.
host_ns() { echo "$KG_HOSTS_PREFIX$1"; }
net_ns() { echo "${KG_HOSTS_PREFIX}net"; }
# host_ip HOST: its address on the bridge.
host_ip() {
    local last
    case "$1" in
        nginx) last=10 ;;
        n[1-3]) last=$((10 + ${1#n})) ;;
        pg[1-3]) last=$((20 + ${1#pg})) ;;
        etcd[1-3]) last=$((30 + ${1#etcd})) ;;
        redis[1-2]) last=$((40 + ${1#redis})) ;;
        sentinel[1-3]) last=$((50 + ${1#sentinel})) ;;
        *) fail "unknown host '$1' (the hosts are $(all_hosts | paste -sd' ' -))" ;;
    esac
    echo "$KG_HOSTS_SUBNET.$last"
}
# host_zone HOST: a, b or c (the number in its name), or - for the front (nginx).
host_zone() {
    case "$1" in
        nginx) echo - ;;
        # Bash's own substring, not cut(1): net.sh has a function of that name.
        *) local n=${1//[!0-9]/} zones=abc; printf '%s\n' "${zones:n-1:1}" ;;
    esac
}
# addr_of HOST: where the others reach it: its address with --hosts, else loopback.
addr_of() {
    if hosts_mode; then host_ip "$1"; else echo 127.0.0.1; fi
}
if hosts_mode; then
    KG_HA_SENTINELS="$(host_ip sentinel1):26389,$(host_ip sentinel2):26390,$(host_ip sentinel3):26391"
fi

# host_prefix HOST: sets HOST_PREFIX to what runs a command inside HOST's namespace with
# --hosts (`ip netns exec NS`), else to nothing. A command started in the background with it
# is that process itself ($! its pid), as in_host, a function, would not be.
HOST_PREFIX=()
host_prefix() {
    HOST_PREFIX=()
    if hosts_mode; then HOST_PREFIX=(ip netns exec "$(host_ns "$1")"); fi
}

# in_host HOST CMD...: CMD inside HOST's namespace with --hosts, else as it is.
in_host() {
    local host=$1
    shift
    if hosts_mode; then
        ip netns exec "$(host_ns "$host")" "$@"
    else
        "$@"
    fi
}

# The binaries' directory: the one start.sh recorded for the running stack, else KG_PROFILE's.
kg_bin_dir() {
    if [ -z "${KG_PROFILE_SET:-}" ] && [ -s "$KG_RUN/bin-dir" ]; then
        cat "$KG_RUN/bin-dir"
        return
    fi
    case "$KG_PROFILE" in
        release) printf '%s\n' "$KG_ROOT/target/release" ;;
        debug | dev) printf '%s\n' "$KG_ROOT/target/debug" ;;
        *) fail "KG_PROFILE must be release or debug, not $KG_PROFILE" ;;
    esac
}

# stack_ports_free WHO: fails unless every port of a scripts/start.sh stack is free, for a
# script (WHO) that starts a stack of its own.
stack_ports_free() {
    local port
    for port in 8000 8001 8002 8003 8080 "$KG_PG_PORT" "$KG_REDIS_PORT"; do
        if port_in_use "$port"; then
            fail "port $port is in use; $1 starts a stack of its own (./scripts/stop.sh stops yours)"
        fi
    done
}

# build_tools [--no-build]: fixes KG_PROFILE (default release) for this script and the stack
# it starts, and builds kg-server, kg and kg-bench in it unless told not to.
build_tools() {
    export KG_PROFILE=${KG_PROFILE:-release}
    KG_PROFILE_SET=1
    [ "${1:-}" = --no-build ] && return 0
    ensure_build_tools
    local flag=()
    [ "$KG_PROFILE" = release ] && flag=(--release)
    step "building kg-server, kg and kg-bench ($KG_PROFILE)"
    cargo build "${flag[@]}" --locked -p kg-server -p kg-cli -p kg-bench
}

# node_port n2 -> 8002
node_port() {
    case "$1" in
        n1) echo 8001 ;;
        n2) echo 8002 ;;
        n3) echo 8003 ;;
        *) fail "unknown node '$1' (the nodes are ${KG_NODES[*]})" ;;
    esac
}

# pid_alive FILE: true when FILE names a running process.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# pip_tool NAME PACKAGE: installs PyPI's PACKAGE into the venv .keygrid/NAME-venv unless its
# bin/NAME is there already, and prints that program's path.
pip_tool() {
    local venv="$KG_ROOT/.keygrid/$1-venv"
    if [ ! -x "$venv/bin/$1" ]; then
        step "installing $2 into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$2" >&2
    fi
    [ -x "$venv/bin/$1" ] || fail "pip's $2 did not provide $venv/bin/$1"
    printf '%s\n' "$venv/bin/$1"
}

# patroni_venv: installs the Patroni of deploy/patroni/requirements.txt (PyPI's, every package
# pinned) into a virtual environment of Debian's python3 under KG_TOOLS_DIR (default the
# checkout's .keygrid) unless it is there already, and prints the environment's directory. Patroni runs as the postgres user when the scripts run
# as root, so the environment is made where that user can reach it: under the checkout's
# .keygrid, or under /var/lib/keygrid when the checkout is closed to it (a clone under /root),
# and from /usr/bin/python3, since an interpreter under /root (pyenv's) would be closed too.
patroni_venv() {
    local requirements="$KG_ROOT/deploy/patroni/requirements.txt" version venv
    version=$(sed -n 's/^patroni\[[a-z0-9,]*\]==\(.*\)$/\1/p' "$requirements")
    [ -n "$version" ] || fail "$requirements pins no patroni version"
    local tools=${KG_TOOLS_DIR:-$KG_ROOT/.keygrid}
    venv="$tools/patroni-$version"
    postgres_can_reach "$tools" || venv="/var/lib/keygrid/patroni-$version"
    # The marker is written last: an install that was cut short is done again.
    if [ ! -f "$venv/.installed" ] || ! cmp -s "$requirements" "$venv/.installed"; then
        ensure_packages /usr/bin/python3:python3
        /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || ensure_packages python3-venv:python3-venv
        step "installing Patroni $version from PyPI into $venv" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        /usr/bin/python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2 ||
            fail "pip could not install $requirements into $venv"
        cp "$requirements" "$venv/.installed"
    fi
    printf '%s\n' "$venv"
}

# The prefix that runs a PostgreSQL tool as the postgres user when the script runs as root
# (PostgreSQL refuses to run as root); empty otherwise. The tool starts in /, since the
# caller's directory (a checkout under /root, say) may be closed to that user.
AS_POSTGRES=()
[ "$(id -u)" -eq 0 ] && AS_POSTGRES=(runuser -u postgres -- env -C /)

# postgres_can_reach PATH: true unless the scripts run as root and the postgres user cannot
# reach PATH (a directory it must enter, or a file it must open), as under /root (mode 700).
postgres_can_reach() {
    [ "$(id -u)" -ne 0 ] && return 0
    local dir=$1
    [ -d "$dir" ] || dir=$(dirname "$dir")
    runuser -u postgres -- test -x "$dir"
}

# pg_data DATA: the path PostgreSQL's tools are given for DATA. Where DATA is a link to
# /var/lib/keygrid (start_postgres makes one when the postgres user cannot reach DATA), the
# link's target: the tools run as the postgres user, who cannot pass through the link's own
# directory.
pg_data() { readlink -f "$1"; }

# postgres_running DATA: true when the PostgreSQL in DATA runs.
postgres_running() {
    local pg_bin
    pg_bin=$(pg_bin_dir) || return 1
    "${AS_POSTGRES[@]}" "$pg_bin/pg_ctl" -D "$(pg_data "$1")" status >/dev/null 2>&1
}

# start_postgres DATA PORT LOG: a PostgreSQL of its own in DATA on 127.0.0.1:PORT, initialised
# on first use: TCP only, trust authentication, fsync and synchronous_commit on (a commit
# acknowledged survives a power cut, throwaway instance or not). The stack and the tests'
# throwaway server both start through here, so they are the same kind of server. Fails
# loudly when it cannot start.
start_postgres() {
    local pgdata=$1 port=$2 log=$3 pg_bin real server_log
    pg_bin=$(pg_bin_dir) || fail "PostgreSQL's server binaries are missing"
    mkdir -p "$(dirname "$log")"
    if [ "$(id -u)" -eq 0 ]; then
        # When the postgres user cannot reach DATA (say it is under /root), the data lives
        # under /var/lib/keygrid and is linked from DATA.
        if [ ! -e "$pgdata" ] && ! postgres_can_reach "$(dirname "$pgdata")"; then
            real="/var/lib/keygrid/$(printf '%s' "$pgdata" | md5sum | cut -c1-12)/postgres"
            mkdir -p "$real"
            ln -s "$real" "$pgdata"
        fi
        mkdir -p "$pgdata"
        chown postgres: "$pgdata" "$(pg_data "$pgdata")"
        chmod 700 "$(pg_data "$pgdata")"
    fi
    real=$(pg_data "$pgdata")
    # pg_ctl opens the server's log as the postgres user: where it cannot reach LOG, the log
    # lives beside the data and LOG links to it.
    server_log=$log
    if ! postgres_can_reach "$(dirname "$log")"; then
        server_log="$(dirname "$real")/$(basename "$log")"
        ln -sfn "$server_log" "$log"
    fi
    if [ ! -s "$real/PG_VERSION" ]; then
        step "initialising PostgreSQL in $pgdata"
        "${AS_POSTGRES[@]}" "$pg_bin/initdb" -D "$real" -U postgres --auth=trust -E UTF8 \
            --locale=C >"$log.initdb" 2>&1 || fail "initdb failed; see $log.initdb"
        cat >>"$pgdata/postgresql.conf" <<CONF

# KeyGrid: durability stays on (these are the defaults, stated so nobody turns them off)
fsync = on
synchronous_commit = on
full_page_writes = on
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
CONF
    fi
    port_in_use "$port" && fail "port $port is taken by something else (PostgreSQL in $pgdata wants it)"
    step "starting PostgreSQL on 127.0.0.1:$port"
    touch "$server_log"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$server_log"
    "${AS_POSTGRES[@]}" "$pg_bin/pg_ctl" -D "$real" -l "$server_log" -w -t 60 -o "-p $port" start \
        >/dev/null || fail "PostgreSQL did not start; see $log"
    return 0
}

# stop_postgres DATA: a clean, fast shutdown of the PostgreSQL in DATA, if it runs.
stop_postgres() {
    [ -s "$1/postmaster.pid" ] || return 0
    "${AS_POSTGRES[@]}" "$(pg_bin_dir)/pg_ctl" -D "$(pg_data "$1")" -m fast -w stop >/dev/null
}

# purge_postgres DATA: deletes DATA, and the directory under /var/lib/keygrid it links to.
purge_postgres() {
    local real
    real=$(readlink -f "$1" || true)
    [ -n "$real" ] && [ "$real" != "$1" ] && rm -rf "$(dirname "$real")"
    rm -rf "$1"
}

# start_redis [PORT DIR [ARG...]]: a Redis on 127.0.0.1:PORT (default the stack's,
# KG_REDIS_PORT), persistence off, its pid in DIR/redis.pid and log in DIR/redis.log (default
# the stack's run and log directories), with more of redis-server's arguments (ha.sh's
# replica: --replicaof HOST PORT; a later --bind replaces loopback); waits for its PONG. With
# REDIS_RUN set (an array: `ip netns exec NS`), it runs there.
REDIS_RUN=()
start_redis() {
    local port=${1:-$KG_REDIS_PORT} pid_dir=${2:-$KG_RUN} log_dir=${2:-$KG_LOGS}
    local dir=${2:-$KG_STATE_DIR}/redis
    shift $(($# < 2 ? $# : 2))
    mkdir -p "$dir" "$pid_dir" "$log_dir"
    "${REDIS_RUN[@]}" redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --pidfile "$pid_dir/redis.pid" --logfile "$log_dir/redis.log" \
        --dir "$dir" --save "" --appendonly no "$@" >/dev/null
    for _ in $(seq 50); do
        [ "$("${REDIS_RUN[@]}" redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    fail "Redis did not start; see $log_dir/redis.log"
}

# port_in_use PORT: true when something listens on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# cpu_ticks: CPU time used so far by the running processes (user + system, in clock ticks),
# summed by command name, as "NAME TICKS" lines. Taken around a benchmark's row, it shows
# where the cores went. Processes that exit in between are missed.
cpu_ticks() {
    local stat
    for stat in /proc/[0-9]*/stat; do cat "$stat" 2>/dev/null || true; done | awk '{
        lp = index($0, "("); rp = index($0, ") ")
        name = substr($0, lp + 1, rp - lp - 1); gsub(/ /, "_", name)
        sub(/^kworker.*/, "kworker", name)
        split(substr($0, rp + 2), f, " ")
        ticks[name] += f[12] + f[13]
    } END { for (name in ticks) print name, ticks[name] }'
}

# median NUMBER...: the median of the numbers (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# auth_token: the bearer token the scripts present: KG_TOKEN, else the first token of
# KG_AUTH_TOKENS_FILE when the nodes run with one, else nothing.
auth_token() {
    if [ -n "${KG_TOKEN:-}" ]; then
        printf '%s\n' "$KG_TOKEN"
    elif [ -n "${KG_AUTH_TOKENS_FILE:-}" ] && [ -r "$KG_AUTH_TOKENS_FILE" ]; then
        awk '$1 !~ /^#/ && NF >= 2 {print $1; exit}' "$KG_AUTH_TOKENS_FILE"
    fi
}

# write_auth_tokens FILE: a new tokens file with a random read token and write token.
write_auth_tokens() {
    local read write
    read=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    write=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    mkdir -p "$(dirname "$1")"
    (umask 077 && printf '# KeyGrid bearer tokens: TOKEN ROLE (read or write)\n%s write\n%s read\n' \
        "$write" "$read" >"$1")
}

# cache_count RESULT PORT...: kg_cache_requests_total{result=RESULT} (hit or miss), summed
# over the nodes listening on PORT...
cache_count() {
    local result=$1 port total=0 count
    shift
    for port in "$@"; do
        count=$(curl -fs "http://127.0.0.1:$port/metrics" |
            awk -v want="result=\"$result\"" 'index($0, "kg_cache_requests_total{") == 1 && index($0, want) {s += $2} END {printf "%d", s}')
        total=$((total + count))
    done
    echo "$total"
}

# http_status URL: the HTTP status of a GET, or 000 when nothing answers.
http_status() {
    local token
    token=$(auth_token)
    curl -s -o /dev/null -m 2 -w '%{http_code}' ${token:+-H "Authorization: Bearer $token"} \
        "$1" 2>/dev/null || true
}

# wait_for_status URL STATUS SECONDS: polls URL until it answers STATUS.
wait_for_status() {
    local url=$1 want=$2 deadline=$((SECONDS + $3))
    while [ "$(http_status "$url")" != "$want" ]; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# use_podman: makes podman usable on this kind of machine and points it at a containers.conf
# of KeyGrid's (CONTAINERS_CONF), which `podman system service` and so docker-compose honour
# too. podman's default ulimits ask for more than the machine's hard limits (and the kernel's
# pid_max), and crun refuses cgroups v1 in hybrid mode, so it names limits the machine allows
# and runc.
use_podman() {
    # netavark and aardvark-dns are only recommended by Debian's podman, whose fallback is CNI
    # without name resolution: a compose service could not find another by its name.
    ensure_packages podman:podman runc:runc iptables:iptables \
        /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns
    local conf="$KG_ROOT/.keygrid/containers.conf" nofile nproc pid_max
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
    [ "$nofile" = unlimited ] && nofile=1048576
    [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
    mkdir -p "$(dirname "$conf")"
    cat >"$conf" <<CONF
# Written by scripts/lib.sh (use_podman): limits this machine allows, runc and netavark.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
CONF
    export CONTAINERS_CONF=$conf
}

# The Debian 12 base image that the fresh-machine check and the compose stack's local images
# start from (ensure_debian_image).
KG_DEBIAN_IMAGE=${KG_DEBIAN_IMAGE:-localhost/keygrid-debian:bookworm}

# ensure_debian_image IMAGE DIR: a minimal Debian 12 (bookworm) image made without any
# registry: debootstrap a root file system under DIR and import it into podman as IMAGE, once.
# Its apt reaches the same mirror (KG_DEBIAN_MIRROR, else the host's, else deb.debian.org).
ensure_debian_image() {
    local image=$1 dir=$2 mirror rootfs
    podman image exists "$image" && return 0
    ensure_packages debootstrap:debootstrap
    mirror=${KG_DEBIAN_MIRROR:-${KG_FRESH_MIRROR:-}}
    if [ -z "$mirror" ]; then
        mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    mkdir -p "$dir"
    rootfs="$dir/rootfs"
    rm -rf "$rootfs"
    step "debootstrap bookworm from $mirror (once; cached as $image)"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $dir/debootstrap.log"
    # The container's apt must reach the same mirror, and the image should carry no apt cache.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import - "$image" >/dev/null
    rm -rf "$rootfs"
}

# start_podman_api SOCK LOG: podman's Docker-compatible API on the unix socket SOCK, for
# docker-compose and the docker CLI (it exports DOCKER_HOST), in a session of its own so it
# outlives the caller; PODMAN_API_PID is its pid. podman runs health checks from systemd
# timers: where systemd is not PID 1 nothing would run them and compose's `service_healthy`
# would wait for ever, so a loop (PODMAN_HEALTH_PID, else empty) runs every compose
# container's check on the compose file's interval, as Docker's engine would.
start_podman_api() {
    local sock=$1 log=$2
    use_podman
    mkdir -p "$(dirname "$sock")"
    rm -f "$sock"
    setsid podman system service --time=0 "unix://$sock" >"$log" 2>&1 </dev/null &
    PODMAN_API_PID=$!
    export DOCKER_HOST=unix://$sock
    # docker-compose 1.x builds images by running the docker CLI, which a fresh Debian does not
    # have (Debian packages it only with the engine); through the API the build goes to podman
    # as every other call does.
    export COMPOSE_DOCKER_CLI_BUILD=0
    for _ in $(seq 100); do
        curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null || fail "podman system service did not answer; see $log"
    PODMAN_HEALTH_PID=""
    if [ "$(ps -o comm= -p 1)" != systemd ]; then
        setsid bash -c '
            while sleep 5; do
                for id in $(podman ps -q --filter label=com.docker.compose.project); do
                    podman healthcheck run "$id" >/dev/null 2>&1 || true
                done
            done' >/dev/null 2>&1 </dev/null &
        PODMAN_HEALTH_PID=$!
    fi
}

# prepare_local_compose PROFILE: what docker-compose.yml needs where podman stands in for
# Docker and no registry is reached: the local base images (scripts/compose-images.sh; their
# variables are exported here) and kg-server and kg built with the cargo PROFILE (release or
# debug, as KG_PROFILE), copied to
# deploy/docker/bin/ for the Dockerfile's KG_BINARIES=prebuilt.
prepare_local_compose() {
    local profile=$1 flag=()
    [ "$profile" = release ] && flag=(--release)
    ensure_build_tools
    step "kg-server and kg ($profile), to pack into the node image"
    (cd "$KG_ROOT" && cargo build --locked "${flag[@]}" -p kg-server -p kg-cli)
    # Not `eval "$(...)"`: a failure inside a command substitution that eval takes does not
    # stop the script.
    local variables
    variables=$("$KG_ROOT/scripts/compose-images.sh") || fail "the local images could not be built"
    eval "$variables"
    mkdir -p "$KG_ROOT/deploy/docker/bin"
    # Without their debug information (symbols stay, for backtraces): compose sends the build
    # context once per node, and a debug build's is mostly that.
    local binary
    for binary in kg-server kg; do
        strip --strip-debug -o "$KG_ROOT/deploy/docker/bin/$binary" "$KG_ROOT/target/$profile/$binary"
    done
}

# compose ARGS...: `docker compose` where the docker CLI has Compose v2, else Debian's
# standalone `docker-compose` (v1).
compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    else
        docker-compose "$@"
    fi
}

# require_node: Node.js and npm for the web view's tools, from Debian's packages when missing.
# The tools are chosen to run on Debian 12's own Node.js 18 (Vite 6, Vitest 3), so a fresh
# machine needs nothing from outside Debian.
require_node() {
    ensure_packages node:nodejs npm:npm
    local version
    version=$(node -p 'process.versions.node' 2>/dev/null) || fail "node does not run"
    if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
        fail "Node.js $version is too old for the web view (it needs 18 or later)"
    fi
}

# hold_leases BENCH URL DURATION FILE WAIT: `kg-bench leases` (BENCH) holding $leases leases of
# $ttl seconds on URL, $per_request per keep-alive request, for DURATION, its output in FILE.
# Returns once every lease is granted (within WAIT seconds) and the keep-alives have had 2 s to
# reach their steady rate; holder_pid is its pid.
hold_leases() {
    local bench=$1 url=$2 duration=$3 file=$4 wait=$5
    "$bench" leases -e "$url" --count "$leases" --ttl "$ttl" --per-request "$per_request" \
        --duration "$duration" >"$file" 2>&1 &
    holder_pid=$!
    for _ in $(seq $((wait * 10))); do
        grep -q '"granted"' "$file" && break
        kill -0 "$holder_pid" 2>/dev/null || fail "kg-bench leases failed: $(cat "$file")"
        sleep 0.1
    done
    grep -q '"granted"' "$file" || fail "the leases were not granted in $wait s"
    sleep 2
}
