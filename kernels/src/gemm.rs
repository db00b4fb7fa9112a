//! Multi-row dot products (`gemm_*`): several weight rows against several
//! activation rows per pass, so each decoded weight block and each loaded
//! activation block serves a whole tile of outputs.
//!
//! Exactness: every (weight row, activation row) pair keeps its own
//! accumulators and performs exactly the operations of the single-row
//! `vec_dot_*` of the same ISA, in the same order (same integer lane sums,
//! same f32 scale products, same fused multiply-adds block after block,
//! same final horizontal sum). Only decoding work is shared, so each
//! output is bit-identical to `vec_dot_*` on that pair. The tests check it.
//!
//! Layout: `x` holds `nr` weight rows of `nb` blocks, `y` holds `nt`
//! activation rows of `nb` blocks, and the result of (row r, token t) goes
//! to `out[r * ldo + t]`.

use crate::blocks::*;
use crate::generic::{q5_values, q6_values_u, q6k_lanes, q8k, Simd};
use crate::scalar;

/// Weight rows per tile.
pub(crate) const TILE_ROWS: usize = 4;
/// Activation rows per tile.
pub(crate) const TILE_TOKENS: usize = 4;

/// Checks the slice shapes every `gemm_*` entry point relies on.
pub(crate) fn check(name: &str, nx: usize, ny: usize, nb: usize, nout: usize, ldo: usize) {
    assert!(
        nb > 0 && nx.is_multiple_of(nb) && ny.is_multiple_of(nb),
        "{name}: rows of {nb} blocks do not divide {nx} / {ny}"
    );
    let (nr, nt) = (nx / nb, ny / nb);
    assert!(ldo >= nt, "{name}: ldo {ldo} < {nt} activation rows");
    let need = if nr == 0 || nt == 0 {
        0
    } else {
        (nr - 1) * ldo + nt
    };
    assert!(nout >= need, "{name}: out holds {nout} < {need}");
}

/// The reference layout: one `dot` call per pair (the scalar table, and the
/// SIMD tables for types without a tiled kernel).
#[inline(always)]
pub(crate) fn by_rows<W, A>(
    x: &[W],
    y: &[A],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
    dot: fn(&[W], &[A]) -> f32,
) {
    for (r, xr) in x.chunks_exact(nb).enumerate() {
        for (t, yt) in y.chunks_exact(nb).enumerate() {
            out[r * ldo + t] = dot(xr, yt);
        }
    }
}

/// One weight/activation type pairing: how a weight block is decoded once
/// per tile, and what one pair does with one block (the body of the
/// single-row kernel's loop).
pub(crate) trait TileKind<S: Simd> {
    type W;
    type A;
    type Dec: Copy;
    /// What a pair needs of an activation block beyond its bytes (its
    /// scales as f32), computed once per tile.
    type Act: Copy;
    unsafe fn decode(w: &Self::W) -> Self::Dec;
    unsafe fn act(a: &Self::A) -> Self::Act;
    unsafe fn pair(d: &Self::Dec, a: &Self::A, s: Self::Act, acc: &mut S::F, extra: &mut f32);
    unsafe fn finish(acc: S::F, extra: f32) -> f32;
}

