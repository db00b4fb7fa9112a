//! One algorithm per kernel, written once against the [`Simd`] trait and
//! instantiated per ISA (memchr's design). Everything here is
//! `#[inline(always)]` so it is compiled inside the ISA's
//! `#[target_feature]` function that calls it.
//!
//! Exactness: integer parts of the dot products are exact; dequantize,
//! quantize, conversions and the elementwise ops perform the same IEEE
//! operations as [`crate::scalar`] (no fused multiply-add where the scalar
//! code rounds twice) and so match it bit for bit. Only sums of f32 terms
//! (dot products) and the exp-based activations differ; the
//! tolerances are stated in `tests.rs`.

use crate::blocks::*;
use crate::scalar;

/// The vector operations the kernels need. `B` is 32 bytes, `I` eight i32
/// accumulator lanes, `F` eight f32 lanes. All functions are `unsafe`
/// because they may only run on a CPU with the ISA's features, and the
/// pointer ones read or write the stated number of elements.
pub(crate) trait Simd: Copy {
    type B: Copy;
    type I: Copy;
    type F: Copy;

    /// Loads 32 bytes.
    unsafe fn load_b(p: *const u8) -> Self::B;
    /// Loads 16 bytes and returns [low nibbles of bytes 0..16, high nibbles of bytes 0..16].
    unsafe fn load_nibbles(p: *const u8) -> Self::B;
    unsafe fn set1_b(v: u8) -> Self::B;
    unsafe fn and_b(a: Self::B, b: Self::B) -> Self::B;
    /// `!a & b`
    unsafe fn andnot_b(a: Self::B, b: Self::B) -> Self::B;
    unsafe fn or_b(a: Self::B, b: Self::B) -> Self::B;
    unsafe fn sub_b(a: Self::B, b: Self::B) -> Self::B;
    /// Logical right shift of each byte by `n` (0..8).
    unsafe fn shr_b(a: Self::B, n: u32) -> Self::B;
    /// Left shift of each byte by `n` (0..8).
    unsafe fn shl_b(a: Self::B, n: u32) -> Self::B;
    /// 0xff in every byte that is non-zero.
    unsafe fn nonzero_b(a: Self::B) -> Self::B;
    /// 0xff in byte j when bit j of `bits` is set.
    unsafe fn bits_to_bytes(bits: u32) -> Self::B;

    unsafe fn zero_i() -> Self::I;
    /// acc += x . y for signed bytes; `y` must lie in -127..=127 (true for
    /// every Q8 activation block our quantizers make).
    unsafe fn dot(acc: Self::I, x: Self::B, y: Self::B) -> Self::I;
    /// acc += s0 * (x . y over bytes 0..16) + s1 * (x . y over bytes 16..32).
    unsafe fn dot_scaled(acc: Self::I, x: Self::B, y: Self::B, s0: i32, s1: i32) -> Self::I;
    unsafe fn hsum_i(a: Self::I) -> i32;
    /// True when [`Simd::dot`] / [`Simd::dot_u`] sum four consecutive bytes
    /// into each i32 lane (lane j: bytes 4j..4j+3), which interleaved
    /// weight layouts rely on.
    const DOT_QUADS: bool = true;
    /// Every i32 lane set to `v`.
    unsafe fn splat_i(v: i32) -> Self::I;
    /// The 4 bytes at `p` (any alignment) repeated in every 32-bit lane.
    unsafe fn bcast4_b(p: *const u8) -> Self::B;
    /// True when [`Simd::dot_u`] is exact for any unsigned `x` (0..=255),
    /// not only 0..=127 (a native u8 x i8 dot without i16 saturation).
    const DOT_U8: bool = false;
    /// Hints that the cache line at `p` will be read soon (no-op where the
    /// ISA module has no prefetch). Never faults, whatever `p` is.
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
    /// The lane sums of four vectors.
    #[inline(always)]
    unsafe fn hsum4_i(v: [Self::I; 4]) -> [i32; 4] {
        [
            Self::hsum_i(v[0]),
            Self::hsum_i(v[1]),
            Self::hsum_i(v[2]),
            Self::hsum_i(v[3]),
        ]
    }
    /// Eight i32 lanes from memory.
    unsafe fn load_i(p: *const i32) -> Self::I;
    unsafe fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I;
    /// Lane-wise product (low 32 bits).
    unsafe fn mul_i(a: Self::I, b: Self::I) -> Self::I;
    /// [`Simd::dot`] for `x` bytes known to be in 0..=127: the same lane
    /// sums, without the sign handling where the ISA needs it for signed x.
    #[inline(always)]
    unsafe fn dot_u(acc: Self::I, x: Self::B, y: Self::B) -> Self::I {
        Self::dot(acc, x, y)
    }
    /// [`Simd::dot_scaled`] for `x` bytes in 0..=127.
    #[inline(always)]
    unsafe fn dot_scaled_u(acc: Self::I, x: Self::B, y: Self::B, s0: i32, s1: i32) -> Self::I {
        Self::dot_scaled(acc, x, y, s0, s1)
    }
    unsafe fn i_to_f(a: Self::I) -> Self::F;

    /// Sign-extends 32 signed bytes to four vectors of f32 (in order).
    unsafe fn b_to_f(a: Self::B) -> [Self::F; 4];
    /// Converts four vectors of integral floats to i8 (saturating) and
    /// stores the 32 bytes at `p`.
    unsafe fn store_q8(p: *mut i8, v: [Self::F; 4]);

