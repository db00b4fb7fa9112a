//! x86_64 kernels. AVX2+FMA+F16C is the fast path; AVX-512 intrinsics are
//! not stable in Rust 1.63 (the crate's floor), so there is no AVX-512 set.

pub mod avx2;

/// True when the CPU (and OS) support everything the AVX2 table uses.
pub fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}