#[inline(always)]
unsafe fn tile<S: Simd, K: TileKind<S>, const R: usize, const T: usize>(
    x: *const K::W,
    y: *const K::A,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[S::zero_f(); T]; R];
    let mut ex = [[0f32; T]; R];
    for b in 0..nb {
        // The next tile's weight rows, in step: rows are short (a few
        // hundred bytes), too short for the hardware prefetcher to hide
        // the first touch of each (decode is latency bound without this).
        for r in 0..R {
            S::prefetch(x.wrapping_add((R + r) * nb + b) as *const u8);
        }
        let mut dec = [K::decode(&*x.add(b)); R];
        for (r, d) in dec.iter_mut().enumerate().skip(1) {
            *d = K::decode(&*x.add(r * nb + b));
        }
        for t in 0..T {
            let a = &*y.add(t * nb + b);
            let s = K::act(a);
            for r in 0..R {
                K::pair(&dec[r], a, s, &mut acc[r][t], &mut ex[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            *out.add(r * ldo + t) = K::finish(acc[r][t], ex[r][t]);
        }
    }
}

#[inline(always)]
unsafe fn tile_rows<S: Simd, K: TileKind<S>, const R: usize, const T: usize>(
    x: *const K::W,
    y: *const K::A,
    nb: usize,
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut t = 0;
    while t + T <= nt {
        tile::<S, K, R, T>(x, y.add(t * nb), nb, out.add(t), ldo);
        t += T;
    }
    while t < nt {
        tile::<S, K, R, 1>(x, y.add(t * nb), nb, out.add(t), ldo);
        t += 1;
    }
}

/// The tiled kernel; shapes checked by [`check`] beforehand.
#[inline(always)]
pub(crate) unsafe fn gemm<S: Simd, K: TileKind<S>>(
    x: &[K::W],
    y: &[K::A],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (nr, nt) = (x.len() / nb, y.len() / nb);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r + TILE_ROWS <= nr {
        tile_rows::<S, K, TILE_ROWS, TILE_TOKENS>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += TILE_ROWS;
    }
    while r < nr {
        tile_rows::<S, K, 1, TILE_TOKENS>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += 1;
    }
}

/// `-bias` times the lane sums of an activation block's bytes, in the lane
/// grouping of [`Simd::dot_u`]: started from this, a `dot_u` of weights
/// stored with `+bias` gives exactly the lanes of the signed dot, in one
/// instruction where the ISA has a u8 x i8 dot (shared by a tile's rows).
#[inline(always)]
unsafe fn bias_correction<S: Simd>(a: S::B, bias: u8) -> S::I {
    S::sub_i(S::zero_i(), S::dot_u(S::zero_i(), S::set1_b(bias), a))
}

// ---------------------------------------------------------------------------
// Pairings. Each mirrors the loop body of the `generic::vec_dot_*` of the
// same name operation for operation (integer lane sums may be formed
// differently: they are exact).

pub(crate) struct Q4_0;
pub(crate) struct Q4_1;
pub(crate) struct Q5_0;
pub(crate) struct Q5_1;
pub(crate) struct Q8_0;
pub(crate) struct Q5K;
pub(crate) struct Q6K;

impl<S: Simd> TileKind<S> for Q4_0 {
    type W = BlockQ4_0;
    type A = BlockQ8_0;
    type Dec = (S::B, f32);
    type Act = f32;
    #[inline(always)]
    unsafe fn decode(w: &BlockQ4_0) -> (S::B, f32) {
        (
            S::sub_b(S::load_nibbles(w.qs.as_ptr()), S::set1_b(8)),
            S::fp16(w.d),
        )
    }
    #[inline(always)]
    unsafe fn act(a: &BlockQ8_0) -> f32 {
        S::fp16(a.d)
    }
    #[inline(always)]
    unsafe fn pair(d: &(S::B, f32), a: &BlockQ8_0, ad: f32, acc: &mut S::F, _: &mut f32) {
        let i = S::dot(S::zero_i(), d.0, S::load_b(a.qs.as_ptr() as *const u8));
        *acc = S::fma_f(S::i_to_f(i), S::splat_f(d.1 * ad), *acc);
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, _: f32) -> f32 {
        S::hsum_f(acc)
    }
}

impl<S: Simd> TileKind<S> for Q4_1 {
    type W = BlockQ4_1;
    type A = BlockQ8_1;
    type Dec = (S::B, f32, f32);
    type Act = (f32, f32);
    #[inline(always)]
    unsafe fn decode(w: &BlockQ4_1) -> (S::B, f32, f32) {
        (S::load_nibbles(w.qs.as_ptr()), S::fp16(w.d), S::fp16(w.m))
    }
    #[inline(always)]
    unsafe fn act(a: &BlockQ8_1) -> (f32, f32) {
        (S::fp16(a.d), S::fp16(a.s))
    }
    #[inline(always)]
    unsafe fn pair(
        d: &(S::B, f32, f32),
        a: &BlockQ8_1,
        s: (f32, f32),
        acc: &mut S::F,
        summs: &mut f32,
    ) {
        // Nibbles are unsigned: `dot_u` gives `dot`'s lane sums.
        let i = S::dot_u(S::zero_i(), d.0, S::load_b(a.qs.as_ptr() as *const u8));
        *acc = S::fma_f(S::i_to_f(i), S::splat_f(d.1 * s.0), *acc);
        *summs = d.2.mul_add(s.1, *summs); // fused like vec_dot_q4_1_q8_1
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, summs: f32) -> f32 {
        S::hsum_f(acc) + summs
    }
}

impl<S: Simd> TileKind<S> for Q5_0 {
    type W = BlockQ5_0;
    type A = BlockQ8_0;
    // Values kept unsigned (0..31): the -16 enters through the activation.
    type Dec = (S::B, f32);
    type Act = (f32, S::I);
    #[inline(always)]
    unsafe fn decode(w: &BlockQ5_0) -> (S::B, f32) {
        (q5_values::<S>(&w.qs, w.qh), S::fp16(w.d))
    }
    #[inline(always)]
    unsafe fn act(a: &BlockQ8_0) -> (f32, S::I) {
        let ab = S::load_b(a.qs.as_ptr() as *const u8);
        (S::fp16(a.d), bias_correction::<S>(ab, 16))
    }
    #[inline(always)]
    unsafe fn pair(d: &(S::B, f32), a: &BlockQ8_0, s: (f32, S::I), acc: &mut S::F, _: &mut f32) {
        let i = S::dot_u(s.1, d.0, S::load_b(a.qs.as_ptr() as *const u8));
        *acc = S::fma_f(S::i_to_f(i), S::splat_f(d.1 * s.0), *acc);
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, _: f32) -> f32 {
        S::hsum_f(acc)
    }
}

impl<S: Simd> TileKind<S> for Q5_1 {
    type W = BlockQ5_1;
    type A = BlockQ8_1;
    type Dec = (S::B, f32, f32);
    type Act = (f32, f32);
    #[inline(always)]
    unsafe fn decode(w: &BlockQ5_1) -> (S::B, f32, f32) {
        (q5_values::<S>(&w.qs, w.qh), S::fp16(w.d), S::fp16(w.m))
    }
    #[inline(always)]
    unsafe fn act(a: &BlockQ8_1) -> (f32, f32) {
        (S::fp16(a.d), S::fp16(a.s))
    }
    #[inline(always)]
    unsafe fn pair(
        d: &(S::B, f32, f32),
        a: &BlockQ8_1,
        s: (f32, f32),
        acc: &mut S::F,
        summs: &mut f32,
    ) {
        <Q4_1 as TileKind<S>>::pair(d, a, s, acc, summs)
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, summs: f32) -> f32 {
        S::hsum_f(acc) + summs
    }
}

impl<S: Simd> TileKind<S> for Q8_0 {
    type W = BlockQ8_0;
    type A = BlockQ8_0;
    // With a u8 x i8 dot the weights are biased by +128 (the bias enters
    // through the activation); otherwise the signed dot as in vec_dot.
    type Dec = (S::B, f32);
    type Act = (f32, S::I);
    #[inline(always)]
    unsafe fn decode(w: &BlockQ8_0) -> (S::B, f32) {
        let q = S::load_b(w.qs.as_ptr() as *const u8);
        let q = if S::DOT_U8 {
            S::or_b(
                S::and_b(q, S::set1_b(0x7f)),
                S::andnot_b(q, S::set1_b(0x80)),
            )
        } else {
            q
        };
        (q, S::fp16(w.d))
    }
    #[inline(always)]
    unsafe fn act(a: &BlockQ8_0) -> (f32, S::I) {
        let c = if S::DOT_U8 {
            bias_correction::<S>(S::load_b(a.qs.as_ptr() as *const u8), 128)
        } else {
            S::zero_i()
        };
        (S::fp16(a.d), c)
    }
    #[inline(always)]
    unsafe fn pair(d: &(S::B, f32), a: &BlockQ8_0, s: (f32, S::I), acc: &mut S::F, _: &mut f32) {
        let ab = S::load_b(a.qs.as_ptr() as *const u8);
        let i = if S::DOT_U8 {
            S::dot_u(s.1, d.0, ab)
        } else {
            S::dot(S::zero_i(), d.0, ab)
        };
        *acc = S::fma_f(S::i_to_f(i), S::splat_f(d.1 * s.0), *acc);
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, _: f32) -> f32 {
        S::hsum_f(acc)
    }
}

/// A decoded Q4_K / Q5_K block: the eight 32-value groups, their 6-bit
/// scales and mins, and d / dmin.
#[derive(Clone, Copy)]
pub(crate) struct DecK4<B: Copy> {
    q: [B; 8],
    sc: [i32; 8],
    mins: [i32; 8],
    d: f32,
    dmin: f32,
}

#[inline(always)]
unsafe fn k4_scales_mins(scales: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let mut sc = [0i32; 8];
    let mut mins = [0i32; 8];
    for j in 0..8 {
        let (s, m) = scalar::scale_min_k4(j, scales);
        sc[j] = s as i32;
        mins[j] = m as i32;
    }
    (sc, mins)
}

/// The body of `vec_dot_q4_k_q8_k` / `vec_dot_q5_k_q8_k` for one block.
#[inline(always)]
unsafe fn pair_k4<S: Simd>(d: &DecK4<S::B>, a: &BlockQ8K, acc: &mut S::F, summ: &mut f32) {
    let mut sumi = 0i32;
    for j in 0..8 {
        sumi += (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32) * d.mins[j];
    }
    let mut isum = S::zero_i();
    for g in 0..8 {
        // Q4_K / Q5_K values are unsigned.
        isum = S::dot_scaled_u(isum, d.q[g], q8k::<S>(a, 32 * g), d.sc[g], d.sc[g]);
    }
    let dd = d.d * a.d;
    *acc = S::fma_f(S::i_to_f(isum), S::splat_f(dd), *acc);
    let dmin = d.dmin * a.d;
    *summ -= dmin * sumi as f32;
}

impl<S: Simd> TileKind<S> for Q5K {
    type W = BlockQ5K;
    type A = BlockQ8K;
    type Dec = DecK4<S::B>;
    type Act = ();
    #[inline(always)]
    unsafe fn decode(w: &BlockQ5K) -> DecK4<S::B> {
        let low = S::set1_b(0x0f);
        let sixteen = S::set1_b(16);
        let qh = S::load_b(w.qh.as_ptr());
        let mut q = [S::set1_b(0); 8];
        for j in 0..4 {
            let v = S::load_b(w.qs.as_ptr().add(32 * j));
            let h0 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(1u8 << (2 * j)))),
                sixteen,
            );
            let h1 = S::and_b(
                S::nonzero_b(S::and_b(qh, S::set1_b(2u8 << (2 * j)))),
                sixteen,
            );
            q[2 * j] = S::or_b(S::and_b(v, low), h0);
            q[2 * j + 1] = S::or_b(S::shr_b(v, 4), h1);
        }
        let (sc, mins) = k4_scales_mins(&w.scales);
        DecK4 {
            q,
            sc,
            mins,
            d: S::fp16(w.d),
            dmin: S::fp16(w.dmin),
        }
    }
    #[inline(always)]
    unsafe fn act(_: &BlockQ8K) {}
    #[inline(always)]
    unsafe fn pair(d: &DecK4<S::B>, a: &BlockQ8K, _: (), acc: &mut S::F, summ: &mut f32) {
        pair_k4::<S>(d, a, acc, summ)
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, summ: f32) -> f32 {
        S::hsum_f(acc) + summ
    }
}

