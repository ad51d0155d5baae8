#!/usr/bin/env bash
# Network faults between the hosts of `./scripts/start.sh --hosts` (scripts/hosts.sh): every
# rule lives inside the hosts' own namespaces (iptables there, in chains of its own), never in
# the machine's. The fault runtime of kg-bench chaos acts through it.
#
#   ./scripts/net.sh partition A... / B...   a symmetric cut between two groups
#   ./scripts/net.sh isolate HOST...         each HOST cut from every other host
#   ./scripts/net.sh oneway FROM TO          FROM's packets to TO are dropped; TO's to FROM pass
#   ./scripts/net.sh delay HOSTS MS [JITTER] [to HOSTS]
#                                            packets leaving HOSTS (for the hosts after `to`,
#                                            else for every host) held MS ms, +/- JITTER ms
#   ./scripts/net.sh loss HOSTS PERCENT [to HOSTS]
#                                            packets leaving HOSTS (for ...) dropped at random
#   ./scripts/net.sh heal                    every rule and delay gone, and checked
#   ./scripts/net.sh status                  every rule in force, per host
#   ./scripts/net.sh probe FROM TO [COUNT]   TCP round trips FROM -> TO: median, p99, lost
#
# Hosts are named as scripts/hosts.sh lists them (n1, pg2, etcd3, redis1, sentinel2, nginx),
# by role (pg-leader, redis-master, etcd-leader: whoever holds it now; redis-replicas), by zone
# (zone-a, zone-b, zone-c; zone-without-pg-leader and zones-with-pg-leader, for a minority that
# leaves the leader with the majority), or `all`; HOSTS is a comma-separated list. The machine itself (the
# bridge's .1: the clients' front door and the operator's console) is never cut, delayed or
# made lossy: faults act between the members.
#
# Delay and jitter: this kernel has no netem qdisc, so the delayed packets go to an NFQUEUE
# whose reader (`kg-bench netem`, one process per delay rule, reading the queue in every
# namespace the rule covers) holds each one for its time and then accepts it. Loss is
# iptables' `statistic` match. docs/high-availability.md has what was asked against what
# was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; }

NET_DIR="$KG_RUN/net"
IN=KG-FAULT-IN
OUT=KG-FAULT-OUT

# require_hosts: the stack runs with --hosts and every host's namespace is there, so that no
# rule or probe is ever sent anywhere else.
require_hosts() {
    hosts_mode || fail "no --hosts stack here (./scripts/start.sh --hosts); state in $KG_STATE_DIR"
    scripts/hosts.sh check --exist >/dev/null
}

# resolve NAMES: the hosts a comma-separated list of names stands for, one per line.
resolve() {
    local name
    for name in ${1//,/ }; do
        case "$name" in
            all) all_hosts ;;
            zone-[abc])
                local zone=${name#zone-} host
                for host in $(all_hosts); do
                    [ "$(host_zone "$host")" = "$zone" ] && echo "$host"
                done
                ;;
            pg-leader | redis-master | etcd-leader) scripts/ha.sh resolve "$name" ;;
            redis-replicas) printf '%s\n' redis1 redis2 | grep -vx "$(scripts/ha.sh resolve redis-master)" ;;
            # The zone the drills cut off as a minority: the first whose PostgreSQL member is
            # not the leader, so that the leader stays with the majority; and the others.
            zone-without-pg-leader) resolve "zone-$(minority_zone)" ;;
            zones-with-pg-leader)
                local zone
                for zone in a b c; do
                    [ "$zone" = "$(minority_zone)" ] || resolve "zone-$zone"
                done
                ;;
            *) host_ip "$name" >/dev/null && echo "$name" ;;
        esac
    done | awk '!seen[$0]++'
}

# minority_zone: the first zone whose PostgreSQL member does not lead.
minority_zone() {
    local leader zone
    leader=$(scripts/ha.sh resolve pg-leader)
    for zone in a b c; do
        [ "$(host_zone "$leader")" = "$zone" ] || { echo "$zone"; return; }
    done
}

# ipt HOST ARGS...: iptables inside HOST's namespace.
ipt() {
    local host=$1
    shift
    ip netns exec "$(host_ns "$host")" iptables -w "$@"
}

# chains HOST: this script's chains in HOST, hooked first into INPUT and OUTPUT.
chains() {
    local host=$1 chain hook
    for chain in $IN $OUT; do
        ipt "$host" -N "$chain" 2>/dev/null || true
    done
    for hook in INPUT:$IN OUTPUT:$OUT; do
        ipt "$host" -C "${hook%%:*}" -j "${hook#*:}" 2>/dev/null ||
            ipt "$host" -I "${hook%%:*}" 1 -j "${hook#*:}"
    done
}

