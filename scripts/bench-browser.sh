#!/usr/bin/env bash
# The browser build's speed next to native, on the same machine in one run, for SmolLM2
# (16 greedy tokens after a warm-up), written to OUT_DIR/browser.json (default bench-results/):
#   native    `flint bench --model <SmolLM2>` (wgpu on the machine's Vulkan)
#   deno      the same wasm + flint.js under Deno, whose WebGPU is wgpu on the same Vulkan
#   chromium  the same wasm + flint.js in headless Chromium (SwiftShader here), with the
#             per-kernel profile of a decode step
# Usage: scripts/bench-browser.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
out="${1:-bench-results}"
mkdir -p "$out"
tools="${FLINT_CACHE:-$HOME/.cache/flint}/tools"
models="${FLINT_CACHE:-$HOME/.cache/flint}/models"

scripts/fetch-model.sh >/dev/null
scripts/build-wasm.sh
cargo build --release -q
[ -x "$tools/node_modules/.bin/deno" ] || (mkdir -p "$tools" && cd "$tools" && npm install --no-audit --no-fund --silent deno@2.9.6)

port=$((18000 + RANDOM % 2000))
node www/serve.mjs --port "$port" --model "smollm=$models" --model "test=tests/browser" >/dev/null &
server=$!
trap 'kill $server' EXIT
sleep 1
base="http://127.0.0.1:$port"

native=$("$CARGO_TARGET_DIR/release/flint" bench --model "$models/SmolLM2-135M-Instruct.Q4_1.gguf" \
    --prompt-tokens 6 --gen-tokens 16 --ctx 4096 --json)
deno=$(cd /tmp && NO_COLOR=1 "$tools/node_modules/.bin/deno" run --reload -A "$OLDPWD/benches/browser/deno.js" "$base" 16 2>/dev/null | tail -1)
chromium=$(node benches/browser/chromium.mjs "$base" 16)
size=$(stat -c %s www/pkg/flint_bg.wasm)
gz=$(gzip -9 -c www/pkg/flint_bg.wasm | wc -c)
echo "{\"wasm_bytes\": $size, \"wasm_gzip_bytes\": $gz, \"native\": $native, \"deno\": $deno, \"chromium\": $chromium}" > "$out/browser.json"
echo "wrote $out/browser.json" >&2