/// A decoded Q6_K block: the eight unbiased 32-value groups, the sixteen
/// scales, d.
#[derive(Clone, Copy)]
pub(crate) struct DecQ6K<B: Copy> {
    q: [B; 8],
    scales: [i8; 16],
    d: f32,
}

impl<S: Simd> TileKind<S> for Q6K {
    type W = BlockQ6K;
    type A = BlockQ8K;
    type Dec = DecQ6K<S::B>;
    type Act = ();
    #[inline(always)]
    unsafe fn decode(w: &BlockQ6K) -> DecQ6K<S::B> {
        let a = q6_values_u::<S>(w, 0);
        let b = q6_values_u::<S>(w, 1);
        DecQ6K {
            q: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
            scales: w.scales,
            d: S::fp16(w.d),
        }
    }
    #[inline(always)]
    unsafe fn act(_: &BlockQ8K) {}
    #[inline(always)]
    unsafe fn pair(d: &DecQ6K<S::B>, a: &BlockQ8K, _: (), acc: &mut S::F, _: &mut f32) {
        let isum = q6k_lanes::<S>(&d.q, &d.scales, a);
        let dd = d.d * a.d;
        *acc = S::fma_f(S::i_to_f(isum), S::splat_f(dd), *acc);
    }
    #[inline(always)]
    unsafe fn finish(acc: S::F, _: f32) -> f32 {
        S::hsum_f(acc)
    }
}

// ---------------------------------------------------------------------------
// Q4_0 in the rounding of llama.cpp's repacked `q4_0_8x8` kernels: per pair
// one f32 running sum, fma(block integer dot, d_w * d_a, sum), block by
// block. Four weight rows meet each activation block together so that one
// transposing reduction yields their four integer dots.

#[inline(always)]
unsafe fn q4_0_block_fma_tile<S: Simd, const R: usize>(
    x: *const BlockQ4_0,
    y: *const BlockQ8_0,
    nb: usize,
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    const T: usize = 8;
    let mut t0 = 0;
    while t0 < nt {
        let tn = (nt - t0).min(T);
        let mut acc = [[0f32; 4]; T];
        for b in 0..nb {
            let mut q = [S::set1_b(0); 4];
            let mut dw = [0f32; 4];
            for r in 0..R {
                // The next rows, as in `tile`.
                S::prefetch(x.wrapping_add((R + r) * nb + b) as *const u8);
                let w = &*x.add(r * nb + b);
                // Unsigned nibbles: the -8 enters through the activation.
                q[r] = S::load_nibbles(w.qs.as_ptr());
                dw[r] = S::fp16(w.d);
            }
            for (t, acc_t) in acc.iter_mut().enumerate().take(tn) {
                let a = &*y.add((t0 + t) * nb + b);
                let ab = S::load_b(a.qs.as_ptr() as *const u8);
                let da = S::fp16(a.d);
                let c = bias_correction::<S>(ab, 8);
                let isum = if R == 4 {
                    S::hsum4_i([
                        S::dot_u(c, q[0], ab),
                        S::dot_u(c, q[1], ab),
                        S::dot_u(c, q[2], ab),
                        S::dot_u(c, q[3], ab),
                    ])
                } else {
                    [S::hsum_i(S::dot_u(c, q[0], ab)), 0, 0, 0]
                };
                for r in 0..R {
                    acc_t[r] = (isum[r] as f32).mul_add(dw[r] * da, acc_t[r]);
                }
            }
        }
        for (t, acc_t) in acc.iter().enumerate().take(tn) {
            for r in 0..R {
                *out.add(r * ldo + t0 + t) = acc_t[r];
            }
        }
        t0 += tn;
    }
}

/// `out[r * ldo + t]` = [`scalar::vec_dot_q4_0_q8_0_block_fma`] of weight row r and
/// activation row t; shapes checked by [`check`] beforehand.
#[inline(always)]
pub(crate) unsafe fn gemm_q4_0_block_fma<S: Simd>(
    x: &[BlockQ4_0],
    y: &[BlockQ8_0],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (nr, nt) = (x.len() / nb, y.len() / nb);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r + 4 <= nr {
        q4_0_block_fma_tile::<S, 4>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += 4;
    }
    while r < nr {
        q4_0_block_fma_tile::<S, 1>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += 1;
    }
}

/// [`gemm_q4_0_block_fma`] on weights interleaved by eight rows
/// ([`BlockQ4_0x8`]): each 32-bit lane is one row, so eight `dot_u`s with
/// broadcast activation quads give eight rows' exact block sums at once,
/// without horizontal reductions. Same results as [`gemm_q4_0_block_fma`] on the
/// rows before interleaving.
#[inline(always)]
pub(crate) unsafe fn gemm_q4_0x8<S: Simd>(
    x: &[BlockQ4_0x8],
    y: &[BlockQ8_0],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    const T: usize = 4;
    let (ng, nt) = (x.len() / nb, y.len() / nb);
    if !S::DOT_QUADS {
        // Lanes do not map to rows on this ISA: rows one by one.
        for g in 0..ng {
            for r in 0..8 {
                for t in 0..nt {
                    let acc = (0..nb).fold(0f32, |acc, b| {
                        let w = x[g * nb + b].row(r);
                        scalar::vec_dot_q4_0_q8_0_block_fma_step(&w, &y[t * nb + b], acc)
                    });
                    out[(8 * g + r) * ldo + t] = acc;
                }
            }
        }
        return;
    }
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    for g in 0..ng {
        let xg = xp.add(g * nb);
        let og = out.as_mut_ptr().add(8 * g * ldo);
        let mut t = 0;
        while t + T <= nt {
            q4_0x8_tokens::<S, T>(xg, yp.add(t * nb), nb, og.add(t), ldo);
            t += T;
        }
        while t < nt {
            q4_0x8_tokens::<S, 1>(xg, yp.add(t * nb), nb, og.add(t), ldo);
            t += 1;
        }
    }
}

