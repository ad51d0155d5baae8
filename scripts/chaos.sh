#!/usr/bin/env bash
# Fault drills against the local cluster (a stack of its own from scripts/start.sh, with a
# throwaway PostgreSQL and Redis). This script only starts and stops the stack; the drills
# are `kg-bench chaos`: each fault runs under kg-bench load through nginx (8 sequential
# clients doing GETs, unique-value PUTs, compare-and-swaps and prefix deletes on 10 keys, and
# transfers between 8 accounts through POST /api/txn, every operation recorded with the
# revision the node answered), is injected 2 s in through the fault runtime
# (scripts/node.sh), and is judged afterwards against the keys the database holds:
#
#   kill          SIGKILL n1 (writes go to n1 first), start it again 3 s later
#   pause         SIGSTOP n1 for 7 s, past nginx's 5 s read timeout, then SIGCONT
#   redis-restart Redis stopped, started again 1 s later (empty: persistence is off)
#   redis-flush   FLUSHALL: the cache and the epoch gone at once
#   pg-restart    pg_ctl stop -m immediate (a crash), then started again at once
#   pg-down       the same crash, 3 s down, then started again
#   pg-lock-revision  another session holds the revision lock (kg_meta FOR UPDATE) for 3 s,
#                 past the nodes' 2 s --db-timeout: writes wait, are answered 503, and those
#                 sent commit when it is let go (the answer lost after the commit landed)
#   pg-lock-table the keys' table held in ACCESS EXCLUSIVE mode for 3 s: reads that miss the
#                 cache wait too
#
# Prints per fault: requests, errors by status, operations with an unknown outcome,
# acknowledged writes, lost acknowledged writes (checked against the database's rows),
# stale reads, reads that saw part of a transfer, linearizability violations, and the time
# from the repair to the last failed operation. Beside the load, one client reads 20 keys that
# no write touches, every 20 ms: UNTOUCHED is how many of its reads from the fault to the last
# failed operation (or the first write acknowledged again, if later) were answered. WRITE GAP
# is the longest stretch after the repair with no acknowledged write. Beside the load, three
# watchers follow its keys (one live, one slow that replays from the compact revision, one
# that drops its stream and resumes), while a compaction runs every second and just after
# each of the slow watcher's opens: WATCHED is how many acknowledged changes their streams
# were judged on (once per chain of streams that resumed one another, so more than the
# writes), and how many problems the judge found: a change sent wrong, out of order or not
# at all (kg-bench's watchers module has the rules); a compaction notice ends a stream
# rightly. Exits 1 on any
# lost write, stale read, partial read or violation (of the history or of a watch), any wrong
# answer for an untouched key, when a PostgreSQL fault gave anything but 503s or took more
# than 2 s to recover from, or left fewer than 99.9% of the untouched keys' reads answered
# (the cache serves them while the database is away), or when writes were not back within
# 10 s of the PostgreSQL leader's death.
#
#   ./scripts/chaos.sh                 12 s of load per fault at 400 req/s
#   ./scripts/chaos.sh --quick         8 s at 200 req/s (scripts/test.sh runs this)
#   ./scripts/chaos.sh --only pause    one fault (a list: --only kill,pause,pause)
#   ./scripts/chaos.sh --ha [--quick]  the replicated data tier (start.sh --ha, Patroni 4 from
#                                      PyPI) and its faults, through scripts/ha.sh, with a CPU
#                                      hog on one core beside the stack throughout:
#       pg-primary-kill    the Patroni leader's postmaster and Patroni SIGKILLed, started again
#                          once its key has expired; only 503s, writes back within 30 s
#       pg-primary-pause   the same members SIGSTOPped for ttl + 6 s (26 s), then SIGCONT: the
#                          zombie primary, wherever in its loop the pause lands
#       pg-zombie          the zombie primary, deterministic: the leader frozen inside its
#                          leader-key update (tests/ha/sitecustomize.py) until another member
#                          leads and has committed writes, then woken there
#       pg-switchover      patronictl, only 503s, none 10 s after it
#       redis-master-kill  Sentinel promotes the replica; no request may fail
#       etcd-member-kill   etcd's leader SIGKILLed; no request may fail
#       pg-async-kill      negative control: synchronous replication off, the leader's WAL
#                          senders stopped, the leader killed; passes only if the judge finds
#                          the lost writes
#       pg-zombie-control  negative control, on a second stack running Debian's Patroni 3.0.2:
#                          pg-zombie, which must lose the new leader's writes, and the judge
#                          must find them
#                                      each failover drill runs 50 s of load at 200 req/s
#                                      (--quick: 100); the pause drill runs 3 times
#   ./scripts/chaos.sh --ha --repeat N pg-primary-kill, pg-primary-pause and pg-switchover N
#                                      times each (the issue's target: 20)
#   ./scripts/chaos.sh --ha --no-hog   without the CPU hog
#   ./scripts/chaos.sh --hosts [--quick]  the --ha stack laid out as hosts (start.sh --hosts:
#                                      network namespaces, root only) and network faults
#                                      through scripts/net.sh, each held and then healed:
#       pg-leader-isolated       the PostgreSQL leader's host cut from every other host
#       pg-leader-cut-from-dcs   the leader cut from every etcd member, not from the rest
#       node-cut-from-redis      n1 cut from both Redis hosts and the Sentinels
#       node-cut-from-pg         n1 cut from every PostgreSQL host
#       redis-master-isolated    the Redis master cut from the Sentinels, its replica, n2
#                                and n3; n1 still reaches it
#       zone-minority            a zone without the PostgreSQL leader cut from the others
#       flaky-links              5% loss and 20 ms +/- 10 ms on every link
# Uses the ports of scripts/start.sh (stop your own stack first); KG_PROFILE=debug for debug
# binaries. Results: target/chaos/run-*/ and target/chaos/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=12
rate=400
fault=""
ha=0
quick=0
repeat=""
hog=1
hosts=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --ha) ha=1; shift ;;
        --hosts) ha=1 hosts=1; shift ;;
        --only) fault=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --no-hog) hog=0; shift ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
