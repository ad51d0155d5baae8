#!/usr/bin/env bash
# The hosts of `./scripts/start.sh --hosts`: every member of the stack in a Linux network
# namespace of its own, with its own address on one bridge, so that the network between them
# can be cut, slowed and made lossy (scripts/net.sh) as between machines.
#
#   ./scripts/hosts.sh up         make the namespaces, the bridge and the links (and first
#                                 remove whatever a crashed run left)
#   ./scripts/hosts.sh down       remove every namespace, link and rule this made
#   ./scripts/hosts.sh list       every host: name, zone, namespace, address
#   ./scripts/hosts.sh check      fails unless every host's namespace exists and answers
#   ./scripts/hosts.sh exec HOST CMD...   run CMD inside HOST's namespace
#
# Layout (KG_HOSTS_SUBNET, default 10.77.0, a /24 that must be free on this machine):
#   the bridge lives in a namespace of its own (kgh-net), so that traffic between the hosts
#   crosses no firewall of the machine's; the machine reaches the hosts through one veth pair
#   (kgh-root here, its address .1, the bridge's port there): the only thing this adds to the
#   root namespace is that link and its connected route.
#   front:  nginx .10
#   zone a: n1 .11, pg1 .21, etcd1 .31, redis1 .41, sentinel1 .51
#   zone b: n2 .12, pg2 .22, etcd2 .32, redis2 .42, sentinel2 .52
#   zone c: n3 .13, pg3 .23, etcd3 .33,             sentinel3 .53
# Each node's host also runs its own HAProxy (the sidecar) on 127.0.0.1:5442 inside it, so a
# node cut from PostgreSQL is cut from it through its own proxy, as on a machine of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

HOSTS_FILE="$KG_RUN/hosts"

# The root namespace's end of the link to the bridge.
ROOT_LINK=kgh-root

up() {
    need_root
    ensure_packages ip:iproute2 iptables:iptables
    # A crashed run may have left namespaces, links or daemons: take them down first.
    down >/dev/null 2>&1 || true
    local subnet=$KG_HOSTS_SUBNET
    if ip -o -4 addr show | awk '{print $4}' | grep -q "^$subnet\."; then
        fail "$subnet.0/24 is already in use on this machine; set KG_HOSTS_SUBNET to a free /24 (as A.B.C)"
    fi
    mkdir -p "$KG_RUN"
    : >"$HOSTS_FILE.making"
    ip netns add "$(net_ns)"
    echo "$(net_ns)" >>"$HOSTS_FILE.making"
    ip -n "$(net_ns)" link add kgh-br type bridge
    ip -n "$(net_ns)" link set kgh-br up
    ip -n "$(net_ns)" link set lo up
    # The machine's own link: an address on the bridge's subnet, nothing more.
    ip link add "$ROOT_LINK" type veth peer name v-root netns "$(net_ns)"
    ip -n "$(net_ns)" link set v-root master kgh-br up
    ip addr add "$subnet.1/24" dev "$ROOT_LINK"
    ip link set "$ROOT_LINK" up
    local host
    for host in $(all_hosts); do
        ip netns add "$(host_ns "$host")"
        echo "$(host_ns "$host")" >>"$HOSTS_FILE.making"
        ip -n "$(host_ns "$host")" link set lo up
        ip link add "v-$host" netns "$(net_ns)" type veth peer name eth0 netns "$(host_ns "$host")"
        ip -n "$(net_ns)" link set "v-$host" master kgh-br up
        ip -n "$(host_ns "$host")" addr add "$(host_ip "$host")/24" dev eth0
        ip -n "$(host_ns "$host")" link set eth0 up
    done
    mv "$HOSTS_FILE.making" "$HOSTS_FILE"
    check
    echo "hosts up: $(all_hosts | wc -w) namespaces on $subnet.0/24 (./scripts/hosts.sh list)"
}

# down: every process in the namespaces this made (or a crashed run left), the namespaces,
# the bridge's namespace and the machine's end of the link.
down() {
    need_root
    local ns pids
    for ns in $(known_namespaces); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    done
    for ns in $(known_namespaces); do
        ip netns del "$ns" 2>/dev/null || true
    done
    # A veth end in the root namespace dies with its peer's namespace, unless a process held
    # that namespace open; delete it in any case.
    ip link del "$ROOT_LINK" 2>/dev/null || true
    rm -f "$HOSTS_FILE" "$HOSTS_FILE.making"
    local left
    left=$(known_namespaces)
    [ -z "$left" ] || fail "namespaces left behind: $left"
    ! ip link show "$ROOT_LINK" >/dev/null 2>&1 || fail "the link $ROOT_LINK is left behind"
    echo "hosts down"
}

# known_namespaces: this stack's namespaces that exist now: those the hosts file lists, and
# any of the prefix that a crashed run left.
known_namespaces() {
    { [ -f "$HOSTS_FILE" ] && cat "$HOSTS_FILE"
      [ -f "$HOSTS_FILE.making" ] && cat "$HOSTS_FILE.making"
      ip netns list 2>/dev/null | awk '{print $1}' | grep "^$KG_HOSTS_PREFIX" || true
    } | sort -u | while read -r ns; do
        [ -n "$ns" ] && ip netns list | awk '{print $1}' | grep -qx "$ns" && echo "$ns"
    done
}

# check: every host's namespace exists and its address answers from the machine.
check() {
    local host ns missing=()
    for host in $(all_hosts); do
        ns=$(host_ns "$host")
        ip netns list | awk '{print $1}' | grep -qx "$ns" || missing+=("$host")
    done
    [ ${#missing[@]} -eq 0 ] || fail "hosts without their namespace: ${missing[*]} (./scripts/hosts.sh up)"
    # net.sh asks only that the namespaces exist: under a fault the probes below would fail.
    [ "${1:-}" = --exist ] && return 0
    # Two probes across the bridge, over TCP to a port where nothing listens (a refusal is an
    # answer): host to host, and the machine to a host.
    probe() {
        python3 -c '
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3)
except ConnectionRefusedError:
    pass
' "$1"
    }
    ip netns exec "$(host_ns n1)" bash -c "$(declare -f probe); probe $(host_ip pg1)" ||
        fail "n1 does not reach pg1 across the bridge"
    probe "$(host_ip nginx)" || fail "the machine does not reach $(host_ip nginx) over $ROOT_LINK"
}

list() {
    local host
    printf '%-10s %-5s %-14s %s\n' HOST ZONE NAMESPACE ADDRESS
    for host in $(all_hosts); do
        printf '%-10s %-5s %-14s %s\n' "$host" "$(host_zone "$host")" "$(host_ns "$host")" "$(host_ip "$host")"
    done
}

need_root() { [ "$(id -u)" -eq 0 ] || fail "network namespaces need root (run as root)"; }

case "${1:-}" in
    up) up ;;
    down) down ;;
    list) list ;;
    check) check "${2:-}" ;;
    exec)
        [ $# -ge 3 ] || { usage; exit 2; }
        host=$2
        shift 2
        host_ip "$host" >/dev/null
        exec ip netns exec "$(host_ns "$host")" "$@"
        ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
