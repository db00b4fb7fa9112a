//! 512-bit prompt-batch kernels, and the F16 decode one, for CPUs with
//! AVX-512 F/BW/VL and VNNI (table `avx512`). Every other entry is the
//! `avx2-vnni` table's.
//!
//! Exactness: a zmm register holds two 8-lane accumulators (two weight
//! rows of one token, or sixteen interleaved rows) or one 16-lane one (the
//! float GEMMs; the F16 decode kernel keeps four per pair), and every lane
//! performs exactly the operations the 256-bit kernel performs on it, in
//! the same order: the same exact
//! integer lane sums, the same `d_w * d_a` products, the same fused
//! multiply-adds block after block, the same horizontal sums. So each
//! output is bit-identical to the `avx2-vnni` table's (the tests compare
//! every table with the references).

pub use super::avx2_vnni::*;
pub use super::gelu::avx512::{geglu_ggml, gelu_ggml};

use super::avx2::Avx2;
use crate::blocks::*;
use crate::gemm::{check, check_interleaved, check_lanes16, TileKind};
use crate::generic::Simd;
use core::arch::x86_64::*;

type V = Avx2<true>;

/// True when the CPU has everything this table uses (on top of the
/// `avx2-vnni` table's features, which are the same set).
pub fn detected() -> bool {
    super::vnni_detected()
}

/// Lanes 0..8 and 8..16 of `v`.
#[inline(always)]
unsafe fn split_f(v: __m512) -> [__m256; 2] {
    [
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
    ]
}

/// Two 256-bit vectors as one zmm (`lo` in lanes 0..8).
#[inline(always)]
unsafe fn join_i(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

// ---------------------------------------------------------------------------
// Float weights, llamafile tinyBLAS order: one 16-lane accumulator per
// (row, token), fused multiply-adds over k, reduced as
// `_mm512_reduce_add_ps` (upper 8 lanes + lower 8, then the 8-lane sum).

trait Wide: Copy {
    unsafe fn load16(p: *const Self) -> __m512;
}
impl Wide for u16 {
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
}
impl Wide for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
}

/// One tile of `R` rows x `T` tokens: the tokens' 16 values of each step
/// are loaded once and held in registers, each row's weights converted
/// once and fused into its `T` accumulators (R*T + T + 1 of the 32 zmm
/// registers).
#[inline(always)]
unsafe fn wide_tile<W: Wide, const R: usize, const T: usize>(
    x: *const W,
    y: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut l = 0;
    while l < k {
        let mut a = [_mm512_setzero_ps(); T];
        for (t, at) in a.iter_mut().enumerate() {
            *at = _mm512_loadu_ps(y.add(t * k + l));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let w = W::load16(x.add(r * k + l));
            for (acc_rt, &at) in acc_r.iter_mut().zip(&a) {
                *acc_rt = _mm512_fmadd_ps(w, at, *acc_rt);
            }
        }
        l += 16;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, &v) in acc_r.iter().enumerate() {
            let [lo, hi] = split_f(v);
            *out.add(r * ldo + t) = V::hsum_f(_mm256_add_ps(hi, lo));
        }
    }
}

/// Most rows and tokens of one float tile.
const WIDE_ROWS: usize = 4;
const WIDE_TOKENS: usize = 6;

/// `T` tokens against every row of `x`, [`WIDE_ROWS`] at a time.
#[inline(always)]
unsafe fn wide_rows<W: Wide, const T: usize>(
    x: *const W,
    nr: usize,
    y: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut r = 0;
    while r < nr {
        let (xr, o) = (x.add(r * k), out.add(r * ldo));
        match nr - r {
            1 => wide_tile::<W, 1, T>(xr, y, k, o, ldo),
            2 => wide_tile::<W, 2, T>(xr, y, k, o, ldo),
            3 => wide_tile::<W, 3, T>(xr, y, k, o, ldo),
            _ => wide_tile::<W, WIDE_ROWS, T>(xr, y, k, o, ldo),
        }
        r += WIDE_ROWS;
    }
}

/// Weight bytes per block of rows that meets every token before the next
/// block (kept in L2 while the tokens pass).
const WIDE_BLOCK_BYTES: usize = 256 * 1024;

/// Tiles of 4 rows x 6 tokens, the tokens outer: their values (6 x k f32)
/// stay in L1 while a block of rows streams past from L2, so each weight
/// is converted once per 6 tokens and the activations are not re-read
/// from L2 for every 4 rows.
#[inline(always)]
unsafe fn gemm_wide<W: Wide>(x: &[W], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
    let (nr, nt) = (x.len() / k, y.len() / k);
    let block = (WIDE_BLOCK_BYTES / (k * core::mem::size_of::<W>()) / WIDE_ROWS).max(1) * WIDE_ROWS;
    let (yp, op) = (y.as_ptr(), out.as_mut_ptr());
    let mut r0 = 0;
    while r0 < nr {
        let rows = block.min(nr - r0);
        let (xp, op) = (x.as_ptr().add(r0 * k), op.add(r0 * ldo));
        let mut t = 0;
        while t < nt {
            let (yt, o) = (yp.add(t * k), op.add(t));
            match nt - t {
                1 => wide_rows::<W, 1>(xp, rows, yt, k, o, ldo),
                2 => wide_rows::<W, 2>(xp, rows, yt, k, o, ldo),
                3 => wide_rows::<W, 3>(xp, rows, yt, k, o, ldo),
                4 => wide_rows::<W, 4>(xp, rows, yt, k, o, ldo),
                5 => wide_rows::<W, 5>(xp, rows, yt, k, o, ldo),
                _ => wide_rows::<W, WIDE_TOKENS>(xp, rows, yt, k, o, ldo),
            }
            t += WIDE_TOKENS;
        }
        r0 += rows;
    }
}

macro_rules! wide_entry_points {
    ($( $name:ident($w:ty); )*) => {
        $(
            pub fn $name(x: &[$w], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
                check_lanes16(stringify!($name), x.len(), y.len(), k, out.len(), ldo);
                #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
                unsafe fn imp(x: &[$w], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
                    gemm_wide(x, y, k, out, ldo)
                }
                // SAFETY: this table is chosen only where `detected()` holds;
                // `check_lanes16` established whole rows of k (a multiple of
                // 16) and in-bounds outputs.
                unsafe { imp(x, y, k, out, ldo) }
            }
        )*
    };
}

