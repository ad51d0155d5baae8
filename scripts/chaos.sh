#!/usr/bin/env bash
# Fault drills against the local cluster (a stack of its own from scripts/start.sh, with a
# throwaway PostgreSQL and Redis). Each fault runs under kg-bench load through nginx: 8
# sequential clients doing GETs, unique-value PUTs and compare-and-swaps on 10 keys, every
# operation recorded with the revision the node answered. Afterwards the drill reads every
# key back from PostgreSQL and judges the run with `kg-bench judge`:
#
#   kill          SIGKILL n1 (writes go to n1 first), start it again 3 s later
#   pause         SIGSTOP n1 for 7 s, past nginx's 5 s read timeout, then SIGCONT
#   redis-restart redis-server shut down and started again (empty: persistence is off)
#   redis-flush   FLUSHALL: the cache and the epoch gone at once
#   pg-restart    pg_ctl restart -m immediate (a crash, then recovery at once)
#   pg-down       pg_ctl stop -m immediate, 3 s down, then started again
#
# Prints per fault: requests, errors by status, operations with an unknown outcome,
# acknowledged writes, lost acknowledged writes (checked against the database's rows),
# stale reads, linearizability violations, and the time from the repair to the last failed
# operation. Exits 1 on any lost write, stale read or violation, and when a PostgreSQL fault
# gave anything but 503s or took more than 2 s to recover from.
#
#   ./scripts/chaos.sh                 12 s of load per fault at 400 req/s
#   ./scripts/chaos.sh --quick         8 s at 200 req/s (scripts/test.sh runs this)
#   ./scripts/chaos.sh --only pause    one fault
# Uses the ports of scripts/start.sh (stop your own stack first); KG_PROFILE=debug for debug
# binaries. Results: target/chaos/run-*/ and target/chaos/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=12
rate=400
faults=(kill pause redis-restart redis-flush pg-restart pg-down)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) duration=8; rate=200; shift ;;
        --only) faults=("$2"); shift 2 ;;
        -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

now() { date +%s.%N; }
# seconds A B: B - A, for two readings of now().
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

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
            # Redis alone: start.sh would also reload nginx, which drops keepalive connections.
            start_redis
            ;;
        redis-flush)
            redis-cli -p "$KG_REDIS_PORT" flushall >/dev/null
            ;;
        pg-restart)
            "${AS_POSTGRES[@]}" "$pg_bin/pg_ctl" -D "$KG_STATE_DIR/postgres" -m immediate -w -t 60 \
                -l "$KG_LOGS/postgres.log" -o "-p $KG_PG_PORT" restart >>"$out/postgres.log" 2>&1
            ;;
        pg-down)
            "${AS_POSTGRES[@]}" "$pg_bin/pg_ctl" -D "$KG_STATE_DIR/postgres" -m immediate -w -t 60 \
                stop >>"$out/postgres.log" 2>&1
            sleep 3
            "${AS_POSTGRES[@]}" "$pg_bin/pg_ctl" -D "$KG_STATE_DIR/postgres" -w -t 60 \
                -l "$KG_LOGS/postgres.log" -o "-p $KG_PG_PORT" start >>"$out/postgres.log" 2>&1
            ;;
        *) fail "unknown fault '$1' (the faults are ${faults[*]})" ;;
    esac
}

status=0
for fault in "${faults[@]}"; do
    step "$fault: ${duration}s of load at $rate req/s, fault injected after 2 s"
    started=$(now)
    "$bin/kg-bench" --endpoint "http://127.0.0.1:$KG_API_PORT" --concurrency 8 --rate "$rate" \
        --duration "${duration}s" --keys 10 --mix get=40,put=40,cas=20 --timeout 10s \
        --record "$out/$fault.jsonl" --output json >"$out/$fault.json" &
    bench=$!
    sleep 2
    inject "$fault"
    fault_end=$(now)
    wait "$bench" || fail "kg-bench failed during $fault"
    # What the database kept, read back after the load: every key's value and revision.
    psql "$KG_DATABASE_URL" -v ON_ERROR_STOP=1 -qAt -c "
        SELECT coalesce(json_object_agg(key, json_build_object(
                   'value', convert_from(value, 'UTF8'), 'revision', mod_revision)), '{}')
        FROM kg_keys WHERE key LIKE 'bench/%'" >"$out/$fault.rows.json" ||
        fail "cannot read the keys back from PostgreSQL after $fault"
    # The PostgreSQL faults must fail cleanly (503, nothing else) and briefly.
    bar=()
    case "$fault" in pg-*) bar=(--allow-errors status_503 --max-recovery 2s) ;; esac
    verdict=0
    "$bin/kg-bench" judge "$out/$fault.jsonl" --name "$fault" --state "$out/$fault.rows.json" \
        --report "$out/$fault.json" --repaired-at "$(seconds "$started" "$fault_end")" "${bar[@]}" \
        --save "$out/$fault.verdict.json" || verdict=$?
    [ "$verdict" -le 1 ] || fail "kg-bench judge failed on $fault"
    [ "$verdict" -eq 0 ] || status=1
done

# Every fault's verdict in one JSON array.
{
    printf '['
    sep=""
    for fault in "${faults[@]}"; do
        printf '%s' "$sep"
        cat "$out/$fault.verdict.json"
        sep=","
    done
    printf ']\n'
} >"$out/summary.json"
cp "$out/summary.json" "$KG_ROOT/target/chaos/latest.json"
echo "histories, reports, rows and verdicts in $out"
exit "$status"