# The machine's own address, which no fault touches.
machine() { echo "$KG_HOSTS_SUBNET.1"; }

# sever HOST PEER: HOST drops what it sends to PEER and what it gets from PEER. (Not named
# cut: that shadowed cut(1) for every function of lib.sh this script calls.)
sever() {
    chains "$1"
    ipt "$1" -I $OUT -d "$(host_ip "$2")" -j DROP
    ipt "$1" -I $IN -s "$(host_ip "$2")" -j DROP
}

partition() {
    local left=() right=() side=left arg a b
    for arg in "$@"; do
        if [ "$arg" = / ]; then side=right; continue; fi
        if [ "$side" = left ]; then left+=("$arg"); else right+=("$arg"); fi
    done
    [ ${#left[@]} -gt 0 ] && [ ${#right[@]} -gt 0 ] || fail "partition A... / B...: two groups of hosts"
    local groups_a groups_b
    groups_a=$(resolve "$(IFS=,; echo "${left[*]}")")
    groups_b=$(resolve "$(IFS=,; echo "${right[*]}")")
    for a in $groups_a; do
        for b in $groups_b; do
            [ "$a" = "$b" ] && fail "$a is on both sides of the partition"
            sever "$a" "$b"
            sever "$b" "$a"
        done
    done
    echo "partitioned: $(echo $groups_a) / $(echo $groups_b)"
}

isolate() {
    local host others
    for host in $(resolve "$(IFS=,; echo "$*")"); do
        others=$(all_hosts | grep -vx "$host" | paste -sd, -)
        partition "$host" / "$others" >/dev/null
        echo "isolated: $host"
    done
}

oneway() {
    [ $# -eq 2 ] || fail "oneway FROM TO"
    local from to
    for from in $(resolve "$1"); do
        for to in $(resolve "$2"); do
            chains "$from"
            ipt "$from" -I $OUT -d "$(host_ip "$to")" -j DROP
            echo "one way: $from -> $to dropped"
        done
    done
}

# targets HOSTS [to PEERS]: iptables match arguments for the packets a rule takes: to each
# peer (one argument set per line), or every packet leaving the host's link but the machine's.
targets() {
    local peers=${2:-} peer
    if [ -z "$peers" ]; then
        echo "-o eth0 ! -d $(machine)"
    else
        for peer in $(resolve "$peers"); do echo "-d $(host_ip "$peer")"; done
    fi
}

loss() {
    [ $# -ge 2 ] || fail "loss HOSTS PERCENT [to HOSTS]"
    local hosts=$1 percent=$2 to="" host match
    [ "${3:-}" = to ] && to=${4:?"loss ... to HOSTS"}
    [[ "$percent" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v p="$percent" 'BEGIN {exit !(p > 0 && p <= 100)}' ||
        fail "'$percent' is not a percentage in (0, 100]"
    local probability
    probability=$(awk -v p="$percent" 'BEGIN {printf "%.4f", p / 100}')
    for host in $(resolve "$hosts"); do
        chains "$host"
        while read -r match; do
            # shellcheck disable=SC2086
            ipt "$host" -I $OUT $match -m statistic --mode random --probability "$probability" -j DROP
        done < <(targets "$host" "$to")
    done
    echo "loss: $percent% of what $(resolve "$hosts" | paste -sd' ' -) send${to:+ to $to}"
}

delay() {
    [ $# -ge 2 ] || fail "delay HOSTS MS [JITTER] [to HOSTS]"
    local hosts=$1 ms=$2 jitter=0 to="" host match
    shift 2
    if [ $# -gt 0 ] && [ "$1" != to ]; then jitter=$1; shift; fi
    [ "${1:-}" = to ] && to=${2:?"delay ... to HOSTS"}
    for value in "$ms" "$jitter"; do
        [[ "$value" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "'$value' is not a number of milliseconds"
    done
    mkdir -p "$NET_DIR"
    # One queue number per delay rule; each namespace has queues of its own.
    local queue
    queue=$(($(cat "$NET_DIR/next-queue" 2>/dev/null || echo 1)))
    echo $((queue + 1)) >"$NET_DIR/next-queue"
    local namespaces=()
    for host in $(resolve "$hosts"); do
        chains "$host"
        while read -r match; do
            # Appended: a packet the reader accepts leaves the chain, so the drops (inserted
            # first) must have had their turn.
            # shellcheck disable=SC2086
            ipt "$host" -A $OUT $match -j NFQUEUE --queue-num "$queue" --queue-bypass
        done < <(targets "$host" "$to")
        namespaces+=("$(host_ns "$host")")
    done
    local bench
    bench="$(kg_bin_dir)/kg-bench"
    [ -x "$bench" ] || fail "$bench is missing (it reads the delayed packets); build it"
    # The log starts empty (>, not >>): a queue number is used again after a heal, and an old
    # "ready" line must not stand for this reader's.
    setsid nohup "$bench" netem --netns "$(IFS=,; echo "${namespaces[*]}")" --queue "$queue" \
        --delay "${ms}ms" --jitter "${jitter}ms" >"$KG_LOGS/netem-$queue.log" 2>&1 </dev/null &
    echo $! >"$NET_DIR/netem-$queue.pid"
    # The reader binds its queue in each namespace before it says so.
    local ready=0
    for _ in $(seq 100); do
        grep -q '^ready' "$KG_LOGS/netem-$queue.log" 2>/dev/null && { ready=1; break; }
        kill -0 "$(cat "$NET_DIR/netem-$queue.pid")" 2>/dev/null ||
            fail "kg-bench netem failed: $(tail -n 3 "$KG_LOGS/netem-$queue.log")"
        sleep 0.05
    done
    [ "$ready" = 1 ] || fail "kg-bench netem did not say it was ready in 5 s (./scripts/net.sh heal)"
    echo "delay: ${ms} ms +/- ${jitter} ms on what $(resolve "$hosts" | paste -sd' ' -) send${to:+ to $to} (queue $queue)"
}

heal() {
    local host pidfile left=""
    for pidfile in "$NET_DIR"/netem-*.pid; do
        [ -f "$pidfile" ] || continue
        pid_alive "$pidfile" && kill "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    done
    rm -f "$NET_DIR/next-queue"
    for host in $(all_hosts); do
        ipt "$host" -F $IN 2>/dev/null || true
        ipt "$host" -F $OUT 2>/dev/null || true
    done
    # Nothing may be left: no rule in the chains, no reader.
    for host in $(all_hosts); do
        if ipt "$host" -S $IN 2>/dev/null | grep -q -- '^-A' || ipt "$host" -S $OUT 2>/dev/null | grep -q -- '^-A'; then
            left+=" $host"
        fi
    done
    [ -z "$left" ] || fail "rules left after heal on:$left"
    pgrep -f "kg-bench netem --netns ${KG_HOSTS_PREFIX}" >/dev/null && fail "a kg-bench netem reader is left after heal"
    echo "healed: no fault rule and no delay reader left"
}

status() {
    local host rules any=0
    for host in $(all_hosts); do
        rules=$( { ipt "$host" -S $IN 2>/dev/null; ipt "$host" -S $OUT 2>/dev/null; } | grep -- '^-A' || true)
        [ -n "$rules" ] || continue
        any=1
        echo "$host ($(host_ip "$host")):"
        sed 's/^/    /' <<<"$rules"
    done
    local pidfile
    for pidfile in "$NET_DIR"/netem-*.pid; do
        [ -f "$pidfile" ] && pid_alive "$pidfile" && { any=1; echo "delay reader: $(basename "$pidfile" .pid) pid $(cat "$pidfile")"; }
    done
    [ "$any" = 1 ] || echo "no fault in force"
}

# probe FROM TO [COUNT]: COUNT TCP connects from FROM's host to a port of TO's where nothing
# listens; a refusal comes back as one round trip. Prints the median and p99 in ms, and how
# many got no answer within a second.
probe() {
    [ $# -ge 2 ] || fail "probe FROM TO [COUNT]"
    local from to count=${3:-200}
    from=$(resolve "$1" | head -n 1)
    to=$(resolve "$2" | head -n 1)
    ip netns exec "$(host_ns "$from")" python3 - "$(host_ip "$to")" "$count" <<'PY'
import socket, sys, time
address, count = sys.argv[1], int(sys.argv[2])
times, lost = [], 0
for _ in range(count):
    start = time.perf_counter()
    try:
        socket.create_connection((address, 9), timeout=1).close()
    except ConnectionRefusedError:
        times.append((time.perf_counter() - start) * 1000)
    except OSError:
        lost += 1
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
print(f"round trips {len(times)} of {count}: median {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms; no answer {lost}")
PY
}

case "${1:-}" in
    partition | isolate | oneway | delay | loss | heal | status | probe)
        action=$1
        shift
        require_hosts
        "$action" "$@"
        ;;
    -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