wide_entry_points! {
    gemm_f16_lanes16(u16);
    gemm_f32_lanes16(f32);
}

// ---------------------------------------------------------------------------
// F16 weights against f32 activations in the `vec_dot_f16` order
// (`scalar::dot_ggml_order`, ggml's AVX-512 `ggml_vec_dot_f16`): per
// (row, token) four 16-lane accumulators, one zmm each, fed by fused
// multiply-adds over 64-element steps, combined (0+2)+(1+3), reduced as
// `_mm512_reduce_add_ps`; the tail past the last whole step summed in f64.
// The activation is read as f32 (converted once per matmul, not per row)
// and each of its vectors serves the tile's rows.

#[inline(always)]
unsafe fn f16_f32_tile<const R: usize, const T: usize>(
    x: *const u16,
    y: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[[_mm512_setzero_ps(); 4]; T]; R];
    let whole = k - k % 64;
    let mut l = 0;
    while l < whole {
        for r in 0..R {
            // The next tile's rows, two lines each per step.
            let next = x.wrapping_add((R + r) * k + l) as *const u8;
            V::prefetch(next);
            V::prefetch(next.wrapping_add(64));
        }
        for j in 0..4 {
            let o = l + 16 * j;
            let mut a = [_mm512_setzero_ps(); T];
            for (t, at) in a.iter_mut().enumerate() {
                *at = _mm512_loadu_ps(y.add(t * k + o));
            }
            for r in 0..R {
                let w = _mm512_cvtph_ps(_mm256_loadu_si256(x.add(r * k + o) as *const __m256i));
                for t in 0..T {
                    acc[r][t][j] = _mm512_fmadd_ps(w, a[t], acc[r][t][j]);
                }
            }
        }
        l += 64;
    }
    for r in 0..R {
        for t in 0..T {
            let c = &acc[r][t];
            let v = _mm512_add_ps(_mm512_add_ps(c[0], c[2]), _mm512_add_ps(c[1], c[3]));
            let [lo, hi] = split_f(v);
            let mut sum = V::hsum_f(_mm256_add_ps(hi, lo)) as f64;
            for i in whole..k {
                sum += (V::fp16(*x.add(r * k + i)) * *y.add(t * k + i)) as f64;
            }
            *out.add(r * ldo + t) = sum as f32;
        }
    }
}

/// Tiles of 4 rows for one token (decode), else of 2 rows x 2 tokens: 16
/// accumulators of the 32 registers either way.
#[inline(always)]
unsafe fn gemm_f16_f32_zmm(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
    let (nr, nt) = (x.len() / k, y.len() / k);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let (tile_rows, tile_toks) = if nt == 1 { (4, 1) } else { (2, 2) };
    let mut r = 0;
    while r < nr {
        let rows = (nr - r).min(tile_rows);
        let mut t = 0;
        while t < nt {
            let toks = (nt - t).min(tile_toks);
            let (xr, yt, o) = (xp.add(r * k), yp.add(t * k), op.add(r * ldo + t));
            match (rows, toks) {
                (4, _) => f16_f32_tile::<4, 1>(xr, yt, k, o, ldo),
                (3, _) => f16_f32_tile::<3, 1>(xr, yt, k, o, ldo),
                (2, 2) => f16_f32_tile::<2, 2>(xr, yt, k, o, ldo),
                (2, _) => f16_f32_tile::<2, 1>(xr, yt, k, o, ldo),
                (_, 2) => f16_f32_tile::<1, 2>(xr, yt, k, o, ldo),
                _ => f16_f32_tile::<1, 1>(xr, yt, k, o, ldo),
            }
            t += toks;
        }
        r += rows;
    }
}

pub fn gemm_f16_f32(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
    check("gemm_f16_f32", x.len(), y.len(), k, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
        gemm_f16_f32_zmm(x, y, k, out, ldo)
    }
    // SAFETY: this table is chosen only where `detected()` holds; `check`
    // established whole rows of k elements and in-bounds outputs.
    unsafe { imp(x, y, k, out, ldo) }
}

// ---------------------------------------------------------------------------
// Q8_0 / Q5_0 weights against Q8_0 activations in the `vec_dot` order (also
// llamafile's tinyBLAS order for these types): per (row, token) eight i32
// lanes per block, converted and fused into eight f32 lanes with
// `d_w * d_a`, summed at the end. A zmm holds two rows of one token: the
// weights of rows 2p and 2p+1 side by side against the token's block
// broadcast to both halves.

/// A weight type decoded to unsigned bytes whose offset `BIAS` enters
/// through the activation (as the `avx2-vnni` tiles do it).
trait Biased: TileKind<V, A = BlockQ8_0, Dec = (__m256i, f32)> {
    const BIAS: u8;
    /// Two rows' blocks decoded side by side (`w0` in bytes 0..32) and
    /// their scales (`w0`'s in lanes 0..8).
    unsafe fn decode2(w0: &Self::W, w1: &Self::W) -> (__m512i, __m512);
}

/// The f16 values in the low 64 bits of `halves` as f32.
#[inline(always)]
unsafe fn halves_f32(halves: __m128i) -> __m512 {
    _mm512_castps128_ps512(_mm_cvtph_ps(halves))
}

/// Lane `a` of `v` in lanes 0..8, lane `b` in lanes 8..16.
#[inline(always)]
unsafe fn spread2(v: __m512, a: i32, b: i32) -> __m512 {
    let idx = _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a);
    _mm512_permutexvar_ps(idx, v)
}

/// f16 scales `d0` in lanes 0..8, `d1` in lanes 8..16 (converted together).
#[inline(always)]
unsafe fn scales2(d0: u16, d1: u16) -> __m512 {
    spread2(
        halves_f32(_mm_cvtsi32_si128(d0 as i32 | (d1 as i32) << 16)),
        0,
        1,
    )
}

