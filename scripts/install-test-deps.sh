#!/usr/bin/env sh
# Installs what the tests need beyond Rust: git, openssl, python3 with pytest (the Python
# fixtures), node and npm (the Node fixtures and the npm peers), bubblewrap (the sandbox
# tests), PostgreSQL 15 (the store's tests) and Debian's chromium (the admin UI's browser test, driven by playwright-core). Quiet, idempotent, never prompts (works with CI=true and no stdin). A tool that
# cannot be installed is reported; the tests that need it then fail, naming it (they skip
# only outside CI with BATON_ALLOW_SKIP=1), and under CI=true this script fails too.
set -u

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
missing=""

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

# apt_install PACKAGE...: with apt-get, as root or through sudo; updates the index once if needed.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq "$@" </dev/null >/dev/null 2>&1 \
        || { as_root apt-get update -qq </dev/null >/dev/null 2>&1 \
            && as_root apt-get install -y -qq "$@" </dev/null >/dev/null 2>&1; }
}

for tool in git:git openssl:openssl python3:python3 node:nodejs npm:npm; do
    cmd="${tool%%:*}"
    package="${tool##*:}"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        log "installing $package"
        apt_install "$package" || { log "could not install $package"; missing="$missing $cmd"; }
    fi
done

if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import pytest' >/dev/null 2>&1; then
    log "installing pytest"
    python3 -m pip install --quiet --disable-pip-version-check --no-input pytest </dev/null >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --no-input --user pytest </dev/null >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --no-input --break-system-packages pytest </dev/null >/dev/null 2>&1 \
        || apt_install python3-pytest \
        || { log "could not install pytest"; missing="$missing pytest"; }
fi

if ! command -v bwrap >/dev/null 2>&1; then
    log "installing bubblewrap"
    apt_install bubblewrap || { log "could not install bubblewrap"; missing="$missing bwrap"; }
fi

# PostgreSQL 15 for the store's tests (scripts/postgres.sh starts a throwaway cluster) and
# psql, with which the tests read what the store wrote.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    log "installing postgresql-15"
    apt_install postgresql-15 postgresql-client-15 || { log "could not install postgresql-15"; missing="$missing postgresql"; }
fi

# The browser the admin UI test drives: Debian's package, never a download by playwright.
if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium"
    apt_install chromium || { log "could not install chromium"; missing="$missing chromium"; }
fi

if [ -n "$missing" ]; then
    log "missing:$missing; the tests that need them will fail"
    [ "${CI:-}" = "true" ] && exit 1
fi
exit 0
