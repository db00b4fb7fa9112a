//! Kernels of ggml-cpu's x86 SIMD semantics the engine needs beyond the
//! reference set: the f16 accumulator updates of the flash-attention
//! kernel (`ggml_vec_mad_f16`, `ggml_vec_scale_f16`) and the activation
//! quantizers as ggml's AVX2 `quantize_row_q8_0/1` round (scale 127/amax,
//! round to nearest even), where the reference quantizers use 1/(amax/127)
//! and round half away from zero.
//!
//! Every SIMD version performs the same IEEE operations as its scalar
//! reference here (bit-identical on finite inputs; the tests check it).

use crate::blocks::*;
use crate::generic::Simd;
use crate::scalar::{f16_to_f32, f32_to_f16};

/// Scalar references.
pub(crate) mod reference {
    use super::*;

    /// y[i] = f16(fma(x[i], v, y[i])) (ggml_vec_mad_f16's SIMD body).
    pub fn vec_mad_f16(y: &mut [u16], x: &[u16], v: f32) {
        assert_eq!(x.len(), y.len(), "vec_mad_f16: length mismatch");
        for (a, &b) in y.iter_mut().zip(x) {
            *a = f32_to_f16(f16_to_f32(b).mul_add(v, f16_to_f32(*a)));
        }
    }

    /// y[i] = f16(y[i] * v).
    pub fn vec_scale_f16(y: &mut [u16], v: f32) {
        for a in y.iter_mut() {
            *a = f32_to_f16(f16_to_f32(*a) * v);
        }
    }

    /// Finite `xb`: (d, 127/amax or 0).
    fn scales(xb: &[f32]) -> (f32, f32) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        (amax / 127.0, id)
    }

    /// Rounds to nearest, ties to even (`f32::round_ties_even` needs Rust
    /// 1.77): a tie goes to twice the rounded half, which is even.
    fn rne(v: f32) -> f32 {
        let r = v.round();
        if (r - v).abs() == 0.5 {
            2.0 * (v / 2.0).round()
        } else {
            r
        }
    }

    pub fn quantize_row_q8_0_round_even(x: &[f32], y: &mut [BlockQ8_0]) {
        assert_eq!(
            x.len(),
            y.len() * QK8_0,
            "quantize_row_q8_0_round_even: length mismatch"
        );
        for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
            let (d, id) = scales(xb);
            yb.d = f32_to_f16(d);
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = rne(v * id) as i8;
            }
        }
    }

    pub fn quantize_row_q8_1_round_even(x: &[f32], y: &mut [BlockQ8_1]) {
        assert_eq!(
            x.len(),
            y.len() * QK8_1,
            "quantize_row_q8_1_round_even: length mismatch"
        );
        for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
            let (d, id) = scales(xb);
            yb.d = f32_to_f16(d);
            let mut sum = 0i32;
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = rne(v * id) as i8;
                sum += *q as i32;
            }
            yb.s = f32_to_f16(d * sum as f32);
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn vec_mad_f16<S: Simd>(y: &mut [u16], x: &[u16], v: f32) {
    let n = y.len();
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let vv = S::splat_f(v);
    let mut i = 0;
    while i + 8 <= n {
        let r = S::fma_f(S::load_f16(xp.add(i)), vv, S::load_f16(yp.add(i)));
        S::store_f16(yp.add(i), r);
        i += 8;
    }
    for j in i..n {
        y[j] = f32_to_f16(f16_to_f32(x[j]).mul_add(v, f16_to_f32(y[j])));
    }
}

#[inline(always)]
pub(crate) unsafe fn vec_scale_f16<S: Simd>(y: &mut [u16], v: f32) {
    let n = y.len();
    let yp = y.as_mut_ptr();
    let vv = S::splat_f(v);
    let mut i = 0;
    while i + 8 <= n {
        S::store_f16(yp.add(i), S::mul_f(S::load_f16(yp.add(i)), vv));
        i += 8;
    }
    for a in &mut y[i..] {
        *a = f32_to_f16(f16_to_f32(*a) * v);
    }
}

