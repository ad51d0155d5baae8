#!/usr/bin/env bash
# Runs the real docker-compose.yml, the way the seed's README starts KeyGrid, through podman's
# Docker-compatible API and Debian's docker-compose, with images built here without a
# registry (scripts/compose-images.sh; the nodes pack binaries built on the host). It checks:
#   - every service's health check reports healthy;
#   - the seed's failover drill word for word, with no token as the seed's README has it
#     (the default stack is open and published on 127.0.0.1 only):
#     `docker-compose stop backend1` -> GET 200, `stop backend2` -> 200, `stop backend3` ->
#     502, `start` all three -> 200; then `kg failover-drill --runtime compose` passes;
#   - the web view on :8080 and the API's Swagger UI on :8000;
#   - data survives `docker-compose down` and `up` (the named volumes);
#   - `restart: unless-stopped` brings back a node whose process is killed;
#   - the secure override (docker-compose.secure.yml): 401 without a token, 200 with one.
# Everything it starts (containers, network, volumes, the API service) is removed at the end,
# even on failure; the images stay in podman's store as the cache of the next run
# (keygrid/*:compose-test and localhost/keygrid-*). scripts/test.sh runs it.
#
#   KG_PROFILE   the cargo profile of the packed binaries (default release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
esac

ensure_packages docker-compose:docker-compose curl:curl
for port in 8000 8001 8002 8003 8080; do
    port_in_use "$port" && fail "port $port is in use; the compose stack publishes 8000-8003 and 8080 (./scripts/stop.sh stops a running stack)"
done
total_start=$SECONDS

prepare_local_compose "${KG_PROFILE:-release}"

work=$(mktemp -d /tmp/keygrid-compose.XXXXXX)
export COMPOSE_FILE=$KG_ROOT/docker-compose.yml COMPOSE_PROJECT_NAME=kgcompose
export KG_IMAGE_TAG=compose-test KG_AUTH_TOKENS=$work/auth-tokens
unset KG_PUBLISH KG_TOKEN # the file's defaults: published on 127.0.0.1, no token
write_auth_tokens "$KG_AUTH_TOKENS"
# The file is bind-mounted as the secure override's secret and read by the image's non-root
# user.
chmod 644 "$KG_AUTH_TOKENS"
token=$(awk '$1 !~ /^#/ && $2 == "write" {print $1; exit}' "$KG_AUTH_TOKENS")
export KG_ENDPOINT=http://127.0.0.1:8000

sock=$work/podman.sock
service_pid=""
health_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$service_pid" ]; then
        docker-compose down --volumes --remove-orphans --timeout 10 >"$work/down.log" 2>&1 ||
            { echo "docker-compose down failed:"; tail -n 20 "$work/down.log"; }
        # Each runs in a session of its own (start_podman_api): its whole group goes.
        [ -n "$health_pid" ] && kill -- "-$health_pid" 2>/dev/null
        kill -- "-$service_pid" 2>/dev/null
        wait 2>/dev/null
    fi
    rm -f deploy/docker/bin/kg-server deploy/docker/bin/kg
    if [ "$status" = 0 ]; then rm -rf "$work"; else echo "logs: $work"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "podman's Docker API on $sock"
start_podman_api "$sock" "$work/podman-service.log"
service_pid=$PODMAN_API_PID
health_pid=$PODMAN_HEALTH_PID

