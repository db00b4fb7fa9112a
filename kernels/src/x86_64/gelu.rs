//! GELU and GEGLU through ggml's f16 table (`GGML_GELU_FP16`), a vector
//! of lanes at a time, bit-identical to [`crate::scalar::gelu_ggml`] and
//! [`crate::scalar::geglu_ggml`]:
//! - `vcvtps2ph` with round-to-nearest-even gives exactly
//!   `scalar::f32_to_f16` (the default MXCSR neither flushes nor treats
//!   denormals as zero; NaNs come out quiet with the payload truncated),
//! - a gather from the table widened to f32 is the lookup and the exact
//!   conversion back in one step,
//! - compare masks pick x for x >= 10 and +0 for x <= -10 (NaN fails both
//!   compares and is looked up, as in the scalar code).
//!
//! The elements after the last whole vector go through the scalar code
//! (bit-identical, so where the tail starts does not matter).

use crate::scalar;
use core::arch::x86_64::*;

/// Lanes of the 256-bit kernels.
const LANES8: usize = 8;

/// x >= 10 ? x : table[f16(x)] on 8 lanes (the caller zeroes x <= -10).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn lookup8(x: __m256, table: &[f32; 65536]) -> __m256 {
    let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
    let idx = _mm256_cvtepu16_epi32(h);
    // SAFETY: every index is a zero-extended u16, inside the 65536 entries.
    let looked = unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), idx) };
    let big = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(10.0));
    _mm256_blendv_ps(looked, x, big)
}

/// Lanes where x <= -10 (ordered: false for NaN).
#[inline]
#[target_feature(enable = "avx2")]
fn low8(x: __m256) -> __m256 {
    _mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(-10.0))
}

#[target_feature(enable = "avx2,f16c")]
fn gelu8(x: &mut [f32]) {
    let table = scalar::gelu_f32_table();
    let mut chunks = x.chunks_exact_mut(LANES8);
    for c in &mut chunks {
        let p = c.as_mut_ptr();
        // SAFETY: `c` holds exactly 8 floats.
        let v = unsafe { _mm256_loadu_ps(p) };
        let r = _mm256_andnot_ps(low8(v), lookup8(v, table));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(p, r) };
    }
    scalar::gelu_ggml(chunks.into_remainder());
}

#[target_feature(enable = "avx2,f16c")]
fn geglu8(gate: &mut [f32], up: &[f32]) {
    let table = scalar::gelu_f32_table();
    let mut chunks = gate.chunks_exact_mut(LANES8);
    let mut ups = up.chunks_exact(LANES8);
    for (c, u) in (&mut chunks).zip(&mut ups) {
        let p = c.as_mut_ptr();
        // SAFETY: `c` and `u` hold exactly 8 floats each.
        let (v, u) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(u.as_ptr())) };
        let r = _mm256_andnot_ps(low8(v), _mm256_mul_ps(lookup8(v, table), u));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(p, r) };
    }
    scalar::geglu_ggml(chunks.into_remainder(), ups.remainder());
}

/// The AVX2 + F16C kernels (tables `avx2` and `avx2-vnni`).
pub mod avx2 {
    /// [`crate::gelu_ggml`] on 8 lanes.
    pub fn gelu_ggml(x: &mut [f32]) {
        // SAFETY: only reachable through a table chosen after AVX2 and F16C
        // were detected.
        unsafe { super::gelu8(x) }
    }

    /// [`crate::geglu_ggml`] on 8 lanes.
    pub fn geglu_ggml(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu_ggml: length mismatch");
        // SAFETY: as above.
        unsafe { super::geglu8(gate, up) }
    }
}

/// The AVX-512 kernels (table `avx512`): 16 lanes, masks in `k` registers.
#[cfg(rkinfer_avx512)]
pub mod avx512 {
    use super::*;

    const LANES16: usize = 16;

    /// x >= 10 ? x : table[f16(x)] on 16 lanes, and +0 where x <= -10.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    fn gelu16(x: __m512, table: &[f32; 65536], up: Option<__m512>) -> __m512 {
        let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        let idx = _mm512_cvtepu16_epi32(h);
        // SAFETY: every index is a zero-extended u16, inside the 65536 entries.
        let looked = unsafe { _mm512_i32gather_ps::<4>(idx, table.as_ptr()) };
        let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(10.0));
        let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_set1_ps(-10.0));
        let v = _mm512_mask_blend_ps(big, looked, x);
        let v = match up {
            Some(u) => _mm512_mul_ps(v, u),
            None => v,
        };
        _mm512_maskz_mov_ps(!low, v)
    }

    #[target_feature(enable = "avx512f,f16c")]
    fn gelu(x: &mut [f32]) {
        let table = scalar::gelu_f32_table();
        let mut chunks = x.chunks_exact_mut(LANES16);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            // SAFETY: `c` holds exactly 16 floats.
            let v = unsafe { _mm512_loadu_ps(p) };
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(p, gelu16(v, table, None)) };
        }
        scalar::gelu_ggml(chunks.into_remainder());
    }

    #[target_feature(enable = "avx512f,f16c")]
    fn geglu(gate: &mut [f32], up: &[f32]) {
        let table = scalar::gelu_f32_table();
        let mut chunks = gate.chunks_exact_mut(LANES16);
        let mut ups = up.chunks_exact(LANES16);
        for (c, u) in (&mut chunks).zip(&mut ups) {
            let p = c.as_mut_ptr();
            // SAFETY: `c` and `u` hold exactly 16 floats each.
            let (v, u) = unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(u.as_ptr())) };
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(p, gelu16(v, table, Some(u))) };
        }
        scalar::geglu_ggml(chunks.into_remainder(), ups.remainder());
    }

    /// [`crate::gelu_ggml`] on 16 lanes.
    pub fn gelu_ggml(x: &mut [f32]) {
        // SAFETY: only reachable through the `avx512` table, chosen after
        // AVX-512 F (and the F16C of the AVX2 base) were detected.
        unsafe { gelu(x) }
    }

    /// [`crate::geglu_ggml`] on 16 lanes.
    pub fn geglu_ggml(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu_ggml: length mismatch");
        // SAFETY: as above.
        unsafe { geglu(gate, up) }
    }
}