/// One group of eight interleaved rows against `T` activation rows, the
/// accumulators (one vector per token, a lane per row) in registers.
#[inline(always)]
unsafe fn q4_0x8_tokens<S: Simd, const T: usize>(
    xg: *const BlockQ4_0x8,
    y: *const BlockQ8_0,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let low = S::set1_b(0x0f);
    let ones = S::set1_b(1);
    let mut acc = [S::zero_f(); T];
    for b in 0..nb {
        let w = &*xg.add(b);
        S::prefetch(xg.wrapping_add(nb + b) as *const u8);
        S::prefetch((xg.wrapping_add(nb + b) as *const u8).wrapping_add(64));
        let mut lo = [low; 4];
        let mut hi = [low; 4];
        for v in 0..4 {
            let q = S::load_b(w.qs.as_ptr().add(32 * v));
            lo[v] = S::and_b(q, low);
            hi[v] = S::shr_b(q, 4);
        }
        let dw = S::load_f16(w.d.as_ptr());
        for (t, acc_t) in acc.iter_mut().enumerate() {
            let a = &*y.add(t * nb + b);
            let ap = a.qs.as_ptr() as *const u8;
            // sum((q - 8) a) = sum(q a) - 8 sum(a): start from the second
            // term in every lane.
            let sum_a = S::hsum_i(S::dot_u(S::zero_i(), ones, S::load_b(ap)));
            let mut i = S::splat_i(-8 * sum_a);
            for v in 0..4 {
                i = S::dot_u(i, lo[v], S::bcast4_b(ap.add(4 * v)));
                i = S::dot_u(i, hi[v], S::bcast4_b(ap.add(16 + 4 * v)));
            }
            let dd = S::mul_f(dw, S::splat_f(S::fp16(a.d)));
            *acc_t = S::fma_f(S::i_to_f(i), dd, *acc_t);
        }
    }
    for (t, acc_t) in acc.iter().enumerate() {
        let mut lanes = [0f32; 8];
        S::store_f(lanes.as_mut_ptr(), *acc_t);
        for (r, &v) in lanes.iter().enumerate() {
            *out.add(r * ldo + t) = v;
        }
    }
}

// ---------------------------------------------------------------------------
// Q4_K in the rounding of llama.cpp's repacked `q4_K_8x8` kernels
// (`generic::q4k_ggml`): exact integer sums per 64 elements (PER64, its
// GEMM) or per 256 (its GEMV), each fused into a running f32 sum with
// d_w * d_a; the mins likewise, subtracted at the end. Four weight rows meet
// each activation group together, one transposing reduction giving their
// four integer dots.

#[inline(always)]
unsafe fn q4k_tile<S: Simd, const R: usize, const PER64: bool>(
    x: *const BlockQ4K,
    y: *const BlockQ8K,
    nb: usize,
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    const T: usize = 4;
    let low = S::set1_b(0x0f);
    let mut t0 = 0;
    while t0 < nt {
        let tn = (nt - t0).min(T);
        let mut acc = [[0f32; 4]; T];
        let mut acc_min = [[0f32; 4]; T];
        for b in 0..nb {
            let mut scales = [[0i32; 8]; 4];
            let mut mins = [[0i32; 8]; 4];
            let mut dw = [0f32; 4];
            let mut dmin = [0f32; 4];
            for r in 0..R {
                let w = &*x.add(r * nb + b);
                S::prefetch(x.wrapping_add((R + r) * nb + b) as *const u8);
                (scales[r], mins[r]) = k4_scales_mins(&w.scales);
                dw[r] = S::fp16(w.d);
                dmin[r] = S::fp16(w.dmin);
            }
            let mut isum = [[0i32; 4]; T];
            let mut msum = [[0i32; 4]; T];
            for j in 0..4 {
                let mut qlo = [S::set1_b(0); 4];
                let mut qhi = [S::set1_b(0); 4];
                for r in 0..R {
                    let q = S::load_b((*x.add(r * nb + b)).qs.as_ptr().add(32 * j));
                    qlo[r] = S::and_b(q, low);
                    qhi[r] = S::shr_b(q, 4);
                }
                for t in 0..tn {
                    let a = &*y.add((t0 + t) * nb + b);
                    let (alo, ahi) = (q8k::<S>(a, 64 * j), q8k::<S>(a, 64 * j + 32));
                    let (lo, hi) = if R == 4 {
                        (
                            S::hsum4_i([
                                S::dot_u(S::zero_i(), qlo[0], alo),
                                S::dot_u(S::zero_i(), qlo[1], alo),
                                S::dot_u(S::zero_i(), qlo[2], alo),
                                S::dot_u(S::zero_i(), qlo[3], alo),
                            ]),
                            S::hsum4_i([
                                S::dot_u(S::zero_i(), qhi[0], ahi),
                                S::dot_u(S::zero_i(), qhi[1], ahi),
                                S::dot_u(S::zero_i(), qhi[2], ahi),
                                S::dot_u(S::zero_i(), qhi[3], ahi),
                            ]),
                        )
                    } else {
                        (
                            [S::hsum_i(S::dot_u(S::zero_i(), qlo[0], alo)), 0, 0, 0],
                            [S::hsum_i(S::dot_u(S::zero_i(), qhi[0], ahi)), 0, 0, 0],
                        )
                    };
                    let bs = &a.bsums[4 * j..4 * j + 4];
                    let (b01, b23) = (bs[0] as i32 + bs[1] as i32, bs[2] as i32 + bs[3] as i32);
                    for r in 0..R {
                        isum[t][r] += scales[r][2 * j] * lo[r] + scales[r][2 * j + 1] * hi[r];
                        msum[t][r] += mins[r][2 * j] * b01 + mins[r][2 * j + 1] * b23;
                        if PER64 {
                            acc[t][r] = (isum[t][r] as f32).mul_add(dw[r] * a.d, acc[t][r]);
                            acc_min[t][r] =
                                (msum[t][r] as f32).mul_add(dmin[r] * a.d, acc_min[t][r]);
                            isum[t][r] = 0;
                            msum[t][r] = 0;
                        }
                    }
                }
            }
            if !PER64 {
                for t in 0..tn {
                    let ad = (*y.add((t0 + t) * nb + b)).d;
                    for r in 0..R {
                        acc[t][r] = (isum[t][r] as f32).mul_add(dw[r] * ad, acc[t][r]);
                        acc_min[t][r] = (msum[t][r] as f32).mul_add(dmin[r] * ad, acc_min[t][r]);
                    }
                }
            }
        }
        for t in 0..tn {
            for r in 0..R {
                *out.add(r * ldo + t0 + t) = acc[t][r] - acc_min[t][r];
            }
        }
        t0 += tn;
    }
}