# compose_logs: the services' last log lines to a file, and to the output (CI keeps only that)
# each container's state and its last health checks, with the logs of any not healthy.
compose_logs() {
    docker-compose logs --no-color --tail 40 >"$work/compose.log" 2>&1 || true
    echo "docker-compose logs (last lines per service): $work/compose.log"
    local id name health
    for id in $(docker-compose ps -a -q 2>/dev/null); do
        name=$(podman inspect --format '{{.Name}}' "$id" 2>/dev/null) || continue
        # Diagnostics only: none of these may end the script before it says what failed.
        health=$(podman inspect --format '{{.State.Health.Status}}' "$id" 2>/dev/null) || true
        echo "--- $name: $(podman inspect --format 'status {{.State.Status}}, exit {{.State.ExitCode}}, restarts {{.RestartCount}}, started {{.State.StartedAt}}' "$id"), health ${health:-none}"
        podman inspect --format '{{range .State.Health.Log}}check {{.Start}}: exit {{.ExitCode}} {{.Output}}{{"\n"}}{{end}}' "$id" 2>/dev/null | tail -n 5 || true
        [ "$health" = healthy ] || podman logs --tail 15 "$id" 2>&1 | sed 's/^/    /' || true
    done
    echo "--- nginx's last upstream warnings and errors:"
    docker-compose logs --no-color nginx 2>&1 | grep -E '\[(warn|error|crit)\]' | tail -n 20 || true
}

# wait_healthy SECONDS: until every running service's health check says healthy.
wait_healthy() {
    local deadline=$((SECONDS + $1)) id states
    while :; do
        states=""
        for id in $(docker-compose ps -q); do
            states+="$(podman inspect --format '{{.Name}}={{.State.Health.Status}}' "$id") "
        done
        if [ -n "$states" ] && ! grep -qv '=healthy$' <(tr ' ' '\n' <<<"$states" | sed '/^$/d'); then
            echo "healthy: $states"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            compose_logs
            fail "not healthy after $1 s: $states"
        fi
        sleep 1
    done
}

# status PATH: the API's HTTP status for a GET through nginx, with the bearer token in
# $bearer when it is set.
bearer=""
status() {
    curl -sS -o /dev/null -w '%{http_code}' ${bearer:+-H "Authorization: Bearer $bearer"} "http://127.0.0.1:8000$1" || true
}

# expect_status WANT PATH [SECONDS]: GET PATH until it answers WANT, for at most SECONDS.
expect_status() {
    local want=$1 path=$2 deadline=$((SECONDS + ${3:-0})) got
    while :; do
        got=$(status "$path")
        [ "$got" = "$want" ] && { echo "GET $path -> $got"; return 0; }
        [ "$SECONDS" -ge "$deadline" ] && { compose_logs; fail "GET $path answered $got, not $want"; }
        sleep 0.5
    done
}

step "docker-compose up -d --build"
start=$SECONDS
docker-compose up -d --build >"$work/up.log" 2>&1 || { tail -n 40 "$work/up.log"; compose_logs; fail "docker-compose up failed"; }
wait_healthy 120
echo "up and healthy in $((SECONDS - start)) s"

step "the seed's failover drill, word for word (no token)"
grep -q '127.0.0.1:8000->8000' <<<"$(podman ps --format '{{.Ports}}')" ||
    fail "the open stack's API is not published on 127.0.0.1 only: $(podman ps --format '{{.Names}} {{.Ports}}')"
curl -fsS -X PUT http://127.0.0.1:8000/api/key -d '{"data":{"key":"failover","value":"ok"}}' >/dev/null
docker-compose stop backend1
expect_status 200 "/api/key?key=failover"
docker-compose stop backend2
expect_status 200 "/api/key?key=failover"
docker-compose stop backend3
expect_status 502 "/api/key?key=failover"
docker-compose start backend1 backend2 backend3
# The nodes need a moment to start; nginx answers 502 until one is up.
expect_status 200 "/api/key?key=failover" 30
wait_healthy 60

step "kg failover-drill --runtime compose"
# Under podman on a busy 2-core machine, `docker-compose start` of three containers and their
# nodes' start take up to 9 s before the first GET (5 s is the drill's default bound, made for
# processes): the bound here is about the stack coming back at all; correctness is the
# verdict's. The history stays in $work for a failed run.
deploy/docker/bin/kg failover-drill --runtime compose --max-recovery 15s --keep-history "$work/drill-history.jsonl" ||
    { compose_logs; fail "kg failover-drill failed (its history: $work/drill-history.jsonl)"; }

