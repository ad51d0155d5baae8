#!/usr/bin/env bash
# Helpers shared by the scripts: step banners, failing loudly, and installing missing
# Debian packages (the scripts install what they need themselves, so a fresh machine works).

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The newest PostgreSQL server binaries (initdb, pg_ctl) from Debian's packages.
pg_bin_dir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || return 1
    printf '%s\n' "$dir"
}

# ensure_packages COMMAND:PACKAGE ...: installs PACKAGE with apt-get when COMMAND is missing.
# initdb is looked up under /usr/lib/postgresql, where Debian keeps it off the PATH.
ensure_packages() {
    local missing=() pair command package
    for pair in "$@"; do
        command=${pair%%:*}
        package=${pair#*:}
        if [ "$command" = initdb ]; then
            pg_bin_dir >/dev/null && continue
        elif command -v "$command" >/dev/null 2>&1; then
            continue
        fi
        missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        fail "missing packages: ${missing[*]} (run as root, or apt-get install them)"
    fi
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
