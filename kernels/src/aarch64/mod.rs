//! aarch64 kernels: NEON everywhere, plus `sdot` (through inline asm, its
//! intrinsic is not stable in Rust 1.63) when the CPU reports dotprod.

mod simd;

/// Plain NEON (baseline of every AArch64 CPU).
pub mod neon {
    use crate::blocks::*;
    use crate::generic::simd_entry_points;
    simd_entry_points!(super::simd::Neon<false>, "neon");
    crate::gemm::gemm_entry_points!(super::simd::Neon<false>, "neon");
    crate::f16ops::f16ops_entry_points!(super::simd::Neon<false>, "neon");
    // No gather on NEON: the table lookup stays scalar.
    #[cfg(test)]
    pub(crate) use super::simd::int_dot_check_plain as int_dot_check;
    pub use crate::scalar::{geglu_ggml, gelu_ggml};
}

/// NEON with the dot-product instructions (ARMv8.2 dotprod, e.g. the
/// RK3588's Cortex-A76/A55).
pub mod neon_dotprod {
    use crate::blocks::*;
    use crate::generic::simd_entry_points;
    simd_entry_points!(super::simd::Neon<true>, "neon,dotprod");
    crate::gemm::gemm_entry_points!(super::simd::Neon<true>, "neon,dotprod");
    crate::f16ops::f16ops_entry_points!(super::simd::Neon<true>, "neon,dotprod");
    // No gather on NEON: the table lookup stays scalar.
    #[cfg(test)]
    pub(crate) use super::simd::int_dot_check_dotprod as int_dot_check;
    pub use crate::scalar::{geglu_ggml, gelu_ggml};
}

pub fn neon_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub fn dotprod_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}
