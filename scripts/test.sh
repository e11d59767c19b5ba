#!/usr/bin/env bash
# Runs every test of flint, installing what the tests need first. This is the README's test
# command and what CI runs (.ci/run). Idempotent; safe on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds persist across runs on the same machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flint-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# System packages, installed in one go when missing (as root):
#   lavapipe (Mesa's software Vulkan) runs the GPU tests on machines without a GPU;
#   tmux drives `flint chat` in a real terminal (tests/chat.rs);
#   chromium runs the browser tests (WebGPU on SwiftShader);
#   python3-venv holds the Python side of the tests.
need=()
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers libvulkan1)
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "test.sh: the tests need these Debian packages: ${need[*]}" >&2
        exit 1
    fi
fi

# The openai package and torch + transformers (tests/openai_client.rs, tests/quantize.rs), in a
# venv kept across runs (~2.8 GB of wheels the first time).
VENV="${FLINT_CACHE:-$HOME/.cache/flint}/venv"
if ! "$VENV/bin/python" -c "import openai, torch, transformers" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r tests/requirements.txt
fi

# Real assets the tests check against (pinned and sha256-checked by the scripts).
scripts/fetch-model.sh >/dev/null
scripts/fetch-tokenizers.sh >/dev/null

rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The crate must build for wasm32 as the README says (`--features wasm`, default features on):
# native-only dependencies (mmap, threads, tokio, clap) stay behind cfg.
cargo clippy --target wasm32-unknown-unknown --features wasm -- -D warnings
# The Metal and DX12 paths keep compiling: the library type-checks for macOS and Windows. (Without
# the `cli` feature, whose TLS dependency needs a C cross-compiler for its target.)
for target in aarch64-apple-darwin x86_64-pc-windows-gnu; do
    rustup target add "$target" >/dev/null 2>&1 || true
    RUSTFLAGS="-D warnings" cargo check -q --lib --no-default-features --target "$target"
done
cargo test --release
# The browser build in headless Chromium (WebGPU on SwiftShader), against the same references.
scripts/test-browser.sh