/// `out[r * ldo + t]` = `vec_dot_q4_k_q8_k` (or `_sum64`) of weight row r and
/// activation row t; shapes checked by [`check`] beforehand.
#[inline(always)]
pub(crate) unsafe fn gemm_q4k<S: Simd, const PER64: bool>(
    x: &[BlockQ4K],
    y: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (nr, nt) = (x.len() / nb, y.len() / nb);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r + 4 <= nr {
        q4k_tile::<S, 4, PER64>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += 4;
    }
    while r < nr {
        q4k_tile::<S, 1, PER64>(xp.add(r * nb), yp, nb, nt, op.add(r * ldo), ldo);
        r += 1;
    }
}

// ---------------------------------------------------------------------------
// Q4_K interleaved by eight rows ([`BlockQ4Kx8`], llama.cpp's 8x4 layout):
// the same rounding as `gemm_q4k` (per 256 elements, or per 64 with
// PER64), but each 32-bit lane is one row, so the byte-quad dot products
// against a broadcast activation quad give eight rows' sums at once and
// the scales multiply lane-wise, with no horizontal reductions.

/// `out[r * ldo + t]` = `vec_dot_q4_k_q8_k` (or `_sum64`) of row r of the
/// rows interleaved into `x` and activation row t; shapes checked by
/// [`check_interleaved`] beforehand.
#[inline(always)]
pub(crate) unsafe fn gemm_q4kx8<S: Simd, const PER64: bool>(
    x: &[BlockQ4Kx8],
    y: &[BlockQ8K],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) {
    const T: usize = 4;
    let (ng, nt) = (x.len() / nb, y.len() / nb);
    if !S::DOT_QUADS {
        // Lanes do not map to rows on this ISA: the reference, row by row.
        scalar_gemm::q4kx8_by_rows(x, y, nb, out, ldo, PER64);
        return;
    }
    let (xp, yp) = (x.as_ptr(), y.as_ptr());
    for g in 0..ng {
        let xg = xp.add(g * nb);
        let og = out.as_mut_ptr().add(8 * g * ldo);
        let mut t = 0;
        while t + T <= nt {
            q4kx8_tokens::<S, T, PER64>(xg, yp.add(t * nb), nb, og.add(t), ldo);
            t += T;
        }
        while t < nt {
            q4kx8_tokens::<S, 1, PER64>(xg, yp.add(t * nb), nb, og.add(t), ldo);
            t += 1;
        }
    }
}

/// Eight 6-bit values as i32 lanes.
#[inline(always)]
unsafe fn lanes_u8<S: Simd>(v: [u8; 8]) -> S::I {
    let wide = v.map(i32::from);
    S::load_i(wide.as_ptr())
}

/// One group of eight interleaved rows against `T` activation rows: per
/// token one vector of running sums (a lane per row) and one of mins.
#[inline(always)]
unsafe fn q4kx8_tokens<S: Simd, const T: usize, const PER64: bool>(
    xg: *const BlockQ4Kx8,
    y: *const BlockQ8K,
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let low = S::set1_b(0x0f);
    let mut acc = [S::zero_f(); T];
    let mut acc_min = [S::zero_f(); T];
    for b in 0..nb {
        let w = &*xg.add(b);
        let next = xg.wrapping_add(b + 1) as *const u8;
        S::prefetch(next);
        S::prefetch(next.wrapping_add(64));
        let (dw, dmin) = (S::load_f16(w.d.as_ptr()), S::load_f16(w.dmin.as_ptr()));
        let mut isum = [S::zero_i(); T];
        let mut msum = [S::zero_i(); T];
        for j in 0..4 {
            let (sc_lo, mn_lo) = w.scales_mins(2 * j);
            let (sc_hi, mn_hi) = w.scales_mins(2 * j + 1);
            let mut dlo = [S::zero_i(); T];
            let mut dhi = [S::zero_i(); T];
            for i in 0..8 {
                // Piece 8j + i: bytes 32j + 4i.. of every row's qs, elements
                // 64j + 4i.. (low nibbles) and 64j + 32 + 4i.. (high).
                let q = S::load_b(w.qs.as_ptr().add(32 * (8 * j + i)));
                S::prefetch(next.wrapping_add(128 + 32 * (8 * j + i)));
                let (lo, hi) = (S::and_b(q, low), S::shr_b(q, 4));
                for t in 0..T {
                    let ap = (*y.add(t * nb + b)).qs.as_ptr() as *const u8;
                    dlo[t] = S::dot_u(dlo[t], lo, S::bcast4_b(ap.add(64 * j + 4 * i)));
                    dhi[t] = S::dot_u(dhi[t], hi, S::bcast4_b(ap.add(64 * j + 32 + 4 * i)));
                }
            }
            let (sc_lo, sc_hi) = (lanes_u8::<S>(sc_lo), lanes_u8::<S>(sc_hi));
            let (mn_lo, mn_hi) = (lanes_u8::<S>(mn_lo), lanes_u8::<S>(mn_hi));
            for t in 0..T {
                let a = &*y.add(t * nb + b);
                let bs = &a.bsums[4 * j..4 * j + 4];
                let b01 = S::splat_i(bs[0] as i32 + bs[1] as i32);
                let b23 = S::splat_i(bs[2] as i32 + bs[3] as i32);
                let dots = S::add_i(S::mul_i(sc_lo, dlo[t]), S::mul_i(sc_hi, dhi[t]));
                let mins = S::add_i(S::mul_i(mn_lo, b01), S::mul_i(mn_hi, b23));
                isum[t] = S::add_i(isum[t], dots);
                msum[t] = S::add_i(msum[t], mins);
                if PER64 {
                    let ad = S::splat_f(a.d);
                    acc[t] = S::fma_f(S::i_to_f(isum[t]), S::mul_f(dw, ad), acc[t]);
                    acc_min[t] = S::fma_f(S::i_to_f(msum[t]), S::mul_f(dmin, ad), acc_min[t]);
                    isum[t] = S::zero_i();
                    msum[t] = S::zero_i();
                }
            }
        }
        if !PER64 {
            for t in 0..T {
                let ad = S::splat_f((*y.add(t * nb + b)).d);
                acc[t] = S::fma_f(S::i_to_f(isum[t]), S::mul_f(dw, ad), acc[t]);
                acc_min[t] = S::fma_f(S::i_to_f(msum[t]), S::mul_f(dmin, ad), acc_min[t]);
            }
        }
    }
    for t in 0..T {
        let mut lanes = [0f32; 8];
        S::store_f(lanes.as_mut_ptr(), S::sub_f(acc[t], acc_min[t]));
        for (r, &v) in lanes.iter().enumerate() {
            *out.add(r * ldo + t) = v;
        }
    }
}

