#!/usr/bin/env bash
# One release kg-server for the single-node benchmarks (bench-txn.sh, bench-history.sh), sourced
# after scripts/lib.sh: `start_bench_node NAME` builds kg-server (KG_PROFILE=debug: a debug build,
# for a smoke run; KG_BENCH_BIN: run that binary instead of building one), creates a fresh
# database in the PostgreSQL at KG_BENCH_DATABASE_URL, starts the node with the Redis cache under
# a key prefix of its own in the Redis at KG_BENCH_REDIS_URL (defaults: the machine's, as for the
# tests), preloads $keys keys, and removes it all on exit. It sets `port`, `bench_url` and
# `workdir`. `wrk_rate LUA` is the requests/s of one wrk run of $seconds at $connections against
# it; it fails on any error.

start_bench_node() {
    local name=$1
    admin_url="${KG_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    local redis_url="${KG_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
    ensure_packages wrk:wrk psql:postgresql-client bc:bc curl:curl
    psql "$admin_url" -qAtc 'select 1' >/dev/null || fail "PostgreSQL is not reachable at $admin_url"
    local build bin
    case "${KG_PROFILE:-release}" in
        release) build=(--release); bin=target/release ;;
        debug | dev) build=(); bin=target/debug ;;
        *) fail "KG_PROFILE must be release or debug, not $KG_PROFILE" ;;
    esac
    local server="$bin/kg-server"
    if [ -n "${KG_BENCH_BIN:-}" ]; then
        # Another build of kg-server, e.g. the one before a change, for a before/after pair.
        server=$KG_BENCH_BIN
        [ -x "$server" ] || fail "KG_BENCH_BIN: no executable at $server"
    else
        step "building kg-server (${KG_PROFILE:-release})"
        cargo build "${build[@]}" --locked -p kg-server
    fi

    bench_database="kg${name//-/_}_$$"
    bench_url="${admin_url%/*}/$bench_database"
    workdir=$(mktemp -d)
    node_pid=""
    trap stop_bench_node EXIT
    psql "$admin_url" -qc "create database $bench_database" >/dev/null

    port=$(free_port)
    step "starting a node on 127.0.0.1:$port with the Redis cache"
    RUST_LOG=warn "$server" --listen "127.0.0.1:$port" --database-url "$bench_url" \
        --node-id "$name" --redis-url "$redis_url" --redis-prefix "kg$name-$$" \
        >"$workdir/node.log" 2>&1 &
    node_pid=$!
    wait_for_status "http://127.0.0.1:$port/api/ready" 200 30 ||
        fail "the node did not start: $(cat "$workdir/node.log")"
    psql "$bench_url" -v ON_ERROR_STOP=1 -v keys="$keys" -qAt -f scripts/bench/preload.sql >/dev/null
}

stop_bench_node() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    psql "$admin_url" -qc "drop database if exists $bench_database with (force)" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}

wrk_rate() {
    KG_KEYS=$keys wrk -t2 -c"$connections" -d"${seconds}s" \
        -s "scripts/bench/$1" "http://127.0.0.1:$port" >"$workdir/wrk.txt" 2>&1
    grep -q 'non-2xx: 0, socket errors: 0' "$workdir/wrk.txt" ||
        fail "$1 got errors: $(cat "$workdir/wrk.txt")
the node's last log lines (its log goes with the run's directory):
$(tail -n 20 "$workdir/node.log")"
    awk '/Requests\/sec/ {print $2}' "$workdir/wrk.txt"
}
