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

/// Calls `vector(chunk, up_chunk)` on every whole chunk of `N` values of
/// `x` (`up_chunk` empty for GELU), then the scalar reference on the rest.
#[inline(always)]
fn by_vectors<const N: usize>(
    x: &mut [f32],
    up: Option<&[f32]>,
    vector: impl Fn(&mut [f32], &[f32]),
) {
    let whole = x.len() / N * N;
    let (head, rest) = x.split_at_mut(whole);
    for (i, c) in head.chunks_exact_mut(N).enumerate() {
        vector(c, up.map_or(&[], |u| &u[i * N..][..N]));
    }
    match up {
        Some(u) => scalar::geglu_ggml(rest, &u[whole..]),
        None => scalar::gelu_ggml(rest),
    }
}

/// GELU (GEGLU with `up`) on 8 lanes.
#[target_feature(enable = "avx2,f16c")]
fn gelu8(x: &mut [f32], up: Option<&[f32]>) {
    let table = scalar::gelu_f32_table();
    by_vectors::<8>(x, up, |c, u| {
        // SAFETY: `c` holds 8 floats, `u` 8 or none.
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        let idx = _mm256_cvtepu16_epi32(h);
        // SAFETY: every index is a zero-extended u16, inside the table.
        let looked = unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), idx) };
        let big = _mm256_cmp_ps::<_CMP_GE_OQ>(v, _mm256_set1_ps(10.0));
        let mut r = _mm256_blendv_ps(looked, v, big);
        if !u.is_empty() {
            // SAFETY: as above.
            r = _mm256_mul_ps(r, unsafe { _mm256_loadu_ps(u.as_ptr()) });
        }
        let low = _mm256_cmp_ps::<_CMP_LE_OQ>(v, _mm256_set1_ps(-10.0));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), _mm256_andnot_ps(low, r)) };
    });
}

/// The AVX2 + F16C kernels (tables `avx2` and `avx2-vnni`).
pub mod avx2 {
    /// [`crate::gelu_ggml`] on 8 lanes.
    pub fn gelu_ggml(x: &mut [f32]) {
        // SAFETY: only reachable through a table chosen after AVX2 and F16C
        // were detected.
        unsafe { super::gelu8(x, None) }
    }

    /// [`crate::geglu_ggml`] on 8 lanes.
    pub fn geglu_ggml(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu_ggml: length mismatch");
        // SAFETY: as above.
        unsafe { super::gelu8(gate, Some(up)) }
    }
}

/// The AVX-512 kernels (table `avx512`): 16 lanes, masks in `k` registers.
#[cfg(rkinfer_avx512)]
pub mod avx512 {
    use super::*;

    /// GELU (GEGLU with `up`) on 16 lanes.
    #[target_feature(enable = "avx512f,f16c")]
    fn gelu16(x: &mut [f32], up: Option<&[f32]>) {
        let table = scalar::gelu_f32_table();
        by_vectors::<16>(x, up, |c, u| {
            // SAFETY: `c` holds 16 floats, `u` 16 or none.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            let idx = _mm512_cvtepu16_epi32(h);
            // SAFETY: every index is a zero-extended u16, inside the table.
            let looked = unsafe { _mm512_i32gather_ps::<4>(idx, table.as_ptr()) };
            let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, _mm512_set1_ps(10.0));
            let mut r = _mm512_mask_blend_ps(big, looked, v);
            if !u.is_empty() {
                // SAFETY: as above.
                r = _mm512_mul_ps(r, unsafe { _mm512_loadu_ps(u.as_ptr()) });
            }
            let low = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(v, _mm512_set1_ps(-10.0));
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), _mm512_maskz_mov_ps(!low, r)) };
        });
    }

    /// [`crate::gelu_ggml`] on 16 lanes.
    pub fn gelu_ggml(x: &mut [f32]) {
        // SAFETY: only reachable through the `avx512` table, chosen after
        // AVX-512 F (and the F16C of the AVX2 base) were detected.
        unsafe { gelu16(x, None) }
    }

    /// [`crate::geglu_ggml`] on 16 lanes.
    pub fn geglu_ggml(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "geglu_ggml: length mismatch");
        // SAFETY: as above.
        unsafe { gelu16(gate, Some(up)) }
    }
}
