#!/usr/bin/env bash
# The whole workspace on aarch64, as CI runs it after the x86_64 tests:
# installs the cross toolchain if needed (scripts/setup-aarch64.sh), builds
# every test target statically for aarch64-unknown-linux-gnu into
# target/aarch64, and runs under qemu-aarch64 the tests that say something
# about the target and are cheap enough under emulation:
#   - kernels: every NEON table (scripts/test-kernels-aarch64.sh)
#   - gguf: unit tests, bad input, round trips, the real models' headers
#   - quant: unit tests
#   - rkinfer: the tokenizer and NPU unit tests, tests/tokenize.rs (the
#     llama.cpp reference ids), tests/npu_regs.rs, tests/npu_sim.rs and
#     tests/npu_fake_ioctl.rs (the ioctl structs' sizes and numbers are also
#     checked at compile time for the target), tests/engine_tiny.rs
#   - end to end, the static `rkinfer` binary on the real models
#     (scripts/check-e2e-aarch64.py): greedy ids of `run --temp 0` on SmolLM2
#     and Gemma 3 equal to llama.cpp's (and x86_64's), and the running
#     perplexity of the first chunks printed as llama.cpp prints it.
# Left to the x86_64 run (identical code, too slow emulated or needing to
# start the aarch64 rkinfer from a test): tests spawning the CLI (run_cli,
# npu_cli, bench_cli, info, quantize, ...), gguf's corruption sweep, the
# long model tests (greedy.rs, perplexity.rs, engine_*).
#
# Usage: scripts/test-aarch64.sh   (E2E_PROMPTS=N and E2E_CHUNKS=N trim the
# end-to-end checks; the defaults are CI's)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/aarch64-env.sh

E2E_PROMPTS=${E2E_PROMPTS:-3}
E2E_CHUNKS=${E2E_CHUNKS:-1}
# Perplexity under qemu for these models only ('' for all: Gemma3 adds ~20 CPU-minutes).
E2E_PPL_MODELS=${E2E_PPL_MODELS-SmolLM2}
# The CPU model of everything but the kernels' own runs: the RK3588's
# Cortex-A76 (NEON with dotprod).
CPU=cortex-a76

step() { printf '\n--- aarch64: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
total_start=$(date +%s)

scripts/setup-aarch64.sh
scripts/fetch-models.sh
export RKINFER_MODELS=${RKINFER_MODELS:-$PWD/models}
# The llama.cpp reference ids the tokenizer tests need, copied into the repo.
export RKINFER_REFERENCE=$PWD/tests/data/llamacpp

step "build (all test targets, static)"
build_start=$(date +%s)
list=$(realpath -m "$A64_TARGET_DIR/test-executables.tsv")
mkdir -p "$A64_TARGET_DIR"
a64_cargo test --workspace --release --no-run --message-format=json-render-diagnostics |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        if m.get("reason") == "compiler-message":
            sys.stderr.write(m["message"].get("rendered") or "")
        continue
    kind = m["target"]["kind"][0]
    if kind == "bin" and not m["profile"]["test"]:
        kind = "exe"
    name, exe = m["target"]["name"], m["executable"]
    manifest_dir = m["manifest_path"].rsplit("/", 1)[0]
    print(f"{kind}:{name}\t{manifest_dir}\t{exe}")' >"$list"
build_secs=$(($(date +%s) - build_start))
echo "aarch64 build: $build_secs s"

# exe KIND:NAME: the built executable of that target.
exe() {
    local path
    path=$(awk -F'\t' -v k="$1" '$1 == k { print $3 }' "$list")
    if [ -z "$path" ]; then
        echo "test-aarch64: no executable for $1 in $list" >&2
        exit 1
    fi
    echo "$path"
}

# run_test KIND:NAME [TEST ARGS...]: one test executable under qemu, in its
# package's directory as cargo would run it.
run_test() {
    local target=$1 dir
    shift
    dir=$(awk -F'\t' -v k="$target" '$1 == k { print $2 }' "$list")
    step "$target $*"
    (cd "$dir" && qemu-aarch64 -cpu "$CPU" "$(exe "$target")" --test-threads=2 "$@")
}

run_start=$(date +%s)
step "kernels"
scripts/test-kernels-aarch64.sh "$(exe lib:kernels)"

run_test lib:gguf
run_test test:bad_input
run_test test:roundtrip
run_test test:real_models
run_test lib:quant
run_test lib:rkinfer
run_test test:tokenize --skip cli_
run_test test:npu_regs
run_test test:npu_sim
run_test test:npu_fake_ioctl
run_test test:engine_tiny

step "end to end: the static rkinfer on the real models"
python3 scripts/check-e2e-aarch64.py --rkinfer "$(exe exe:rkinfer)" \
    --runner "qemu-aarch64 -cpu $CPU" --models "$RKINFER_MODELS" \
    --data tests/data/aarch64-e2e.json --threads 2 \
    --prompts "$E2E_PROMPTS" --chunks "$E2E_CHUNKS" --ppl-models "$E2E_PPL_MODELS"

echo "aarch64: build $build_secs s, tests under qemu $(($(date +%s) - run_start)) s, total $(($(date +%s) - total_start)) s"