impl Biased for crate::gemm::Q8_0 {
    // `V::DOT_U8`: the Q8_0 tile stores weights + 128.
    const BIAS: u8 = 128;
    #[inline(always)]
    unsafe fn decode2(w0: &BlockQ8_0, w1: &BlockQ8_0) -> (__m512i, __m512) {
        let q = join_i(
            _mm256_loadu_si256(w0.qs.as_ptr() as *const __m256i),
            _mm256_loadu_si256(w1.qs.as_ptr() as *const __m256i),
        );
        // q + 128 as unsigned: the sign bit flipped.
        (
            _mm512_xor_si512(q, _mm512_set1_epi8(-128)),
            scales2(w0.d, w1.d),
        )
    }
}
impl Biased for crate::gemm::Q5_0 {
    const BIAS: u8 = 16;
    /// The values `q5_values` gives, two rows at once: each row's 16 bytes
    /// of nibbles in two 128-bit lanes (the second shifted down by 4), the
    /// fifth bits from the two `qh` words as one byte mask.
    #[inline(always)]
    unsafe fn decode2(w0: &BlockQ5_0, w1: &BlockQ5_0) -> (__m512i, __m512) {
        let v = _mm512_mask_broadcast_i32x4(
            _mm512_broadcast_i32x4(_mm_loadu_si128(w0.qs.as_ptr() as *const __m128i)),
            0xff00,
            _mm_loadu_si128(w1.qs.as_ptr() as *const __m128i),
        );
        // 16-bit lanes 8..16 and 24..32: the high-nibble halves.
        let v = _mm512_mask_srli_epi16(v, 0xff00_ff00, v, 4);
        let bits = u32::from_le_bytes(w0.qh) as u64 | (u32::from_le_bytes(w1.qh) as u64) << 32;
        let q = _mm512_or_si512(
            _mm512_and_si512(v, _mm512_set1_epi8(0x0f)),
            _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10)),
        );
        (q, scales2(w0.d, w1.d))
    }
}

/// What every row pair needs of one activation block, computed once per
/// call rather than once per row pair: the bias correction
/// `-BIAS * (sums of four bytes)` (eight i32 lanes) and the scale as f32.
#[derive(Clone, Copy)]
struct ActBlock {
    corr: __m256i,
    d: f32,
}

/// [`ActBlock`] of each of `n` activation blocks.
#[inline(always)]
unsafe fn act_blocks<K: Biased>(y: &[BlockQ8_0]) -> Vec<ActBlock> {
    let bias = _mm256_set1_epi8(K::BIAS as i8);
    let zero = _mm256_setzero_si256();
    let mut out = Vec::with_capacity(y.len());
    // A plain loop: a closure would not inherit the target features.
    for a in y {
        let ab = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
        out.push(ActBlock {
            corr: _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, bias, ab)),
            d: V::fp16(a.d),
        });
    }
    out
}

#[inline(always)]
unsafe fn pair_tile<K: Biased, const P: usize, const T: usize>(
    x: *const K::W,
    y: *const BlockQ8_0,
    ya: *const ActBlock,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); T]; P];
    for b in 0..nb {
        let mut w = [_mm512_setzero_si512(); P];
        let mut dw = [_mm512_setzero_ps(); P];
        for p in 0..P {
            V::prefetch(x.wrapping_add((2 * P + 2 * p) * nb + b) as *const u8);
            V::prefetch(x.wrapping_add((2 * P + 2 * p + 1) * nb + b) as *const u8);
            (w[p], dw[p]) = K::decode2(&*x.add(2 * p * nb + b), &*x.add((2 * p + 1) * nb + b));
        }
        for t in 0..T {
            let a = &*y.add(t * nb + b);
            let pre = &*ya.add(t * nb + b);
            let ab = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i));
            let corr = _mm512_broadcast_i64x4(pre.corr);
            let da = _mm512_set1_ps(pre.d);
            for p in 0..P {
                let i = _mm512_dpbusd_epi32(corr, w[p], ab);
                acc[p][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw[p], da), acc[p][t]);
            }
        }
    }
    for p in 0..P {
        for t in 0..T {
            let [lo, hi] = split_f(acc[p][t]);
            *out.add(2 * p * ldo + t) = V::hsum_f(lo);
            *out.add((2 * p + 1) * ldo + t) = V::hsum_f(hi);
        }
    }
}

/// `P` row pairs against every token, `T` tokens at a time.
#[inline(always)]
unsafe fn pair_rows<K: Biased, const P: usize, const T: usize>(
    x: *const K::W,
    y: *const BlockQ8_0,
    ya: *const ActBlock,
    nb: usize,
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut t = 0;
    while t + T <= nt {
        pair_tile::<K, P, T>(x, y.add(t * nb), ya.add(t * nb), nb, out.add(t), ldo);
        t += T;
    }
    let (y, ya, out) = (y.add(t * nb), ya.add(t * nb), out.add(t));
    match nt - t {
        0 => {}
        1 => pair_tile::<K, P, 1>(x, y, ya, nb, out, ldo),
        2 => pair_tile::<K, P, 2>(x, y, ya, nb, out, ldo),
        3 => pair_tile::<K, P, 3>(x, y, ya, nb, out, ldo),
        4 => pair_tile::<K, P, 4>(x, y, ya, nb, out, ldo),
        5 => pair_tile::<K, P, 5>(x, y, ya, nb, out, ldo),
        6 => pair_tile::<K, P, 6>(x, y, ya, nb, out, ldo),
        _ => pair_tile::<K, P, 7>(x, y, ya, nb, out, ldo),
    }
}

/// A `gemm_*` entry point on `W` weights and Q8_0 activations.
type GemmFn<W> = fn(&[W], &[BlockQ8_0], usize, &mut [f32], usize);

/// Tiles of `2P` rows x `T` tokens (T <= 8); an odd last row goes through
/// the `avx2-vnni` tile (the same operations on 256-bit registers).
#[inline(always)]
unsafe fn gemm_pairs<K: Biased, const P: usize, const T: usize>(
    x: &[K::W],
    y: &[BlockQ8_0],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
    rest: GemmFn<K::W>,
) {
    let (nr, nt) = (x.len() / nb, y.len() / nb);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let pre = act_blocks::<K>(y);
    let ya = pre.as_ptr();
    let mut r = 0;
    while r + 2 * P <= nr {
        pair_rows::<K, P, T>(xp.add(r * nb), yp, ya, nb, nt, op.add(r * ldo), ldo);
        r += 2 * P;
    }
    while r + 2 <= nr {
        pair_rows::<K, 1, T>(xp.add(r * nb), yp, ya, nb, nt, op.add(r * ldo), ldo);
        r += 2;
    }
    if r < nr {
        rest(&x[r * nb..], y, nb, &mut out[r * ldo..], ldo);
    }
}