    unsafe fn zero_f() -> Self::F;
    unsafe fn splat_f(v: f32) -> Self::F;
    unsafe fn load_f(p: *const f32) -> Self::F;
    unsafe fn store_f(p: *mut f32, v: Self::F);
    unsafe fn add_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div_f(a: Self::F, b: Self::F) -> Self::F;
    /// a * b + c, fused.
    unsafe fn fma_f(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn max_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn min_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn abs_f(a: Self::F) -> Self::F;
    unsafe fn hsum_f(a: Self::F) -> f32;
    unsafe fn hmax_f(a: Self::F) -> f32;
    /// Round half away from zero (C `roundf`).
    unsafe fn round_away_f(a: Self::F) -> Self::F;
    /// Round half to even.
    unsafe fn round_even_f(a: Self::F) -> Self::F;
    /// 2^n for integral n in -126..=127.
    unsafe fn exp2i_f(n: Self::F) -> Self::F;

    /// One f16 scale to f32 (exact).
    unsafe fn fp16(h: u16) -> f32;
    unsafe fn load_f16(p: *const u16) -> Self::F;
    unsafe fn store_f16(p: *mut u16, v: Self::F);
    unsafe fn load_bf16(p: *const u16) -> Self::F;
    unsafe fn store_bf16(p: *mut u16, v: Self::F);
}

// ---------------------------------------------------------------------------
// Conversions (exact)

macro_rules! row_conv {
    ($name:ident, $src:ty, $dst:ty, $simd:ident, $tail:expr) => {
        #[inline(always)]
        pub(crate) unsafe fn $name<S: Simd>(x: &[$src], y: &mut [$dst]) {
            let n = x.len();
            let mut i = 0;
            while i + 8 <= n {
                $simd::<S>(x.as_ptr().add(i), y.as_mut_ptr().add(i));
                i += 8;
            }
            for j in i..n {
                y[j] = $tail(x[j]);
            }
        }
    };
}

#[inline(always)]
unsafe fn cv_f16_f32<S: Simd>(s: *const u16, d: *mut f32) {
    S::store_f(d, S::load_f16(s))
}
#[inline(always)]
unsafe fn cv_f32_f16<S: Simd>(s: *const f32, d: *mut u16) {
    S::store_f16(d, S::load_f(s))
}
#[inline(always)]
unsafe fn cv_bf16_f32<S: Simd>(s: *const u16, d: *mut f32) {
    S::store_f(d, S::load_bf16(s))
}
#[inline(always)]
unsafe fn cv_f32_bf16<S: Simd>(s: *const f32, d: *mut u16) {
    S::store_bf16(d, S::load_f(s))
}

row_conv!(f16_to_f32_row, u16, f32, cv_f16_f32, scalar::f16_to_f32);
row_conv!(f32_to_f16_row, f32, u16, cv_f32_f16, scalar::f32_to_f16);
row_conv!(bf16_to_f32_row, u16, f32, cv_bf16_f32, scalar::bf16_to_f32);
row_conv!(f32_to_bf16_row, f32, u16, cv_f32_bf16, scalar::f32_to_bf16);

// ---------------------------------------------------------------------------
// Activation quantizers (bit-exact with the scalar reference)

#[inline(always)]
unsafe fn load4<S: Simd>(p: *const f32) -> [S::F; 4] {
    [
        S::load_f(p),
        S::load_f(p.add(8)),
        S::load_f(p.add(16)),
        S::load_f(p.add(24)),
    ]
}

#[inline(always)]
unsafe fn amax32<S: Simd>(v: &[S::F; 4]) -> f32 {
    let m01 = S::max_f(S::abs_f(v[0]), S::abs_f(v[1]));
    let m23 = S::max_f(S::abs_f(v[2]), S::abs_f(v[3]));
    S::hmax_f(S::max_f(m01, m23))
}

/// Quantizes 32 floats to Q8 (d = amax/127, q = roundf(x/d)); returns d
/// and the sum of the quants.
#[inline(always)]
unsafe fn q8_32<S: Simd>(x: *const f32, qs: *mut i8) -> f32 {
    let v = load4::<S>(x);
    let amax = amax32::<S>(&v);
    let d = amax / 127.0;
    let id = S::splat_f(if d != 0.0 { 1.0 / d } else { 0.0 });
    S::store_q8(
        qs,
        [
            S::round_away_f(S::mul_f(v[0], id)),
            S::round_away_f(S::mul_f(v[1], id)),
            S::round_away_f(S::mul_f(v[2], id)),
            S::round_away_f(S::mul_f(v[3], id)),
        ],
    );
    d
}

#[inline(always)]
pub(crate) unsafe fn quantize_row_q8_0<S: Simd>(x: &[f32], y: &mut [BlockQ8_0]) {
    for (i, yb) in y.iter_mut().enumerate() {
        let d = q8_32::<S>(x.as_ptr().add(i * QK8_0), yb.qs.as_mut_ptr());
        yb.d = scalar::f32_to_f16(d);
    }
}

#[inline(always)]
pub(crate) unsafe fn quantize_row_q8_1<S: Simd>(x: &[f32], y: &mut [BlockQ8_1]) {
    for (i, yb) in y.iter_mut().enumerate() {
        let d = q8_32::<S>(x.as_ptr().add(i * QK8_1), yb.qs.as_mut_ptr());
        yb.d = scalar::f32_to_f16(d);
        let ones = S::set1_b(1);
        let sum = S::hsum_i(S::dot(
            S::zero_i(),
            S::load_b(yb.qs.as_ptr() as *const u8),
            ones,
        ));
        yb.s = scalar::f32_to_f16(sum as f32 * d);
    }
}

#[inline(always)]
pub(crate) unsafe fn quantize_row_q8_k<S: Simd>(x: &[f32], y: &mut [BlockQ8K]) {
    for (i, yb) in y.iter_mut().enumerate() {
        let xb = &x[i * QK_K..(i + 1) * QK_K];
        let mut m = S::zero_f();
        for c in 0..QK_K / 8 {
            m = S::max_f(m, S::abs_f(S::load_f(xb.as_ptr().add(8 * c))));
        }
        let amax = S::hmax_f(m);
        if amax == 0.0 {
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        // The signed value of the first element of largest magnitude, as
        // the scalar scan picks it.
        let mut max = amax;
        for &v in xb {
            if v.abs() == amax {
                max = v;
                break;
            }
        }
        let iscale = -127.0 / max;
        let is = S::splat_f(iscale);
        for c in 0..QK_K / 32 {
            let v = load4::<S>(xb.as_ptr().add(32 * c));
            // nearest_int rounds half to even; min(127) is the saturation.
            S::store_q8(
                yb.qs.as_mut_ptr().add(32 * c),
                [
                    S::round_even_f(S::mul_f(v[0], is)),
                    S::round_even_f(S::mul_f(v[1], is)),
                    S::round_even_f(S::mul_f(v[2], is)),
                    S::round_even_f(S::mul_f(v[3], is)),
                ],
            );
        }
        for (s, g) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            let mut t = 0i32;
            for &q in g {
                t += q as i32;
            }
            *s = t as i16;
        }
        yb.d = 1.0 / iscale;
    }
}

// ---------------------------------------------------------------------------
// Dot products

#[inline(always)]
pub(crate) unsafe fn vec_dot_q4_0_q8_0<S: Simd>(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = S::zero_f();
    let eight = S::set1_b(8);
    for (xb, yb) in x.iter().zip(y) {
        let q = S::sub_b(S::load_nibbles(xb.qs.as_ptr()), eight);
        let i = S::dot(S::zero_i(), q, S::load_b(yb.qs.as_ptr() as *const u8));
        let d = S::fp16(xb.d) * S::fp16(yb.d);
        acc = S::fma_f(S::i_to_f(i), S::splat_f(d), acc);
    }
    S::hsum_f(acc)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q4_1_q8_1<S: Simd>(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = S::zero_f();
    let mut summs = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let q = S::load_nibbles(xb.qs.as_ptr());
        let i = S::dot(S::zero_i(), q, S::load_b(yb.qs.as_ptr() as *const u8));
        let d = S::fp16(xb.d) * S::fp16(yb.d);
        acc = S::fma_f(S::i_to_f(i), S::splat_f(d), acc);
        // Fused, as GCC contracts ggml's `summs += m * s` (-ffp-contract=fast).
        summs = S::fp16(xb.m).mul_add(S::fp16(yb.s), summs);
    }
    S::hsum_f(acc) + summs
}

#[inline(always)]
pub(crate) unsafe fn q5_values<S: Simd>(qs: &[u8; 16], qh: [u8; 4]) -> S::B {
    let hi = S::and_b(S::bits_to_bytes(u32::from_le_bytes(qh)), S::set1_b(0x10));
    S::or_b(S::load_nibbles(qs.as_ptr()), hi)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q5_0_q8_0<S: Simd>(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = S::zero_f();
    let sixteen = S::set1_b(16);
    for (xb, yb) in x.iter().zip(y) {
        let q = S::sub_b(q5_values::<S>(&xb.qs, xb.qh), sixteen);
        let i = S::dot(S::zero_i(), q, S::load_b(yb.qs.as_ptr() as *const u8));
        let d = S::fp16(xb.d) * S::fp16(yb.d);
        acc = S::fma_f(S::i_to_f(i), S::splat_f(d), acc);
    }
    S::hsum_f(acc)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q5_1_q8_1<S: Simd>(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = S::zero_f();
    let mut summs = 0.0f32;
    for (xb, yb) in x.iter().zip(y) {
        let q = q5_values::<S>(&xb.qs, xb.qh);
        let i = S::dot(S::zero_i(), q, S::load_b(yb.qs.as_ptr() as *const u8));
        let d = S::fp16(xb.d) * S::fp16(yb.d);
        acc = S::fma_f(S::i_to_f(i), S::splat_f(d), acc);
        summs = S::fp16(xb.m).mul_add(S::fp16(yb.s), summs);
    }
    S::hsum_f(acc) + summs
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q8_0_q8_0<S: Simd>(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = S::zero_f();
    for (xb, yb) in x.iter().zip(y) {
        let i = S::dot(
            S::zero_i(),
            S::load_b(xb.qs.as_ptr() as *const u8),
            S::load_b(yb.qs.as_ptr() as *const u8),
        );
        let d = S::fp16(xb.d) * S::fp16(yb.d);
        acc = S::fma_f(S::i_to_f(i), S::splat_f(d), acc);
    }
    S::hsum_f(acc)
}

#[inline(always)]
pub(crate) unsafe fn q8k<S: Simd>(yb: &BlockQ8K, offset: usize) -> S::B {
    S::load_b(yb.qs.as_ptr().add(offset) as *const u8)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q2_k_q8_k<S: Simd>(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut acc = S::zero_f();
    let mut summ = 0.0f32;
    let three = S::set1_b(3);
    for (xb, yb) in x.iter().zip(y) {
        let mut summs = 0i32;
        for j in 0..16 {
            summs += yb.bsums[j] as i32 * (xb.scales[j] >> 4) as i32;
        }
        let mut isum = S::zero_i();
        for k in 0..2 {
            let q2 = S::load_b(xb.qs.as_ptr().add(32 * k));
            for j in 0..4 {
                let v = S::and_b(S::shr_b(q2, 2 * j as u32), three);
                let s = 8 * k + 2 * j;
                let (s0, s1) = (
                    (xb.scales[s] & 0x0f) as i32,
                    (xb.scales[s + 1] & 0x0f) as i32,
                );
                isum = S::dot_scaled(isum, v, q8k::<S>(yb, 128 * k + 32 * j), s0, s1);
            }
        }
        let dall = yb.d * S::fp16(xb.d);
        let dmin = yb.d * S::fp16(xb.dmin);
        acc = S::fma_f(S::i_to_f(isum), S::splat_f(dall), acc);
        summ -= dmin * summs as f32;
    }
    S::hsum_f(acc) + summ
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q3_k_q8_k<S: Simd>(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut acc = S::zero_f();
    let three = S::set1_b(3);
    let four = S::set1_b(4);
    for (xb, yb) in x.iter().zip(y) {
        let sc = scalar::q3k_scales(&xb.scales);
        let hm = S::load_b(xb.hmask.as_ptr());
        let mut isum = S::zero_i();
        for half in 0..2 {
            let q3 = S::load_b(xb.qs.as_ptr().add(32 * half));
            for j in 0..4 {
                let v = S::and_b(S::shr_b(q3, 2 * j as u32), three);
                let bit = S::nonzero_b(S::and_b(hm, S::set1_b(1u8 << (4 * half + j))));
                let v = S::sub_b(v, S::andnot_b(bit, four));
                let s = 8 * half + 2 * j;
                isum = S::dot_scaled(
                    isum,
                    v,
                    q8k::<S>(yb, 128 * half + 32 * j),
                    sc[s] as i32,
                    sc[s + 1] as i32,
                );
            }
        }
        let d = S::fp16(xb.d) * yb.d;
        acc = S::fma_f(S::i_to_f(isum), S::splat_f(d), acc);
    }
    S::hsum_f(acc)
}

#[inline(always)]
unsafe fn k4_scales(scales: &[u8; 12], yb: &BlockQ8K) -> ([i32; 8], i32) {
    let mut sc = [0i32; 8];
    let mut sumi = 0i32;
    for j in 0..8 {
        let (s, m) = scalar::scale_min_k4(j, scales);
        sc[j] = s as i32;
        sumi += (yb.bsums[2 * j] as i32 + yb.bsums[2 * j + 1] as i32) * m as i32;
    }
    (sc, sumi)
}

/// Q4_K x Q8_K rounded as llama.cpp's x86 kernels for repacked Q4_K
/// (`q4_K_8x8`, what it runs for every Q4_K weight with a multiple of 8
/// rows): exact integer sums over groups of 256 elements (one token, GEMV)
/// or 64 (multi-token GEMM, [`vec_dot_q4_k_q8_k_sum64`]), each scaled by
/// `d_w * d_a` into a fused multiply-add; the mins likewise, subtracted last.
#[inline(always)]
unsafe fn q4k_ggml<S: Simd, const PER64: bool>(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let low = S::set1_b(0x0f);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (xb, yb) in x.iter().zip(y) {
        let ds = S::fp16(xb.d) * yb.d;
        let dm = S::fp16(xb.dmin) * yb.d;
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..4 {
            let q = S::load_b(xb.qs.as_ptr().add(32 * j));
            let lo = S::hsum_i(S::dot_u(
                S::zero_i(),
                S::and_b(q, low),
                q8k::<S>(yb, 64 * j),
            ));
            let hi = S::hsum_i(S::dot_u(
                S::zero_i(),
                S::shr_b(q, 4),
                q8k::<S>(yb, 64 * j + 32),
            ));
            let (s0, m0) = scalar::scale_min_k4(2 * j, &xb.scales);
            let (s1, m1) = scalar::scale_min_k4(2 * j + 1, &xb.scales);
            let b = &yb.bsums[4 * j..4 * j + 4];
            isum += s0 as i32 * lo + s1 as i32 * hi;
            msum +=
                m0 as i32 * (b[0] as i32 + b[1] as i32) + m1 as i32 * (b[2] as i32 + b[3] as i32);
            if PER64 {
                acc = (isum as f32).mul_add(ds, acc);
                acc_min = (msum as f32).mul_add(dm, acc_min);
                isum = 0;
                msum = 0;
            }
        }
        if !PER64 {
            acc = (isum as f32).mul_add(ds, acc);
            acc_min = (msum as f32).mul_add(dm, acc_min);
        }
    }
    acc - acc_min
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q4_k_q8_k<S: Simd>(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_ggml::<S, false>(x, y)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q4_k_q8_k_sum64<S: Simd>(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    q4k_ggml::<S, true>(x, y)
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q5_k_q8_k<S: Simd>(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut acc = S::zero_f();
    let mut summ = 0.0f32;
    let low = S::set1_b(0x0f);
    let sixteen = S::set1_b(16);
    for (xb, yb) in x.iter().zip(y) {
        let (sc, sumi) = k4_scales(&xb.scales, yb);
        let qh = S::load_b(xb.qh.as_ptr());
        let mut isum = S::zero_i();
        for j in 0..4 {
            let q = S::load_b(xb.qs.as_ptr().add(32 * j));
            let h0 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(1u8 << (2 * j)))),
                sixteen,
            );
            let h1 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(2u8 << (2 * j)))),
                sixteen,
            );
            let lo = S::or_b(S::and_b(q, low), h0);
            let hi = S::or_b(S::shr_b(q, 4), h1);
            isum = S::dot_scaled(isum, lo, q8k::<S>(yb, 64 * j), sc[2 * j], sc[2 * j]);
            isum = S::dot_scaled(
                isum,
                hi,
                q8k::<S>(yb, 64 * j + 32),
                sc[2 * j + 1],
                sc[2 * j + 1],
            );
        }
        let d = S::fp16(xb.d) * yb.d;
        acc = S::fma_f(S::i_to_f(isum), S::splat_f(d), acc);
        let dmin = S::fp16(xb.dmin) * yb.d;
        summ -= dmin * sumi as f32;
    }
    S::hsum_f(acc) + summ
}

/// The four 32-element groups of one 128-element half of a Q6_K block, as
/// signed values (-32..=31).
#[inline(always)]
pub(crate) unsafe fn q6_values<S: Simd>(xb: &BlockQ6K, n: usize) -> [S::B; 4] {
    let bias = S::set1_b(32);
    let u = q6_values_u::<S>(xb, n);
    [
        S::sub_b(u[0], bias),
        S::sub_b(u[1], bias),
        S::sub_b(u[2], bias),
        S::sub_b(u[3], bias),
    ]
}

/// The 6-bit values of one 128-element half as stored (0..63, unbiased).
#[inline(always)]
pub(crate) unsafe fn q6_values_u<S: Simd>(xb: &BlockQ6K, n: usize) -> [S::B; 4] {
    let low = S::set1_b(0x0f);
    let three = S::set1_b(3);
    let ql0 = S::load_b(xb.ql.as_ptr().add(64 * n));
    let ql1 = S::load_b(xb.ql.as_ptr().add(64 * n + 32));
    let qh = S::load_b(xb.qh.as_ptr().add(32 * n));
    let h = |k: u32| S::shl_b(S::and_b(S::shr_b(qh, 2 * k), three), 4);
    [
        S::or_b(S::and_b(ql0, low), h(0)),
        S::or_b(S::and_b(ql1, low), h(1)),
        S::or_b(S::shr_b(ql0, 4), h(2)),
        S::or_b(S::shr_b(ql1, 4), h(3)),
    ]
}

/// The integer lanes of one Q6_K x Q8_K super-block exactly as ggml's x86
/// kernel forms them (so the float rounding after scaling matches): lane m
/// sums the scaled products of elements 4m..4m+3 of every 32-value group
/// with the unbiased values, minus 32 x the scaled activation sums of group
/// m's two 16-value halves.
#[inline(always)]
pub(crate) unsafe fn q6k_lanes<S: Simd>(q: &[S::B; 8], scales: &[i8; 16], yb: &BlockQ8K) -> S::I {
    let mut isum = S::zero_i();
    for (c, &v) in q.iter().enumerate() {
        isum = S::dot_scaled_u(
            isum,
            v,
            q8k::<S>(yb, 32 * c),
            scales[2 * c] as i32,
            scales[2 * c + 1] as i32,
        );
    }
    let mut bias = [0i32; 8];
    for (m, b) in bias.iter_mut().enumerate() {
        *b = 32
            * (yb.bsums[2 * m] as i32 * scales[2 * m] as i32
                + yb.bsums[2 * m + 1] as i32 * scales[2 * m + 1] as i32);
    }
    S::sub_i(isum, S::load_i(bias.as_ptr()))
}

#[inline(always)]
pub(crate) unsafe fn vec_dot_q6_k_q8_k<S: Simd>(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut acc = S::zero_f();
    for (xb, yb) in x.iter().zip(y) {
        let (a, b) = (q6_values_u::<S>(xb, 0), q6_values_u::<S>(xb, 1));
        let q = [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]];
        let isum = q6k_lanes::<S>(&q, &xb.scales, yb);
        let d = S::fp16(xb.d) * yb.d;
        acc = S::fma_f(S::i_to_f(isum), S::splat_f(d), acc);
    }
    S::hsum_f(acc)
}

/// Float dot products in the order of ggml's AVX-512 build (the reference
/// llama.cpp numbers come from): four 16-lane accumulators over 64-element
/// steps (each held here as two 8-lane halves), reduced (0+2)+(1+3), then
/// 16 lanes down to one as `_mm512_reduce_add_ps` does; the tail is summed
/// in f64. [`scalar::dot_ggml_order`] is the same computation lane by lane.
/// `x` and `y` may differ in type (f16 weights against activations already
/// converted to f32: the same products, one conversion fewer per pair).
macro_rules! float_dot {
    ($name:ident, $tx:ty, $loadx:ident, $convx:expr, $ty:ty, $loady:ident, $convy:expr) => {
        #[inline(always)]
        pub(crate) unsafe fn $name<S: Simd>(x: &[$tx], y: &[$ty]) -> f32 {
            let n = x.len();
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut a = [[S::zero_f(); 2]; 4];
            let mut i = 0;
            while i + 64 <= n {
                for (j, acc) in a.iter_mut().enumerate() {
                    for (h, half) in acc.iter_mut().enumerate() {
                        let o = i + 16 * j + 8 * h;
                        *half = S::fma_f(S::$loadx(xp.add(o)), S::$loady(yp.add(o)), *half);
                    }
                }
                i += 64;
            }
            let lo = S::add_f(S::add_f(a[0][0], a[2][0]), S::add_f(a[1][0], a[3][0]));
            let hi = S::add_f(S::add_f(a[0][1], a[2][1]), S::add_f(a[1][1], a[3][1]));
            let mut sum = S::hsum_f(S::add_f(hi, lo)) as f64;
            for j in i..n {
                sum += ($convx(x[j]) * $convy(y[j])) as f64;
            }
            sum as f32
        }
    };
    ($name:ident, $t:ty, $load:ident, $conv:expr) => {
        float_dot!($name, $t, $load, $conv, $t, $load, $conv);
    };
}

float_dot!(vec_dot_f32, f32, load_f, |v: f32| v);
float_dot!(vec_dot_f16, u16, load_f16, scalar::f16_to_f32);
float_dot!(vec_dot_bf16, u16, load_bf16, scalar::bf16_to_f32);
float_dot!(
    vec_dot_f16_f32,
    u16,
    load_f16,
    scalar::f16_to_f32,
    f32,
    load_f,
    |v: f32| v
);

// ---------------------------------------------------------------------------
// Dequantization (bit-exact: same multiplies and adds as the scalar code)

#[inline(always)]
unsafe fn store32<S: Simd>(y: *mut f32, v: [S::F; 4]) {
    for (k, &f) in v.iter().enumerate() {
        S::store_f(y.add(8 * k), f);
    }
}

/// y[0..32] = q * d (+ m when `m` is Some), two scale pairs for the halves.
#[inline(always)]
unsafe fn deq32<S: Simd>(y: *mut f32, q: S::B, d: [f32; 2], m: Option<[f32; 2]>) {
    let f = S::b_to_f(q);
    let mut out = [S::zero_f(); 4];
    for k in 0..4 {
        let v = S::mul_f(f[k], S::splat_f(d[k / 2]));
        out[k] = match m {
            Some(m) => S::add_f(v, S::splat_f(m[k / 2])),
            None => v,
        };
    }
    store32::<S>(y, out);
}

/// y[0..32] = d * q - m (the K-quant form), per 16-element half.
#[inline(always)]
unsafe fn deq32_sub<S: Simd>(y: *mut f32, q: S::B, d: [f32; 2], m: [f32; 2]) {
    let f = S::b_to_f(q);
    let mut out = [S::zero_f(); 4];
    for k in 0..4 {
        out[k] = S::sub_f(S::mul_f(S::splat_f(d[k / 2]), f[k]), S::splat_f(m[k / 2]));
    }
    store32::<S>(y, out);
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q4_0<S: Simd>(x: &[BlockQ4_0], y: &mut [f32]) {
    let eight = S::set1_b(8);
    for (i, xb) in x.iter().enumerate() {
        let q = S::sub_b(S::load_nibbles(xb.qs.as_ptr()), eight);
        let d = S::fp16(xb.d);
        deq32::<S>(y.as_mut_ptr().add(32 * i), q, [d, d], None);
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q4_1<S: Simd>(x: &[BlockQ4_1], y: &mut [f32]) {
    for (i, xb) in x.iter().enumerate() {
        let q = S::load_nibbles(xb.qs.as_ptr());
        let (d, m) = (S::fp16(xb.d), S::fp16(xb.m));
        deq32::<S>(y.as_mut_ptr().add(32 * i), q, [d, d], Some([m, m]));
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q5_0<S: Simd>(x: &[BlockQ5_0], y: &mut [f32]) {
    let sixteen = S::set1_b(16);
    for (i, xb) in x.iter().enumerate() {
        let q = S::sub_b(q5_values::<S>(&xb.qs, xb.qh), sixteen);
        let d = S::fp16(xb.d);
        deq32::<S>(y.as_mut_ptr().add(32 * i), q, [d, d], None);
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q5_1<S: Simd>(x: &[BlockQ5_1], y: &mut [f32]) {
    for (i, xb) in x.iter().enumerate() {
        let q = q5_values::<S>(&xb.qs, xb.qh);
        let (d, m) = (S::fp16(xb.d), S::fp16(xb.m));
        deq32::<S>(y.as_mut_ptr().add(32 * i), q, [d, d], Some([m, m]));
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q8_0<S: Simd>(x: &[BlockQ8_0], y: &mut [f32]) {
    for (i, xb) in x.iter().enumerate() {
        let q = S::load_b(xb.qs.as_ptr() as *const u8);
        let d = S::fp16(xb.d);
        deq32::<S>(y.as_mut_ptr().add(32 * i), q, [d, d], None);
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q2_k<S: Simd>(x: &[BlockQ2K], y: &mut [f32]) {
    let three = S::set1_b(3);
    for (i, xb) in x.iter().enumerate() {
        let (d, min) = (S::fp16(xb.d), S::fp16(xb.dmin));
        let yp = y.as_mut_ptr().add(QK_K * i);
        for k in 0..2 {
            let q2 = S::load_b(xb.qs.as_ptr().add(32 * k));
            for j in 0..4 {
                let v = S::and_b(S::shr_b(q2, 2 * j as u32), three);
                let s = 8 * k + 2 * j;
                let (a, b) = (xb.scales[s], xb.scales[s + 1]);
                let dl = [d * (a & 0x0f) as f32, d * (b & 0x0f) as f32];
                let ml = [min * (a >> 4) as f32, min * (b >> 4) as f32];
                deq32_sub::<S>(yp.add(128 * k + 32 * j), v, dl, ml);
            }
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q3_k<S: Simd>(x: &[BlockQ3K], y: &mut [f32]) {
    let three = S::set1_b(3);
    let four = S::set1_b(4);
    for (i, xb) in x.iter().enumerate() {
        let d_all = S::fp16(xb.d);
        let sc = scalar::q3k_scales(&xb.scales);
        let hm = S::load_b(xb.hmask.as_ptr());
        let yp = y.as_mut_ptr().add(QK_K * i);
        for half in 0..2 {
            let q3 = S::load_b(xb.qs.as_ptr().add(32 * half));
            for j in 0..4 {
                let v = S::and_b(S::shr_b(q3, 2 * j as u32), three);
                let bit = S::nonzero_b(S::and_b(hm, S::set1_b(1u8 << (4 * half + j))));
                let v = S::sub_b(v, S::andnot_b(bit, four));
                let s = 8 * half + 2 * j;
                let dl = [d_all * sc[s] as f32, d_all * sc[s + 1] as f32];
                deq32::<S>(yp.add(128 * half + 32 * j), v, dl, None);
            }
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q4_k<S: Simd>(x: &[BlockQ4K], y: &mut [f32]) {
    let low = S::set1_b(0x0f);
    for (i, xb) in x.iter().enumerate() {
        let (d, min) = (S::fp16(xb.d), S::fp16(xb.dmin));
        let yp = y.as_mut_ptr().add(QK_K * i);
        for j in 0..4 {
            let (s1, m1) = scalar::scale_min_k4(2 * j, &xb.scales);
            let (s2, m2) = scalar::scale_min_k4(2 * j + 1, &xb.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let q = S::load_b(xb.qs.as_ptr().add(32 * j));
            deq32_sub::<S>(yp.add(64 * j), S::and_b(q, low), [d1, d1], [m1, m1]);
            deq32_sub::<S>(yp.add(64 * j + 32), S::shr_b(q, 4), [d2, d2], [m2, m2]);
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q5_k<S: Simd>(x: &[BlockQ5K], y: &mut [f32]) {
    let low = S::set1_b(0x0f);
    let sixteen = S::set1_b(16);
    for (i, xb) in x.iter().enumerate() {
        let (d, min) = (S::fp16(xb.d), S::fp16(xb.dmin));
        let qh = S::load_b(xb.qh.as_ptr());
        let yp = y.as_mut_ptr().add(QK_K * i);
        for j in 0..4 {
            let (s1, m1) = scalar::scale_min_k4(2 * j, &xb.scales);
            let (s2, m2) = scalar::scale_min_k4(2 * j + 1, &xb.scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let q = S::load_b(xb.qs.as_ptr().add(32 * j));
            let h0 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(1u8 << (2 * j)))),
                sixteen,
            );
            let h1 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(2u8 << (2 * j)))),
                sixteen,
            );
            let lo = S::or_b(S::and_b(q, low), h0);
            let hi = S::or_b(S::shr_b(q, 4), h1);
            deq32_sub::<S>(yp.add(64 * j), lo, [d1, d1], [m1, m1]);
            deq32_sub::<S>(yp.add(64 * j + 32), hi, [d2, d2], [m2, m2]);
        }
    }
}

#[inline(always)]
pub(crate) unsafe fn dequantize_row_q6_k<S: Simd>(x: &[BlockQ6K], y: &mut [f32]) {
    for (i, xb) in x.iter().enumerate() {
        let d = S::fp16(xb.d);
        let yp = y.as_mut_ptr().add(QK_K * i);
        for n in 0..2 {
            let a = q6_values::<S>(xb, n);
            for (k, &v) in a.iter().enumerate() {
                let s = 8 * n + 2 * k;
                let dl = [d * xb.scales[s] as f32, d * xb.scales[s + 1] as f32];
                deq32::<S>(yp.add(128 * n + 32 * k), v, dl, None);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Float vector ops

/// Applies `f` to every 8-lane chunk of `x` (in place), and `tail` to the
/// remaining elements.
#[inline(always)]
unsafe fn map_inplace<S: Simd>(x: &mut [f32], f: impl Fn(S::F) -> S::F, tail: impl Fn(f32) -> f32) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        S::store_f(p.add(i), f(S::load_f(p.add(i))));
        i += 8;
    }
    for v in &mut x[i..] {
        *v = tail(*v);
    }
}

/// Like [`map_inplace`] with a second, read-only operand.
#[inline(always)]
unsafe fn zip_inplace<S: Simd>(
    x: &mut [f32],
    y: &[f32],
    f: impl Fn(S::F, S::F) -> S::F,
    tail: impl Fn(f32, f32) -> f32,
) {
    let n = x.len();
    let (p, q) = (x.as_mut_ptr(), y.as_ptr());
    let mut i = 0;
    while i + 8 <= n {
        S::store_f(p.add(i), f(S::load_f(p.add(i)), S::load_f(q.add(i))));
        i += 8;
    }
    for j in i..n {
        x[j] = tail(x[j], y[j]);
    }
}

/// y[k] = fma(a[d], m[d * n + k], y[k]) for d = 0, 1, ... in order
/// (n = y.len()): a chain of `scalar::axpy`s with `y` held in registers, 32
/// columns at a time.
#[inline(always)]
pub(crate) unsafe fn fma_rows<S: Simd>(a: &[f32], m: &[f32], y: &mut [f32]) {
    let n = y.len();
    let (mp, yp) = (m.as_ptr(), y.as_mut_ptr());
    let mut c = 0;
    while c + 32 <= n {
        let mut acc = [
            S::load_f(yp.add(c)),
            S::load_f(yp.add(c + 8)),
            S::load_f(yp.add(c + 16)),
            S::load_f(yp.add(c + 24)),
        ];
        for (d, &ad) in a.iter().enumerate() {
            let va = S::splat_f(ad);
            let row = mp.add(d * n + c);
            for (i, v) in acc.iter_mut().enumerate() {
                *v = S::fma_f(S::load_f(row.add(8 * i)), va, *v);
            }
        }
        for (i, v) in acc.iter().enumerate() {
            S::store_f(yp.add(c + 8 * i), *v);
        }
        c += 32;
    }
    while c + 8 <= n {
        let mut v = S::load_f(yp.add(c));
        for (d, &ad) in a.iter().enumerate() {
            v = S::fma_f(S::load_f(mp.add(d * n + c)), S::splat_f(ad), v);
        }
        S::store_f(yp.add(c), v);
        c += 8;
    }
    for k in c..n {
        let mut v = y[k];
        for (d, &ad) in a.iter().enumerate() {
            v = m[d * n + k].mul_add(ad, v);
        }
        y[k] = v;
    }
}

/// x[i] = exp(x[i] - m) as [`scalar::expf_ggml`] rounds it.
#[inline(always)]
pub(crate) unsafe fn exp_shift<S: Simd>(x: &mut [f32], m: f32) {
    let vm = S::splat_f(m);
    map_inplace::<S>(
        x,
        |v| exp_f::<S>(S::sub_f(v, vm)),
        |v| scalar::expf_ggml(v - m),
    );
}

#[inline(always)]
pub(crate) unsafe fn scale<S: Simd>(x: &mut [f32], s: f32) {
    let vs = S::splat_f(s);
    map_inplace::<S>(x, |v| S::mul_f(v, vs), |v| v * s);
}

#[inline(always)]
pub(crate) unsafe fn mul<S: Simd>(x: &mut [f32], y: &[f32]) {
    zip_inplace::<S>(x, y, |a, b| S::mul_f(a, b), |a, b| a * b);
}

#[inline(always)]
pub(crate) unsafe fn add<S: Simd>(x: &mut [f32], y: &[f32]) {
    zip_inplace::<S>(x, y, |a, b| S::add_f(a, b), |a, b| a + b);
}

/// The reduction stays the scalar f64 sum (it is exact enough to be
/// ggml's, and tiny next to the matmuls); the scaling is vectorised, so the
/// result is bit-identical to the scalar reference.
#[inline(always)]
pub(crate) unsafe fn rms_norm<S: Simd>(x: &[f32], eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let mean = (scalar::sum_squares(x) / x.len() as f64) as f32;
    let s = 1.0 / (mean + eps).sqrt();
    out.copy_from_slice(x);
    scale::<S>(out, s);
}

/// exp(x) lane by lane exactly as ggml's AVX-512 `ggml_v_expf` rounds it
/// (see [`scalar::expf_ggml`]): the same fused steps, and the final scaling
/// by 2^n done in two exact halves instead of `vscalefps`.
#[inline(always)]
unsafe fn exp_f<S: Simd>(x: S::F) -> S::F {
    use scalar::expf_consts as c;
    let x = S::min_f(S::max_f(x, S::splat_f(-c::LIMIT)), S::splat_f(c::LIMIT));
    let r = S::splat_f(f32::from_bits(c::SHIFT));
    let z = S::fma_f(x, S::splat_f(f32::from_bits(c::LOG2E)), r);
    let n = S::sub_f(z, r);
    let neg_n = S::sub_f(S::zero_f(), n);
    let b = S::fma_f(neg_n, S::splat_f(f32::from_bits(c::LN2_HI)), x);
    let b = S::fma_f(neg_n, S::splat_f(f32::from_bits(c::LN2_LO)), b);
    let u = S::mul_f(b, b);
    let p54 = S::fma_f(
        S::splat_f(f32::from_bits(c::C5)),
        b,
        S::splat_f(f32::from_bits(c::C4)),
    );
    let p32 = S::fma_f(
        S::splat_f(f32::from_bits(c::C3)),
        b,
        S::splat_f(f32::from_bits(c::C2)),
    );
    let p10 = S::fma_f(S::splat_f(f32::from_bits(c::C1)), b, S::splat_f(1.0));
    let j = S::fma_f(S::fma_f(p54, u, p32), u, p10);
    let n1 = S::round_even_f(S::mul_f(n, S::splat_f(0.5)));
    let n2 = S::sub_f(n, n1);
    S::mul_f(S::mul_f(j, S::exp2i_f(n1)), S::exp2i_f(n2))
}

#[inline(always)]
unsafe fn silu_v<S: Simd>(x: S::F) -> S::F {
    let one = S::splat_f(1.0);
    S::div_f(x, S::add_f(one, exp_f::<S>(S::sub_f(S::zero_f(), x))))
}

#[inline(always)]
pub(crate) unsafe fn swiglu<S: Simd>(g: &mut [f32], u: &[f32]) {
    zip_inplace::<S>(
        g,
        u,
        |a, b| S::mul_f(silu_v::<S>(a), b),
        |a, b| scalar::silu_f32(a) * b,
    );
}

#[inline(always)]
pub(crate) unsafe fn rope_neox<S: Simd>(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let n = cos.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        let (x0, x1) = (S::load_f(p.add(i)), S::load_f(p.add(i + n)));
        let (c, s) = (
            S::load_f(cos.as_ptr().add(i)),
            S::load_f(sin.as_ptr().add(i)),
        );
        // Fused as scalar::rotate.
        // Times -1, not 0 - v: a true negation keeps the sign of zeros.
        let neg_x1s = S::mul_f(S::mul_f(x1, s), S::splat_f(-1.0));
        S::store_f(p.add(i), S::fma_f(x0, c, neg_x1s));
        S::store_f(p.add(i + n), S::fma_f(x0, s, S::mul_f(x1, c)));
        i += 8;
    }
    for j in i..n {
        let (x0, x1) = (x[j], x[j + n]);
        (x[j], x[j + n]) = scalar::rotate(x0, x1, cos[j], sin[j]);
    }
}

/// Generates the safe, length-checked entry points of one ISA module:
/// each asserts the slice lengths the unsafe algorithm relies on, then
/// calls the generic algorithm inside a `#[target_feature]` function.
/// The invoking module must define `ISA` (the `Simd` type) and is only put
/// in a kernel table after its features were detected.
macro_rules! simd_entry_points {
    ($isa:ty, $features:tt) => {
        simd_entry_points!(@fns $isa, $features,
            f16_to_f32_row(x: &[u16], y: &mut [f32]) where x.len() == y.len();
            f32_to_f16_row(x: &[f32], y: &mut [u16]) where x.len() == y.len();
            bf16_to_f32_row(x: &[u16], y: &mut [f32]) where x.len() == y.len();
            f32_to_bf16_row(x: &[f32], y: &mut [u16]) where x.len() == y.len();
            quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) where x.len() == y.len() * QK8_0;
            quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) where x.len() == y.len() * QK8_1;
            quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]) where x.len() == y.len() * QK_K;
            dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) where y.len() == x.len() * QK4_0;
            dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) where y.len() == x.len() * QK4_1;
            dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) where y.len() == x.len() * QK5_0;
            dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) where y.len() == x.len() * QK5_1;
            dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) where y.len() == x.len() * QK8_0;
            dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) where y.len() == x.len() * QK_K;
            dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) where y.len() == x.len() * QK_K;
            dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) where y.len() == x.len() * QK_K;
            dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) where y.len() == x.len() * QK_K;
            dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) where y.len() == x.len() * QK_K;
            fma_rows(a: &[f32], m: &[f32], y: &mut [f32]) where m.len() == a.len() * y.len();
            exp_shift(x: &mut [f32], m: f32) where true;
            scale(x: &mut [f32], s: f32) where true;
            mul(x: &mut [f32], y: &[f32]) where x.len() == y.len();
            add(x: &mut [f32], y: &[f32]) where x.len() == y.len();
            rms_norm(x: &[f32], eps: f32, out: &mut [f32]) where x.len() == out.len();
            swiglu(g: &mut [f32], u: &[f32]) where g.len() == u.len();
            rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32])
                where cos.len() == sin.len() && x.len() >= 2 * cos.len();
        );
        simd_entry_points!(@fns_ret $isa, $features,
            vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]);
            vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]);
            vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]);
            vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]);
            vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]);
            vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]);
            vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]);
            vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]);
            vec_dot_q4_k_q8_k_sum64(x: &[BlockQ4K], y: &[BlockQ8K]);
            vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]);
            vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]);
            vec_dot_f16(x: &[u16], y: &[u16]);
            vec_dot_bf16(x: &[u16], y: &[u16]);
            vec_dot_f32(x: &[f32], y: &[f32]);
        );
        pub use crate::scalar::rope_pairs;
    };
    (@fns $isa:ty, $features:tt, $( $name:ident($($a:ident: $t:ty),*) where $cond:expr; )*) => {
        $(
            pub fn $name($($a: $t),*) {
                assert!($cond, concat!(stringify!($name), ": length mismatch"));
                #[target_feature(enable = $features)]
                unsafe fn imp($($a: $t),*) {
                    crate::generic::$name::<$isa>($($a),*)
                }
                // SAFETY: this module's functions only enter a kernel table
                // after the CPU was detected to have `$features`; the
                // assert above establishes the lengths the algorithm reads
                // and writes.
                unsafe { imp($($a),*) }
            }
        )*
    };
    (@fns_ret $isa:ty, $features:tt, $( $name:ident($x:ident: $tx:ty, $y:ident: $ty:ty); )*) => {
        $(
            pub fn $name($x: $tx, $y: $ty) -> f32 {
                assert!($x.len() == $y.len(), concat!(stringify!($name), ": length mismatch"));
                #[target_feature(enable = $features)]
                unsafe fn imp($x: $tx, $y: $ty) -> f32 {
                    crate::generic::$name::<$isa>($x, $y)
                }
                // SAFETY: as above: features detected before this table is
                // used, lengths checked by the assert.
                unsafe { imp($x, $y) }
            }
        )*
    };
}
pub(crate) use simd_entry_points;
