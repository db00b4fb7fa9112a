//! The RK3588 NPU's native matrix layouts (rk3588-npu.md section 4): every
//! operand is stored in 16-byte atoms along its channel axis.
//!
//! - A (activations, M x K): `[K/C2][M][C2]`, C2 = 8 fp16, 16 int8, 32 int4.
//! - B (weights, N x K): fp16 `[N/16][K/32][16][32]`, int8
//!   `[N/32][K/32][32][32]`, int4 `[N/64][K/32][64][32]`.
//! - C (output, M x N): `[N/C2][M][C2]`, C2 = 4 for fp32 / int32, 8 for int16.
//!
//! Int4 codes are two's-complement nibbles, two per byte, the element with
//! the even index (= even k, since atoms run along K) in the low nibble.
//! fp16 and wider values are little-endian. Padding is zero.
//! M is padded to a multiple of 4 (M = 1 stays 1), K to 32, N to 16/32/64.

use super::hadamard::round_up;

/// The NPU precision of one matmul (inputs; the output type follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// fp16 x fp16 -> fp32.
    Fp16,
    /// int8 x int8 -> int32.
    Int8,
    /// int4 x int4 -> int16 (may saturate).
    Int4,
}

/// Element type of the output C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    F32,
    I32,
    I16,
}

impl Precision {
    /// Bits per input element.
    pub fn bits(self) -> usize {
        match self {
            Precision::Fp16 => 16,
            Precision::Int8 => 8,
            Precision::Int4 => 4,
        }
    }
    /// K alignment (all precisions).
    pub fn k_align(self) -> usize {
        32
    }
    /// N alignment = rows of weights per B tile.
    pub fn n_align(self) -> usize {
        match self {
            Precision::Fp16 => 16,
            Precision::Int8 => 32,
            Precision::Int4 => 64,
        }
    }
    /// Channels per 16-byte atom of A.
    pub fn a_c2(self) -> usize {
        128 / self.bits()
    }
    pub fn output(self) -> OutputType {
        match self {
            Precision::Fp16 => OutputType::F32,
            Precision::Int8 => OutputType::I32,
            Precision::Int4 => OutputType::I16,
        }
    }
}

impl OutputType {
    pub fn bytes(self) -> usize {
        match self {
            OutputType::F32 | OutputType::I32 => 4,
            OutputType::I16 => 2,
        }
    }
    /// Channels per atom of C.
    pub fn c2(self) -> usize {
        16 / self.bytes()
    }
}

/// M padded as the NPU wants it: 1 stays 1, otherwise a multiple of 4.
pub fn pad_m(m: usize) -> usize {
    if m <= 1 {
        1
    } else {
        round_up(m, 4)
    }
}

/// N padded to the alignment of precision `p`.
pub fn round_up_n(n: usize, p: Precision) -> usize {
    round_up(n.max(1), p.n_align())
}

/// Padded shapes of one matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padded {
    pub m_pad: usize,
    pub k_pad: usize,
    pub n_pad: usize,
}

impl Padded {
    pub fn new(p: Precision, m: usize, k: usize, n: usize) -> Padded {
        Padded {
            m_pad: pad_m(m),
            k_pad: round_up(k.max(1), p.k_align()),
            n_pad: round_up(n.max(1), p.n_align()),
        }
    }
}

fn a_index(c2: usize, m_pad: usize, m: usize, k: usize) -> usize {
    ((k / c2) * m_pad + m) * c2 + k % c2
}

fn b_index(nb: usize, k_pad: usize, n: usize, k: usize) -> usize {
    (((n / nb) * (k_pad / 32) + k / 32) * nb + n % nb) * 32 + k % 32
}

fn c_index(c2: usize, m_pad: usize, m: usize, n: usize) -> usize {
    ((n / c2) * m_pad + m) * c2 + n % c2
}

