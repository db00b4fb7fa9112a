#!/usr/bin/env bash
# Installs the aarch64 cross toolchain from Debian bookworm's packages, as CI
# does: rustc-web/cargo-web 1.96 (bookworm-security) with the arm64 standard
# library, the aarch64 GNU linker and C library, and qemu-user 10 from
# bookworm-backports (bookworm's own 7.2 is too old). Idempotent and quiet:
# does nothing when everything is already installed.
#
# Debian's compiler lands in /usr/bin/rustc and /usr/bin/cargo. rustup's
# toolchain (~/.cargo/bin) stays first in PATH for the x86_64 build; the
# aarch64 scripts call /usr/bin/cargo with RUSTC=/usr/bin/rustc explicitly
# (see scripts/aarch64-env.sh).
set -euo pipefail

QEMU_SUITE=bookworm-backports
PKGS=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
QEMU_PKG=qemu-user
QEMU_MIN_MAJOR=10

log() { printf 'setup-aarch64: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

qemu_major() {
    command -v qemu-aarch64 >/dev/null || { echo 0; return; }
    qemu-aarch64 --version | sed -n '1s/^qemu-aarch64 version \([0-9]*\).*/\1/p'
}

installed() {
    dpkg -s "${PKGS[@]}" >/dev/null 2>&1 &&
        [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] &&
        [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ] &&
        command -v aarch64-linux-gnu-gcc >/dev/null &&
        [ "$(qemu_major)" -ge "$QEMU_MIN_MAJOR" ]
}

# Adds bookworm-backports beside the bookworm suite, on the same mirror as
# the machine's own Debian sources (deb822 or one-line format).
add_backports() {
    if grep -rqs -- "$QEMU_SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return
    fi
    local uri="" deb822=/etc/apt/sources.list.d/debian.sources
    if [ -f "$deb822" ]; then
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
                   /Suites:[^\n]*bookworm([ \n]|$)/ {
                       for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) {
                           sub(/^URIs:[ ]*/, "", $i); split($i, u, " "); print u[1]; exit
                       }
                   }' "$deb822")
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    if [ -z "$uri" ]; then
        log "cannot find the bookworm suite in apt's sources to add $QEMU_SUITE beside it"
        exit 1
    fi
    as_root tee "/etc/apt/sources.list.d/$QEMU_SUITE.sources" >/dev/null <<EOF
Types: deb
URIs: $uri
Suites: $QEMU_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    log "added $QEMU_SUITE ($uri)"
}

if installed; then
    exit 0
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    as_root dpkg --add-architecture arm64
fi
add_backports
as_root apt-get update -qq
log "installing ${PKGS[*]} $QEMU_PKG/$QEMU_SUITE"
as_root apt-get install -y -qq --no-install-recommends "${PKGS[@]}" "$QEMU_PKG/$QEMU_SUITE" >/dev/null
if ! installed; then
    log "the toolchain is still incomplete after the install"
    exit 1
fi
log "$(/usr/bin/rustc --version), $(qemu-aarch64 --version | head -n1): $(($(date +%s) - start)) s"