pub fn gemm_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    check("gemm_q8_0_q8_0", x.len(), y.len(), nb, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ8_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_pairs::<crate::gemm::Q8_0, 3, 6>(x, y, nb, out, ldo, super::avx2_vnni::gemm_q8_0_q8_0)
    }
    // SAFETY: this table is chosen only where `detected()` holds; `check`
    // established whole rows of nb blocks and in-bounds outputs.
    unsafe { imp(x, y, nb, out, ldo) }
}

pub fn gemm_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
    check("gemm_q5_0_q8_0", x.len(), y.len(), nb, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ5_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_pairs::<crate::gemm::Q5_0, 2, 8>(x, y, nb, out, ldo, super::avx2_vnni::gemm_q5_0_q8_0)
    }
    // SAFETY: as in `gemm_q8_0_q8_0`.
    unsafe { imp(x, y, nb, out, ldo) }
}

// ---------------------------------------------------------------------------
// Q4_1 against Q8_1 in the `vec_dot_q4_1_q8_1` order, two rows per zmm as
// for Q8_0: per (row, token) and block eight i32 lanes of unsigned nibbles
// times activations, fused into eight f32 lanes with `d_w * d_a`; the
// `m_w * s_a` term fused into its own sum per block, added after the
// 8-lane horizontal sum. That sum runs on the tokens' lanes: one zmm per
// row pair, token t in lanes t (first row) and 8 + t (second).

/// Two rows' nibbles (`w0` in bytes 0..32: low nibbles, then high), their
/// scales and their minimums (`w0`'s in lanes 0..8).
#[inline(always)]
unsafe fn q4_1_decode2(w0: &BlockQ4_1, w1: &BlockQ4_1) -> (__m512i, __m512, __m512) {
    let v = _mm512_mask_broadcast_i32x4(
        _mm512_broadcast_i32x4(_mm_loadu_si128(w0.qs.as_ptr() as *const __m128i)),
        0xff00,
        _mm_loadu_si128(w1.qs.as_ptr() as *const __m128i),
    );
    // 16-bit lanes 8..16 and 24..32: the high-nibble halves.
    let v = _mm512_mask_srli_epi16(v, 0xff00_ff00, v, 4);
    // d0, m0, d1, m1 converted at once, then spread over the halves.
    let dm = halves_f32(_mm_insert_epi32(
        _mm_cvtsi32_si128(w0.d as i32 | (w0.m as i32) << 16),
        w1.d as i32 | (w1.m as i32) << 16,
        1,
    ));
    (
        _mm512_and_si512(v, _mm512_set1_epi8(0x0f)),
        spread2(dm, 0, 2),
        spread2(dm, 1, 3),
    )
}

/// Of each activation block: its scale as f32 (`d[token * nb + block]`)
/// and its `s` by block (`s[block * nt + token]`, 8 spare lanes at the end
/// for the last tile's load).
struct Q4_1Acts {
    d: Vec<f32>,
    s: Vec<f32>,
    nb: usize,
    nt: usize,
}

impl Q4_1Acts {
    #[inline(always)]
    unsafe fn new(y: &[BlockQ8_1], nb: usize) -> Q4_1Acts {
        let nt = y.len() / nb;
        let mut s = vec![0f32; nb * nt + 8];
        for (i, a) in y.iter().enumerate() {
            s[(i % nb) * nt + i / nb] = V::fp16(a.s);
        }
        Q4_1Acts {
            d: y.iter().map(|a| V::fp16(a.d)).collect(),
            s,
            nb,
            nt,
        }
    }
}

/// One row pair (`x`, `x + nb`) against tokens `t0..t0 + T` (T <= 8).
#[inline(always)]
unsafe fn q4_1_tile<const T: usize>(
    x: *const BlockQ4_1,
    y: *const BlockQ8_1,
    acts: &Q4_1Acts,
    t0: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (nb, nt) = (acts.nb, acts.nt);
    let (d_a, s_a) = (acts.d.as_ptr().add(t0 * nb), acts.s.as_ptr().add(t0));
    let y = y.add(t0 * nb);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut summs = _mm512_setzero_ps();
    for b in 0..nb {
        V::prefetch(x.wrapping_add(2 * nb + b) as *const u8);
        V::prefetch(x.wrapping_add(3 * nb + b) as *const u8);
        let (w, dw, mw) = q4_1_decode2(&*x.add(b), &*x.add(nb + b));
        // The tile's tokens' `s` in lanes 0..T and again from 8 (the lanes
        // past T hold other tokens' values, never read).
        let s = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(
            s_a.add(b * nt),
        ))));
        summs = _mm512_fmadd_ps(mw, s, summs);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let ab = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                (*y.add(t * nb + b)).qs.as_ptr() as *const __m256i
            ));
            let da = _mm512_set1_ps(*d_a.add(t * nb + b));
            let i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, ab);
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw, da), *acc_t);
        }
    }
    let mut m = [0f32; 16];
    _mm512_storeu_ps(m.as_mut_ptr(), summs);
    for (t, &acc_t) in acc.iter().enumerate() {
        let [lo, hi] = split_f(acc_t);
        *out.add(t) = V::hsum_f(lo) + m[t];
        *out.add(ldo + t) = V::hsum_f(hi) + m[8 + t];
    }
}