// ---------------------------------------------------------------------------
// Float weights in llama.cpp's prompt-batch order (llamafile's tinyBLAS on
// AVX-512): each (row, token) pair accumulates 16 lanes with fused
// multiply-adds over k, then reduces them as `_mm512_reduce_add_ps`.

/// Weight elements a float GEMM can read as f32 (f16 converted exactly).
pub(crate) trait FloatRow: Copy {
    unsafe fn load<S: Simd>(p: *const Self) -> S::F;
    fn to_f32(self) -> f32;
}

impl FloatRow for u16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const u16) -> S::F {
        S::load_f16(p)
    }
    fn to_f32(self) -> f32 {
        scalar::f16_to_f32(self)
    }
}

impl FloatRow for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::F {
        S::load_f(p)
    }
    fn to_f32(self) -> f32 {
        self
    }
}

/// One pair in the 16-lane order: the scalar reference.
pub(crate) fn dot_lanes16_ref<W: FloatRow>(w: &[W], a: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (wc, ac) in w.chunks_exact(16).zip(a.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] = wc[i].to_f32().mul_add(ac[i], acc[i]);
        }
    }
    scalar::reduce_add_16(&acc)
}

#[inline(always)]
unsafe fn wide_tile<S: Simd, W: FloatRow, const R: usize, const T: usize>(
    x: *const W,
    y: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut lo = [[S::zero_f(); T]; R];
    let mut hi = [[S::zero_f(); T]; R];
    let mut l = 0;
    while l < k {
        let mut w = [[S::zero_f(); 2]; R];
        for r in 0..R {
            // The next rows, as in `tile` (one line of 64 bytes per step).
            S::prefetch(x.wrapping_add((R + r) * k + l) as *const u8);
        }
        for (r, wr) in w.iter_mut().enumerate() {
            *wr = [
                W::load::<S>(x.add(r * k + l)),
                W::load::<S>(x.add(r * k + l + 8)),
            ];
        }
        for t in 0..T {
            let a0 = S::load_f(y.add(t * k + l));
            let a1 = S::load_f(y.add(t * k + l + 8));
            for r in 0..R {
                lo[r][t] = S::fma_f(w[r][0], a0, lo[r][t]);
                hi[r][t] = S::fma_f(w[r][1], a1, hi[r][t]);
            }
        }
        l += 16;
    }
    for r in 0..R {
        for t in 0..T {
            // 16 -> 8 lanes (hi + lo), then the 8-lane (0+2)+(1+3) sum.
            *out.add(r * ldo + t) = S::hsum_f(S::add_f(hi[r][t], lo[r][t]));
        }
    }
}

/// `out[r * ldo + t]` = 16-lane dot of weight row r and activation row t
/// (rows of `k` elements, k a multiple of 16); shapes checked by the caller.
#[inline(always)]
pub(crate) unsafe fn gemm_lanes16<S: Simd, W: FloatRow>(
    x: &[W],
    y: &[f32],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let (nr, nt) = (x.len() / k, y.len() / k);
    let (xp, yp, op) = (x.as_ptr(), y.as_ptr(), out.as_mut_ptr());
    // 2 rows x 4 tokens: 16 accumulators, which needs the 32 registers of
    // AVX-512 code generation to stay out of memory (see build.rs).
    let mut r = 0;
    while r < nr {
        let rows = (nr - r).min(2);
        let mut t = 0;
        while t < nt {
            let toks = (nt - t).min(4);
            let (xr, yt, o) = (xp.add(r * k), yp.add(t * k), op.add(r * ldo + t));
            match (rows, toks) {
                (2, 4) => wide_tile::<S, W, 2, 4>(xr, yt, k, o, ldo),
                (2, 3) => wide_tile::<S, W, 2, 3>(xr, yt, k, o, ldo),
                (2, 2) => wide_tile::<S, W, 2, 2>(xr, yt, k, o, ldo),
                (2, _) => wide_tile::<S, W, 2, 1>(xr, yt, k, o, ldo),
                (_, 4) => wide_tile::<S, W, 1, 4>(xr, yt, k, o, ldo),
                (_, 3) => wide_tile::<S, W, 1, 3>(xr, yt, k, o, ldo),
                (_, 2) => wide_tile::<S, W, 1, 2>(xr, yt, k, o, ldo),
                _ => wide_tile::<S, W, 1, 1>(xr, yt, k, o, ldo),
            }
            t += toks;
        }
        r += rows;
    }
}

// ---------------------------------------------------------------------------
// F16 weights against f32 activations in the `vec_dot_f16` order
// ([`scalar::dot_ggml_order`]): the single-row dot with the activation
// converted once per matmul instead of once per weight row.

/// `out[r * ldo + t]` = `vec_dot_f16_f32` of weight row r and activation
/// row t (rows of `k` elements, any k > 0); shapes checked by [`check`].
#[inline(always)]
pub(crate) unsafe fn gemm_f16_f32<S: Simd>(
    x: &[u16],
    y: &[f32],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) {
    for (r, xr) in x.chunks_exact(k).enumerate() {
        // The row after next, a line at a time: a decode streams the whole
        // matrix once, faster than the hardware prefetcher alone fetches it.
        let ahead = xr.as_ptr().wrapping_add(2 * k) as *const u8;
        for line in (0..2 * k).step_by(64) {
            S::prefetch(ahead.wrapping_add(line));
        }
        for (t, yt) in y.chunks_exact(k).enumerate() {
            out[r * ldo + t] = crate::generic::vec_dot_f16_f32::<S>(xr, yt);
        }
    }
}

/// Shapes of an interleaved GEMM: `nx` groups-blocks of 8 rows.
pub(crate) fn check_interleaved(
    name: &str,
    nx: usize,
    ny: usize,
    nb: usize,
    nout: usize,
    ldo: usize,
) {
    assert!(
        nb > 0 && nx.is_multiple_of(nb) && ny.is_multiple_of(nb),
        "{name}: rows of {nb} blocks do not divide {nx} / {ny}"
    );
    let (nr, nt) = (8 * (nx / nb), ny / nb);
    assert!(ldo >= nt, "{name}: ldo {ldo} < {nt} activation rows");
    let need = if nr == 0 || nt == 0 {
        0
    } else {
        (nr - 1) * ldo + nt
    };
    assert!(nout >= need, "{name}: out holds {nout} < {need}");
}

/// Shapes of a float GEMM: whole rows of k, k a multiple of 16, outputs in
/// bounds.
pub(crate) fn check_lanes16(name: &str, nx: usize, ny: usize, k: usize, nout: usize, ldo: usize) {
    assert!(
        k > 0 && k.is_multiple_of(16),
        "{name}: k = {k} is not a multiple of 16"
    );
    check(name, nx, ny, k, nout, ldo);
}

/// Q6_K in the rounding of llama.cpp's tiled K-quant matmul
/// ([`scalar::vec_dot_q6_k_q8_k_block_fma`]): the lanes of `Q6K` summed exactly
/// per block, times d_w, fused with d_a into the sum kept in `extra`.
pub(crate) struct Q6KBlockFma;

