//! SIMD kernels for rkinfer: a scalar reference for every kernel, x86_64
//! (AVX2+FMA+F16C) and aarch64 NEON versions, chosen once at run time.
//!
//! No dependencies and Rust 1.63 compatible, so CI can build and test it for
//! aarch64 with Debian's rustc under qemu.

pub mod blocks;
