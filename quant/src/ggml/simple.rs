//! Plain number types (F32, F16, BF16) and the 32-element block formats
//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1. Byte layouts as ggml-common.h (all
//! fields little endian); quantizers as ggml's `quantize_row_*_ref`.
//!
//! Loops index several arrays in step, as ggml's C does, so each line can
//! be checked against ggml-quants.c.
#![allow(clippy::needless_range_loop)]

use super::util::*;
use super::GgmlFormat;
use gguf::GgmlType;

pub struct F32;
pub struct F16;
pub struct BF16;
pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q8_1;

impl GgmlFormat for F32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 4;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F32;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        b[..4].copy_from_slice(&x[0].to_le_bytes());
    }
}

impl GgmlFormat for F16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;
    const VEC_DOT_TYPE: GgmlType = GgmlType::F16;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        y[0] = read_f16(b, 0);
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        write_f16(b, 0, x[0]);
    }
}

impl GgmlFormat for BF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;
    const VEC_DOT_TYPE: GgmlType = GgmlType::BF16;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        y[0] = bf16_to_f32(read_u16(b, 0));
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        write_u16(b, 0, f32_to_bf16(x[0]));
    }
}

/// The value of largest magnitude (first one on ties), as the symmetric
/// 4/5-bit quantizers pick their scale sign from it.
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

// Q4_0: d:f16, qs[16]; element j in the low nibble of qs[j], j+16 in the high.
impl GgmlFormat for Q4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 18;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
            y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let max = signed_absmax(&x[..32]);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        for j in 0..16 {
            let x0 = x[j] * id;
            let x1 = x[j + 16] * id;
            let q0 = ((x0 + 8.5) as i8).min(15) as u8;
            let q1 = ((x1 + 8.5) as i8).min(15) as u8;
            b[2 + j] = q0 | (q1 << 4);
        }
    }
}

// Q4_1: d:f16, m:f16, qs[16]; value = q*d + m.
impl GgmlFormat for Q4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 20;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        let qs = &b[4..20];
        // Fused, as compilers contract ggml's `x0*d + m`; `q*d` is exact in
        // f32, so the unfused form (the kernels crate's) rounds the same.
        for j in 0..16 {
            y[j] = ((qs[j] & 0x0F) as f32).mul_add(d, m);
            y[j + 16] = ((qs[j] >> 4) as f32).mul_add(d, m);
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let (min, max) = min_max(&x[..32]);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        write_f16(b, 2, min);
        for j in 0..16 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[j + 16] - min) * id;
            let q0 = ((x0 + 0.5) as i8).min(15) as u8;
            let q1 = ((x1 + 0.5) as i8).min(15) as u8;
            b[4 + j] = q0 | (q1 << 4);
        }
    }
}

/// Splits 5-bit quants into 4-bit nibbles and the 32 fifth bits (qh, bit j =
/// element j), as Q5_0/Q5_1 store them.
fn pack_q5(q: &[u8; 32], qs: &mut [u8], qh_out: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= (((q[j] & 0x10) as u32) >> 4) << j;
        qh |= (((q[j + 16] & 0x10) as u32) >> 4) << (j + 16);
    }
    qh_out[..4].copy_from_slice(&qh.to_le_bytes());
}

/// The 5-bit quants of elements j and j+16 of a Q5 block.
#[inline]
fn unpack_q5(qs: &[u8], qh: u32, j: usize) -> (i32, i32) {
    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
    (((qs[j] & 0x0F) | xh0) as i32, ((qs[j] >> 4) | xh1) as i32)
}

// Q5_0: d:f16, qh[4], qs[16]; value = (q - 16)*d.
impl GgmlFormat for Q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 22;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..16 {
            let (q0, q1) = unpack_q5(qs, qh, j);
            y[j] = (q0 - 16) as f32 * d;
            y[j + 16] = (q1 - 16) as f32 * d;
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let max = signed_absmax(&x[..32]);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        let mut q = [0u8; 32];
        for j in 0..32 {
            q[j] = ((x[j] * id + 16.5) as i8).min(31) as u8;
        }
        let (head, qs) = b.split_at_mut(6);
        pack_q5(&q, qs, &mut head[2..6]);
    }
}

// Q5_1: d:f16, m:f16, qh[4], qs[16]; value = q*d + m.
impl GgmlFormat for Q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 24;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..16 {
            let (q0, q1) = unpack_q5(qs, qh, j);
            y[j] = (q0 as f32).mul_add(d, m); // fused, as Q4_1
            y[j + 16] = (q1 as f32).mul_add(d, m);
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let (min, max) = min_max(&x[..32]);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        write_f16(b, 2, min);
        let mut q = [0u8; 32];
        for j in 0..32 {
            // No clamp here in ggml either: (max-min)*id rounds to <= 31.5.
            q[j] = ((x[j] - min) * id + 0.5) as u8;
        }
        let (head, qs) = b.split_at_mut(8);
        pack_q5(&q, qs, &mut head[4..8]);
    }
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |a, &v| a.max(v.abs()))
}

// Q8_0: d:f16, qs[32] i8; value = q*d.
impl GgmlFormat for Q8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 34;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_0;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        for j in 0..32 {
            y[j] = (b[2 + j] as i8) as f32 * d;
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let d = absmax(&x[..32]) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        for j in 0..32 {
            b[2 + j] = (x[j] * id).round() as i8 as u8;
        }
    }
}

// Q8_1: d:f16, s:f16 (= d * sum of quants), qs[32] i8.
impl GgmlFormat for Q8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 36;
    const VEC_DOT_TYPE: GgmlType = GgmlType::Q8_1;
    fn dequantize_block(b: &[u8], y: &mut [f32]) {
        let d = read_f16(b, 0);
        for j in 0..32 {
            y[j] = (b[4 + j] as i8) as f32 * d;
        }
    }
    fn quantize_block_ref(x: &[f32], b: &mut [u8]) {
        let d = absmax(&x[..32]) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_f16(b, 0, d);
        let mut sum = 0i32;
        for j in 0..32 {
            let q = (x[j] * id).round() as i8;
            b[4 + j] = q as u8;
            sum += q as i32;
        }
        write_f16(b, 2, sum as f32 * d);
    }
}