/// One block: d, and the quants at `qs`.
#[inline(always)]
unsafe fn q8_round_even_32<S: Simd>(x: *const f32, qs: *mut i8) -> f32 {
    let v = [
        S::load_f(x),
        S::load_f(x.add(8)),
        S::load_f(x.add(16)),
        S::load_f(x.add(24)),
    ];
    let m01 = S::max_f(S::abs_f(v[0]), S::abs_f(v[1]));
    let m23 = S::max_f(S::abs_f(v[2]), S::abs_f(v[3]));
    let amax = S::hmax_f(S::max_f(m01, m23));
    let id = S::splat_f(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    S::store_q8(
        qs,
        [
            S::round_even_f(S::mul_f(v[0], id)),
            S::round_even_f(S::mul_f(v[1], id)),
            S::round_even_f(S::mul_f(v[2], id)),
            S::round_even_f(S::mul_f(v[3], id)),
        ],
    );
    amax / 127.0
}

#[inline(always)]
pub(crate) unsafe fn quantize_row_q8_0_round_even<S: Simd>(x: &[f32], y: &mut [BlockQ8_0]) {
    for (i, yb) in y.iter_mut().enumerate() {
        let d = q8_round_even_32::<S>(x.as_ptr().add(i * QK8_0), yb.qs.as_mut_ptr());
        yb.d = f32_to_f16(d);
    }
}

#[inline(always)]
pub(crate) unsafe fn quantize_row_q8_1_round_even<S: Simd>(x: &[f32], y: &mut [BlockQ8_1]) {
    for (i, yb) in y.iter_mut().enumerate() {
        let d = q8_round_even_32::<S>(x.as_ptr().add(i * QK8_1), yb.qs.as_mut_ptr());
        yb.d = f32_to_f16(d);
        let sum = S::hsum_i(S::dot(
            S::zero_i(),
            S::load_b(yb.qs.as_ptr() as *const u8),
            S::set1_b(1),
        ));
        yb.s = f32_to_f16(d * sum as f32);
    }
}

/// Generates an ISA module's entry points for this file's kernels.
macro_rules! f16ops_entry_points {
    ($isa:ty, $features:tt) => {
        pub fn vec_mad_f16(y: &mut [u16], x: &[u16], v: f32) {
            assert_eq!(x.len(), y.len(), "vec_mad_f16: length mismatch");
            #[target_feature(enable = $features)]
            unsafe fn imp(y: &mut [u16], x: &[u16], v: f32) {
                crate::f16ops::vec_mad_f16::<$isa>(y, x, v)
            }
            // SAFETY: table entered only after `$features` were detected;
            // x and y have the same length (asserted).
            unsafe { imp(y, x, v) }
        }
        pub fn vec_scale_f16(y: &mut [u16], v: f32) {
            #[target_feature(enable = $features)]
            unsafe fn imp(y: &mut [u16], v: f32) {
                crate::f16ops::vec_scale_f16::<$isa>(y, v)
            }
            // SAFETY: as above; only y is touched, within its length.
            unsafe { imp(y, v) }
        }
        pub fn quantize_row_q8_0_round_even(x: &[f32], y: &mut [BlockQ8_0]) {
            assert_eq!(
                x.len(),
                y.len() * QK8_0,
                "quantize_row_q8_0_round_even: length mismatch"
            );
            #[target_feature(enable = $features)]
            unsafe fn imp(x: &[f32], y: &mut [BlockQ8_0]) {
                crate::f16ops::quantize_row_q8_0_round_even::<$isa>(x, y)
            }
            // SAFETY: as above; x holds 32 floats per block of y (asserted).
            unsafe { imp(x, y) }
        }
        pub fn quantize_row_q8_1_round_even(x: &[f32], y: &mut [BlockQ8_1]) {
            assert_eq!(
                x.len(),
                y.len() * QK8_1,
                "quantize_row_q8_1_round_even: length mismatch"
            );
            #[target_feature(enable = $features)]
            unsafe fn imp(x: &[f32], y: &mut [BlockQ8_1]) {
                crate::f16ops::quantize_row_q8_1_round_even::<$isa>(x, y)
            }
            // SAFETY: as above; x holds 32 floats per block of y (asserted).
            unsafe { imp(x, y) }
        }
    };
}
pub(crate) use f16ops_entry_points;
