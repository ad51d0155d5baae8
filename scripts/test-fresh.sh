#!/usr/bin/env bash
# Checks the README's promise on a fresh Debian machine: in a new Debian 12 (bookworm)
# container with nothing installed but Rust, `./scripts/start.sh` and then `./scripts/test.sh`
# must pass from a clean clone of this checkout's HEAD, run as root from /root/keygrid, where
# a newcomer on a fresh VM clones it (/root is mode 700: the postgres user cannot enter it).
# Everything else they need (PostgreSQL, Redis, nginx, Node.js, Chromium, Patroni from PyPI,
# ...) they must install themselves. It prints how long each command took, cold. It is not
# part of test.sh: it takes long.
#
#   ./scripts/test-fresh.sh            build the base image if needed, then run the check
#   ./scripts/test-fresh.sh --shell    a shell in a fresh container instead of the check
#
# The container is podman's (Debian's package), made from a debootstrap'd bookworm root file
# system that is cached as the image localhost/keygrid-debian:bookworm. The host's Rust
# toolchain (~/.rustup, ~/.cargo/bin) is mounted read-only; cargo's registry cache starts
# empty. The container shares the host's network, so the stack's ports (8000-8003, 8080,
# 5442, 6389) must be free, as for test.sh itself, and so must the compose stack's subnet.
# The host's CA bundle is handed to cargo, npm and pip in case the registries are reached
# through a proxy with its own CA.
#
#   KG_FRESH_DIR      where the runs' logs live (default .keygrid/fresh)
#   KG_DEBIAN_MIRROR  the Debian mirror for debootstrap (default: the host's, else deb.debian.org)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

mode=check
case "${1:-}" in
    "") ;;
    --shell) mode=shell ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
esac

ensure_packages debootstrap:debootstrap git:git
use_podman
fresh_dir=$(realpath -m "${KG_FRESH_DIR:-$KG_ROOT/.keygrid/fresh}")
image=$KG_DEBIAN_IMAGE
mkdir -p "$fresh_dir"

ensure_debian_image "$image" "$KG_STATE_DIR/debian"

ca_bundle=""
for candidate in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$candidate" ] && [ -r "$candidate" ] && { ca_bundle=$candidate; break; }
done

run_dir=$(mktemp -d "$fresh_dir/run.XXXXXX")
mkdir -p "$run_dir/containers" "$run_dir/logs"
step "a clean clone of HEAD ($(git rev-parse --short HEAD)) in $run_dir/src"
git clone -q --no-local "$KG_ROOT" "$run_dir/src"

# Privileged: test.sh runs the compose stack (scripts/test-compose.sh) through a podman of its
# own inside this container. That podman's store is a host directory: its overlay driver
# cannot stack on the container's own overlay file system.
args=(run --rm --network host --privileged
    --name "keygrid-fresh-$$"
    -v "$HOME/.rustup:/root/.rustup:ro" -v "$HOME/.cargo/bin:/opt/cargo-bin:ro"
    -v "$run_dir/src:/mnt/origin:ro" -v "$run_dir/logs:/logs" -w /root
    -v "$run_dir/containers:/var/lib/containers"
    -e RUSTUP_HOME=/root/.rustup -e CARGO_HOME=/root/.cargo -e RUSTUP_AUTO_INSTALL=0
    -e PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    -e CARGO_TERM_COLOR=never)
if [ -n "$ca_bundle" ]; then
    args+=(-v "$ca_bundle:/opt/host-ca.crt:ro" -e CARGO_HTTP_CAINFO=/opt/host-ca.crt
        -e NODE_EXTRA_CA_CERTS=/opt/host-ca.crt -e npm_config_cafile=/opt/host-ca.crt
        -e PIP_CERT=/opt/host-ca.crt -e SSL_CERT_FILE=/opt/host-ca.crt)
fi
cleanup() {
    podman rm -f "keygrid-fresh-$$" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ "$mode" = shell ]; then
    tty=()
    [ -t 0 ] && tty=(-it)
    exec podman "${args[@]}" "${tty[@]}" "$image" bash
fi

# Each command's time, cold: the first start.sh pays for every package and the release build;
# test.sh then pays for the debug build and its own tools.
step "in a fresh bookworm container, as root in /root/keygrid: ./scripts/start.sh, ./scripts/stop.sh, ./scripts/test.sh"
status=0
podman "${args[@]}" "$image" bash -c '
    set -e
    timed() {
        local start=$SECONDS
        "$@" >"/logs/$(basename "$1").log" 2>&1 || {
            echo "FAILED after $((SECONDS - start)) s: $* (last lines of its log:)"
            tail -n 40 "/logs/$(basename "$1").log"
            return 1
        }
        echo "passed in $((SECONDS - start)) s: $*"
    }
    # Where a newcomer clones it: under /root, which only root may enter.
    chmod 700 /root
    cp -a /mnt/origin /root/keygrid
    cd /root/keygrid
    [ "$(id -u)" = 0 ] && [ "$(stat -c %a /root)" = 700 ] || { echo "not root in a closed /root"; exit 1; }
    echo "checkout: $PWD (/root is mode $(stat -c %a /root))"
    echo "node before: $(command -v node || echo none), postgres before: $(ls /usr/lib/postgresql 2>/dev/null || echo none)"
    timed ./scripts/start.sh
    curl -fsS localhost:8000/api/health
    echo
    ./scripts/stop.sh >/dev/null
    timed ./scripts/test.sh
    echo "node used: $(node --version) from $(dpkg -S "$(command -v node)" | cut -d: -f1)"
' 2>&1 | tee "$run_dir/result.txt" || status=$?
cp "$run_dir"/logs/*.sh.log "$run_dir/" 2>/dev/null || true
# The container's clone held two cargo target directories (several GB) and went with it; the
# store holds the compose images; the logs are what is kept.
rm -rf "$run_dir/src" "$run_dir/containers"
echo "logs: $run_dir"
[ "$status" = 0 ] || fail "the fresh-machine check failed"
step "the README's two commands pass on a fresh Debian 12"