step "the web view on :8080 and the Swagger UI on :8000"
page=$(curl -fsS http://127.0.0.1:8080/)
grep -q '<div id="app">' <<<"$page" || fail "the web view's page has no app element"
asset=$(grep -o 'src="/assets/[^"]*\.js"' <<<"$page" | head -n 1 | cut -d'"' -f2)
[ -n "$asset" ] || fail "the web view's page names no script"
curl -fsS -o /dev/null "http://127.0.0.1:8080$asset" || fail "the web view's script $asset is not served"
curl -fsS "http://127.0.0.1:8080/api/key?key=failover" | grep -q '"ok"' ||
    fail "the web view's origin does not reach the API"
echo "web view: index and $asset served, /api reachable"
curl -fsS http://127.0.0.1:8000/api/docs/ | grep -qi 'swagger-ui' ||
    fail "the Swagger UI is not served on :8000/api/docs/"
curl -fsS http://127.0.0.1:8000/api/openapi.json | grep -q '"/api/key"' ||
    fail "the OpenAPI document is not served"
echo "Swagger UI and OpenAPI document served"

step "data survives docker-compose down and up (named volumes)"
curl -fsS -X PUT http://127.0.0.1:8000/api/key \
    -d '{"data":{"key":"survives-down","value":"kept"}}' >/dev/null
docker-compose down --timeout 30 >"$work/down-keep.log" 2>&1 || { tail -n 20 "$work/down-keep.log"; fail "docker-compose down failed"; }
docker-compose up -d >"$work/up-again.log" 2>&1 || { tail -n 40 "$work/up-again.log"; fail "docker-compose up (again) failed"; }
wait_healthy 120
value=$(curl -fsS "http://127.0.0.1:8000/api/key?key=survives-down")
grep -q '"kept"' <<<"$value" || fail "the key written before down is gone: $value"
echo "after down and up: $value"

step "restart: unless-stopped brings back a node whose process is killed"
id=$(docker-compose ps -q backend2)
pid=$(podman inspect --format '{{.State.Pid}}' "$id")
restarts=$(podman inspect --format '{{.RestartCount}}' "$id")
kill -KILL "$pid"
deadline=$((SECONDS + 60))
while :; do
    now_pid=$(podman inspect --format '{{.State.Pid}}' "$id")
    now_restarts=$(podman inspect --format '{{.RestartCount}}' "$id")
    [ "$now_pid" != 0 ] && [ "$now_pid" != "$pid" ] && [ "$now_restarts" -gt "$restarts" ] && break
    [ "$SECONDS" -ge "$deadline" ] && { compose_logs; fail "backend2 was not restarted after its process was killed"; }
    sleep 0.5
done
wait_healthy 60
curl -fsS http://127.0.0.1:8002/api/ready >/dev/null || fail "backend2 is not ready after its restart"
echo "backend2 restarted (restart count $restarts -> $now_restarts) and ready"

step "the secure override: bearer tokens on the same data"
# docker-compose 1.x refuses a second `up` of a network it made itself on podman (it compares
# IPAM options podman answers differently): down first; the volumes keep the data.
docker-compose down --timeout 30 >"$work/down-secure.log" 2>&1 || { tail -n 20 "$work/down-secure.log"; fail "docker-compose down failed"; }
export COMPOSE_FILE=$KG_ROOT/docker-compose.yml:$KG_ROOT/docker-compose.secure.yml
docker-compose up -d >"$work/up-secure.log" 2>&1 || { tail -n 40 "$work/up-secure.log"; fail "docker-compose up with the secure override failed"; }
wait_healthy 120
bearer=""
expect_status 401 "/api/key?key=survives-down" 30
bearer=$token
expect_status 200 "/api/key?key=survives-down"
[ "$(curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/api/health)" = 200 ] ||
    fail "/api/health needs no token, yet it refused"
echo "without a token 401, with one 200; /api/health open"

step "the compose stack passed ($((SECONDS - total_start)) s)"