pub fn gemm_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1], nb: usize, out: &mut [f32], ldo: usize) {
    check("gemm_q4_1_q8_1", x.len(), y.len(), nb, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ4_1], y: &[BlockQ8_1], nb: usize, out: &mut [f32], ldo: usize) {
        // One row pair x 8 tokens: more pairs per tile spill registers.
        const T: usize = 8;
        let (nr, nt) = (x.len() / nb, y.len() / nb);
        let acts = Q4_1Acts::new(y, nb);
        let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
        let mut r = 0;
        while r + 2 <= nr {
            let (xr, or) = (xp.add(r * nb), op.add(r * ldo));
            let mut t = 0;
            while t + T <= nt {
                q4_1_tile::<T>(xr, yp, &acts, t, or.add(t), ldo);
                t += T;
            }
            let o = or.add(t);
            match nt - t {
                0 => {}
                1 => q4_1_tile::<1>(xr, yp, &acts, t, o, ldo),
                2 => q4_1_tile::<2>(xr, yp, &acts, t, o, ldo),
                3 => q4_1_tile::<3>(xr, yp, &acts, t, o, ldo),
                4 => q4_1_tile::<4>(xr, yp, &acts, t, o, ldo),
                5 => q4_1_tile::<5>(xr, yp, &acts, t, o, ldo),
                6 => q4_1_tile::<6>(xr, yp, &acts, t, o, ldo),
                _ => q4_1_tile::<7>(xr, yp, &acts, t, o, ldo),
            }
            r += 2;
        }
        if r < nr {
            super::avx2_vnni::gemm_q4_1_q8_1(&x[r * nb..], y, nb, &mut out[r * ldo..], ldo);
        }
    }
    // SAFETY: this table is chosen only where `detected()` holds; `check`
    // established whole rows of nb blocks and in-bounds outputs.
    unsafe { imp(x, y, nb, out, ldo) }
}

// ---------------------------------------------------------------------------
// Q4_0 interleaved by eight rows, llama.cpp's repacked `q4_0_8x8` rounding
// (one f32 running sum per output, a fused multiply-add per block): two
// groups of eight rows side by side, a lane per row, so each broadcast
// activation quad meets sixteen rows per `vpdpbusd`.

/// Of each activation block, once per call: `-8 * sum(a)` (the offset of
/// the unsigned nibbles, exact) and the scale as f32.
#[inline(always)]
unsafe fn q4_0_acts(y: &[BlockQ8_0]) -> Vec<(i32, f32)> {
    let mut out = Vec::with_capacity(y.len());
    // A plain loop: a closure would not inherit the target features.
    for a in y {
        let ap = a.qs.as_ptr() as *const u8;
        let sum = V::hsum_i(V::dot_u(V::zero_i(), V::set1_b(1), V::load_b(ap)));
        out.push((-8 * sum, V::fp16(a.d)));
    }
    out
}

/// Two groups (`xg`, `xg + nb`) against `T` tokens.
#[inline(always)]
unsafe fn q4_0x16_tokens<const T: usize>(
    xg: *const BlockQ4_0x8,
    y: *const BlockQ8_0,
    ya: *const (i32, f32),
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let low = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let (w0, w1) = (&*xg.add(b), &*xg.add(nb + b));
        for g in [2 * nb + b, 3 * nb + b] {
            let next = xg.wrapping_add(g) as *const u8;
            V::prefetch(next);
            V::prefetch(next.wrapping_add(64));
        }
        let mut lo = [low; 4];
        let mut hi = [low; 4];
        for v in 0..4 {
            let q = join_i(
                _mm256_loadu_si256(w0.qs.as_ptr().add(32 * v) as *const __m256i),
                _mm256_loadu_si256(w1.qs.as_ptr().add(32 * v) as *const __m256i),
            );
            lo[v] = _mm512_and_si512(q, low);
            hi[v] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low);
        }
        let d = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(w0.d.as_ptr() as *const __m128i)),
            _mm_loadu_si128(w1.d.as_ptr() as *const __m128i),
            1,
        );
        let dw = _mm512_cvtph_ps(d);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let ap = (*y.add(t * nb + b)).qs.as_ptr() as *const u8;
            let (offset, da) = *ya.add(t * nb + b);
            // sum((q - 8) a) = sum(q a) - 8 sum(a), as the 8-row kernel.
            let mut i = _mm512_set1_epi32(offset);
            for v in 0..4 {
                let quad = |o: usize| _mm512_set1_epi32((ap.add(o) as *const i32).read_unaligned());
                i = _mm512_dpbusd_epi32(i, lo[v], quad(4 * v));
                i = _mm512_dpbusd_epi32(i, hi[v], quad(16 + 4 * v));
            }
            let dd = _mm512_mul_ps(dw, _mm512_set1_ps(da));
            *acc_t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), dd, *acc_t);
        }
    }
    for (t, acc_t) in acc.iter().enumerate() {
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), *acc_t);
        for (r, &v) in lanes.iter().enumerate() {
            *out.add(r * ldo + t) = v;
        }
    }
}

pub fn gemm_q4_0x8_q8_0(
    x: &[BlockQ4_0x8],
    y: &[BlockQ8_0],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    check_interleaved("gemm_q4_0x8_q8_0", x.len(), y.len(), nb, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ4_0x8], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
        const T: usize = 8;
        let (ng, nt) = (x.len() / nb, y.len() / nb);
        let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
        let pre = q4_0_acts(y);
        let ya = pre.as_ptr();
        let mut g = 0;
        while g + 2 <= ng {
            let (xg, og) = (xp.add(g * nb), op.add(8 * g * ldo));
            let mut t = 0;
            while t + T <= nt {
                q4_0x16_tokens::<T>(xg, yp.add(t * nb), ya.add(t * nb), nb, og.add(t), ldo);
                t += T;
            }
            let (yt, yat, ot) = (yp.add(t * nb), ya.add(t * nb), og.add(t));
            match nt - t {
                0 => {}
                1 => q4_0x16_tokens::<1>(xg, yt, yat, nb, ot, ldo),
                2 => q4_0x16_tokens::<2>(xg, yt, yat, nb, ot, ldo),
                3 => q4_0x16_tokens::<3>(xg, yt, yat, nb, ot, ldo),
                4 => q4_0x16_tokens::<4>(xg, yt, yat, nb, ot, ldo),
                5 => q4_0x16_tokens::<5>(xg, yt, yat, nb, ot, ldo),
                6 => q4_0x16_tokens::<6>(xg, yt, yat, nb, ot, ldo),
                _ => q4_0x16_tokens::<7>(xg, yt, yat, nb, ot, ldo),
            }
            g += 2;
        }
        if g < ng {
            // An odd last group: the eight-lane kernel.
            super::avx2_vnni::gemm_q4_0x8_q8_0(&x[g * nb..], y, nb, &mut out[8 * g * ldo..], ldo);
        }
    }
    // SAFETY: this table is chosen only where `detected()` holds;
    // `check_interleaved` established whole 8-row groups of nb blocks and
    // in-bounds outputs for every row.
    unsafe { imp(x, y, nb, out, ldo) }
}

