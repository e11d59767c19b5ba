#!/usr/bin/env bash
# The browser tests: installs Chromium, playwright-core and typescript if missing, type-checks
# www/flint.d.ts, builds www/pkg (scripts/build-wasm.sh), and runs tests/browser/run.mjs in
# headless Chromium (WebGPU on SwiftShader). Needs the native release binary (for the native
# side of each comparison): scripts/test.sh builds it first. Screenshots and figures land in
# tests/browser/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "test-browser.sh: the browser tests need Debian's chromium package" >&2
        exit 1
    fi
fi
(cd www && npm install --no-audit --no-fund --silent)
# flint.d.ts against a TypeScript user of every declaration (run.mjs's `package` test repeats it
# on the packed package and holds the objects the JS returns to the same declarations).
www/node_modules/.bin/tsc -p tests/browser/tsconfig.json
scripts/build-wasm.sh
[ -x "$CARGO_TARGET_DIR/release/flint" ] || cargo build --release -q
FLINT_BIN="$CARGO_TARGET_DIR/release/flint" node tests/browser/run.mjs "$@"
