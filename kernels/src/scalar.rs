//! Scalar reference kernels: ggml's reference semantics, operation for
//! operation (`dequantize_row_*` and `quantize_row_q8_*_ref` from
//! ggml-quants.c, `ggml_vec_dot_*_generic` from ggml-cpu, the float ops from
//! ggml-cpu's vec.h / ops.cpp). Every SIMD kernel is tested against these.
//!
//! Float expressions keep ggml's evaluation order and are never fused
//! (`a * b + c` is a rounded multiply then a rounded add, as ISO C without
//! contraction), so results are reproducible bit for bit.
//!
//! # Panics
//! Every function asserts that its slices have matching lengths (a caller
//! bug, never input data); the SIMD kernels rely on the same checks.

use crate::blocks::*;
use std::sync::OnceLock;

pub use crate::f16ops::reference::*;
pub use crate::gemm::scalar_gemm::*;

// ---------------------------------------------------------------------------
// f16 / bf16 conversions (bit level)

/// IEEE binary16 bits to f32, exact. NaNs come back quiet with their payload
/// (as F16C `vcvtph2ps` and AArch64 `fcvtl` do).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0x1f {
        if mant == 0 {
            sign | 0x7f80_0000
        } else {
            sign | 0x7fc0_0000 | (mant << 13)
        }
    } else if exp != 0 {
        sign | ((exp + 112) << 23) | (mant << 13)
    } else if mant == 0 {
        sign
    } else {
        // Subnormal: normalise the mantissa.
        let shift = mant.leading_zeros() - 21; // brings the top set bit to bit 10
        let m = (mant << shift) & 0x3ff;
        sign | ((113 - shift) << 23) | (m << 13)
    };
    f32::from_bits(bits)
}

/// f32 to IEEE binary16 bits, round to nearest even; overflow gives ±inf;
/// NaNs stay NaN, quieted, payload truncated (as F16C `vcvtps2ph` and
/// AArch64 `fcvtn`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let abs = bits & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        return sign | 0x7e00 | ((abs >> 13) & 0x3ff) as u16;
    }
    let exp = (abs >> 23) as i32 - 127 + 15;
    if exp >= 31 {
        return sign | 0x7c00;
    }
    let mant = abs & 0x7f_ffff;
    if exp >= 1 {
        let mut h = ((exp as u32) << 10) | (mant >> 13);
        let rest = mant & 0x1fff;
        if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
            h += 1; // a carry into the exponent is correct, up to inf
        }
        return sign | h as u16;
    }
    if exp < -10 {
        return sign; // below half the smallest subnormal
    }
    let m = mant | 0x80_0000;
    let shift = (14 - exp) as u32;
    let mut h = m >> shift;
    let rest = m & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rest > half || (rest == half && (h & 1) == 1) {
        h += 1;
    }
    sign | h as u16
}

/// bfloat16 bits to f32 (exact: the top half of an f32).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 to bfloat16 bits as `ggml_compute_fp32_to_bf16`: NaNs are forced
/// quiet, everything else rounds to nearest even.
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub fn f16_to_f32_row(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "f16_to_f32_row: length mismatch");
    for (o, &h) in y.iter_mut().zip(x) {
        *o = f16_to_f32(h);
    }
}

pub fn f32_to_f16_row(x: &[f32], y: &mut [u16]) {
    assert_eq!(x.len(), y.len(), "f32_to_f16_row: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f32_to_f16(v);
    }
}

pub fn bf16_to_f32_row(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "bf16_to_f32_row: length mismatch");
    for (o, &h) in y.iter_mut().zip(x) {
        *o = bf16_to_f32(h);
    }
}

pub fn f32_to_bf16_row(x: &[f32], y: &mut [u16]) {
    assert_eq!(x.len(), y.len(), "f32_to_bf16_row: length mismatch");
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f32_to_bf16(v);
    }
}

#[inline]
fn fp16(h: u16) -> f32 {
    f16_to_f32(h)
}

/// C's `MAX(a, b)` macro: `a > b ? a : b` (NaN handling included).
#[inline]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// ggml's `nearest_int`: round to nearest even through the 1.5*2^23 trick
/// (valid for |x| <= 2^22, which the callers guarantee).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    ((v.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

// ---------------------------------------------------------------------------
// Activation quantizers

pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_0,
        "quantize_row_q8_0: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let mut amax = 0.0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_1,
        "quantize_row_q8_1: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let mut amax = 0.0f32;
        for &v in xb {
            amax = c_max(amax, v.abs());
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        yb.s = f32_to_f16(sum as f32 * d);
    }
}

pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    assert_eq!(
        x.len(),
        y.len() * QK_K,
        "quantize_row_q8_k: length mismatch"
    );
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero is what they sum to.
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, g) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        yb.d = 1.0 / iscale;
    }
}

// ---------------------------------------------------------------------------
// Dot products (ggml_vec_dot_*_generic)

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_0_q8_0: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let v0 = (xb.qs[j] & 0x0f) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            s0 += v0 * yb.qs[j] as i32;
            s1 += v1 * yb.qs[j + 16] as i32;
        }
        sumf += (s0 + s1) as f32 * fp16(xb.d) * fp16(yb.d);
    }
    sumf
}

/// Q4_0 in the rounding of llama.cpp's repacked `q4_0_8x8` kernels (x86,
/// prompt batches and decode alike): each block's exact integer dot
/// enters one running f32 sum through a fused multiply-add with the
/// product of the two scales, with no lanes and no final reduction.
pub fn vec_dot_q4_0_q8_0_block_fma(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot_q4_0_q8_0_block_fma: block count mismatch"
    );
    x.iter().zip(y).fold(0.0, |acc, (xb, yb)| {
        vec_dot_q4_0_q8_0_block_fma_step(xb, yb, acc)
    })
}

/// One block of [`vec_dot_q4_0_q8_0_block_fma`]: `acc` plus the block's dot.
pub fn vec_dot_q4_0_q8_0_block_fma_step(xb: &BlockQ4_0, yb: &BlockQ8_0, acc: f32) -> f32 {
    let mut isum = 0i32;
    for j in 0..16 {
        isum += ((xb.qs[j] & 0x0f) as i32 - 8) * yb.qs[j] as i32;
        isum += ((xb.qs[j] >> 4) as i32 - 8) * yb.qs[j + 16] as i32;
    }
    (isum as f32).mul_add(fp16(xb.d) * fp16(yb.d), acc)
}

pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_1_q8_1: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            s0 += (xb.qs[j] & 0x0f) as i32 * yb.qs[j] as i32;
            s1 += (xb.qs[j] >> 4) as i32 * yb.qs[j + 16] as i32;
        }
        sumf += (fp16(xb.d) * fp16(yb.d)) * (s0 + s1) as f32 + fp16(xb.m) * fp16(yb.s);
    }
    sumf
}

#[inline]
fn qh_bits(qh: [u8; 4]) -> u32 {
    u32::from_le_bytes(qh)
}

pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_0_q8_0: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = qh_bits(xb.qh);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let x0 = (((xb.qs[j] & 0x0f) as u32 | h0) as i32) - 16;
            let x1 = (((xb.qs[j] >> 4) as u32 | h1) as i32) - 16;
            s0 += x0 * yb.qs[j] as i32;
            s1 += x1 * yb.qs[j + 16] as i32;
        }
        sumf += (fp16(xb.d) * fp16(yb.d)) * (s0 + s1) as f32;
    }
    sumf
}

pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_1_q8_1: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let qh = qh_bits(xb.qh);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            let x0 = ((xb.qs[j] & 0x0f) as u32 | h0) as i32;
            let x1 = ((xb.qs[j] >> 4) as u32 | h1) as i32;
            s0 += x0 * yb.qs[j] as i32;
            s1 += x1 * yb.qs[j + 16] as i32;
        }
        sumf += (fp16(xb.d) * fp16(yb.d)) * (s0 + s1) as f32 + fp16(xb.m) * fp16(yb.s);
    }
    sumf
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q8_0_q8_0: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK8_0 {
            sumi += xb.qs[j] as i32 * yb.qs[j] as i32;
        }
        sumf += sumi as f32 * (fp16(xb.d) * fp16(yb.d));
    }
    sumf
}

pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: block count mismatch");
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * (xb.scales[j] >> 4) as i32;
        }
        let dall = yb.d * fp16(xb.d);
        let dmin = yb.d * fp16(xb.dmin);
        let mut isum = 0i32;
        let mut is = 0;
        for k in 0..QK_K / 128 {
            let q2 = &xb.qs[k * 32..k * 32 + 32];
            for j in 0..4 {
                let shift = 2 * j;
                let q8 = &yb.qs[k * 128 + j * 32..k * 128 + j * 32 + 32];
                for half in 0..2 {
                    let d = (xb.scales[is] & 0x0f) as i32;
                    is += 1;
                    let mut isuml = 0i32;
                    for l in half * 16..half * 16 + 16 {
                        isuml += q8[l] as i32 * ((q2[l] >> shift) & 3) as i32;
                    }
                    isum += d * isuml;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// Unpacks Q3_K's 12 bytes of 6-bit scales to 16 signed values (already
/// minus 32), as ggml's kmask shuffle does.
#[inline]
pub(crate) fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for j in 0..16 {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        out[j] = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Signed 3-bit quants of a Q3_K block in element order.
#[inline]
fn q3k_values(xb: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    let mut m = 1u8;
    for half in 0..2 {
        let q3 = &xb.qs[half * 32..half * 32 + 32];
        for j in 0..4 {
            for l in 0..32 {
                let v = ((q3[l] >> (2 * j)) & 3) as i8;
                a[half * 128 + j * 32 + l] = v - if xb.hmask[l] & m != 0 { 0 } else { 4 };
            }
            m = m.wrapping_shl(1);
        }
    }
    a
}

pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: block count mismatch");
    let mut sums = [0.0f32; 8];
    for (xb, yb) in x.iter().zip(y) {
        let a = q3k_values(xb);
        let scales = q3k_scales(&xb.scales);
        let mut aux32 = [0i32; 8];
        for j in 0..QK_K / 8 {
            let sc = scales[j / 2] as i32;
            for l in 0..8 {
                let p = yb.qs[j * 8 + l] as i32 * a[j * 8 + l] as i32;
                aux32[l] += sc * p;
            }
        }
        let d = fp16(xb.d) * yb.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q4_K / Q5_K 6-bit scale and min of sub-block `j` (ggml's
/// `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    crate::blocks::q4_k_scale_min(j, q)
}

fn k4_dot(
    a: &[i8; QK_K],
    scales: &[u8; 12],
    d: u16,
    dmin: u16,
    yb: &BlockQ8K,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, scales);
        sc[j] = s;
        mn[j] = m;
    }
    let mut sumi = 0i32;
    for j in 0..QK_K / 16 {
        sumi += yb.bsums[j] as i32 * mn[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for j in 0..QK_K / 8 {
        let s = sc[j / 4] as i32;
        for l in 0..8 {
            aux32[l] += s * (yb.qs[j * 8 + l] as i32 * a[j * 8 + l] as i32);
        }
    }
    let d = fp16(d) * yb.d;
    for l in 0..8 {
        sums[l] += d * aux32[l] as f32;
    }
    let dmin = fp16(dmin) * yb.d;
    *sumf -= dmin * sumi as f32;
}

/// Q4_K x Q8_K as llama.cpp's x86 GEMV over repacked Q4_K: one exact
/// integer sum per 256-element block, scaled into a fused multiply-add.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_grouped(x, y, 4)
}

/// Q4_K x Q8_K as llama.cpp's x86 multi-token GEMM over repacked Q4_K:
/// one exact integer sum per 64 elements.
pub fn vec_dot_q4_k_q8_k_sum64(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_grouped(x, y, 1)
}

/// `group` = 64-element pieces per rounding group (1 or 4).
fn q4k_grouped(x: &[BlockQ4K], y: &[BlockQ8K], group: usize) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: block count mismatch");
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (xb, yb) in x.iter().zip(y) {
        let ds = f16_to_f32(xb.d) * yb.d;
        let dm = f16_to_f32(xb.dmin) * yb.d;
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..4 {
            for (half, shift) in [(0usize, 0u32), (1, 4)] {
                let sub = 2 * j + half;
                let (sc, mn) = scale_min_k4(sub, &xb.scales);
                let mut dot = 0i32;
                for l in 0..32 {
                    let q = ((xb.qs[32 * j + l] >> shift) & 0x0f) as i32;
                    dot += q * yb.qs[32 * sub + l] as i32;
                }
                isum += sc as i32 * dot;
                msum += mn as i32 * (yb.bsums[2 * sub] as i32 + yb.bsums[2 * sub + 1] as i32);
            }
            if (j + 1) % group == 0 {
                acc = (isum as f32).mul_add(ds, acc);
                acc_min = (msum as f32).mul_add(dm, acc_min);
                isum = 0;
                msum = 0;
            }
        }
    }
    acc - acc_min
}

pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: block count mismatch");
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut a = [0i8; QK_K];
        let mut m = 1u8;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                let hi0 = if xb.qh[l] & m != 0 { 16 } else { 0 };
                let hi1 = if xb.qh[l] & (m << 1) != 0 { 16 } else { 0 };
                a[j * 64 + l] = (xb.qs[j * 32 + l] & 0x0f) as i8 + hi0;
                a[j * 64 + 32 + l] = (xb.qs[j * 32 + l] >> 4) as i8 + hi1;
            }
            m = m.wrapping_shl(2);
        }
        k4_dot(&a, &xb.scales, xb.d, xb.dmin, yb, &mut sums, &mut sumf);
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Signed 6-bit quants of a Q6_K block in element order.
#[inline]
fn q6k_values(xb: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for n in 0..2 {
        let ql = &xb.ql[n * 64..n * 64 + 64];
        let qh = &xb.qh[n * 32..n * 32 + 32];
        let o = n * 128;
        for l in 0..32 {
            a[o + l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[o + l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[o + l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[o + l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: block count mismatch");
    let mut sums = [0.0f32; 8];
    for (xb, yb) in x.iter().zip(y) {
        let a = q6k_values(xb);
        let mut aux32 = [0i32; 8];
        for j in 0..QK_K / 8 {
            let s = xb.scales[j / 2] as i32;
            for l in 0..8 {
                aux32[l] += s * (yb.qs[j * 8 + l] as i32 * a[j * 8 + l] as i32);
            }
        }
        let d = fp16(xb.d) * yb.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q6_K as llama.cpp's tiled K-quant matmul rounds it (ggml-cpu `tiled/`,
/// its AVX512-VNNI microkernel, used for batches of 8 tokens and more):
/// per block the exact integer sum of scale x (q - 32) x a, times d_w
/// (rounded), then fused into the running sum with d_a.
pub fn vec_dot_q6_k_q8_k_block_fma(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot_q6_k_q8_k_block_fma: block count mismatch"
    );
    let mut acc = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let a = q6k_values(xb);
        let mut isum = 0i32;
        for (j, (qa, qy)) in a.chunks_exact(16).zip(yb.qs.chunks_exact(16)).enumerate() {
            let dot: i32 = qa.iter().zip(qy).map(|(&w, &v)| w as i32 * v as i32).sum();
            isum += xb.scales[j] as i32 * dot;
        }
        acc = (isum as f32 * fp16(xb.d)).mul_add(yb.d, acc);
    }
    acc
}

/// ggml_vec_dot_f16 without SIMD, in the order of [`dot_ggml_order`].
pub fn vec_dot_f16(x: &[u16], y: &[u16]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16: length mismatch");
    dot_ggml_order(x.len(), |i| f16_to_f32(x[i]), |i| f16_to_f32(y[i]))
}

/// [`vec_dot_f16`] with the activations already converted to f32: the
/// same computation ([`dot_ggml_order`]) when `y` holds f16 values.
pub fn vec_dot_f16_f32(x: &[u16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16_f32: length mismatch");
    dot_ggml_order(x.len(), |i| f16_to_f32(x[i]), |i| y[i])
}

/// ggml_vec_dot_bf16 without SIMD, in the order of [`dot_ggml_order`].
pub fn vec_dot_bf16(x: &[u16], y: &[u16]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_bf16: length mismatch");
    dot_ggml_order(x.len(), |i| bf16_to_f32(x[i]), |i| bf16_to_f32(y[i]))
}

/// The summation order of ggml's AVX-512 float dot products, lane by lane:
/// four 16-lane accumulators fed by fused multiply-adds over 64-element
/// steps, combined (0+2)+(1+3), reduced 16 -> 8 -> 4 lanes by halves, then
/// (l0+l2)+(l1+l3); the tail past the last full step is summed in f64.
pub fn dot_ggml_order(n: usize, x: impl Fn(usize) -> f32, y: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [[0f32; 16]; 4];
    let steps = n / 64;
    for s in 0..steps {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, a) in lanes.iter_mut().enumerate() {
                let k = s * 64 + 16 * j + l;
                *a = x(k).mul_add(y(k), *a);
            }
        }
    }
    let mut v = [0f32; 16];
    for (l, out) in v.iter_mut().enumerate() {
        *out = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = reduce_add_16(&v) as f64;
    for k in steps * 64..n {
        sum += (x(k) * y(k)) as f64;
    }
    sum as f32
}

/// The sum of 16 lanes in `_mm512_reduce_add_ps`'s order: halves
/// 16 -> 8 -> 4, then (0+2)+(1+3).
pub fn reduce_add_16(v: &[f32]) -> f32 {
    assert_eq!(v.len(), 16, "reduce_add_16: length mismatch");
    let mut t8 = [0f32; 8];
    for (i, t) in t8.iter_mut().enumerate() {
        *t = v[8 + i] + v[i];
    }
    let mut t4 = [0f32; 4];
    for (i, t) in t4.iter_mut().enumerate() {
        *t = t8[4 + i] + t8[i];
    }
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// ggml_vec_dot_f32 without SIMD, in the order of [`dot_ggml_order`].
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32: length mismatch");
    dot_ggml_order(x.len(), |i| x[i], |i| y[i])
}

// ---------------------------------------------------------------------------
// Dequantization (ggml dequantize_row_*)

pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK4_0,
        "dequantize_row_q4_0: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = fp16(xb.d);
        for j in 0..16 {
            yb[j] = ((xb.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            yb[j + 16] = ((xb.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK4_1,
        "dequantize_row_q4_1: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let d = fp16(xb.d);
        let m = fp16(xb.m);
        for j in 0..16 {
            yb[j] = (xb.qs[j] & 0x0f) as f32 * d + m;
            yb[j + 16] = (xb.qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK5_0,
        "dequantize_row_q5_0: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = fp16(xb.d);
        let qh = qh_bits(xb.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            yb[j] = (((xb.qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
            yb[j + 16] = (((xb.qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK5_1,
        "dequantize_row_q5_1: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let d = fp16(xb.d);
        let m = fp16(xb.m);
        let qh = qh_bits(xb.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            yb[j] = ((xb.qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
            yb[j + 16] = ((xb.qs[j] >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK8_0,
        "dequantize_row_q8_0: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = fp16(xb.d);
        for j in 0..QK8_0 {
            yb[j] = xb.qs[j] as f32 * d;
        }
    }
}

pub fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q2_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(xb.d);
        let min = fp16(xb.dmin);
        let mut o = 0;
        let mut is = 0;
        for n in 0..2 {
            let q = &xb.qs[n * 32..n * 32 + 32];
            for j in 0..4 {
                let shift = 2 * j;
                for half in 0..2 {
                    let sc = xb.scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in half * 16..half * 16 + 16 {
                        yb[o] = dl * ((q[l] >> shift) & 3) as f32 - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

pub fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q3_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = fp16(xb.d);
        let scales = q3k_scales(&xb.scales);
        let a = q3k_values(xb);
        for (i, o) in yb.iter_mut().enumerate() {
            let dl = d_all * scales[i / 16] as f32;
            *o = dl * a[i] as f32;
        }
    }
}

pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q4_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(xb.d);
        let min = fp16(xb.dmin);
        for j in 0..4 {
            let (s1, m1) = scale_min_k4(2 * j, &xb.scales);
            let (s2, m2) = scale_min_k4(2 * j + 1, &xb.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let q = &xb.qs[j * 32..j * 32 + 32];
            for l in 0..32 {
                yb[j * 64 + l] = d1 * (q[l] & 0x0f) as f32 - m1;
                yb[j * 64 + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q5_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(xb.d);
        let min = fp16(xb.dmin);
        let mut u1 = 1u8;
        for j in 0..4 {
            let u2 = u1 << 1;
            let (s1, m1) = scale_min_k4(2 * j, &xb.scales);
            let (s2, m2) = scale_min_k4(2 * j + 1, &xb.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let q = &xb.qs[j * 32..j * 32 + 32];
            for l in 0..32 {
                let h1 = if xb.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if xb.qh[l] & u2 != 0 { 16 } else { 0 };
                yb[j * 64 + l] = d1 * ((q[l] & 0x0f) + h1) as f32 - m1;
                yb[j * 64 + 32 + l] = d2 * ((q[l] >> 4) + h2) as f32 - m2;
            }
            u1 = u1.wrapping_shl(2);
        }
    }
}

pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q6_k: length mismatch"
    );
    for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(xb.d);
        let a = q6k_values(xb);
        for (i, o) in yb.iter_mut().enumerate() {
            // ggml: d * sc[is] * q, evaluated left to right.
            *o = d * xb.scales[i / 16] as f32 * a[i] as f32;
        }
    }
}

// ---------------------------------------------------------------------------
// Float vector ops

/// y += a * x (ggml_vec_mad_f32; multiply and add rounded separately).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    // Fused, as ggml_vec_mad_f32 (and the GEMM of its tiled attention).
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.mul_add(a, *o);
    }
}

/// y[k] += a[d] * m[d][k], fused, d in order: `axpy` by `axpy`.
pub fn fma_rows(a: &[f32], m: &[f32], y: &mut [f32]) {
    let n = y.len();
    assert_eq!(m.len(), a.len() * n, "fma_rows: length mismatch");
    for (&ad, row) in a.iter().zip(m.chunks_exact(n.max(1))) {
        axpy(ad, row, y);
    }
}

/// x[i] = exp(x[i] - m) as [`expf_ggml`].
pub fn exp_shift(x: &mut [f32], m: f32) {
    for v in x {
        *v = expf_ggml(*v - m);
    }
}

/// x *= s.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// x *= y elementwise.
pub fn mul(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "mul: length mismatch");
    for (o, &v) in x.iter_mut().zip(y) {
        *o *= v;
    }
}

/// x += y elementwise.
pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add: length mismatch");
    for (o, &v) in x.iter_mut().zip(y) {
        *o += v;
    }
}

/// Sum of squares as ggml's rms_norm accumulates it: f32 squares, f64 sum.
pub fn sum_squares(x: &[f32]) -> f64 {
    let mut sum = 0.0f64;
    for &v in x {
        sum += (v * v) as f64;
    }
    sum
}

/// out = x / sqrt(mean(x^2) + eps), as ggml_compute_forward_rms_norm_f32.
pub fn rms_norm(x: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "rms_norm: length mismatch");
    if x.is_empty() {
        return;
    }
    let mean = (sum_squares(x) / x.len() as f64) as f32;
    let s = 1.0 / (mean + eps).sqrt();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * s;
    }
}

/// ggml_silu_f32: x / (1 + exp(-x)).
#[inline]
pub fn silu_f32(x: f32) -> f32 {
    x / (1.0 + expf_ggml(0.0 - x))
}

/// Bit patterns of the constants of [`expf_ggml`] (Rust 1.63 has no hex
/// float literals).
pub mod expf_consts {
    /// 0x1.8p23: adding it rounds to an integer.
    pub const SHIFT: u32 = 0x4b40_0000;
    /// 0x1.715476p+0 = log2(e).
    pub const LOG2E: u32 = 0x3fb8_aa3b;
    /// 0x1.62e4p-1 and 0x1.7f7d1cp-20: ln 2 in two parts.
    pub const LN2_HI: u32 = 0x3f31_7200;
    pub const LN2_LO: u32 = 0x35bf_be8e;
    /// Polynomial coefficients, degree 1 to 5.
    pub const C1: u32 = 0x3f7f_fff6;
    pub const C2: u32 = 0x3eff_fedb;
    pub const C3: u32 = 0x3e2a_af33;
    pub const C4: u32 = 0x3d2b_9f17;
    pub const C5: u32 = 0x3c07_2010;
    /// Beyond +-LIMIT the result is 0 or infinity either way (ggml's too),
    /// and within it 2^n splits into two normal halves.
    pub const LIMIT: f32 = 130.0;
}

/// exp(x) rounded step for step as ggml's AVX-512 `ggml_v_expf` (used by
/// llama.cpp's x86 builds for SiLU and softmax), so activations come out
/// bit-identical to the reference engine; error below 2 ulp.
pub fn expf_ggml(x: f32) -> f32 {
    use expf_consts as c;
    let x = x.clamp(-c::LIMIT, c::LIMIT);
    let r = f32::from_bits(c::SHIFT);
    let z = x.mul_add(f32::from_bits(c::LOG2E), r);
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(c::LN2_HI), x);
    let b = (-n).mul_add(f32::from_bits(c::LN2_LO), b);
    let u = b * b;
    let p54 = f32::from_bits(c::C5).mul_add(b, f32::from_bits(c::C4));
    let p32 = f32::from_bits(c::C3).mul_add(b, f32::from_bits(c::C2));
    let p10 = f32::from_bits(c::C1).mul_add(b, 1.0);
    let j = p54.mul_add(u, p32).mul_add(u, p10);
    // j * 2^n in two exact halves (each power a normal float), one rounding.
    let n1 = (n * 0.5).trunc();
    let pow2 = |k: f32| f32::from_bits(((k as i32 + 127) as u32) << 23);
    j * pow2(n1) * pow2(n - n1)
}

pub(crate) const GELU_COEF_A: f32 = 0.044715;
pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// ggml_gelu_f32 (tanh approximation), computed in f32.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// [`gelu_f32`] as GCC compiles ggml's C with `-ffp-contract=fast`: the
/// `1 + GELU_COEF_A*x*x` fused into one multiply-add. ggml-cpu builds its
/// f16 GELU table (`ggml_table_gelu_f16`) with it.
#[inline]
pub fn gelu_f32_contracted(x: f32) -> f32 {
    let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// ggml-cpu's table of gelu over every f16 input, as f16 (built once).
fn gelu_f16_table() -> &'static [u16; 65536] {
    static TABLE: OnceLock<Box<[u16; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u16; 65536]);
        for (h, o) in t.iter_mut().enumerate() {
            *o = f32_to_f16(gelu_f32_contracted(f16_to_f32(h as u16)));
        }
        t
    })
}

/// [`gelu_f16_table`] with every entry widened to f32 (exact), for the
/// SIMD kernels: a gather from it is the lookup and the conversion back.
#[cfg(target_arch = "x86_64")]
pub(crate) fn gelu_f32_table() -> &'static [f32; 65536] {
    static TABLE: OnceLock<Box<[f32; 65536]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; 65536]);
        for (o, &h) in t.iter_mut().zip(gelu_f16_table().iter()) {
            *o = f16_to_f32(h);
        }
        t
    })
}

/// GELU exactly as llama.cpp's CPU backend computes it (`GGML_GELU_FP16`):
/// x <= -10 gives 0, x >= 10 gives x, otherwise x is rounded to f16 and
/// looked up in a table of f16(gelu(f16 value)).
pub fn gelu_ggml(x: &mut [f32]) {
    let t = gelu_f16_table();
    for v in x.iter_mut() {
        if *v <= -10.0 {
            *v = 0.0;
        } else if *v < 10.0 || v.is_nan() {
            *v = f16_to_f32(t[f32_to_f16(*v) as usize]);
        }
    }
}

/// gate = gelu_ggml(gate) * up, as ggml_vec_geglu_f32 with GGML_GELU_FP16.
pub fn geglu_ggml(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu_ggml: length mismatch");
    let t = gelu_f16_table();
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = if *g <= -10.0 {
            0.0
        } else if *g >= 10.0 {
            *g * u
        } else {
            f16_to_f32(t[f32_to_f16(*g) as usize]) * u
        };
    }
}

/// gate = silu(gate) * up (ggml_swiglu).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: length mismatch");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_f32(*g) * u;
    }
}

/// Rotates adjacent pairs (x[2i], x[2i+1]) by the angle whose cosine and
/// sine are cos[i], sin[i] (ggml rope mode 0). Only the first
/// `2 * cos.len()` elements are rotated (partial rotary dims).
pub fn rope_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope_pairs: cos/sin length mismatch");
    assert!(
        x.len() >= 2 * cos.len(),
        "rope_pairs: x shorter than 2*cos.len()"
    );
    for i in 0..cos.len() {
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        (x[2 * i], x[2 * i + 1]) = rotate(x0, x1, cos[i], sin[i]);
    }
}

/// Rotates split halves (x[i], x[i+n]) with n = cos.len() (ggml rope NEOX
/// mode). Only the first `2 * cos.len()` elements are rotated.
pub fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    assert_eq!(cos.len(), sin.len(), "rope_neox: cos/sin length mismatch");
    let n = cos.len();
    assert!(x.len() >= 2 * n, "rope_neox: x shorter than 2*cos.len()");
    for i in 0..n {
        let (x0, x1) = (x[i], x[i + n]);
        (x[i], x[i + n]) = rotate(x0, x1, cos[i], sin[i]);
    }
}

/// (x0 cos - x1 sin, x0 sin + x1 cos) rounded as GCC compiles ggml's rope
/// (-ffp-contract=fast fuses the first product of each line).
#[inline]
pub fn rotate(x0: f32, x1: f32, cos: f32, sin: f32) -> (f32, f32) {
    (x0.mul_add(cos, -(x1 * sin)), x0.mul_add(sin, x1 * cos))
}
