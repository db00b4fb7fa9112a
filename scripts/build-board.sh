#!/usr/bin/env bash
# Builds a static `rkinfer` for aarch64 (an RK3588 board, or any aarch64
# Linux) on an x86_64 Debian bookworm machine, and prints its path and
# sha256. Installs the cross toolchain on first use (scripts/setup-aarch64.sh).
# The binary depends on no library: copy it to the board and run it.
#
# Usage: scripts/build-board.sh [extra cargo build arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/aarch64-env.sh

scripts/setup-aarch64.sh
a64_cargo build --release --bin rkinfer "$@" >&2

bin=$A64_RELEASE_DIR/rkinfer
if command -v file >/dev/null && ! file -b "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    echo "build-board: $bin is not statically linked" >&2
    exit 1
fi
echo "$PWD/$bin"
sha256sum "$bin" | cut -d' ' -f1
