//! The K-quants: 256-element super-blocks with quantized sub-block scales
//! (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the Q8_K activation format.
//! Layouts as ggml-common.h; quantizers as ggml's `quantize_row_*_ref`.
//!
//! Loops index several arrays in step, as ggml's C does, so each line can
//! be checked against ggml-quants.c.
#![allow(clippy::needless_range_loop)]

use super::util::*;
use super::GgmlFormat;
use gguf::GgmlType;

pub const QK_K: usize = 256;

pub struct Q2K;
pub struct Q3K;
pub struct Q4K;
pub struct Q5K;
pub struct Q6K;
pub struct Q8K;

/// Packs four 2-bit planes: byte `l` of each 32-byte group holds elements
/// l, l+32, l+64, l+96 of its 128-element half.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for (half, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            qs[half * 32 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d:f16, dmin:f16.
const Q2K_SCALES: usize = 0;
const Q2K_QS: usize = 16;
const Q2K_D: usize = 80;
const Q2K_DMIN: usize = 82;

impl GgmlFormat for Q2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 84;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, Q2K_D);
        let min = read_f16(b, Q2K_DMIN);
        let scales = &b[Q2K_SCALES..Q2K_SCALES + 16];
        let mut is = 0;
        let mut out = 0;
        for half in 0..2 {
            let q = &b[Q2K_QS + 32 * half..Q2K_QS + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        let qv = ((q[l + 16 * part] >> shift) & 3) as f32;
                        y[out] = dl * qv - ml;
                        out += 1;
                    }
                }
            }
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        const Q4SCALE: f32 = 15.0;
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for i in 0..16 {
                weights[i] = xs[i].abs();
            }
            scales[j] = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut mins[j],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut sc = [0u8; 16];
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            write_f16(b, Q2K_D, max_scale / Q4SCALE);
        } else {
            write_f16(b, Q2K_D, 0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            write_f16(b, Q2K_DMIN, max_min / Q4SCALE);
        } else {
            write_f16(b, Q2K_DMIN, 0.0);
        }
        let dall = read_f16(b, Q2K_D);
        let dmin = read_f16(b, Q2K_DMIN);
        for j in 0..16 {
            let d = dall * (sc[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * (sc[j] >> 4) as f32;
            for ii in 0..16 {
                let q = nearest_int((x[16 * j + ii] + dm) / d);
                l[16 * j + ii] = q.clamp(0, 3) as u8;
            }
        }
        b[Q2K_SCALES..Q2K_SCALES + 16].copy_from_slice(&sc);
        pack_2bit(&l, &mut b[Q2K_QS..Q2K_QS + 64]);
    }
}

// Q3_K: hmask[32], qs[64], scales[12] (16 packed 6-bit scales), d:f16.
const Q3K_HMASK: usize = 0;
const Q3K_QS: usize = 32;
const Q3K_SCALES: usize = 96;
const Q3K_D: usize = 108;

/// The 6-bit scale (0..63, biased by 32) of sub-block `j` of a Q3_K block.
#[inline]
fn q3k_scale(scales: &[u8], j: usize) -> i32 {
    let low = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32
}

impl GgmlFormat for Q3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 110;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d_all = read_f16(b, Q3K_D);
        let scales = &b[Q3K_SCALES..Q3K_SCALES + 12];
        let hm = &b[Q3K_HMASK..Q3K_HMASK + 32];
        let mut m = 1u8;
        let mut is = 0;
        let mut out = 0;
        for half in 0..2 {
            let q = &b[Q3K_QS + 32 * half..Q3K_QS + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d_all * (q3k_scale(scales, is) - 32) as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = l + 16 * part;
                        let low = ((q[k] >> shift) & 3) as i32;
                        let sub = if hm[k] & m != 0 { 0 } else { 4 };
                        y[out] = dl * (low - sub) as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let mut l8 = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l8[16 * j..], true);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let mut sc = [0u8; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                let l = nearest_int(iscale * scales[j]) as i8;
                let l = (l.clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    sc[j] = l & 0xF;
                } else {
                    sc[j - 8] |= (l & 0xF) << 4;
                }
                sc[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            write_f16(b, Q3K_D, 1.0 / iscale);
        } else {
            write_f16(b, Q3K_D, 0.0);
        }
        let dall = read_f16(b, Q3K_D);
        for j in 0..16 {
            let d = dall * (q3k_scale(&sc, j) - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l8[16 * j + ii] = (q + 4) as i8;
            }
        }
        let mut hmask = [0u8; 32];
        let mut l = [0u8; QK_K];
        for j in 0..QK_K {
            let mut v = l8[j] as u8;
            if v > 3 {
                hmask[j % 32] |= 1 << (j / 32);
                v -= 4;
            }
            l[j] = v;
        }
        b[Q3K_HMASK..Q3K_HMASK + 32].copy_from_slice(&hmask);
        pack_2bit(&l, &mut b[Q3K_QS..Q3K_QS + 64]);
        b[Q3K_SCALES..Q3K_SCALES + 12].copy_from_slice(&sc);
    }
}

/// Scale search of the eight 32-element sub-blocks of Q4_K/Q5_K, packing
/// the 6-bit scales and mins into `scales_out` and returning (d, dmin) as
/// f16 bits plus the per-element quants in `l`.
fn quantize_qk_scales_mins(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
    scales_out: &mut [u8],
) -> (u16, u16) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for i in 0..32 {
            weights[i] = av_x + xs[i].abs();
        }
        scales[j] = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut mins[j],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut scales_out[..12];
    sc.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    let (df, dminf) = (f16_to_f32(d), f16_to_f32(dmin));
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, sc);
        let dd = df * s as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dminf * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / dd);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
    (d, dmin)
}

