//! NEON implementation of the [`Simd`] trait. `Neon<true>` computes the
//! integer dot products with `sdot` (inline asm), `Neon<false>` with
//! widening multiplies and pairwise adds; everything else is shared.

use crate::generic::Simd;
use core::arch::aarch64::*;
use core::arch::asm;

#[derive(Clone, Copy)]
pub(crate) struct Neon<const DOT: bool>;

/// 32 bytes.
#[derive(Clone, Copy)]
pub(crate) struct B2(uint8x16_t, uint8x16_t);
/// Eight i32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct I2(int32x4_t, int32x4_t);
/// Eight f32 lanes.
#[derive(Clone, Copy)]
pub(crate) struct F2(float32x4_t, float32x4_t);

/// Sum of the 16 byte products in four i32 lanes.
#[inline(always)]
unsafe fn dot16<const DOT: bool>(acc: int32x4_t, x: uint8x16_t, y: uint8x16_t) -> int32x4_t {
    let (x, y) = (vreinterpretq_s8_u8(x), vreinterpretq_s8_u8(y));
    if DOT {
        let mut acc = acc;
        // SAFETY (caller): only instantiated inside functions compiled with
        // the dotprod feature, which the table selection checked.
        // `sdot v0.4s, v1.16b, v2.16b`, emitted as its encoding: Rust
        // 1.63's assembler rejects the mnemonic even inside functions
        // compiled with the dotprod feature.
        asm!(".inst 0x4e829420", inout("v0") acc, in("v1") x, in("v2") y,
             options(pure, nomem, nostack, preserves_flags));
        acc
    } else {
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        let hi = vmull_high_s8(x, y);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

#[inline(always)]
unsafe fn s8_to_f(v: uint8x16_t) -> [float32x4_t; 4] {
    let v = vreinterpretq_s8_u8(v);
    let lo = vmovl_s8(vget_low_s8(v));
    let hi = vmovl_high_s8(v);
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_high_s16(lo)),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_high_s16(hi)),
    ]
}

#[inline(always)]
unsafe fn f_to_s8(a: float32x4_t, b: float32x4_t, c: float32x4_t, d: float32x4_t) -> int8x16_t {
    let ab = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(a)), vqmovn_s32(vcvtnq_s32_f32(b)));
    let cd = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(c)), vqmovn_s32(vcvtnq_s32_f32(d)));
    vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd))
}

#[inline(always)]
unsafe fn bf16_store4(v: float32x4_t) -> uint16x4_t {
    let u = vreinterpretq_u32_f32(v);
    let nan = vcgtq_u32(
        vandq_u32(u, vdupq_n_u32(0x7fff_ffff)),
        vdupq_n_u32(0x7f80_0000),
    );
    let hi = vshrq_n_u32::<16>(u);
    let bias = vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(hi, vdupq_n_u32(1)));
    let rounded = vshrq_n_u32::<16>(vaddq_u32(u, bias));
    let quiet = vorrq_u32(hi, vdupq_n_u32(64));
    vmovn_u32(vbslq_u32(nan, quiet, rounded))
}

impl<const DOT: bool> Simd for Neon<DOT> {
    type B = B2;
    type I = I2;
    type F = F2;