impl<S: Simd> TileKind<S> for Q6KBlockFma {
    type W = BlockQ6K;
    type A = BlockQ8K;
    type Dec = DecQ6K<S::B>;
    type Act = ();
    #[inline(always)]
    unsafe fn decode(w: &BlockQ6K) -> DecQ6K<S::B> {
        <Q6K as TileKind<S>>::decode(w)
    }
    #[inline(always)]
    unsafe fn act(_: &BlockQ8K) {}
    #[inline(always)]
    unsafe fn pair(d: &DecQ6K<S::B>, a: &BlockQ8K, _: (), _: &mut S::F, acc: &mut f32) {
        let isum = S::hsum_i(q6k_lanes::<S>(&d.q, &d.scales, a));
        *acc = (isum as f32 * d.d).mul_add(a.d, *acc);
    }
    #[inline(always)]
    unsafe fn finish(_: S::F, acc: f32) -> f32 {
        acc
    }
}

/// The scalar table's `gemm_*`: one scalar `vec_dot_*` per pair.
pub(crate) mod scalar_gemm {
    use super::{by_rows, check};
    use crate::blocks::*;
    use crate::scalar;

    macro_rules! scalar_gemms {
        ($( $name:ident($tx:ty, $ty:ty) = $dot:ident; )*) => {
            $(
                pub fn $name(x: &[$tx], y: &[$ty], nb: usize, out: &mut [f32], ldo: usize) {
                    check(stringify!($name), x.len(), y.len(), nb, out.len(), ldo);
                    by_rows(x, y, nb, out, ldo, scalar::$dot);
                }
            )*
        };
    }

    /// Interleaved Q4_0: each row through the block-fma reference.
    pub fn gemm_q4_0x8_q8_0(
        x: &[BlockQ4_0x8],
        y: &[BlockQ8_0],
        nb: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        super::check_interleaved("gemm_q4_0x8_q8_0", x.len(), y.len(), nb, out.len(), ldo);
        let nt = y.len() / nb;
        for (g, group) in x.chunks_exact(nb).enumerate() {
            for r in 0..8 {
                let row: Vec<BlockQ4_0> = group.iter().map(|b| b.row(r)).collect();
                for t in 0..nt {
                    out[(8 * g + r) * ldo + t] =
                        scalar::vec_dot_q4_0_q8_0_block_fma(&row, &y[t * nb..(t + 1) * nb]);
                }
            }
        }
    }

    /// Interleaved Q4_K: each row through `vec_dot_q4_k_q8_k` (or, with
    /// `per64`, `vec_dot_q4_k_q8_k_sum64`). Shapes checked by the caller.
    pub(crate) fn q4kx8_by_rows(
        x: &[BlockQ4Kx8],
        y: &[BlockQ8K],
        nb: usize,
        out: &mut [f32],
        ldo: usize,
        per64: bool,
    ) {
        let dot = if per64 {
            scalar::vec_dot_q4_k_q8_k_sum64
        } else {
            scalar::vec_dot_q4_k_q8_k
        };
        let nt = y.len() / nb;
        for (g, group) in x.chunks_exact(nb).enumerate() {
            for r in 0..8 {
                let row: Vec<BlockQ4K> = group.iter().map(|b| b.row(r)).collect();
                for t in 0..nt {
                    out[(8 * g + r) * ldo + t] = dot(&row, &y[t * nb..(t + 1) * nb]);
                }
            }
        }
    }

    /// [`crate::scalar::vec_dot_q4_k_q8_k`] on interleaved Q4_K rows.
    pub fn gemm_q4_kx8_q8_k(
        x: &[BlockQ4Kx8],
        y: &[BlockQ8K],
        nb: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        super::check_interleaved("gemm_q4_kx8_q8_k", x.len(), y.len(), nb, out.len(), ldo);
        q4kx8_by_rows(x, y, nb, out, ldo, false);
    }

    /// [`crate::scalar::vec_dot_q4_k_q8_k_sum64`] on interleaved Q4_K rows.
    pub fn gemm_q4_kx8_q8_k_sum64(
        x: &[BlockQ4Kx8],
        y: &[BlockQ8K],
        nb: usize,
        out: &mut [f32],
        ldo: usize,
    ) {
        super::check_interleaved(
            "gemm_q4_kx8_q8_k_sum64",
            x.len(),
            y.len(),
            nb,
            out.len(),
            ldo,
        );
        q4kx8_by_rows(x, y, nb, out, ldo, true);
    }

    /// Float weights against f32 activations, 16-lane order.
    pub fn gemm_f16_lanes16(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
        super::check_lanes16("gemm_f16_lanes16", x.len(), y.len(), k, out.len(), ldo);
        by_rows(x, y, k, out, ldo, super::dot_lanes16_ref::<u16>);
    }
    pub fn gemm_f32_lanes16(x: &[f32], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
        super::check_lanes16("gemm_f32_lanes16", x.len(), y.len(), k, out.len(), ldo);
        by_rows(x, y, k, out, ldo, super::dot_lanes16_ref::<f32>);
    }

    /// F16 weights against f32 activations, `vec_dot_f16` order.
    pub fn gemm_f16_f32(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
        check("gemm_f16_f32", x.len(), y.len(), k, out.len(), ldo);
        by_rows(x, y, k, out, ldo, scalar::vec_dot_f16_f32);
    }

    scalar_gemms! {
        gemm_q4_0_q8_0_block_fma(BlockQ4_0, BlockQ8_0) = vec_dot_q4_0_q8_0_block_fma;
        gemm_q4_0_q8_0(BlockQ4_0, BlockQ8_0) = vec_dot_q4_0_q8_0;
        gemm_q4_1_q8_1(BlockQ4_1, BlockQ8_1) = vec_dot_q4_1_q8_1;
        gemm_q5_0_q8_0(BlockQ5_0, BlockQ8_0) = vec_dot_q5_0_q8_0;
        gemm_q5_1_q8_1(BlockQ5_1, BlockQ8_1) = vec_dot_q5_1_q8_1;
        gemm_q8_0_q8_0(BlockQ8_0, BlockQ8_0) = vec_dot_q8_0_q8_0;
        gemm_q2_k_q8_k(BlockQ2K, BlockQ8K) = vec_dot_q2_k_q8_k;
        gemm_q3_k_q8_k(BlockQ3K, BlockQ8K) = vec_dot_q3_k_q8_k;
        gemm_q4_k_q8_k(BlockQ4K, BlockQ8K) = vec_dot_q4_k_q8_k;
        gemm_q4_k_q8_k_sum64(BlockQ4K, BlockQ8K) = vec_dot_q4_k_q8_k_sum64;
        gemm_q5_k_q8_k(BlockQ5K, BlockQ8K) = vec_dot_q5_k_q8_k;
        gemm_q6_k_q8_k(BlockQ6K, BlockQ8K) = vec_dot_q6_k_q8_k;
        gemm_q6_k_q8_k_block_fma(BlockQ6K, BlockQ8K) = vec_dot_q6_k_q8_k_block_fma;
    }
}

