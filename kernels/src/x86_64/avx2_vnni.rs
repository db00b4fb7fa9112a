//! The AVX2 kernels with AVX512-VNNI byte dot products (`vpdpbusd` on
//! 256-bit registers), for CPUs that have AVX-512 VNNI and VL: every
//! integer dot is one instruction instead of three, with identical sums.

use super::avx2::Avx2;
use crate::blocks::*;
use crate::generic::simd_entry_points;

simd_entry_points!(Avx2<true>, "avx2,fma");
crate::gemm::gemm_entry_points!(Avx2<true>, "avx2,fma");
crate::f16ops::f16ops_entry_points!(Avx2<true>, "avx2,fma");
