#!/usr/bin/env bash
# Checks that switching between the single-server stack and the --ha stack keeps each one's
# data (issue 46, item 11), the way a user does it, with the default state directories: in a
# copy of the checkout's scripts (binaries from this checkout's target/), start.sh, a key
# written, stop.sh, start.sh --ha, a key of its own, start.sh refused while --ha runs, and
# back: each stack finds its own key again. scripts/test.sh runs it; it needs the stack's
# ports free, and removes everything it made.
#
#   KG_PROFILE   the binaries' profile (default debug)
set -euo pipefail
cd "$(dirname "$0")/.."
export KG_PROFILE=${KG_PROFILE:-debug}
source scripts/lib.sh

case "${1:-}" in
    "") ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
esac
unset KG_STATE_DIR
stack_ports_free "the stack-switch check"
[ -x "target/$KG_PROFILE/kg-server" ] || fail "target/$KG_PROFILE/kg-server is missing; build it first"

# A checkout of its own, so that its default directories (.keygrid, .keygrid-ha) are the
# test's; under /tmp, which the postgres user can reach.
home=$(mktemp -d /tmp/keygrid-stacks.XXXXXX)
chmod 755 "$home"
cp -r scripts nginx deploy tests "$home/"
ln -s "$KG_ROOT/target" "$home/target"
# The --ha stack's Patroni: this checkout's, installed once.
export KG_TOOLS_DIR="$KG_ROOT/.keygrid"
finish() {
    local status=$?
    "$home/scripts/stop.sh" --purge >/dev/null 2>&1 || true
    "$home/scripts/stop.sh" --ha --purge >/dev/null 2>&1 || true
    if [ "$status" -ne 0 ]; then
        for log in "$home"/.keygrid*/logs/{n1,nginx-error}.log; do
            [ -f "$log" ] && { echo "--- tail of $log"; tail -n 20 "$log"; }
        done
    fi
    rm -rf "$home"
    exit "$status"
}
trap finish EXIT

kg=("$KG_ROOT/target/$KG_PROFILE/kg" --endpoint "http://127.0.0.1:$KG_API_PORT")
# expect_value KEY VALUE: the stack answers KEY with VALUE.
expect_value() {
    local got
    got=$("${kg[@]}" get "$1" -o raw) || fail "GET $1 failed on the running stack"
    [ "$got" = "$2" ] || fail "GET $1 answered '$got', not '$2'"
    echo "GET $1 -> $got"
}

step "the single-server stack: a key of its own"
"$home/scripts/start.sh" --no-build >"$home/start-1.log" 2>&1 || { tail -n 30 "$home/start-1.log"; fail "start.sh failed"; }
grep -q "^stack: single-server, state in $home/.keygrid$" "$home/start-1.log" ||
    fail "start.sh did not say which stack it started: $(grep '^stack:' "$home/start-1.log")"
"${kg[@]}" put switch single >/dev/null
expect_value switch single
"$home/scripts/stop.sh" >/dev/null

step "the --ha stack after it: started without a purge, a key of its own"
"$home/scripts/start.sh" --ha --no-build >"$home/start-2.log" 2>&1 || { tail -n 30 "$home/start-2.log"; fail "start.sh --ha failed after the single-server stack"; }
grep -q "^stack: --ha (replicated data tier), state in $home/.keygrid-ha$" "$home/start-2.log" ||
    fail "start.sh --ha did not say which stack it started: $(grep '^stack:' "$home/start-2.log")"
"${kg[@]}" get switch >/dev/null 2>&1 && fail "the --ha stack holds the single-server stack's key"
"${kg[@]}" put switch ha >/dev/null
expect_value switch ha

step "start.sh refuses the single-server stack while --ha runs, and says why"
if "$home/scripts/start.sh" --no-build >"$home/start-3.log" 2>&1; then
    fail "start.sh started the single-server stack while the --ha stack ran"
fi
grep -q "the --ha stack is running (state in $home/.keygrid-ha); stop it first" "$home/start-3.log" ||
    fail "start.sh's refusal does not name the running stack: $(tail -n 3 "$home/start-3.log")"
echo "refused: $(grep 'error:' "$home/start-3.log")"

step "back and forth: each stack finds its own key"
"$home/scripts/stop.sh" >/dev/null
"$home/scripts/start.sh" --no-build >/dev/null 2>&1 || fail "start.sh failed after the --ha stack"
expect_value switch single
"$home/scripts/stop.sh" >/dev/null
"$home/scripts/start.sh" --ha --no-build >/dev/null 2>&1 || fail "start.sh --ha failed the second time"
expect_value switch ha
step "switching stacks kept both stacks' data"
