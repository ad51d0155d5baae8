#!/bin/sh
# The local redis image's entrypoint (deploy/docker/bases/Dockerfile): as the public redis
# image's, `redis-server ARGS` runs as the redis user in /data with protected mode off (the
# container's network is the boundary; Redis's protected mode refuses every other container).
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data
        exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no "$@"
    fi
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