// Q4_K: d:f16, dmin:f16, scales[12], qs[128] (64-element groups: low nibbles
// first 32 elements, high nibbles the next 32).
impl GgmlFormat for Q4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 144;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let min = read_f16(b, 2);
        let scales = &b[4..16];
        for g in 0..4 {
            let q = &b[16 + 32 * g..16 + 32 * g + 32];
            let (s1, m1) = get_scale_min_k4(2 * g, scales);
            let (s2, m2) = get_scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let out = &mut y[64 * g..64 * g + 64];
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let mut l = [0u8; QK_K];
        let (d, dmin) = quantize_qk_scales_mins(x, 15, -1.0, 20, &mut l, &mut b[4..16]);
        write_u16(b, 0, d);
        write_u16(b, 2, dmin);
        for g in 0..4 {
            for i in 0..32 {
                b[16 + 32 * g + i] = l[64 * g + i] | (l[64 * g + i + 32] << 4);
            }
        }
    }
}

// Q5_K: d:f16, dmin:f16, scales[12], qh[32], qs[128]; the fifth bit of
// element i of 64-element group g is bit 2g (first 32) or 2g+1 of qh[i].
impl GgmlFormat for Q5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 176;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let min = read_f16(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        for g in 0..4 {
            let ql = &b[48 + 32 * g..48 + 32 * g + 32];
            let (s1, m1) = get_scale_min_k4(2 * g, scales);
            let (s2, m2) = get_scale_min_k4(2 * g + 1, scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * g), 2u8 << (2 * g));
            let out = &mut y[64 * g..64 * g + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * ((ql[l] & 0xF) as i32 + h1) as f32 - m1;
                out[l + 32] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
            }
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let mut l = [0u8; QK_K];
        let (d, dmin) = quantize_qk_scales_mins(x, 31, -0.5, 15, &mut l, &mut b[4..16]);
        write_u16(b, 0, d);
        write_u16(b, 2, dmin);
        let mut qh = [0u8; 32];
        for g in 0..4 {
            let (m1, m2) = (1u8 << (2 * g), 2u8 << (2 * g));
            for j in 0..32 {
                let mut l1 = l[64 * g + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * g + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                b[48 + 32 * g + j] = l1 | (l2 << 4);
            }
        }
        b[16..48].copy_from_slice(&qh);
    }
}

// Q6_K: ql[128], qh[64], scales[16] i8, d:f16.
const Q6K_QL: usize = 0;
const Q6K_QH: usize = 128;
const Q6K_SCALES: usize = 192;
const Q6K_D: usize = 208;

impl GgmlFormat for Q6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 210;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, Q6K_D);
        for half in 0..2 {
            let ql = &b[Q6K_QL + 64 * half..Q6K_QL + 64 * half + 64];
            let qh = &b[Q6K_QH + 32 * half..Q6K_QH + 32 * half + 32];
            let sc = &b[Q6K_SCALES + 8 * half..Q6K_SCALES + 8 * half + 8];
            let out = &mut y[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let scale = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..], 1, None);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            b[..Self::TYPE_SIZE].fill(0);
            write_f16(b, Q6K_D, 0.0);
            return;
        }
        let iscale = -128.0 / max_scale;
        write_f16(b, Q6K_D, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let dall = read_f16(b, Q6K_D);
        for j in 0..16 {
            let d = dall * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        for half in 0..2 {
            let j = 128 * half;
            for i in 0..32 {
                let lv = |k: usize| l[j + i + k] as u8;
                b[Q6K_QL + 64 * half + i] = (lv(0) & 0xF) | ((lv(64) & 0xF) << 4);
                b[Q6K_QL + 64 * half + i + 32] = (lv(32) & 0xF) | ((lv(96) & 0xF) << 4);
                b[Q6K_QH + 32 * half + i] = (lv(0) >> 4)
                    | ((lv(32) >> 4) << 2)
                    | ((lv(64) >> 4) << 4)
                    | ((lv(96) >> 4) << 6);
            }
        }
        for (k, &s) in sc.iter().enumerate() {
            b[Q6K_SCALES + k] = s as u8;
        }
    }
}

// Q8_K: d:f32, qs[256] i8, bsums[16] i16 (sums of each 16 quants).
impl GgmlFormat for Q8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 292;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_K;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for j in 0..QK_K {
            y[j] = d * (b[4 + j] as i8) as f32;
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in &x[..QK_K] {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            // ggml leaves bsums untouched here; zero them for a defined block.
            b[..Self::TYPE_SIZE].fill(0);
            return;
        }
        let iscale = -127.0 / max;
        for j in 0..QK_K {
            b[4 + j] = nearest_int(iscale * x[j]).min(127) as i8 as u8;
        }
        for j in 0..16 {
            let sum: i32 = (0..16).map(|i| b[4 + 16 * j + i] as i8 as i32).sum();
            let at = 4 + QK_K + 2 * j;
            b[at..at + 2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
