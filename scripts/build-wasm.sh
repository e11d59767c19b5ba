#!/usr/bin/env bash
# Builds the browser package: the crate for wasm32 (feature `wasm`), its JS bindings and
# TypeScript types (wasm-bindgen) into www/pkg/, and reports the wasm size (raw and gzip).
# Installs the exact wasm-bindgen CLI the lock file names, once, under the flint cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
TOOLS="${FLINT_CACHE:-$HOME/.cache/flint}/tools"
export PATH="$TOOLS/bin:$PATH"

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$version" ]; then
    echo "build-wasm.sh: installing wasm-bindgen-cli $version (once, ~5 min)" >&2
    # Not --locked: one of its locked dependencies is missing from the index (see ENVIRONMENT.md).
    cargo install -q wasm-bindgen-cli --version "$version" --root "$TOOLS"
fi

cargo build -q --profile wasm-release --lib --target wasm32-unknown-unknown --no-default-features --features wasm
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/flint.wasm"
# www/pkg is up to date when it was made from this very module by this script with the same
# options (cargo leaves an unchanged module untouched): `npm pack` (prepack) after a build, as
# the browser tests do, reuses it instead of repeating the bindgen and optimizer passes.
stamp=www/.pkg-stamp
recipe="wasm-bindgen $version opt ${FLINT_WASM_OPT:-1} script $(sha256sum scripts/build-wasm.sh | cut -c1-16)"
if [ -f www/pkg/flint_bg.wasm ] && [ www/pkg/flint_bg.wasm -nt "$wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ]; then
    echo "www/pkg is up to date with $wasm"
    exit 0
fi
rm -rf www/pkg "$stamp"
wasm-bindgen --target web --typescript --out-dir www/pkg "$wasm"
# Size: binaryen's optimizer from npm (Debian's binaryen 108 emits modules that fail at run time).
# -Oz takes a quarter off the module (a tenth gzipped); FLINT_WASM_OPT=0 skips it.
if [ "${FLINT_WASM_OPT:-1}" != 0 ]; then
    (cd www && npm install --no-audit --no-fund --silent)
    www/node_modules/.bin/wasm-opt -Oz www/pkg/flint_bg.wasm -o www/pkg/flint_bg.wasm
fi
echo "$recipe" > "$stamp"
size=$(stat -c %s www/pkg/flint_bg.wasm)
gz=$(gzip -9 -c www/pkg/flint_bg.wasm | wc -c)
echo "www/pkg/flint_bg.wasm: $((size / 1024)) KiB, $((gz / 1024)) KiB gzipped"
