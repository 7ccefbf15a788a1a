#!/usr/bin/env bash
# Installs the npm peers of the forge and webhook tests into .peers/ at the repository root:
#   - @stoplight/prism-cli: a mock server built from GitHub's OpenAPI description
#     (5.14.2 is the newest release that runs on Node 20; 5.15+ needs Node 24),
#   - @octokit/openapi: GitHub's REST description (generated/api.github.com.json),
#   - @octokit/webhooks-examples: real webhook payloads,
#   - playwright-core: drives Debian's chromium (/usr/bin/chromium, from
#     scripts/install-test-deps.sh) in the admin UI's browser test; it never downloads a browser.
# Idempotent (nothing is done when the pinned versions are already there), quiet, never
# prompts (works with CI=true and no stdin). The tests find the peers in $BATON_PEERS_DIR,
# default .peers/ at the repository root; without them those tests fail, naming what is
# missing (they skip only outside CI with BATON_ALLOW_SKIP=1).
# Usage: scripts/install-test-deps-npm.sh [DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-${BATON_PEERS_DIR:-$here/.peers}}"
# Pinned, so the contract tests see the same description on every machine.
packages=(
    "@stoplight/prism-cli@5.14.2"
    "@octokit/openapi@23.0.2"
    "@octokit/webhooks-examples@7.6.1"
    "playwright-core@1.65.1"
)

log() { printf 'install-test-deps-npm: %s\n' "$*" >&2; }

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    log "node and npm are missing (Node 20 is needed; scripts/install-test-deps.sh installs them); the forge contract and webhook tests will fail"
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
fi

installed() {
    local spec name version
    for spec in "${packages[@]}"; do
        name="${spec%@*}"
        version="${spec##*@}"
        [ "$(node -p "try { require('$dir/node_modules/$name/package.json').version } catch (e) { '' }" 2>/dev/null)" = "$version" ] \
            || return 1
    done
    [ -x "$dir/node_modules/.bin/prism" ] && [ -f "$dir/api.github.com.prism.json" ] \
        && [ -f "$dir/openai.prism.json" ] && [ "$dir/openai.prism.json" -nt "$here/tests/fixtures/openai/openai-openapi.yaml" ]
}

if installed; then
    exit 0
fi

mkdir -p "$dir"
log "installing ${packages[*]} into $dir"
npm install --no-save --no-audit --no-fund --no-progress --loglevel=error --prefix "$dir" \
    "${packages[@]}" </dev/null >/dev/null

api="$dir/node_modules/@octokit/openapi/generated/api.github.com.json"
if [ ! -f "$api" ] || [ ! -x "$dir/node_modules/.bin/prism" ]; then
    log "the install in $dir is incomplete ($api or node_modules/.bin/prism is missing)"
    exit 1
fi
# The copy of the description Prism serves (see prism-spec.js for the one fix it needs).
node "$here/scripts/prism-spec.js" "$api" "$dir/api.github.com.prism.json" >/dev/null
# OpenAI's description (tests/fixtures/openai/, copied as published) as Prism can validate it.
node "$here/scripts/openai-prism-spec.js" "$here/tests/fixtures/openai/openai-openapi.yaml" \
    "$dir/openai.prism.json" >/dev/null
installed || { log "the installed versions do not match ${packages[*]}"; exit 1; }
