#!/usr/bin/env bash
# The load tool's own quality bar: kg-bench and wrk drive the same static nginx location
# (`return 200`) on loopback, at the same concurrency, in the same run; prints both rates and
# kg-bench's ratio to wrk (target: at least 0.7).
#
#   ./scripts/bench-tool.sh [--duration 10s] [--connections 64]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

duration=10s
connections=64
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) fail "unknown option '$1'" ;;
    esac
done

ensure_packages nginx:nginx wrk:wrk curl:curl
step "building kg-bench (release)"
cargo build --release --locked -p kg-bench
bench=target/release/kg-bench

dir=$(mktemp -d /tmp/kg-bench-tool.XXXXXX)
port=$(free_port)
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
mkdir -p "$dir/tmp"
cat >"$dir/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 '{"data":{"value":"x"}}'; }
    }
}
CONF
nginx -p "$dir" -c "$dir/nginx.conf"
trap 'nginx -p "$dir" -c "$dir/nginx.conf" -s stop 2>/dev/null; rm -rf "$dir"' EXIT
wait_for_status "http://127.0.0.1:$port/" 200 5 || fail "static nginx did not start"
url="http://127.0.0.1:$port"

step "kg-bench: $connections connections, $duration, GET only"
"$bench" --endpoint "$url" --concurrency "$connections" --duration "$duration" --warmup 1s \
    --mix get=100 --output json >"$dir/kg-bench.json"
# The report's own rate is its one top-level "rps" line; the per-second series are nested deeper.
kg_rps=$(awk '/^  "rps": / { gsub(",", "", $2); printf "%d", $2 }' "$dir/kg-bench.json")

step "wrk: $connections connections, $duration"
wrk_out=$(wrk -t2 -c"$connections" -d"$duration" "$url/api/key?key=bench/00000001")
echo "$wrk_out"
wrk_rps=$(awk '/Requests\/sec/ {print int($2)}' <<<"$wrk_out")

step "result"
[ -n "$kg_rps" ] && [ "${wrk_rps:-0}" -gt 0 ] || fail "no rate from kg-bench ($kg_rps) or wrk ($wrk_rps)"
awk -v kg="$kg_rps" -v wrk="$wrk_rps" \
    'BEGIN { printf "kg-bench %d req/s, wrk %d req/s: ratio %.2f (target 0.70)\n", kg, wrk, kg / wrk }'