// ---------------------------------------------------------------------------
// Q4_K interleaved by eight rows (llama.cpp's 8x4 layout), per 256 or (with
// PER64) per 64 elements as the `avx2-vnni` q4_kx8 kernel rounds it: two
// groups side by side, a lane per row, sixteen rows per `vpdpbusd`.

/// Sixteen 6-bit values (eight of each group) as i32 lanes.
#[inline(always)]
unsafe fn lanes16_u8(a: [u8; 8], b: [u8; 8]) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_set_epi64x(
        u64::from_le_bytes(b) as i64,
        u64::from_le_bytes(a) as i64,
    ))
}

/// Sixteen halves (eight of each group) as f32 lanes.
#[inline(always)]
unsafe fn halves16(a: &[u16; 8], b: &[u16; 8]) -> __m512 {
    _mm512_cvtph_ps(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(a.as_ptr() as *const __m128i)),
        _mm_loadu_si128(b.as_ptr() as *const __m128i),
        1,
    ))
}

/// Two groups (`xg`, `xg + nb`) against `T` tokens.
#[inline(always)]
unsafe fn q4kx16_tokens<const T: usize, const PER64: bool>(
    xg: *const BlockQ4Kx8,
    y: *const BlockQ8K,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let low = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_min = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let (w0, w1) = (&*xg.add(b), &*xg.add(nb + b));
        let (next0, next1) = (
            xg.wrapping_add(b + 1) as *const u8,
            xg.wrapping_add(nb + b + 1) as *const u8,
        );
        V::prefetch(next0);
        V::prefetch(next0.wrapping_add(64));
        V::prefetch(next1);
        V::prefetch(next1.wrapping_add(64));
        let dw = halves16(&w0.d, &w1.d);
        let dmin = halves16(&w0.dmin, &w1.dmin);
        let mut isum = [_mm512_setzero_si512(); T];
        let mut msum = [_mm512_setzero_si512(); T];
        for j in 0..4 {
            let ((sc0_lo, mn0_lo), (sc0_hi, mn0_hi)) =
                (w0.scales_mins(2 * j), w0.scales_mins(2 * j + 1));
            let ((sc1_lo, mn1_lo), (sc1_hi, mn1_hi)) =
                (w1.scales_mins(2 * j), w1.scales_mins(2 * j + 1));
            let mut dlo = [_mm512_setzero_si512(); T];
            let mut dhi = [_mm512_setzero_si512(); T];
            for i in 0..8 {
                // Piece 8j + i of both groups: elements 64j + 4i.. (low
                // nibbles) and 64j + 32 + 4i.. (high) of every row.
                let at = 32 * (8 * j + i);
                let q = join_i(
                    _mm256_loadu_si256(w0.qs.as_ptr().add(at) as *const __m256i),
                    _mm256_loadu_si256(w1.qs.as_ptr().add(at) as *const __m256i),
                );
                V::prefetch(next0.wrapping_add(128 + at));
                V::prefetch(next1.wrapping_add(128 + at));
                let (lo, hi) = (
                    _mm512_and_si512(q, low),
                    _mm512_and_si512(_mm512_srli_epi16(q, 4), low),
                );
                for t in 0..T {
                    let ap = (*y.add(t * nb + b)).qs.as_ptr() as *const u8;
                    let quad =
                        |o: usize| _mm512_set1_epi32((ap.add(o) as *const i32).read_unaligned());
                    dlo[t] = _mm512_dpbusd_epi32(dlo[t], lo, quad(64 * j + 4 * i));
                    dhi[t] = _mm512_dpbusd_epi32(dhi[t], hi, quad(64 * j + 32 + 4 * i));
                }
            }
            let (sc_lo, sc_hi) = (lanes16_u8(sc0_lo, sc1_lo), lanes16_u8(sc0_hi, sc1_hi));
            let (mn_lo, mn_hi) = (lanes16_u8(mn0_lo, mn1_lo), lanes16_u8(mn0_hi, mn1_hi));
            for t in 0..T {
                let a = &*y.add(t * nb + b);
                let bs = &a.bsums[4 * j..4 * j + 4];
                let b01 = _mm512_set1_epi32(bs[0] as i32 + bs[1] as i32);
                let b23 = _mm512_set1_epi32(bs[2] as i32 + bs[3] as i32);
                let dots = _mm512_add_epi32(
                    _mm512_mullo_epi32(sc_lo, dlo[t]),
                    _mm512_mullo_epi32(sc_hi, dhi[t]),
                );
                let mins = _mm512_add_epi32(
                    _mm512_mullo_epi32(mn_lo, b01),
                    _mm512_mullo_epi32(mn_hi, b23),
                );
                isum[t] = _mm512_add_epi32(isum[t], dots);
                msum[t] = _mm512_add_epi32(msum[t], mins);
                if PER64 {
                    let ad = _mm512_set1_ps(a.d);
                    acc[t] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, ad), acc[t]);
                    acc_min[t] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(msum[t]),
                        _mm512_mul_ps(dmin, ad),
                        acc_min[t],
                    );
                    isum[t] = _mm512_setzero_si512();
                    msum[t] = _mm512_setzero_si512();
                }
            }
        }
        if !PER64 {
            for t in 0..T {
                let ad = _mm512_set1_ps((*y.add(t * nb + b)).d);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, ad), acc[t]);
                acc_min[t] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(msum[t]),
                    _mm512_mul_ps(dmin, ad),
                    acc_min[t],
                );
            }
        }
    }
    for t in 0..T {
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_sub_ps(acc[t], acc_min[t]));
        for (r, &v) in lanes.iter().enumerate() {
            *out.add(r * ldo + t) = v;
        }
    }
}

/// Pairs of groups, 4 tokens at a time; an odd last group through the
/// eight-lane kernel `rest`.
#[inline(always)]
unsafe fn gemm_q4kx16<const PER64: bool>(
    x: &[BlockQ4Kx8],
    y: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
    rest: fn(&[BlockQ4Kx8], &[BlockQ8K], usize, &mut [f32], usize),
) {
    const T: usize = 4;
    let (ng, nt) = (x.len() / nb, y.len() / nb);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let mut g = 0;
    while g + 2 <= ng {
        let (xg, og) = (xp.add(g * nb), op.add(8 * g * ldo));
        let mut t = 0;
        while t + T <= nt {
            q4kx16_tokens::<T, PER64>(xg, yp.add(t * nb), nb, og.add(t), ldo);
            t += T;
        }
        let (yt, ot) = (yp.add(t * nb), og.add(t));
        match nt - t {
            0 => {}
            1 => q4kx16_tokens::<1, PER64>(xg, yt, nb, ot, ldo),
            2 => q4kx16_tokens::<2, PER64>(xg, yt, nb, ot, ldo),
            _ => q4kx16_tokens::<3, PER64>(xg, yt, nb, ot, ldo),
        }
        g += 2;
    }
    if g < ng {
        rest(&x[g * nb..], y, nb, &mut out[8 * g * ldo..], ldo);
    }
}

