//! AVX2 + FMA + F16C implementation of the [`Simd`] trait, and the kernel
//! entry points instantiated from `crate::generic`.

use crate::blocks::*;
use crate::generic::{simd_entry_points, Simd};
use core::arch::asm;
use core::arch::x86_64::*;

/// AVX2 + FMA + F16C; with `VNNI`, the byte dot products run on AVX512-VNNI's
/// `vpdpbusd` over 256-bit registers (AVX512VL) instead of the
/// `vpmaddubsw` + `vpmaddwd` + `vpaddd` chain: the same exact i32 lane sums.
#[derive(Clone, Copy)]
pub(crate) struct Avx2<const VNNI: bool>;

// F16C is detected at run time but used through inline asm: its
// intrinsics and target feature name are not stable in Rust 1.63.
simd_entry_points!(Avx2<false>, "avx2,fma");
crate::gemm::gemm_entry_points!(Avx2<false>, "avx2,fma");
crate::f16ops::f16ops_entry_points!(Avx2<false>, "avx2,fma");
pub use super::gelu::avx2::{geglu_ggml, gelu_ggml};

/// acc += sum of 4 byte products per i32 lane, `u` unsigned, `s` signed.
#[inline]
#[target_feature(enable = "avx")]
unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let mut r = acc;
    // SAFETY (caller): AVX512-VNNI and AVX512VL present (the VNNI table is
    // only chosen after detecting both). Register-only instruction; the
    // AVX-512 intrinsics are not stable in Rust 1.63, hence the asm.
    asm!("vpdpbusd {0}, {1}, {2}", inout(ymm_reg) r, in(ymm_reg) u, in(ymm_reg) s,
         options(pure, nomem, nostack, preserves_flags));
    r
}

/// 8 halves at `p` to f32 (F16C `vcvtph2ps`).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn cvtph_load(p: *const u16) -> __m256 {
    let r: __m256;
    // SAFETY (caller): F16C present and 8 halves readable at `p`.
    asm!("vcvtph2ps {0}, xmmword ptr [{1}]", out(ymm_reg) r, in(reg) p,
         options(pure, readonly, nostack, preserves_flags));
    r
}

/// 8 f32 to halves at `p`, round to nearest even (F16C `vcvtps2ph`, imm 0).
#[inline]
#[target_feature(enable = "avx")]
unsafe fn cvtps_store(p: *mut u16, v: __m256) {
    // SAFETY (caller): F16C present and 8 halves writable at `p`.
    asm!("vcvtps2ph xmmword ptr [{0}], {1}, 0", in(reg) p, in(ymm_reg) v,
         options(nostack, preserves_flags));
}

/// Test hook: the integer primitives on one pair of 32-byte vectors,
/// returning (dot, dot_scaled).
#[cfg(test)]
pub(crate) fn int_dot_check<const VNNI: bool>(
    x: &[i8; 32],
    y: &[i8; 32],
    s0: i32,
    s1: i32,
) -> (i32, i32) {
    type Isa<const V: bool> = Avx2<V>;
    #[target_feature(enable = "avx2")]
    unsafe fn imp<const V: bool>(x: &[i8; 32], y: &[i8; 32], s0: i32, s1: i32) -> (i32, i32) {
        let (a, b) = (
            Isa::<V>::load_b(x.as_ptr() as *const u8),
            Isa::<V>::load_b(y.as_ptr() as *const u8),
        );
        let z = Isa::<V>::zero_i();
        (
            Isa::<V>::hsum_i(Isa::<V>::dot(z, a, b)),
            Isa::<V>::hsum_i(Isa::<V>::dot_scaled(z, a, b, s0, s1)),
        )
    }
    assert!(super::avx2_detected() && (!VNNI || super::vnni_detected()));
    // SAFETY: the features asserted above; the loads read the two arrays.
    unsafe { imp::<VNNI>(x, y, s0, s1) }
}