/// Generates an ISA module's `gemm_*` entry points (beside
/// `simd_entry_points!`, whose `vec_dot_*` the untiled pairings reuse).
macro_rules! gemm_entry_points {
    ($isa:ty, $features:tt) => {
        crate::gemm::gemm_entry_points!(@tiled $isa, $features,
            gemm_q4_0_q8_0(BlockQ4_0, BlockQ8_0) = Q4_0;
            gemm_q4_1_q8_1(BlockQ4_1, BlockQ8_1) = Q4_1;
            gemm_q5_0_q8_0(BlockQ5_0, BlockQ8_0) = Q5_0;
            gemm_q5_1_q8_1(BlockQ5_1, BlockQ8_1) = Q5_1;
            gemm_q8_0_q8_0(BlockQ8_0, BlockQ8_0) = Q8_0;
            gemm_q5_k_q8_k(BlockQ5K, BlockQ8K) = Q5K;
            gemm_q6_k_q8_k(BlockQ6K, BlockQ8K) = Q6K;
            gemm_q6_k_q8_k_block_fma(BlockQ6K, BlockQ8K) = Q6KBlockFma;
        );
        pub fn gemm_q4_0_q8_0_block_fma(
            x: &[BlockQ4_0],
            y: &[BlockQ8_0],
            nb: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            crate::gemm::check("gemm_q4_0_q8_0_block_fma", x.len(), y.len(), nb, out.len(), ldo);
            #[target_feature(enable = $features)]
            unsafe fn imp(x: &[BlockQ4_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::gemm_q4_0_block_fma::<$isa>(x, y, nb, out, ldo)
            }
            // SAFETY: features detected before this table is used; `check`
            // established whole rows of nb blocks and in-bounds outputs.
            unsafe { imp(x, y, nb, out, ldo) }
        }
        pub fn gemm_q4_0x8_q8_0(
            x: &[BlockQ4_0x8],
            y: &[BlockQ8_0],
            nb: usize,
            out: &mut [f32],
            ldo: usize,
        ) {
            crate::gemm::check_interleaved("gemm_q4_0x8_q8_0", x.len(), y.len(), nb, out.len(), ldo);
            #[target_feature(enable = $features)]
            unsafe fn imp(x: &[BlockQ4_0x8], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::gemm_q4_0x8::<$isa>(x, y, nb, out, ldo)
            }
            // SAFETY: features detected before this table is used;
            // `check_interleaved` established whole groups of nb blocks and in-bounds
            // outputs for 8 rows per group.
            unsafe { imp(x, y, nb, out, ldo) }
        }
        pub fn gemm_f16_f32(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
            crate::gemm::check("gemm_f16_f32", x.len(), y.len(), k, out.len(), ldo);
            #[target_feature(enable = $features)]
            unsafe fn imp(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::gemm_f16_f32::<$isa>(x, y, k, out, ldo)
            }
            // SAFETY: features detected before this table is used; `check`
            // established whole rows of k elements and in-bounds outputs.
            unsafe { imp(x, y, k, out, ldo) }
        }
        crate::gemm::gemm_entry_points!(@wide $isa, $features,
            gemm_f16_lanes16(u16);
            gemm_f32_lanes16(f32);
        );
        crate::gemm::gemm_entry_points!(@rows
            gemm_q2_k_q8_k(BlockQ2K, BlockQ8K) = vec_dot_q2_k_q8_k;
            gemm_q3_k_q8_k(BlockQ3K, BlockQ8K) = vec_dot_q3_k_q8_k;
        );
        crate::gemm::gemm_entry_points!(@q4k $isa, $features,
            gemm_q4_k_q8_k(BlockQ4K) = check, gemm_q4k, false;
            gemm_q4_k_q8_k_sum64(BlockQ4K) = check, gemm_q4k, true;
            gemm_q4_kx8_q8_k(BlockQ4Kx8) = check_interleaved, gemm_q4kx8, false;
            gemm_q4_kx8_q8_k_sum64(BlockQ4Kx8) = check_interleaved, gemm_q4kx8, true;
        );
    };
    (@wide $isa:ty, $features:tt, $( $name:ident($tx:ty) ; )*) => {
        $(
            pub fn $name(x: &[$tx], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::check_lanes16(stringify!($name), x.len(), y.len(), k, out.len(), ldo);
                #[target_feature(enable = $features)]
                unsafe fn imp(x: &[$tx], y: &[f32], k: usize, out: &mut [f32], ldo: usize) {
                    crate::gemm::gemm_lanes16::<$isa, $tx>(x, y, k, out, ldo)
                }
                // SAFETY: features detected before this table is used;
                // `check_lanes16` established whole rows of k (a multiple of
                // 16) and in-bounds outputs.
                unsafe { imp(x, y, k, out, ldo) }
            }
        )*
    };
    (@q4k $isa:ty, $features:tt,
        $( $name:ident($w:ty) = $check:ident, $algo:ident, $per64:expr; )*) => {
        $(
            pub fn $name(x: &[$w], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::$check(stringify!($name), x.len(), y.len(), nb, out.len(), ldo);
                #[target_feature(enable = $features)]
                unsafe fn imp(x: &[$w], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize) {
                    crate::gemm::$algo::<$isa, { $per64 }>(x, y, nb, out, ldo)
                }
                // SAFETY: features detected before this table is used;
                // `$check` established whole rows (`check_interleaved`: whole
                // 8-row groups) of nb blocks and in-bounds outputs.
                unsafe { imp(x, y, nb, out, ldo) }
            }
        )*
    };
    (@tiled $isa:ty, $features:tt, $( $name:ident($tx:ty, $ty:ty) = $kind:ident; )*) => {
        $(
            pub fn $name(x: &[$tx], y: &[$ty], nb: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::check(stringify!($name), x.len(), y.len(), nb, out.len(), ldo);
                #[target_feature(enable = $features)]
                unsafe fn imp(x: &[$tx], y: &[$ty], nb: usize, out: &mut [f32], ldo: usize) {
                    crate::gemm::gemm::<$isa, crate::gemm::$kind>(x, y, nb, out, ldo)
                }
                // SAFETY: this module's functions only enter a kernel table
                // after the CPU was detected to have `$features`; `check`
                // established that x and y hold whole rows of nb blocks and
                // that every out[r * ldo + t] written is in bounds.
                unsafe { imp(x, y, nb, out, ldo) }
            }
        )*
    };
    (@rows $( $name:ident($tx:ty, $ty:ty) = $dot:ident; )*) => {
        $(
            pub fn $name(x: &[$tx], y: &[$ty], nb: usize, out: &mut [f32], ldo: usize) {
                crate::gemm::check(stringify!($name), x.len(), y.len(), nb, out.len(), ldo);
                crate::gemm::by_rows(x, y, nb, out, ldo, $dot);
            }
        )*
    };
}
pub(crate) use gemm_entry_points;
