//! The AVX2 kernels with AVX512-VNNI byte dot products (`vpdpbusd` on
//! 256-bit registers), for CPUs that have AVX-512 VNNI and VL: every
//! integer dot is one instruction instead of three, with identical sums.

use super::avx2::Avx2;
use crate::blocks::*;
use crate::generic::simd_entry_points;

// With a compiler that knows the AVX-512 features (see build.rs), the code
// generator may use all 32 vector registers: the 4x4 tiles stop spilling.
// Results are the same (integer sums are exact; float operations are the
// same operations in the same order).
#[cfg(rkinfer_avx512)]
mod features {
    use super::*;
    simd_entry_points!(Avx2<true>, "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni");
    crate::gemm::gemm_entry_points!(Avx2<true>, "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni");
    crate::f16ops::f16ops_entry_points!(
        Avx2<true>,
        "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni"
    );
}
#[cfg(not(rkinfer_avx512))]
mod features {
    use super::*;
    simd_entry_points!(Avx2<true>, "avx2,fma");
    crate::gemm::gemm_entry_points!(Avx2<true>, "avx2,fma");
    crate::f16ops::f16ops_entry_points!(Avx2<true>, "avx2,fma");
}
pub use super::gelu::avx2::{geglu_ggml, gelu_ggml};
pub use features::*;
