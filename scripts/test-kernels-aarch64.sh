#!/usr/bin/env bash
# Tests the `kernels` crate on aarch64 under qemu-aarch64. The tests compare
# every table the CPU can run with the scalar reference, so they run twice:
# on a Cortex-A53 (plain NEON, no dotprod) and on a Cortex-A76 (the RK3588's
# fast cores: NEON and NEON+sdot). Also checks which table detection picks
# on those, on qemu's "max" CPU and with RKINFER_FORCE_SCALAR=1.
#
# Usage: scripts/test-kernels-aarch64.sh [KERNELS_TEST_BINARY]
# Without an argument it installs the toolchain if needed
# (scripts/setup-aarch64.sh) and builds the test binary itself (static, in
# target/aarch64); scripts/test-aarch64.sh passes the one it built.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/aarch64-env.sh

bin=${1:-}
if [ -z "$bin" ]; then
    scripts/setup-aarch64.sh
    start=$(date +%s)
    bin=$(a64_cargo test -p kernels --release --no-run --message-format=json-render-diagnostics |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
    echo "kernels: aarch64 build $(($(date +%s) - start)) s" >&2
fi

# chosen CPU [ENV...]: the table name detection picks on that CPU.
chosen() {
    local cpu=$1
    shift
    env "$@" qemu-aarch64 -cpu "$cpu" "$bin" --test-threads=1 --nocapture -q \
        dispatch_picks_a_detected_table 2>&1 | sed -n 's/^kernels: chosen \([^ ,]*\).*/\1/p'
}

expect_table() {
    local want=$1 got
    shift
    got=$(chosen "$@")
    if [ "$got" != "$want" ]; then
        echo "kernels: on $* detection chose '$got', expected '$want'" >&2
        exit 1
    fi
    echo "kernels: $* -> $got"
}

start=$(date +%s)
expect_table neon cortex-a53
expect_table neon-dotprod cortex-a76
expect_table neon-dotprod max
expect_table scalar cortex-a76 RKINFER_FORCE_SCALAR=1

for cpu in cortex-a53 cortex-a76; do
    echo "kernels: all tests on $cpu" >&2
    qemu-aarch64 -cpu "$cpu" "$bin" --test-threads=2
done
echo "kernels: tests under qemu $(($(date +%s) - start)) s" >&2