[ -z "$repeat" ] || whole_numbers "$repeat"
script=scripts/node.sh
start_flags=(--no-build)
control=""
if [ "$ha" = 1 ]; then
    # The failover drills stretch their own load over the failover (kg-bench chaos); this is
    # the load of the others.
    duration=30 rate=200
    [ "$quick" = 1 ] && duration=20 rate=100
    script=scripts/ha.sh
    start_flags+=(--ha)
    if [ "$hosts" = 1 ]; then
        [ "$(id -u)" -eq 0 ] || fail "--hosts makes network namespaces: run as root"
        start_flags=(--no-build --hosts)
        [ -n "$fault" ] || fault=pg-leader-isolated,pg-leader-cut-from-dcs,node-cut-from-redis,node-cut-from-pg,redis-master-isolated,zone-minority,flaky-links
    elif [ -z "$fault" ]; then
        # times NAME N: NAME N times, comma-separated.
        times() { local i list=""; for ((i = 0; i < $2; i++)); do list+="${list:+,}$1"; done; echo "$list"; }
        fault="$(times pg-primary-kill "${repeat:-1}"),$(times pg-primary-pause "${repeat:-3}")"
        fault+=",pg-zombie,$(times pg-switchover "${repeat:-1}"),redis-master-kill,etcd-member-kill,pg-async-kill"
        control=pg-zombie-control
    elif [[ ",$fault," == *,pg-zombie-control,* ]]; then
        # The control runs on a stack of its own (Debian's Patroni), after the others.
        control=pg-zombie-control
        fault=$(tr ',' '\n' <<<"$fault" | grep -vx pg-zombie-control | paste -sd, -)
    fi
    # The zombie drills freeze Patroni through its test hook.
    export KG_HA_TEST_HOOKS=1