pub fn gemm_q4_kx8_q8_k(x: &[BlockQ4Kx8], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
    check_interleaved("gemm_q4_kx8_q8_k", x.len(), y.len(), nb, out.len(), ldo);
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ4Kx8], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_q4kx16::<false>(x, y, nb, out, ldo, super::avx2_vnni::gemm_q4_kx8_q8_k)
    }
    // SAFETY: this table is chosen only where `detected()` holds;
    // `check_interleaved` established whole 8-row groups of nb blocks and
    // in-bounds outputs for every row.
    unsafe { imp(x, y, nb, out, ldo) }
}

pub fn gemm_q4_kx8_q8_k_sum64(
    x: &[BlockQ4Kx8],
    y: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    check_interleaved(
        "gemm_q4_kx8_q8_k_sum64",
        x.len(),
        y.len(),
        nb,
        out.len(),
        ldo,
    );
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ4Kx8], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        gemm_q4kx16::<true>(x, y, nb, out, ldo, super::avx2_vnni::gemm_q4_kx8_q8_k_sum64)
    }
    // SAFETY: as in `gemm_q4_kx8_q8_k`.
    unsafe { imp(x, y, nb, out, ldo) }
}

// ---------------------------------------------------------------------------
// Q6_K in the rounding of llama.cpp's tiled K-quant matmul
// (`scalar::vec_dot_q6_k_q8_k_block_fma`): per (row, token) and block the
// exact integer dot, then `fma(f32(isum) * d_w, d_a, acc)`. Only the integer
// total matters, so two rows share a zmm (one per 256-bit half) and each
// half is summed exactly at the end of the block.

/// Two rows' decoded blocks: the eight 32-value groups side by side, per
/// group the i16 scale vector of `dot_scaled` for both rows, and all
/// sixteen scales of both rows as i16 (for the bias term).
struct Q6Pair {
    q: [__m512i; 8],
    sc: [__m512i; 8],
    sc_all: __m512i,
    d: [f32; 2],
}

#[inline(always)]
unsafe fn q6_pair(w0: &BlockQ6K, w1: &BlockQ6K) -> Q6Pair {
    let (a0, b0) = (
        crate::generic::q6_values_u::<V>(w0, 0),
        crate::generic::q6_values_u::<V>(w0, 1),
    );
    let (a1, b1) = (
        crate::generic::q6_values_u::<V>(w1, 0),
        crate::generic::q6_values_u::<V>(w1, 1),
    );
    let r0 = [a0[0], a0[1], a0[2], a0[3], b0[0], b0[1], b0[2], b0[3]];
    let r1 = [a1[0], a1[1], a1[2], a1[3], b1[0], b1[1], b1[2], b1[3]];
    // i16 lanes 0..16: row 0's scales, 16..32: row 1's.
    let sc_all = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(w0.scales.as_ptr() as *const __m128i)),
        _mm_loadu_si128(w1.scales.as_ptr() as *const __m128i),
        1,
    ));
    let mut q = [_mm512_setzero_si512(); 8];
    let mut sc = [_mm512_setzero_si512(); 8];
    for c in 0..8 {
        q[c] = join_i(r0[c], r1[c]);
        // Each 128-bit lane (16 bytes of one row) gets its half's scale.
        let s = |i: i16| [i; 8];
        let c2 = 2 * c as i16;
        let idx: [i16; 32] = {
            let mut v = [0i16; 32];
            for (k, part) in [s(c2), s(c2 + 1), s(16 + c2), s(17 + c2)]
                .iter()
                .enumerate()
            {
                v[8 * k..8 * k + 8].copy_from_slice(part);
            }
            v
        };
        sc[c] = _mm512_permutexvar_epi16(_mm512_loadu_si512(idx.as_ptr() as *const _), sc_all);
    }
    Q6Pair {
        q,
        sc,
        sc_all,
        d: [V::fp16(w0.d), V::fp16(w1.d)],
    }
}

/// The exact integer dots of both rows of `w` with activation block `a`.
#[inline(always)]
unsafe fn q6_pair_dot(w: &Q6Pair, a: &BlockQ8K) -> [i32; 2] {
    let acc = q6_pair_lanes(w, a);
    [
        V::hsum_i(_mm512_castsi512_si256(acc)),
        V::hsum_i(_mm512_extracti64x4_epi64(acc, 1)),
    ]
}

/// The exact integer dots of both rows of `w` with activation block `a`,
/// unreduced: lanes 0..8 sum to row 0's dot, lanes 8..16 to row 1's.
#[inline(always)]
unsafe fn q6_pair_lanes(w: &Q6Pair, a: &BlockQ8K) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    for c in 0..8 {
        let ab = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            a.qs.as_ptr().add(32 * c) as *const __m256i
        ));
        // Values 0..63 times -128..127: pair sums fit i16, as in `dot_scaled_u`.
        let p = _mm512_maddubs_epi16(w.q[c], ab);
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(p, w.sc[c]));
    }
    // The values are stored + 32: subtract 32 x sum(scale x block sum).
    let bs = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i));
    let bias = _mm512_slli_epi32(_mm512_madd_epi16(bs, w.sc_all), 5);
    _mm512_sub_epi32(acc, bias)
}

/// The eight integer totals of four tokens' [`q6_pair_lanes`] in one
/// transposing reduction: lane 4r + t is row r's dot with token t.
#[inline(always)]
unsafe fn q6_totals4(v: [__m512i; 4]) -> __m256i {
    // Per 128-bit lane: [v0, v1, v0, v1] partial sums, then [v0, v1, v2, v3].
    let a = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let b = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    let c = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    // 128-bit lanes 0+1 (row 0) and 2+3 (row 1).
    let pairs = _mm512_add_epi32(c, _mm512_shuffle_i32x4(c, c, 0b10_11_00_01));
    _mm512_castsi512_si256(_mm512_shuffle_i32x4(pairs, pairs, 0b00_00_10_00))
}

