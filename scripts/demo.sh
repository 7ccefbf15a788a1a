#!/usr/bin/env bash
# The README's first command: builds baton and runs `baton demo`, an issue turned into a tested
# pull request on a generated project with the local forge. Nothing leaves this machine.
# Arguments go to `baton demo` (e.g. --keep to keep its files).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/release/baton" demo "$@"
