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
#
# Prints per fault: requests, errors by status, operations with an unknown outcome,
# acknowledged writes, lost acknowledged writes (checked against the database's rows),
# stale reads, reads that saw part of a transfer, linearizability violations, and the time
# from the repair to the last failed operation. Beside the load, one client reads 20 keys that
# no write touches, every 20 ms: UNTOUCHED is how many of its reads from the fault to the last
# failed operation (or the first write acknowledged again, if later) were answered. WRITE GAP
# is the longest stretch after the repair with no acknowledged write. Exits 1 on any lost
# write, stale read, partial read or violation, any wrong answer for an untouched key, when a
# PostgreSQL fault gave anything but 503s or took more than 2 s to recover from, or left fewer
# than 99.9% of the untouched keys' reads answered (the cache serves them while the database
# is away), or when writes were not back within 10 s of the PostgreSQL leader's death.
#
#   ./scripts/chaos.sh                 12 s of load per fault at 400 req/s
#   ./scripts/chaos.sh --quick         8 s at 200 req/s (scripts/test.sh runs this)
#   ./scripts/chaos.sh --only pause    one fault
#   ./scripts/chaos.sh --ha [--quick]  the replicated data tier (start.sh --ha) and its faults,
#                                      through scripts/ha.sh: pg-primary-kill (the Patroni
#                                      leader's postmaster and Patroni SIGKILLed; writes back
#                                      within 15 s, only 503s), pg-primary-pause (the same
#                                      members SIGSTOPped for 10 s, past Patroni's ttl: the
#                                      zombie primary), pg-switchover (patronictl, only 503s,
#                                      none 10 s after it), redis-master-kill (Sentinel promotes
#                                      the replica; no request may fail), etcd-member-kill
#                                      (etcd's leader SIGKILLed; no request may fail), and last
#                                      pg-async-kill, the negative control (synchronous
#                                      replication off, the leader's WAL senders stopped, the
#                                      leader killed: passes only if the judge finds the lost
#                                      writes); 30 s of load at 200 req/s per fault, --quick
#                                      20 s at 100
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
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --ha) ha=1; shift ;;
        --only) fault=$2; shift 2 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done
script=scripts/node.sh
start_flags=(--no-build)
if [ "$ha" = 1 ]; then
    # A failover takes Patroni's ttl: the load must outlast it by a margin.
    duration=30 rate=200
    [ "$quick" = 1 ] && duration=20 rate=100
    script=scripts/ha.sh
    start_flags+=(--ha)
    [ -n "$fault" ] || fault=pg-primary-kill,pg-primary-pause,pg-switchover,redis-master-kill,etcd-member-kill,pg-async-kill
elif [ "$quick" = 1 ]; then
    duration=8 rate=200
fi

stack_ports_free "the drill"
build_tools
bin=$(kg_bin_dir)

KG_STATE_DIR=$(mktemp -d /tmp/keygrid-chaos.XXXXXX)
chmod 755 "$KG_STATE_DIR" # the stack's PostgreSQL runs as the postgres user
export KG_STATE_DIR
out="$KG_ROOT/target/chaos/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
finish() {
    local status=$?
    # A paused node must not outlive the drill stopped.
    [ -s "$KG_RUN/n1.pid" ] && kill -CONT "$(cat "$KG_RUN/n1.pid")" 2>/dev/null
    [ "$ha" = 1 ] && scripts/ha.sh resume all >/dev/null 2>&1
    # The stack's logs (nodes, PostgreSQL or Patroni, Redis) outlive the drill, passed or
    # failed: a passing failover's timeline (when the leader key went, when a standby
    # streamed again) is in them too.
    [ -d "$KG_LOGS" ] && cp -r "$KG_LOGS" "$out/logs" 2>/dev/null
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT
step "starting the cluster ($KG_PROFILE binaries, state in $KG_STATE_DIR)"
./scripts/start.sh "${start_flags[@]}" >"$out/start.log" 2>&1 || { cat "$out/start.log"; fail "the cluster did not start"; }
source scripts/lib.sh # KG_RUN and friends under the new KG_STATE_DIR

only=()
[ -n "$fault" ] && only=(--faults "$fault")
status=0
"$bin/kg-bench" chaos --endpoint "http://127.0.0.1:$KG_API_PORT" --node-script "$script" \
    --duration "${duration}s" --rate "$rate" --out "$out" "${only[@]}" || status=$?
[ "$status" -le 1 ] || fail "kg-bench chaos could not run the drills"
[ -f "$out/summary.json" ] && cp "$out/summary.json" "$KG_ROOT/target/chaos/latest.json"
exit "$status"
