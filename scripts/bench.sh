#!/usr/bin/env bash
# Runs flint's benchmark set and writes JSON to a folder (default bench-results/):
#   kernels.json              per-kernel figures at the muse-spark-15b shapes (benches/kernels.rs)
#   <preset>.json             `flint bench --preset <preset> --json` for each preset that fits
#   smollm2.json              `flint bench --model <SmolLM2 GGUF> --json` when it is fetched
# Usage: scripts/bench.sh [OUT_DIR] [PRESET ...]   (default presets: muse-spark-0.6b muse-spark-1.8b)
# On a real GPU add muse-spark-2.8b and muse-spark-15b (8.4 GB of GPU memory).
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
out="${1:-bench-results}"
shift || true
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(muse-spark-0.6b muse-spark-1.8b)
mkdir -p "$out"

cargo build --release --quiet
flint="${CARGO_TARGET_DIR:-target}/release/flint"

cargo bench --quiet --bench kernels -- --json > "$out/kernels.json"
echo "wrote $out/kernels.json" >&2
for p in "${presets[@]}"; do
    "$flint" bench --preset "$p" --prompt-tokens 128 --gen-tokens 32 --json > "$out/$p.json"
    echo "wrote $out/$p.json" >&2
done
smol="${FLINT_CACHE:-$HOME/.cache/flint}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$smol" ]; then
    "$flint" bench --model "$smol" --prompt-tokens 128 --gen-tokens 32 --ctx 2048 --json > "$out/smollm2.json"
    echo "wrote $out/smollm2.json" >&2
else
    echo "SmolLM2 not fetched (scripts/fetch-model.sh): skipped" >&2
fi
