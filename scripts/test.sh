#!/usr/bin/env bash
# Runs every test of flint, installing what the tests need first. This is the README's test
# command and what CI runs (.ci/run). Idempotent; safe on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds persist across runs on the same machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# lavapipe (Mesa's software Vulkan) runs the GPU tests on machines without a GPU.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "test.sh: the GPU tests need Vulkan; install mesa-vulkan-drivers and libvulkan1" >&2
        exit 1
    fi
fi

# Real assets the tests check against (pinned and sha256-checked by the scripts).
scripts/fetch-model.sh >/dev/null
scripts/fetch-tokenizers.sh >/dev/null

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The library must stay free of native-only dependencies (mmap, threads, clap) on wasm32.
cargo clippy --lib --target wasm32-unknown-unknown --no-default-features --features wasm -- -D warnings
cargo test --release
# The browser build in headless Chromium (WebGPU on SwiftShader), against the same references.
scripts/test-browser.sh
