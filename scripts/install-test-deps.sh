#!/usr/bin/env sh
# Installs what the workspace and verification tests need beyond Rust and git:
# pytest (the Python fixtures) and bubblewrap (the sandbox tests). Quiet, idempotent,
# never prompts (works with CI=true and no stdin); a tool that cannot be installed is
# reported and the tests that need it skip with a message.
set -u

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

if ! command -v git >/dev/null 2>&1; then
    log "git is missing: the workspace tests need it"
fi

if command -v python3 >/dev/null 2>&1; then
    if ! python3 -c 'import pytest' >/dev/null 2>&1; then
        log "installing pytest"
        python3 -m pip install --quiet --disable-pip-version-check --no-input pytest </dev/null >/dev/null 2>&1 \
            || python3 -m pip install --quiet --disable-pip-version-check --no-input --user pytest </dev/null >/dev/null 2>&1 \
            || python3 -m pip install --quiet --disable-pip-version-check --no-input --break-system-packages pytest </dev/null >/dev/null 2>&1 \
            || log "could not install pytest; the pytest tests will skip"
    fi
else
    log "python3 is missing; the Python tests will skip"
fi

if ! command -v bwrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        log "installing bubblewrap"
        export DEBIAN_FRONTEND=noninteractive
        { as_root apt-get install -y -qq bubblewrap </dev/null >/dev/null 2>&1 \
            || { as_root apt-get update -qq </dev/null >/dev/null 2>&1 \
                && as_root apt-get install -y -qq bubblewrap </dev/null >/dev/null 2>&1; }; } \
            || log "could not install bubblewrap; the sandbox tests will skip"
    else
        log "bwrap is missing and apt-get is not available; the sandbox tests will skip"
    fi
fi

exit 0
