#!/usr/bin/env bash
# Tests the `kernels` crate the way CI does: built by Debian's rustc (1.63,
# the crate's minimum version; no cargo, no dependencies) as a plain
# `rustc --test` binary for aarch64-unknown-linux-gnu and run under
# qemu-aarch64, whose default "max" CPU has NEON and dotprod, so the scalar,
# NEON and NEON+sdot tables are all exercised. The same compiler also builds
# and runs the tests for x86_64 (when on x86_64) to check 1.63 compatibility.
#
# Installs the toolchain when missing (Debian/Ubuntu, non-interactive,
# idempotent). Output binaries go to target/kernels-rustc163/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTC=/usr/bin/rustc
PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user rustc libstd-rust-dev:arm64)
SYSROOT=/usr/aarch64-linux-gnu
OUT=target/kernels-rustc163

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_toolchain() {
    [ -x "$RUSTC" ] && command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null &&
        [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ] && dpkg -s "${PKGS[@]}" >/dev/null 2>&1
}

if ! have_toolchain; then
    echo "installing ${PKGS[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
    fi
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${PKGS[@]}"
fi

mkdir -p "$OUT"
echo "$($RUSTC --version) building kernels tests" >&2
common=(--edition 2021 --test -O -D warnings --crate-name kernels kernels/src/lib.rs)

start=$(date +%s)
"$RUSTC" "${common[@]}" --target aarch64-unknown-linux-gnu -C linker=aarch64-linux-gnu-gcc \
    -o "$OUT/kernels-aarch64"
echo "aarch64 build: $(($(date +%s) - start)) s" >&2

start=$(date +%s)
qemu-aarch64 -L "$SYSROOT" "$OUT/kernels-aarch64" --test-threads=1
# Show which tables were detected and chosen (and that the override works).
qemu-aarch64 -L "$SYSROOT" "$OUT/kernels-aarch64" --test-threads=1 --nocapture -q \
    dispatch_picks_a_detected_table 2>&1 | grep '^kernels:'
RKINFER_FORCE_SCALAR=1 qemu-aarch64 -L "$SYSROOT" "$OUT/kernels-aarch64" --test-threads=1 \
    --nocapture -q dispatch_picks_a_detected_table 2>&1 | grep '^kernels: chosen scalar'
# A CPU without dotprod (Cortex-A53): detection must fall back to plain NEON.
qemu-aarch64 -cpu cortex-a53 -L "$SYSROOT" "$OUT/kernels-aarch64" --test-threads=1 -q
qemu-aarch64 -cpu cortex-a53 -L "$SYSROOT" "$OUT/kernels-aarch64" --test-threads=1 --nocapture -q \
    dispatch_picks_a_detected_table 2>&1 | grep '^kernels: chosen neon,'
echo "aarch64 tests under qemu: $(($(date +%s) - start)) s" >&2

if [ "$(uname -m)" = x86_64 ]; then
    "$RUSTC" "${common[@]}" -o "$OUT/kernels-x86_64"
    "$OUT/kernels-x86_64" -q
fi
