#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: installs what the tests use
# as peers, then runs every test of the workspace. Works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test peers (each install script is idempotent and quiet when already done). The system
# tools first: the npm peers need node and npm. A test whose peer is missing fails.
bash scripts/install-test-deps.sh
bash scripts/install-test-deps-npm.sh

# A throwaway PostgreSQL cluster for the store's tests (about 3 s), stopped and removed on exit;
# a server given in BATON_TEST_DATABASE_URL is used instead. Without one, the PostgreSQL tests
# fail, naming what is missing.
if [ -z "${BATON_TEST_DATABASE_URL:-}" ]; then
    if pg_env=$(bash scripts/postgres.sh start); then
        eval "$pg_env"
        trap 'bash scripts/postgres.sh stop "$BATON_TEST_PG_DIR"' EXIT
    elif [ "${CI:-}" = "true" ]; then
        exit 1
    fi
fi

# Library, binary and integration tests (benchmarks run with `cargo bench` and `baton bench`).
# Most integration tests wait on child processes (baton, git, Prism, a browser) more than they
# compute, so they run four at a time even on two cores (160 s → 105 s for `tests/it` here).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --workspace --locked "$@"
