#!/usr/bin/env bash
# The README's first command: builds baton and runs the engine tour on a fresh data dir,
# then shows the run as it is stored. Nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet
export BATON_DATA_DIR="${BATON_DATA_DIR:-$(mktemp -d -t baton-demo-XXXXXX)}"
baton="${CARGO_TARGET_DIR:-target}/release/baton"
echo "data dir: $BATON_DATA_DIR" >&2
"$baton" run examples/demo.toml --input who=you
run=$("$baton" runs --json | sed -n 's/.*"id": "\(run_[0-9a-z]*\)".*/\1/p' | head -n 1)
echo
"$baton" show "$run" --events