elif [ "$quick" = 1 ]; then
    duration=8 rate=200
fi

stack_ports_free "the drill"
build_tools
bin=$(kg_bin_dir)

out="$KG_ROOT/target/chaos/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
hog_pid=""
finish() {
    local status=$?
    [ -n "$hog_pid" ] && kill "$hog_pid" 2>/dev/null
    stop_stack
    exit "$status"
}
trap finish EXIT

# stop_stack: resumes whatever a drill left stopped, keeps the stack's logs (nodes,
# PostgreSQL or Patroni, Redis) beside the verdicts, passed or failed (a passing failover's
# timeline, when the leader key went and when a standby streamed again, is in them too), and
# deletes the stack.
stop_stack() {
    [ -n "${KG_STATE_DIR:-}" ] && [ -d "$KG_STATE_DIR" ] || return 0
    [ -s "$KG_RUN/n1.pid" ] && kill -CONT "$(cat "$KG_RUN/n1.pid")" 2>/dev/null
    [ "$ha" = 1 ] && scripts/ha.sh resume all >/dev/null 2>&1
    [ -d "$KG_LOGS" ] && mkdir -p "$out/logs" && cp -r "$KG_LOGS" "$out/logs/${1:-interrupted}" 2>/dev/null
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
}

# drill NAME FAULTS: a stack of its own (NAME in the logs), kg-bench chaos with FAULTS (all of
# them when empty) against it, and the stack deleted; the drills' exit status.
drill() {
    local name=$1 faults=$2 only=() status=0
    KG_STATE_DIR=$(mktemp -d /tmp/keygrid-chaos.XXXXXX)
    chmod 755 "$KG_STATE_DIR" # the stack's PostgreSQL runs as the postgres user
    export KG_STATE_DIR
    source scripts/lib.sh # KG_RUN and friends under the new KG_STATE_DIR
    step "starting the cluster for $name ($KG_PROFILE binaries, state in $KG_STATE_DIR)"
    ./scripts/start.sh "${start_flags[@]}" >"$out/start-$name.log" 2>&1 ||
        { cat "$out/start-$name.log"; fail "the cluster did not start"; }
    [ -n "$faults" ] && only=(--faults "$faults")
    "$bin/kg-bench" chaos --endpoint "http://127.0.0.1:$KG_API_PORT" --node-script "$script" \
        --duration "${duration}s" --rate "$rate" --out "$out/$name" "${only[@]}" || status=$?
    [ "$status" -le 1 ] || fail "kg-bench chaos could not run the drills"
    stop_stack "$name"
    return "$status"
}

if [ "$ha" = 1 ] && [ "$hog" = 1 ]; then
    # A busy loop on one core beside the stack, as on a loaded machine: Patroni's loops,
    # etcd's heartbeats and the zombie's wake-up race against it.
    bash -c 'while :; do :; done' &
    hog_pid=$!
    step "a CPU hog (pid $hog_pid) takes one core for the drills"
fi
status=0
if [ -n "$fault" ] || [ "$ha" = 0 ]; then
    drill drills "$fault" || status=$?
fi
if [ -n "$control" ]; then
    # The zombie drill's negative control needs the Patroni that loses writes.
    KG_HA_PATRONI=debian drill patroni-3.0.2 "$control" || status=$?
fi
# One summary of every verdict of the run.
python3 -c '
import json, sys
verdicts = []
for path in sys.argv[2:]:
    with open(path) as file:
        verdicts += json.load(file)
with open(sys.argv[1], "w") as file:
    json.dump(verdicts, file, indent=2)
' "$out/summary.json" "$out"/*/summary.json 2>/dev/null && cp "$out/summary.json" "$KG_ROOT/target/chaos/latest.json"
exit "$status"