/// Block `b` of the row pair (`x`, `x + nb`), decoded, with the next
/// pair's block prefetched.
#[inline(always)]
unsafe fn q6_pair_at(x: *const BlockQ6K, nb: usize, b: usize) -> Q6Pair {
    for r in 0..2 {
        let next = x.wrapping_add((2 + r) * nb + b) as *const u8;
        for line in 0..4 {
            V::prefetch(next.wrapping_add(64 * line));
        }
    }
    q6_pair(&*x.add(b), &*x.add(nb + b))
}

/// [`q6k_pair_tokens`] for four tokens: one reduction for all eight dots
/// and the f32 updates on eight lanes (the same operations per lane).
#[inline(always)]
unsafe fn q6k_pair_tokens4(
    x: *const BlockQ6K,
    y: *const BlockQ8K,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    // Lane 4r + t: row r, token t.
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        let w = q6_pair_at(x, nb, b);
        // (Plain loops: closures would not inherit the target features.)
        let a = [0, 1, 2, 3].map(|t| &*y.add(t * nb + b));
        let mut lanes = [_mm512_setzero_si512(); 4];
        for (l, at) in lanes.iter_mut().zip(a) {
            *l = q6_pair_lanes(&w, at);
        }
        let totals = q6_totals4(lanes);
        let dw = _mm256_setr_ps(
            w.d[0], w.d[0], w.d[0], w.d[0], w.d[1], w.d[1], w.d[1], w.d[1],
        );
        let da = _mm256_setr_ps(
            a[0].d, a[1].d, a[2].d, a[3].d, a[0].d, a[1].d, a[2].d, a[3].d,
        );
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(totals), dw), da, acc);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    for t in 0..4 {
        *out.add(t) = lanes[t];
        *out.add(ldo + t) = lanes[4 + t];
    }
}

#[inline(always)]
unsafe fn q6k_pair_tokens<const T: usize>(
    x: *const BlockQ6K,
    y: *const BlockQ8K,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[0f32; 2]; T];
    for b in 0..nb {
        let w = q6_pair_at(x, nb, b);
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = &*y.add(t * nb + b);
            let isum = q6_pair_dot(&w, a);
            for r in 0..2 {
                acc_t[r] = (isum[r] as f32 * w.d[r]).mul_add(a.d, acc_t[r]);
            }
        }
    }
    for (t, acc_t) in acc.iter().enumerate() {
        *out.add(t) = acc_t[0];
        *out.add(ldo + t) = acc_t[1];
    }
}

pub fn gemm_q6_k_q8_k_block_fma(
    x: &[BlockQ6K],
    y: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    check(
        "gemm_q6_k_q8_k_block_fma",
        x.len(),
        y.len(),
        nb,
        out.len(),
        ldo,
    );
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(x: &[BlockQ6K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
        const T: usize = 4;
        let (nr, nt) = (x.len() / nb, y.len() / nb);
        let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
        let mut r = 0;
        while r + 2 <= nr {
            let (xr, or) = (xp.add(r * nb), op.add(r * ldo));
            let mut t = 0;
            while t + T <= nt {
                q6k_pair_tokens4(xr, yp.add(t * nb), nb, or.add(t), ldo);
                t += T;
            }
            let (yt, ot) = (yp.add(t * nb), or.add(t));
            match nt - t {
                0 => {}
                1 => q6k_pair_tokens::<1>(xr, yt, nb, ot, ldo),
                2 => q6k_pair_tokens::<2>(xr, yt, nb, ot, ldo),
                _ => q6k_pair_tokens::<3>(xr, yt, nb, ot, ldo),
            }
            r += 2;
        }
        if r < nr {
            super::avx2_vnni::gemm_q6_k_q8_k_block_fma(
                &x[r * nb..],
                y,
                nb,
                &mut out[r * ldo..],
                ldo,
            );
        }
    }
    // SAFETY: this table is chosen only where `detected()` holds; `check`
    // established whole rows of nb blocks and in-bounds outputs.
    unsafe { imp(x, y, nb, out, ldo) }
}

// ---------------------------------------------------------------------------
// y[c] += sum over d of a[d] * m[d][c], a chain of fused multiply-adds per
// column in d order (as `generic::fma_rows`), 64 columns per pass in four
// zmm chains: twice the columns per FMA latency of the 256-bit loop.

pub fn fma_rows(a: &[f32], m: &[f32], y: &mut [f32]) {
    assert_eq!(m.len(), a.len() * y.len(), "fma_rows: length mismatch");
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512bw,avx512vnni")]
    unsafe fn imp(a: &[f32], m: &[f32], y: &mut [f32]) {
        let n = y.len();
        let (mp, yp) = (m.as_ptr(), y.as_mut_ptr());
        let mut c = 0;
        while c + 64 <= n {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (i, v) in acc.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(yp.add(c + 16 * i));
            }
            for (d, &ad) in a.iter().enumerate() {
                let va = _mm512_set1_ps(ad);
                let row = mp.add(d * n + c);
                for (i, v) in acc.iter_mut().enumerate() {
                    *v = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(16 * i)), va, *v);
                }
            }
            for (i, v) in acc.iter().enumerate() {
                _mm512_storeu_ps(yp.add(c + 16 * i), *v);
            }
            c += 64;
        }
        while c + 16 <= n {
            let mut v = _mm512_loadu_ps(yp.add(c));
            for (d, &ad) in a.iter().enumerate() {
                v = _mm512_fmadd_ps(_mm512_loadu_ps(mp.add(d * n + c)), _mm512_set1_ps(ad), v);
            }
            _mm512_storeu_ps(yp.add(c), v);
            c += 16;
        }
        for k in c..n {
            let mut v = y[k];
            for (d, &ad) in a.iter().enumerate() {
                v = m[d * n + k].mul_add(ad, v);
            }
            y[k] = v;
        }
    }
    // SAFETY: this table is chosen only where `detected()` holds; the
    // assertion keeps every load `d * n + c..d * n + c + 64` (or + 16)
    // within row d of `m`, and every store within `y`.
    unsafe { imp(a, m, y) }
}
