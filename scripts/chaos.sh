#!/usr/bin/env bash
# Fault drills against the local cluster (a stack of its own from scripts/start.sh, with a
# throwaway PostgreSQL and Redis). Each fault runs under kg-bench load through nginx: 8
# sequential clients doing GETs and unique-value PUTs on 10 keys, every operation recorded;
# the history is then checked for linearizability per key (kg-bench check), which is where a
# lost acknowledged write or a stale read would show: the load runs on past the recovery, so
# later reads see what the database kept.
#
#   kill          SIGKILL n1 (writes go to n1 first), start it again 3 s later
#   pause         SIGSTOP n1 for 7 s, past nginx's 5 s read timeout, then SIGCONT
#   redis-restart redis-server shut down and started again
#   redis-flush   FLUSHALL: the cache and the epoch gone at once
#   pg-restart    pg_ctl restart -m immediate (a crash, then recovery)
#
# Prints: fault, requests, errors by status, writes with unknown outcome, linearizability
# violations, and the time from the end of the fault to the last error.
#
#   ./scripts/chaos.sh                 12 s of load per fault at 400 req/s
#   ./scripts/chaos.sh --quick         8 s at 200 req/s (scripts/test.sh runs this)
#   ./scripts/chaos.sh --only pause    one fault
# Uses the ports of scripts/start.sh (stop your own stack first); KG_PROFILE=debug for debug
# binaries. Exits 1 when any history is not linearizable or the search gave up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=12
rate=400
faults=(kill pause redis-restart redis-flush pg-restart)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) duration=8; rate=200; shift ;;
        --only) faults=("$2"); shift 2 ;;
        -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$1' (try --help)" ;;
    esac
done

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
    ./scripts/stop.sh --purge >/dev/null 2>&1 || true
    exit "$status"
}
trap finish EXIT
step "starting the cluster ($KG_PROFILE binaries, state in $KG_STATE_DIR)"
./scripts/start.sh --no-build >"$out/start.log" 2>&1 || { cat "$out/start.log"; fail "the cluster did not start"; }
source scripts/lib.sh # KG_RUN and friends under the new KG_STATE_DIR
pg_bin=$(pg_bin_dir)
as_postgres=()
[ "$(id -u)" -eq 0 ] && as_postgres=(runuser -u postgres --)

now() { date +%s.%N; }

# inject FAULT: breaks something, waits, repairs it.
inject() {
    case "$1" in
        kill)
            scripts/node.sh kill n1 >/dev/null
            sleep 3
            scripts/node.sh start n1 >/dev/null
            ;;
        pause)
            local pid
            pid=$(cat "$KG_RUN/n1.pid")
            kill -STOP "$pid"
            sleep 7
            kill -CONT "$pid"
            ;;
        redis-restart)
            redis-cli -p "$KG_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
            while pid_alive "$KG_RUN/redis.pid"; do sleep 0.05; done
            sleep 1
            # start.sh starts what is missing (Redis) and leaves the rest alone.
            ./scripts/start.sh --no-build >>"$out/start.log" 2>&1
            ;;
        redis-flush)
            redis-cli -p "$KG_REDIS_PORT" flushall >/dev/null
            ;;
        pg-restart)
            "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$KG_STATE_DIR/postgres" -m immediate -w -t 60 \
                restart >>"$out/postgres-restart.log" 2>&1
            ;;
        *) fail "unknown fault '$1' (the faults are ${faults[*]})" ;;
    esac
}

status=0
for fault in "${faults[@]}"; do
    step "$fault: ${duration}s of load at $rate req/s, fault injected after 2 s"
    started=$(now)
    "$bin/kg-bench" --endpoint "http://127.0.0.1:$KG_API_PORT" --concurrency 8 --rate "$rate" \
        --duration "${duration}s" --keys 10 --mix get=50,put=50 --timeout 10s \
        --record "$out/$fault.jsonl" --output json >"$out/$fault.json" &
    bench=$!
    sleep 2
    fault_start=$(now)
    inject "$fault"
    fault_end=$(now)
    wait "$bench" || fail "kg-bench failed during $fault"
    echo "{\"fault_start_s\": $(echo "$fault_start - $started" | bc), \"fault_end_s\": $(echo "$fault_end - $started" | bc)}" \
        >"$out/$fault.times.json"
    check_status=0
    "$bin/kg-bench" check "$out/$fault.jsonl" --output json >"$out/$fault.check.json" || check_status=$?
    [ "$check_status" -le 1 ] || [ "$check_status" -eq 3 ] || fail "kg-bench check failed on $fault"
    [ "$check_status" -eq 0 ] || status=1
done

python3 - "$out" "${faults[@]}" <<'PY'
import json, sys

out, faults = sys.argv[1], sys.argv[2:]
print(f"\n{'fault':<14} {'requests':>8} {'errors':<28} {'unknown':>7} {'violations':>10} {'recovered':>10}")
for fault in faults:
    report = json.load(open(f"{out}/{fault}.json"))
    times = json.load(open(f"{out}/{fault}.times.json"))
    checks = json.load(open(f"{out}/{fault}.check.json"))
    history = [json.loads(line) for line in open(f"{out}/{fault}.jsonl")]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(report["errors_by_kind"].items())) or "none"
    unknown = sum(1 for h in history if h["outcome"] == "unknown")
    violations = sum(1 for c in checks if c["verdict"] == "violation")
    undecided = sum(1 for c in checks if c["verdict"] == "unknown")
    # The last failed operation's completion, after the fault was repaired.
    failed = [h["complete_us"] / 1e6 for h in history if h["outcome"] != "ok"
              and not (h["op"] == "delete")]
    last = max(failed, default=None)
    recovered = "no errors" if last is None else f"{max(0.0, last - times['fault_end_s']):.2f} s"
    verdict = f"{violations}" + (f" (+{undecided} undecided)" if undecided else "")
    print(f"{fault:<14} {report['requests']:>8} {errors:<28} {unknown:>7} {verdict:>10} {recovered:>10}")
print(f"\nhistories, reports and verdicts in {out}")
PY
exit "$status"
