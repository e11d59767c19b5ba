#!/usr/bin/env bash
# Generates text with the default real model (SmolLM2-135M-Instruct, Q4_1 GGUF), fetching the
# model and building flint first when needed. Arguments go to `flint run`:
#   scripts/run.sh --prompt "The capital of France is"
#   scripts/run.sh --chat --prompt "Write a haiku about rivers" --temperature 0.7 --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
scripts/fetch-model.sh >/dev/null
cargo build --release --quiet
exec "$CARGO_TARGET_DIR/release/flint" run "$@"
