#!/usr/bin/env bash
# Builds, with podman, local stand-ins for the public images that docker-compose.yml and the
# Dockerfile start from, for a machine that reaches no container registry: a Debian 12 base
# from debootstrap, and postgres, redis, nginx and node images on it from Debian's packages
# (deploy/docker/bases/Dockerfile). It prints the variables that point the compose file at
# them, so that
#
#   eval "$(./scripts/compose-images.sh)"
#
# makes `docker-compose up --build` work here. The base root file system is made once and the
# images are rebuilt from podman's layer cache, so a second run costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
esac

# Progress goes to stderr: stdout carries only the variables.
{
    use_podman
    ensure_debian_image "$KG_DEBIAN_IMAGE" "$KG_STATE_DIR/debian"
    mkdir -p "$KG_STATE_DIR/logs"
    # The node image trusts the host's CAs (see deploy/docker/bases/Dockerfile); an empty
    # file where the host has no bundle.
    ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    if [ -r "$ca_bundle" ]; then cp "$ca_bundle" deploy/docker/bases/host-ca.crt; else : >deploy/docker/bases/host-ca.crt; fi
    for target in postgres redis nginx node; do
        log="$KG_STATE_DIR/logs/image-$target.log"
        start=$SECONDS
        podman build --layers --target "$target" --build-arg "DEBIAN_IMAGE=$KG_DEBIAN_IMAGE" \
            -t "localhost/keygrid-base-$target:bookworm" deploy/docker/bases >"$log" 2>&1 ||
            { tail -n 30 "$log"; fail "building the local $target image failed; see $log"; }
        echo "image localhost/keygrid-base-$target:bookworm ready ($((SECONDS - start)) s)"
    done
} >&2

cat <<VARS
export CONTAINERS_CONF=$CONTAINERS_CONF
export KG_BASE_DEBIAN=$KG_DEBIAN_IMAGE
export KG_BASE_POSTGRES=localhost/keygrid-base-postgres:bookworm
export KG_BASE_REDIS=localhost/keygrid-base-redis:bookworm
export KG_BASE_NGINX=localhost/keygrid-base-nginx:bookworm
export KG_BASE_NODE=localhost/keygrid-base-node:bookworm
export KG_BINARIES=prebuilt
VARS
