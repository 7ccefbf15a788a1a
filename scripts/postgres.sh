#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: `start` initialises one in a new temporary
# directory (as the `postgres` user, which initdb requires when run by root), listening on
# 127.0.0.1 only on a free port, and prints `export BATON_TEST_DATABASE_URL=…` and
# `export BATON_TEST_PG_DIR=…` for the caller to eval; `stop DIR` stops it and removes it.
# Takes about 3 s. Uses Debian's PostgreSQL 15 (`apt-get install postgresql-15`).
set -euo pipefail

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

bindir() {
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# as_owner CMD...: runs CMD as the cluster's owner (postgres when we are root, else ourselves).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
start)
    bin=$(bindir) || {
        log "PostgreSQL is not installed: install Debian's postgresql-15 (apt-get install -y postgresql-15), or set BATON_TEST_DATABASE_URL to a database the tests may create databases in"
        exit 1
    }
    dir=$(mktemp -d /tmp/baton-pg.XXXXXX)
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { log "the postgres user is missing (install postgresql-15)"; exit 1; }
        chown postgres: "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on" start >/dev/null \
        || { log "the server did not start:"; cat "$dir/server.log" >&2; exit 1; }
    echo "export BATON_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export BATON_TEST_PG_DIR=$dir"
    ;;
stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bin=$(bindir) || exit 0
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
