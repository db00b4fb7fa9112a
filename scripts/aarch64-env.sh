# Sourced by the aarch64 scripts (not run): how to build the workspace for
# aarch64-unknown-linux-gnu with Debian's rustc-web (scripts/setup-aarch64.sh)
# and run the result under qemu-aarch64.
#
# Binaries are linked statically: under qemu-user a dynamically linked
# binary that starts a thread hangs in the C library's thread creation, and a
# static binary is also what one copies to a board. Everything goes to its
# own target dir, so the x86_64 build (rustup's cargo) is never invalidated.

A64_TARGET=aarch64-unknown-linux-gnu
A64_TARGET_DIR=${A64_TARGET_DIR:-target/aarch64}
A64_RELEASE_DIR=$A64_TARGET_DIR/$A64_TARGET/release

# a64_cargo SUBCOMMAND ARGS...: Debian's cargo and rustc (never rustup's,
# which has no aarch64 standard library), cross-linking statically.
a64_cargo() {
    local sub=$1
    shift
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_TERM_COLOR=never \
        /usr/bin/cargo "$sub" --target "$A64_TARGET" --target-dir "$A64_TARGET_DIR" "$@"
}

# a64_run CPU PROGRAM ARGS...: runs a static aarch64 program under qemu as
# the given CPU model (cortex-a53: NEON without dotprod; cortex-a76: the
# RK3588's fast cores, NEON with dotprod; max: everything qemu emulates).
a64_run() {
    local cpu=$1
    shift
    qemu-aarch64 -cpu "$cpu" "$@"
}