fn put(buf: &mut [u8], bits: usize, e: usize, v: u32) {
    match bits {
        4 => {
            let b = &mut buf[e / 2];
            if e.is_multiple_of(2) {
                *b = (*b & 0xF0) | (v as u8 & 0x0F);
            } else {
                *b = (*b & 0x0F) | ((v as u8 & 0x0F) << 4);
            }
        }
        8 => buf[e] = v as u8,
        16 => buf[2 * e..2 * e + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        _ => buf[4 * e..4 * e + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

fn get(buf: &[u8], bits: usize, e: usize) -> u32 {
    match bits {
        4 => {
            let b = buf[e / 2];
            (if e.is_multiple_of(2) {
                b & 0x0F
            } else {
                b >> 4
            }) as u32
        }
        8 => buf[e] as u32,
        16 => u16::from_le_bytes([buf[2 * e], buf[2 * e + 1]]) as u32,
        _ => u32::from_le_bytes([buf[4 * e], buf[4 * e + 1], buf[4 * e + 2], buf[4 * e + 3]]),
    }
}

fn sign_extend(v: u32, bits: usize) -> i32 {
    let shift = 32 - bits as u32;
    ((v << shift) as i32) >> shift
}

/// Bytes of A for `m_pad x k_pad`.
pub fn a_bytes(p: Precision, m_pad: usize, k_pad: usize) -> usize {
    m_pad * k_pad * p.bits() / 8
}

/// Bytes of B for `n_pad x k_pad`.
pub fn b_bytes(p: Precision, n_pad: usize, k_pad: usize) -> usize {
    n_pad * k_pad * p.bits() / 8
}

/// Bytes of C for `m_pad x n_pad`.
pub fn c_bytes(o: OutputType, m_pad: usize, n_pad: usize) -> usize {
    m_pad * n_pad * o.bytes()
}

/// Packs a row-major `m x k` matrix given as raw element bits into A.
fn pack_a_bits(
    p: Precision,
    m: usize,
    k: usize,
    k_pad: usize,
    f: impl Fn(usize) -> u32,
) -> Vec<u8> {
    let m_pad = pad_m(m);
    let (c2, bits) = (p.a_c2(), p.bits());
    let mut buf = vec![0u8; a_bytes(p, m_pad, k_pad)];
    for r in 0..m {
        for c in 0..k {
            put(&mut buf, bits, a_index(c2, m_pad, r, c), f(r * k + c));
        }
    }
    buf
}

fn unpack_a_bits(p: Precision, buf: &[u8], m: usize, k: usize, k_pad: usize) -> Vec<u32> {
    let m_pad = pad_m(m);
    let (c2, bits) = (p.a_c2(), p.bits());
    debug_assert!(buf.len() >= a_bytes(p, m_pad, k_pad));
    let mut out = Vec::with_capacity(m * k);
    for r in 0..m {
        for c in 0..k {
            out.push(get(buf, bits, a_index(c2, m_pad, r, c)));
        }
    }
    out
}

fn pack_b_bits(
    p: Precision,
    n: usize,
    k: usize,
    k_pad: usize,
    f: impl Fn(usize) -> u32,
) -> Vec<u8> {
    let n_pad = round_up(n.max(1), p.n_align());
    let (nb, bits) = (p.n_align(), p.bits());
    let mut buf = vec![0u8; b_bytes(p, n_pad, k_pad)];
    for r in 0..n {
        for c in 0..k {
            put(&mut buf, bits, b_index(nb, k_pad, r, c), f(r * k + c));
        }
    }
    buf
}

fn unpack_b_bits(p: Precision, buf: &[u8], n: usize, k: usize, k_pad: usize) -> Vec<u32> {
    let (nb, bits) = (p.n_align(), p.bits());
    let mut out = Vec::with_capacity(n * k);
    for r in 0..n {
        for c in 0..k {
            out.push(get(buf, bits, b_index(nb, k_pad, r, c)));
        }
    }
    out
}

/// Packs int8 or int4 codes (`m x k`, row-major) into A with K padded to
/// `k_pad` (a multiple of 32, >= k). Int4 codes must lie in [-8, 7].
pub fn pack_a_int(p: Precision, codes: &[i8], m: usize, k: usize, k_pad: usize) -> Vec<u8> {
    debug_assert!(p != Precision::Fp16 && k_pad.is_multiple_of(32) && k_pad >= k);
    pack_a_bits(p, m, k, k_pad, |i| codes[i] as u8 as u32)
}

/// Inverse of [`pack_a_int`].
pub fn unpack_a_int(p: Precision, buf: &[u8], m: usize, k: usize, k_pad: usize) -> Vec<i8> {
    let bits = p.bits();
    unpack_a_bits(p, buf, m, k, k_pad)
        .into_iter()
        .map(|v| sign_extend(v, bits) as i8)
        .collect()
}

/// Packs fp16 bit patterns (`m x k`) into A.
pub fn pack_a_f16(x: &[u16], m: usize, k: usize, k_pad: usize) -> Vec<u8> {
    pack_a_bits(Precision::Fp16, m, k, k_pad, |i| x[i] as u32)
}

/// Inverse of [`pack_a_f16`].
pub fn unpack_a_f16(buf: &[u8], m: usize, k: usize, k_pad: usize) -> Vec<u16> {
    unpack_a_bits(Precision::Fp16, buf, m, k, k_pad)
        .into_iter()
        .map(|v| v as u16)
        .collect()
}

/// Packs int8 or int4 weight codes (`n x k`, row-major) into B.
pub fn pack_b_int(p: Precision, codes: &[i8], n: usize, k: usize, k_pad: usize) -> Vec<u8> {
    debug_assert!(p != Precision::Fp16 && k_pad.is_multiple_of(32) && k_pad >= k);
    pack_b_bits(p, n, k, k_pad, |i| codes[i] as u8 as u32)
}

/// Inverse of [`pack_b_int`].
pub fn unpack_b_int(p: Precision, buf: &[u8], n: usize, k: usize, k_pad: usize) -> Vec<i8> {
    let bits = p.bits();
    unpack_b_bits(p, buf, n, k, k_pad)
        .into_iter()
        .map(|v| sign_extend(v, bits) as i8)
        .collect()
}

/// Packs fp16 weights (`n x k`) into B.
pub fn pack_b_f16(x: &[u16], n: usize, k: usize, k_pad: usize) -> Vec<u8> {
    pack_b_bits(Precision::Fp16, n, k, k_pad, |i| x[i] as u32)
}

/// Inverse of [`pack_b_f16`].
pub fn unpack_b_f16(buf: &[u8], n: usize, k: usize, k_pad: usize) -> Vec<u16> {
    unpack_b_bits(Precision::Fp16, buf, n, k, k_pad)
        .into_iter()
        .map(|v| v as u16)
        .collect()
}

/// One output value as raw bits in the output type's width.
fn out_bits(o: OutputType) -> usize {
    o.bytes() * 8
}

/// Packs an `m x n` row-major output given as raw bits (i32 / f32 bits /
/// i16 in the low half) into C.
pub fn pack_c_bits(o: OutputType, vals: &[u32], m: usize, n: usize, n_pad: usize) -> Vec<u8> {
    let m_pad = pad_m(m);
    let (c2, bits) = (o.c2(), out_bits(o));
    let mut buf = vec![0u8; c_bytes(o, m_pad, n_pad)];
    for r in 0..m {
        for c in 0..n {
            put(&mut buf, bits, c_index(c2, m_pad, r, c), vals[r * n + c]);
        }
    }
    buf
}

/// Reads output (r, c) of C as f64 (exact for every output type).
pub fn read_c(o: OutputType, buf: &[u8], m_pad: usize, r: usize, c: usize) -> f64 {
    let v = get(buf, out_bits(o), c_index(o.c2(), m_pad, r, c));
    match o {
        OutputType::F32 => f32::from_bits(v) as f64,
        OutputType::I32 => v as i32 as f64,
        OutputType::I16 => v as u16 as i16 as f64,
    }
}

/// Unpacks C into an `m x n` row-major f64 matrix.
pub fn unpack_c(o: OutputType, buf: &[u8], m: usize, n: usize) -> Vec<f64> {
    let m_pad = pad_m(m);
    let mut out = Vec::with_capacity(m * n);
    for r in 0..m {
        for c in 0..n {
            out.push(read_c(o, buf, m_pad, r, c));
        }
    }
    out
}

/// Bytes C needs, checked against a buffer (for error reporting).
pub fn c_len_ok(o: OutputType, buf: &[u8], m: usize, n_pad: usize) -> bool {
    buf.len() >= c_bytes(o, pad_m(m), n_pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_low_nibble_is_even_k() {
        let codes: Vec<i8> = (0..32).map(|i| (i % 16 - 8) as i8).collect();
        let a = pack_a_int(Precision::Int4, &codes, 1, 32, 32);
        assert_eq!(a.len(), 16);
        assert_eq!(a[0] & 0x0F, (-8i8) as u8 & 0x0F);
        assert_eq!(a[0] >> 4, (-7i8) as u8 & 0x0F);
        let b = pack_b_int(Precision::Int4, &codes, 1, 32, 32);
        assert_eq!(b.len(), 64 * 16);
        assert_eq!(&b[..16], &a[..]);
    }

    #[test]
    fn int8_b_tile_order() {
        // n=33, k=64: element (32, 32) sits in the second N tile, second K tile.
        let (n, k) = (33, 64);
        let codes: Vec<i8> = (0..n * k).map(|i| (i % 251) as u8 as i8).collect();
        let b = pack_b_int(Precision::Int8, &codes, n, k, k);
        assert_eq!(b.len(), 64 * 64);
        let idx = ((2 + 1) * 32) * 32; // tile (1,1) at (1*2+1)*32*32, row 0, col 0
        assert_eq!(b[idx] as i8, codes[32 * k + 32]);
        assert_eq!(b[32] as i8, codes[k]); // (n=1,k=0): second row of tile (0,0)
        assert_eq!(b[32 * 32] as i8, codes[32]); // (n=0,k=32): tile (0,1)
    }

    #[test]
    fn a_and_c_atoms() {
        // A int8: element (m=1,k=17) at ((1*m_pad)+1)*16 + 1.
        let (m, k) = (4, 32);
        let codes: Vec<i8> = (0..m * k).map(|i| i as i8).collect();
        let a = pack_a_int(Precision::Int8, &codes, m, k, k);
        assert_eq!(a[(4 + 1) * 16 + 1] as i8, codes[k + 17]);
        // C int32: (m=2, n=5) at ((1*m_pad)+2)*4 + 1.
        let vals: Vec<u32> = (0..4 * 8).map(|i| i as u32).collect();
        let c = pack_c_bits(OutputType::I32, &vals, 4, 8, 8);
        let e = (4 + 2) * 4 + 1;
        assert_eq!(
            u32::from_le_bytes(c[4 * e..4 * e + 4].try_into().unwrap()),
            vals[2 * 8 + 5]
        );
    }
}