    #[inline(always)]
    unsafe fn load_b(p: *const u8) -> B2 {
        B2(vld1q_u8(p), vld1q_u8(p.add(16)))
    }
    #[inline(always)]
    unsafe fn load_nibbles(p: *const u8) -> B2 {
        let v = vld1q_u8(p);
        B2(vandq_u8(v, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(v))
    }
    #[inline(always)]
    unsafe fn set1_b(v: u8) -> B2 {
        B2(vdupq_n_u8(v), vdupq_n_u8(v))
    }
    #[inline(always)]
    unsafe fn and_b(a: B2, b: B2) -> B2 {
        B2(vandq_u8(a.0, b.0), vandq_u8(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn andnot_b(a: B2, b: B2) -> B2 {
        B2(vbicq_u8(b.0, a.0), vbicq_u8(b.1, a.1))
    }
    #[inline(always)]
    unsafe fn or_b(a: B2, b: B2) -> B2 {
        B2(vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub_b(a: B2, b: B2) -> B2 {
        B2(vsubq_u8(a.0, b.0), vsubq_u8(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn shr_b(a: B2, n: u32) -> B2 {
        let s = vdupq_n_s8(-(n as i8));
        B2(vshlq_u8(a.0, s), vshlq_u8(a.1, s))
    }
    #[inline(always)]
    unsafe fn shl_b(a: B2, n: u32) -> B2 {
        let s = vdupq_n_s8(n as i8);
        B2(vshlq_u8(a.0, s), vshlq_u8(a.1, s))
    }
    #[inline(always)]
    unsafe fn nonzero_b(a: B2) -> B2 {
        B2(vtstq_u8(a.0, a.0), vtstq_u8(a.1, a.1))
    }
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> B2 {
        // Byte j takes byte j/8 of `bits`, then tests bit j%8.
        const IDX: [u8; 32] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ];
        const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
        let v = vreinterpretq_u8_u32(vdupq_n_u32(bits));
        let m = vld1q_u8(BIT.as_ptr());
        let lo = vqtbl1q_u8(v, vld1q_u8(IDX.as_ptr()));
        let hi = vqtbl1q_u8(v, vld1q_u8(IDX.as_ptr().add(16)));
        B2(vtstq_u8(lo, m), vtstq_u8(hi, m))
    }

    // Without sdot, lanes pair bytes (j, j+1) with (j+8, j+9).
    const DOT_QUADS: bool = DOT;
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> I2 {
        I2(vdupq_n_s32(v), vdupq_n_s32(v))
    }
    #[inline(always)]
    unsafe fn bcast4_b(p: *const u8) -> B2 {
        let v = vreinterpretq_u8_u32(vdupq_n_u32(core::ptr::read_unaligned(p as *const u32)));
        B2(v, v)
    }
    #[inline(always)]
    unsafe fn zero_i() -> I2 {
        I2(vdupq_n_s32(0), vdupq_n_s32(0))
    }
    #[inline(always)]
    unsafe fn dot(acc: I2, x: B2, y: B2) -> I2 {
        I2(dot16::<DOT>(acc.0, x.0, y.0), dot16::<DOT>(acc.1, x.1, y.1))
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: I2, x: B2, y: B2, s0: i32, s1: i32) -> I2 {
        let z = vdupq_n_s32(0);
        I2(
            vmlaq_n_s32(acc.0, dot16::<DOT>(z, x.0, y.0), s0),
            vmlaq_n_s32(acc.1, dot16::<DOT>(z, x.1, y.1), s1),
        )
    }
    #[inline(always)]
    unsafe fn load_i(p: *const i32) -> I2 {
        I2(vld1q_s32(p), vld1q_s32(p.add(4)))
    }
    #[inline(always)]
    unsafe fn sub_i(a: I2, b: I2) -> I2 {
        I2(vsubq_s32(a.0, b.0), vsubq_s32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn add_i(a: I2, b: I2) -> I2 {
        I2(vaddq_s32(a.0, b.0), vaddq_s32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn mul_i(a: I2, b: I2) -> I2 {
        I2(vmulq_s32(a.0, b.0), vmulq_s32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn hsum_i(a: I2) -> i32 {
        vaddvq_s32(vaddq_s32(a.0, a.1))
    }
    #[inline(always)]
    unsafe fn i_to_f(a: I2) -> F2 {
        F2(vcvtq_f32_s32(a.0), vcvtq_f32_s32(a.1))
    }

    #[inline(always)]
    unsafe fn b_to_f(a: B2) -> [F2; 4] {
        let l = s8_to_f(a.0);
        let h = s8_to_f(a.1);
        [
            F2(l[0], l[1]),
            F2(l[2], l[3]),
            F2(h[0], h[1]),
            F2(h[2], h[3]),
        ]
    }
    #[inline(always)]
    unsafe fn store_q8(p: *mut i8, v: [F2; 4]) {
        vst1q_s8(p, f_to_s8(v[0].0, v[0].1, v[1].0, v[1].1));
        vst1q_s8(p.add(16), f_to_s8(v[2].0, v[2].1, v[3].0, v[3].1));
    }

    #[inline(always)]
    unsafe fn zero_f() -> F2 {
        F2(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> F2 {
        F2(vdupq_n_f32(v), vdupq_n_f32(v))
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> F2 {
        F2(vld1q_f32(p), vld1q_f32(p.add(4)))
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: F2) {
        vst1q_f32(p, v.0);
        vst1q_f32(p.add(4), v.1);
    }
    #[inline(always)]
    unsafe fn add_f(a: F2, b: F2) -> F2 {
        F2(vaddq_f32(a.0, b.0), vaddq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub_f(a: F2, b: F2) -> F2 {
        F2(vsubq_f32(a.0, b.0), vsubq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn mul_f(a: F2, b: F2) -> F2 {
        F2(vmulq_f32(a.0, b.0), vmulq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn div_f(a: F2, b: F2) -> F2 {
        F2(vdivq_f32(a.0, b.0), vdivq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn fma_f(a: F2, b: F2, c: F2) -> F2 {
        F2(vfmaq_f32(c.0, a.0, b.0), vfmaq_f32(c.1, a.1, b.1))
    }
    #[inline(always)]
    unsafe fn max_f(a: F2, b: F2) -> F2 {
        F2(vmaxq_f32(a.0, b.0), vmaxq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn min_f(a: F2, b: F2) -> F2 {
        F2(vminq_f32(a.0, b.0), vminq_f32(a.1, b.1))
    }
    #[inline(always)]
    unsafe fn abs_f(a: F2) -> F2 {
        F2(vabsq_f32(a.0), vabsq_f32(a.1))
    }
    #[inline(always)]
    unsafe fn hsum_f(a: F2) -> f32 {
        // (s0 + s2) + (s1 + s3) of s = lo + hi: the x86 order, so results
        // agree bit for bit across ISAs.
        let s = vaddq_f32(a.0, a.1);
        let t = vaddq_f32(s, vextq_f32(s, s, 2));
        vgetq_lane_f32(t, 0) + vgetq_lane_f32(t, 1)
    }
    #[inline(always)]
    unsafe fn hmax_f(a: F2) -> f32 {
        vmaxvq_f32(vmaxq_f32(a.0, a.1))
    }
    #[inline(always)]
    unsafe fn round_away_f(a: F2) -> F2 {
        F2(vrndaq_f32(a.0), vrndaq_f32(a.1))
    }
    #[inline(always)]
    unsafe fn round_even_f(a: F2) -> F2 {
        F2(vrndnq_f32(a.0), vrndnq_f32(a.1))
    }
    #[inline(always)]
    unsafe fn exp2i_f(n: F2) -> F2 {
        let e = |v: float32x4_t| {
            let i = vaddq_s32(vcvtnq_s32_f32(v), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(i))
        };
        F2(e(n.0), e(n.1))
    }

    #[inline(always)]
    unsafe fn fp16(h: u16) -> f32 {
        let r: f32;
        // SAFETY (caller): base ARMv8 FP, register-only conversion.
        asm!("fcvt {0:s}, {1:h}", out(vreg) r, in(vreg) h as i16,
             options(pure, nomem, nostack, preserves_flags));
        r
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> F2 {
        let t = vld1q_u16(p);
        let (lo, hi): (float32x4_t, float32x4_t);
        // SAFETY (caller): base ARMv8 FP; `t` holds 8 halves.
        asm!("fcvtl {0:v}.4s, {2:v}.4h", "fcvtl2 {1:v}.4s, {2:v}.8h",
             out(vreg) lo, out(vreg) hi, in(vreg) t,
             options(pure, nomem, nostack, preserves_flags));
        F2(lo, hi)
    }
    #[inline(always)]
    unsafe fn store_f16(p: *mut u16, v: F2) {
        let t: uint16x8_t;
        // fcvtn rounds with FPCR's mode: nearest even by default.
        // SAFETY (caller): base ARMv8 FP; register-only conversion.
        asm!("fcvtn {0:v}.4h, {1:v}.4s", "fcvtn2 {0:v}.8h, {2:v}.4s",
             out(vreg) t, in(vreg) v.0, in(vreg) v.1,
             options(pure, nomem, nostack, preserves_flags));
        vst1q_u16(p, t)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> F2 {
        let t = vld1q_u16(p);
        let lo = vshlq_n_u32::<16>(vmovl_u16(vget_low_u16(t)));
        let hi = vshlq_n_u32::<16>(vmovl_high_u16(t));
        F2(vreinterpretq_f32_u32(lo), vreinterpretq_f32_u32(hi))
    }
    #[inline(always)]
    unsafe fn store_bf16(p: *mut u16, v: F2) {
        vst1q_u16(p, vcombine_u16(bf16_store4(v.0), bf16_store4(v.1)))
    }
}

#[cfg(test)]
fn int_dot_check_impl<const DOT: bool>(x: &[i8; 32], y: &[i8; 32], s0: i32, s1: i32) -> (i32, i32) {
    type S<const D: bool> = Neon<D>;
    // SAFETY: the test calls this only after detecting the features (NEON
    // always, dotprod for DOT); the loads read the two 32-byte arrays.
    unsafe {
        let (a, b) = (
            S::<DOT>::load_b(x.as_ptr() as *const u8),
            S::<DOT>::load_b(y.as_ptr() as *const u8),
        );
        let z = S::<DOT>::zero_i();
        (
            S::<DOT>::hsum_i(S::<DOT>::dot(z, a, b)),
            S::<DOT>::hsum_i(S::<DOT>::dot_scaled(z, a, b, s0, s1)),
        )
    }
}

#[cfg(test)]
pub(crate) fn int_dot_check_plain(x: &[i8; 32], y: &[i8; 32], s0: i32, s1: i32) -> (i32, i32) {
    int_dot_check_impl::<false>(x, y, s0, s1)
}

#[cfg(test)]
pub(crate) fn int_dot_check_dotprod(x: &[i8; 32], y: &[i8; 32], s0: i32, s1: i32) -> (i32, i32) {
    assert!(super::dotprod_detected());
    int_dot_check_impl::<true>(x, y, s0, s1)
}
