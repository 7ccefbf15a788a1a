#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: installs what the tests use
# as peers, then runs every test of the workspace. Works with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test peers (each install script is idempotent and quiet when already done). The system
# tools first: the npm peers need node and npm. A test whose peer is missing fails.
bash scripts/install-test-deps.sh
bash scripts/install-test-deps-npm.sh

# Library, binary and integration tests (benchmarks run with `cargo bench` and `baton bench`).
cargo test --workspace --locked "$@"