#[inline(always)]
unsafe fn hsum128_ps(v: __m128) -> f32 {
    // (v0 + v2) + (v1 + v3): ggml's hsum_float_4x4 order, so dot products
    // round exactly as llama.cpp's x86 build does.
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

impl<const VNNI: bool> Simd for Avx2<VNNI> {
    type B = __m256i;
    type I = __m256i;
    type F = __m256;

    #[inline(always)]
    unsafe fn load_b(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn load_nibbles(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1)
    }
    #[inline(always)]
    unsafe fn set1_b(v: u8) -> __m256i {
        _mm256_set1_epi8(v as i8)
    }
    #[inline(always)]
    unsafe fn and_b(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn andnot_b(a: __m256i, b: __m256i) -> __m256i {
        _mm256_andnot_si256(a, b)
    }
    #[inline(always)]
    unsafe fn or_b(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn sub_b(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi8(a, b)
    }
    #[inline(always)]
    unsafe fn shr_b(a: __m256i, n: u32) -> __m256i {
        // 16-bit shift, then clear the bits that came from the neighbour byte.
        let s = _mm256_srl_epi16(a, _mm_cvtsi32_si128(n as i32));
        _mm256_and_si256(s, _mm256_set1_epi8((0xffu32 >> n) as u8 as i8))
    }
    #[inline(always)]
    unsafe fn shl_b(a: __m256i, n: u32) -> __m256i {
        let s = _mm256_sll_epi16(a, _mm_cvtsi32_si128(n as i32));
        _mm256_and_si256(s, _mm256_set1_epi8((0xffu32 << n) as u8 as i8))
    }
    #[inline(always)]
    unsafe fn nonzero_b(a: __m256i) -> __m256i {
        let z = _mm256_cmpeq_epi8(a, _mm256_setzero_si256());
        _mm256_xor_si256(z, _mm256_set1_epi8(-1))
    }
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        // Byte j takes byte j/8 of `bits`, then every bit but bit j%8 is set
        // so the byte is all ones exactly when that bit was set.
        let v = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let v = _mm256_shuffle_epi8(v, shuf);
        let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
    }

    #[inline(always)]
    unsafe fn zero_i() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        // |x| * (y with x's sign): maddubs needs an unsigned first operand.
        // Pair sums stay below 2*128*127, so no i16 saturation.
        if VNNI {
            return dpbusd(acc, _mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        }
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, x: __m256i, y: __m256i, s0: i32, s1: i32) -> __m256i {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        let s = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_set1_epi16(s0 as i16)),
            _mm_set1_epi16(s1 as i16),
            1,
        );
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    }
    #[inline(always)]
    unsafe fn dot_u(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
        // x is already unsigned: one maddubs, same pair sums as `dot`.
        if VNNI {
            return dpbusd(acc, x, y);
        }
        let p = _mm256_maddubs_epi16(x, y);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dot_scaled_u(acc: __m256i, x: __m256i, y: __m256i, s0: i32, s1: i32) -> __m256i {
        let p = _mm256_maddubs_epi16(x, y);
        let s = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_set1_epi16(s0 as i16)),
            _mm_set1_epi16(s1 as i16),
            1,
        );
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    }
    #[inline(always)]
    unsafe fn load_i(p: *const i32) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn sub_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn add_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn mul_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_mullo_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn hsum_i(a: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
    const DOT_U8: bool = VNNI;
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn bcast4_b(p: *const u8) -> __m256i {
        _mm256_set1_epi32(core::ptr::read_unaligned(p as *const i32))
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[inline(always)]
    unsafe fn hsum4_i(v: [__m256i; 4]) -> [i32; 4] {
        // Pairwise adds within 128-bit halves, then the two halves: exact
        // integer sums in any order.
        let ab = _mm256_hadd_epi32(v[0], v[1]);
        let cd = _mm256_hadd_epi32(v[2], v[3]);
        let abcd = _mm256_hadd_epi32(ab, cd);
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(abcd),
            _mm256_extracti128_si256(abcd, 1),
        );
        let mut out = [0i32; 4];
        _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, s);
        out
    }
    #[inline(always)]
    unsafe fn i_to_f(a: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(a)
    }

    #[inline(always)]
    unsafe fn b_to_f(a: __m256i) -> [__m256; 4] {
        let lo = _mm256_castsi256_si128(a);
        let hi = _mm256_extracti128_si256(a, 1);
        [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
        ]
    }
    #[inline(always)]
    unsafe fn store_q8(p: *mut i8, v: [__m256; 4]) {
        let i0 = _mm256_cvtps_epi32(v[0]);
        let i1 = _mm256_cvtps_epi32(v[1]);
        let i2 = _mm256_cvtps_epi32(v[2]);
        let i3 = _mm256_cvtps_epi32(v[3]);
        // The packs interleave 128-bit lanes; the permute restores order.
        let a = _mm256_packs_epi32(i0, i1);
        let b = _mm256_packs_epi32(i2, i3);
        let c = _mm256_packs_epi16(a, b);
        let c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(p as *mut __m256i, c)
    }

    #[inline(always)]
    unsafe fn zero_f() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add_f(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub_f(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul_f(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div_f(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma_f(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn max_f(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min_f(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn abs_f(a: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
    }
    #[inline(always)]
    unsafe fn hsum_f(a: __m256) -> f32 {
        hsum128_ps(_mm_add_ps(
            _mm256_castps256_ps128(a),
            _mm256_extractf128_ps(a, 1),
        ))
    }
    #[inline(always)]
    unsafe fn hmax_f(a: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }
    #[inline(always)]
    unsafe fn round_away_f(a: __m256) -> __m256 {
        // trunc(a) + sign(a) when the (exact) fraction is >= 0.5: C roundf.
        let t = _mm256_round_ps(a, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = Self::abs_f(_mm256_sub_ps(a, t));
        let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
        let one = _mm256_or_ps(_mm256_and_ps(a, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
        _mm256_add_ps(t, _mm256_and_ps(up, one))
    }
    #[inline(always)]
    unsafe fn round_even_f(a: __m256) -> __m256 {
        _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
    }
    #[inline(always)]
    unsafe fn exp2i_f(n: __m256) -> __m256 {
        let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32(e, 23))
    }

    #[inline(always)]
    unsafe fn fp16(h: u16) -> f32 {
        let r: __m128;
        // SAFETY (caller): F16C present. Register-only conversion.
        asm!("vcvtph2ps {0}, {1}", out(xmm_reg) r, in(xmm_reg) _mm_cvtsi32_si128(h as i32),
             options(pure, nomem, nostack, preserves_flags));
        _mm_cvtss_f32(r)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> __m256 {
        cvtph_load(p)
    }
    #[inline(always)]
    unsafe fn store_f16(p: *mut u16, v: __m256) {
        cvtps_store(p, v)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m256 {
        let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(w, 16))
    }
    #[inline(always)]
    unsafe fn store_bf16(p: *mut u16, v: __m256) {
        let u = _mm256_castps_si256(v);
        let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
        let hi = _mm256_srli_epi32(u, 16);
        let bias = _mm256_add_epi32(
            _mm256_set1_epi32(0x7fff),
            _mm256_and_si256(hi, _mm256_set1_epi32(1)),
        );
        let rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
        let quiet = _mm256_or_si256(hi, _mm256_set1_epi32(64));
        let r = _mm256_blendv_epi8(rounded, quiet, nan);
        // Values are < 0x10000, so the unsigned pack is exact.
        let packed = _mm256_packus_epi32(r, r);
        let packed = _mm256_permute4x64_epi64(packed, 0b00_00_10_00);
        _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(packed))
    }
}
