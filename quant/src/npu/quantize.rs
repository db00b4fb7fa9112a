//! Symmetric integer quantization of rows: level ranges, clip searches (MSE
//! and rk-llama.cpp's KL-divergence search) and the row quantizer shared by
//! weights and activations.
//!
//! A quantized row is `codes` (i8, each in the level range) and one `scale`
//! with `x ~= scale * code`. The scale may be negative: for the [-8, 7]
//! range a row whose largest magnitude is positive is negated so that the
//! extra level -8 lands on the large side (free: only the scale's sign
//! changes, the NPU never sees it).

use super::hadamard::SplitMix64;

/// Integer levels of one quantized operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelRange {
    /// Most negative code.
    pub qmin: i32,
    /// Most positive code.
    pub qmax: i32,
}

impl LevelRange {
    pub const INT8: LevelRange = LevelRange {
        qmin: -127,
        qmax: 127,
    };
    pub const INT4_SYM7: LevelRange = LevelRange { qmin: -7, qmax: 7 };
    pub const INT4_FULL8: LevelRange = LevelRange { qmin: -8, qmax: 7 };
    /// Codes `16 hi + lo` of two int4 digits (`hi`, `lo` in [-8, 7]).
    pub const INT4_TWO_DIGITS: LevelRange = LevelRange {
        qmin: -136,
        qmax: 119,
    };
    /// Codes `256 hi + lo` of two int8 digits (`hi`, `lo` in [-128, 127]).
    pub const INT8_TWO_DIGITS: LevelRange = LevelRange {
        qmin: -32896,
        qmax: 32639,
    };

    /// Whether the negative side has one more level than the positive.
    pub fn is_asymmetric(self) -> bool {
        -self.qmin > self.qmax
    }

    /// Magnitude the clip value maps to (the largest usable |code|).
    pub fn clip_level(self) -> f32 {
        (-self.qmin).max(self.qmax) as f32
    }
}

/// How the clip value (the magnitude mapped to the extreme level) is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Clip {
    /// The largest magnitude: nothing is clipped.
    AbsMax,
    /// The clip minimising the squared quantization error (grid search).
    Mse,
    /// rk-llama.cpp's: minimise KL(P || Q) of the |x| histogram (2048 bins,
    /// 128 candidates from the 99.5th percentile to the max).
    Kl,
}

/// Number of histogram bins of the KL search.
pub const KL_BINS: usize = 2048;
/// Number of clip candidates of the KL search.
pub const KL_CANDIDATES: usize = 128;
/// Fraction of mass below the smallest KL candidate.
pub const KL_START_PERCENTILE: f64 = 0.995;

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Quantizes one value with the reciprocal of the scale.
#[inline]
fn q(v: f32, inv: f32, r: LevelRange) -> i32 {
    ((v * inv).round() as i32).clamp(r.qmin, r.qmax)
}

/// Squared error of quantizing `x` with positive step `s`.
fn sq_error(x: &[f32], s: f32, r: LevelRange) -> f64 {
    let inv = 1.0 / s;
    let (lo, hi) = (r.qmin as f32, r.qmax as f32);
    let mut acc = 0.0f32;
    let mut total = 0.0f64;
    for chunk in x.chunks(256) {
        for &v in chunk {
            let c = (v * inv).round().clamp(lo, hi);
            let e = v - c * s;
            acc += e * e;
        }
        total += acc as f64;
        acc = 0.0;
    }
    total
}

/// The clip (>0) minimising the squared quantization error of `x`, or 0
/// when `x` is all zeros. A 33-point grid over [0.3, 1] x absmax, then 16
/// finer points around the best.
pub fn mse_clip(x: &[f32], r: LevelRange) -> f32 {
    let amax = absmax(x);
    if amax == 0.0 || !amax.is_finite() {
        return amax;
    }
    let level = r.clip_level();
    let mut best = (sq_error(x, amax / level, r), amax);
    let coarse = 32;
    let lo_frac = 0.3f32;
    let step = (1.0 - lo_frac) / coarse as f32;
    for i in 0..coarse {
        let c = amax * (lo_frac + step * i as f32);
        let e = sq_error(x, c / level, r);
        if e < best.0 {
            best = (e, c);
        }
    }
    let center = best.1;
    for j in 1..=8 {
        for sign in [-1.0f32, 1.0] {
            let c = center + sign * amax * step * j as f32 / 9.0;
            if c <= 0.0 || c > amax {
                continue;
            }
            let e = sq_error(x, c / level, r);
            if e < best.0 {
                best = (e, c);
            }
        }
    }
    best.1
}

/// Histogram of |x| over [0, amax] in [`KL_BINS`] bins.
pub fn abs_histogram(x: &[f32], amax: f32) -> Vec<f64> {
    let mut hist = vec![0.0f64; KL_BINS];
    if amax <= 0.0 {
        return hist;
    }
    let scale = KL_BINS as f32 / amax;
    for &v in x {
        let b = ((v.abs() * scale) as usize).min(KL_BINS - 1);
        hist[b] += 1.0;
    }
    hist
}

/// rk-llama.cpp's clip choice: minimise KL(P || Q) where P is the |x|
/// histogram truncated at the candidate (the tail folded into the last
/// bin) and Q is P quantized to the integer levels (each level's mass spread
/// evenly over the non-empty bins it covers). Candidates: 128 values
/// linearly from the 99.5th percentile of |x| to the max.
pub fn kl_clip_from_histogram(hist: &[f64], amax: f32, r: LevelRange) -> f32 {
    let total: f64 = hist.iter().sum();
    if amax <= 0.0 || total == 0.0 {
        return amax;
    }
    let bin_w = amax as f64 / hist.len() as f64;
    // 99.5th percentile bin.
    let mut cum = 0.0;
    let mut p_bin = hist.len() - 1;
    for (i, h) in hist.iter().enumerate() {
        cum += h;
        if cum >= KL_START_PERCENTILE * total {
            p_bin = i;
            break;
        }
    }
    let start = (p_bin + 1) as f64 * bin_w;
    let level = r.clip_level() as f64;
    let mut best = (f64::INFINITY, amax);
    let mut p = Vec::with_capacity(hist.len());
    let mut qd = Vec::with_capacity(hist.len());
    for ci in 0..KL_CANDIDATES {
        let clip = start + (amax as f64 - start) * ci as f64 / (KL_CANDIDATES - 1) as f64;
        let nb = ((clip / bin_w).ceil() as usize).clamp(1, hist.len());
        p.clear();
        p.extend_from_slice(&hist[..nb]);
        let tail: f64 = hist[nb..].iter().sum();
        p[nb - 1] += tail;
        // Level of each bin centre; spread each level's (untruncated) mass
        // over its non-empty bins.
        let step = clip / level;
        qd.clear();
        qd.resize(nb, 0.0);
        let level_of = |b: usize| -> usize {
            let centre = (b as f64 + 0.5) * bin_w;
            ((centre / step).round() as usize).min(level as usize)
        };
        let mut mass = vec![0.0f64; level as usize + 1];
        let mut count = vec![0usize; level as usize + 1];
        for (b, &h) in hist[..nb].iter().enumerate() {
            let l = level_of(b);
            mass[l] += h;
            if h > 0.0 {
                count[l] += 1;
            }
        }
        for (b, &h) in hist[..nb].iter().enumerate() {
            if h > 0.0 {
                let l = level_of(b);
                qd[b] = mass[l] / count[l] as f64;
            }
        }
        let psum: f64 = p.iter().sum();
        let qsum: f64 = qd.iter().sum();
        if qsum == 0.0 {
            continue;
        }
        let eps = 1e-12;
        let mut kl = 0.0;
        for (&pv, &qv) in p.iter().zip(qd.iter()) {
            if pv > 0.0 {
                let pn = pv / psum;
                let qn = (qv / qsum).max(eps);
                kl += pn * (pn / qn).ln();
            }
        }
        if kl < best.0 {
            best = (kl, clip as f32);
        }
    }
    best.1
}

/// [`kl_clip_from_histogram`] over the values of `x`.
pub fn kl_clip(x: &[f32], r: LevelRange) -> f32 {
    let amax = absmax(x);
    if amax == 0.0 || !amax.is_finite() {
        return amax;
    }
    kl_clip_from_histogram(&abs_histogram(x, amax), amax, r)
}

/// The clip of `x` under `method`.
pub fn choose_clip(x: &[f32], r: LevelRange, method: Clip) -> f32 {
    match method {
        Clip::AbsMax => absmax(x),
        Clip::Mse => mse_clip(x, r),
        Clip::Kl => kl_clip(x, r),
    }
}

/// Quantizes `x` into `codes` with the step `clip / clip_level`, returns
/// the (signed) scale. For an asymmetric range the row is negated first
/// when its largest magnitude is positive; the returned scale is then
/// negative so that `x ~= scale * code` still holds. A zero or non-finite
/// clip gives all-zero codes and scale 0.
pub fn quantize_with_clip(x: &[f32], clip: f32, r: LevelRange, codes: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), codes.len());
    if clip <= 0.0 || !clip.is_finite() {
        codes.iter_mut().for_each(|c| *c = 0);
        return 0.0;
    }
    let flip = if r.is_asymmetric() {
        let (mn, mx) = x
            .iter()
            .fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        mx > -mn
    } else {
        false
    };
    let s = clip / r.clip_level();
    let inv = if flip { -1.0 / s } else { 1.0 / s };
    for (c, &v) in codes.iter_mut().zip(x.iter()) {
        *c = q(v, inv, r) as i8;
    }
    if flip {
        -s
    } else {
        s
    }
}

/// Chooses the clip by `method` and quantizes; returns the signed scale.
pub fn quantize_row(x: &[f32], r: LevelRange, method: Clip, codes: &mut [i8]) -> f32 {
    let clip = if r.is_asymmetric() && method != Clip::AbsMax {
        // Search on the orientation actually quantized (largest side negative).
        let (mn, mx) = x
            .iter()
            .fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        if mx > -mn {
            let neg: Vec<f32> = x.iter().map(|v| -v).collect();
            choose_clip(&neg, r, method)
        } else {
            choose_clip(x, r, method)
        }
    } else {
        choose_clip(x, r, method)
    };
    quantize_with_clip(x, clip, r, codes)
}

/// The step of a uniform grid `x = o + d * q` holding every value of `x`
/// with at most `max_steps` steps between min and max, if there is one.
/// Dequantized GGML blocks (Q4_0, Q4_1, Q4_K sub-blocks) are such grids,
/// even when the quantizer did not use the extreme levels.
fn detect_grid(x: &[f32], max_steps: i32) -> Option<f32> {
    let mut v: Vec<f32> = x.to_vec();
    v.sort_unstable_by(|a, b| a.total_cmp(b));
    let (lo, hi) = (*v.first()?, *v.last()?);
    let range = hi - lo;
    if range <= 0.0 {
        return None;
    }
    let tol = range * 1e-5;
    let d = v
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&g| g > tol)
        .fold(f32::INFINITY, f32::min);
    if !d.is_finite() || range / d > max_steps as f32 + 1e-3 {
        return None;
    }
    let on_grid = x.iter().all(|&xv| {
        let t = (xv - lo) / d;
        (t - t.round()).abs() < 1e-3
    });
    on_grid.then_some(d)
}

/// Affine quantization, `x ~= scale * code + offset`, every element within
/// half a step. When the values already lie on a grid of at most
/// `qmax - qmin` steps (a dequantized GGML block) that grid is used and the
/// round trip is exact; otherwise the levels span [min, max]. Returns
/// (scale, offset); a constant row gives scale 0 and offset = the constant.
pub fn quantize_affine(x: &[f32], r: LevelRange, codes: &mut [i8]) -> (f32, f32) {
    debug_assert_eq!(x.len(), codes.len());
    let (mn, mx) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if x.is_empty() || mx <= mn {
        codes.iter_mut().for_each(|c| *c = 0);
        return (0.0, if x.is_empty() { 0.0 } else { mn });
    }
    let s = detect_grid(x, r.qmax - r.qmin).unwrap_or((mx - mn) / (r.qmax - r.qmin) as f32);
    // A grid of fewer steps than the range is centred in it: codes far from
    // zero would multiply the activations' quantization error (the offset
    // term cancels their mean, but not that error).
    let steps = ((mx - mn) / s).round() as i32;
    let shift = ((r.qmax - r.qmin) - steps).max(0) / 2;
    let o = mn - s * (r.qmin + shift) as f32;
    let inv = 1.0 / s;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = q(v - o, inv, r) as i8;
    }
    (s, o)
}

/// Splits a two-digit code (of [`LevelRange::INT4_TWO_DIGITS`] with `base`
/// 16, [`LevelRange::INT8_TWO_DIGITS`] with `base` 256) into digits
/// `(hi, lo)` with `code = base * hi + lo`, both in `[-base/2, base/2)`.
pub fn split_two_digits(code: i32, base: i32) -> (i8, i8) {
    let half = base / 2;
    let lo = (code + half).rem_euclid(base) - half;
    let hi = (code - lo) / base;
    (hi as i8, lo as i8)
}

/// [`quantize_row`] into wide codes (for two-digit ranges, whose codes do
/// not fit an i8).
pub fn quantize_row_wide(x: &[f32], r: LevelRange, method: Clip, codes: &mut [i32]) -> f32 {
    debug_assert_eq!(x.len(), codes.len());
    let (mn, mx) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
    let flip = r.is_asymmetric() && mx > -mn;
    let clip = if flip && method != Clip::AbsMax {
        let neg: Vec<f32> = x.iter().map(|v| -v).collect();
        choose_clip(&neg, r, method)
    } else {
        choose_clip(x, r, method)
    };
    if clip <= 0.0 || !clip.is_finite() {
        codes.iter_mut().for_each(|c| *c = 0);
        return 0.0;
    }
    let s = clip / r.clip_level();
    let inv = if flip { -1.0 / s } else { 1.0 / s };
    for (c, &v) in codes.iter_mut().zip(x.iter()) {
        *c = q(v, inv, r);
    }
    if flip {
        -s
    } else {
        s
    }
}

/// Seeded standard-normal-ish samples (Box-Muller on splitmix64).
pub fn gaussian(rng: &mut SplitMix64) -> f32 {
    let u1 = (rng.next_f32() as f64).max(1e-12);
    let u2 = rng.next_f32() as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_vec(seed: u64, n: usize) -> Vec<f32> {
        let mut r = SplitMix64(seed);
        (0..n).map(|_| gaussian(&mut r)).collect()
    }

    fn dequant_err(x: &[f32], codes: &[i8], s: f32) -> f64 {
        x.iter()
            .zip(codes)
            .map(|(v, c)| ((*v - s * *c as f32) as f64).powi(2))
            .sum()
    }

    #[test]
    fn int8_absmax_round_trip_within_half_step() {
        let x = normal_vec(1, 1000);
        let mut c = vec![0i8; x.len()];
        let s = quantize_row(&x, LevelRange::INT8, Clip::AbsMax, &mut c);
        assert!(s > 0.0);
        for (v, q) in x.iter().zip(&c) {
            assert!((v - s * *q as f32).abs() <= 0.5 * s * 1.0001);
        }
        assert!(c.iter().any(|&q| q.abs() == 127));
    }

    #[test]
    fn mse_clip_beats_absmax_and_kl_clips_below_max_on_gaussian() {
        let x = normal_vec(2, 4096);
        let r = LevelRange::INT4_SYM7;
        let mut c = vec![0i8; x.len()];
        let s_abs = quantize_row(&x, r, Clip::AbsMax, &mut c);
        let e_abs = dequant_err(&x, &c, s_abs);
        let s_mse = quantize_row(&x, r, Clip::Mse, &mut c);
        let e_mse = dequant_err(&x, &c, s_mse);
        assert!(e_mse < 0.8 * e_abs, "mse {e_mse} absmax {e_abs}");
        let kl = kl_clip(&x, r);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(kl <= amax && kl > 0.5 * amax, "kl clip {kl} of {amax}");
    }

    #[test]
    fn full8_range_flips_sign_and_reduces_error() {
        let mut x = normal_vec(3, 512);
        x[0] = 9.0; // large positive outlier: the row is negated
        let mut c = vec![0i8; x.len()];
        let s = quantize_row(&x, LevelRange::INT4_FULL8, Clip::AbsMax, &mut c);
        assert!(s < 0.0);
        assert_eq!(c[0], -8);
        let e8 = dequant_err(&x, &c, s);
        let s7 = quantize_row(&x, LevelRange::INT4_SYM7, Clip::AbsMax, &mut c);
        let e7 = dequant_err(&x, &c, s7);
        assert!(e8 < e7);
        assert!(c.iter().all(|&q| (-7..=7).contains(&q)));
    }

    #[test]
    fn affine_holds_q4_1_blocks_exactly() {
        // A Q4_1 block: d * q + m, q in 0..=15 -> exact with [-8, 7] levels.
        let (d, m) = (0.0123f32, -0.071f32);
        let x: Vec<f32> = (0..32).map(|i| d * ((i * 7 % 16) as f32) + m).collect();
        let mut c = vec![0i8; 32];
        let (s, o) = quantize_affine(&x, LevelRange::INT4_FULL8, &mut c);
        for (v, q) in x.iter().zip(&c) {
            assert!((v - (s * *q as f32 + o)).abs() < 1e-6, "{v}");
        }
        // A Q4_K-like sub-block that uses only levels 2..=11 is still exact.
        let x: Vec<f32> = (0..32).map(|i| d * ((2 + i % 10) as f32) - 0.3).collect();
        let (s, o) = quantize_affine(&x, LevelRange::INT4_FULL8, &mut c);
        assert!((s - d).abs() < 1e-6, "step {s}");
        for (v, q) in x.iter().zip(&c) {
            assert!((v - (s * *q as f32 + o)).abs() < 1e-6, "{v}");
        }
        let (s, o) = quantize_affine(&[2.5; 8], LevelRange::INT4_FULL8, &mut c[..8]);
        assert_eq!((s, o), (0.0, 2.5));
    }

    #[test]
    fn zero_row_gives_zero_scale() {
        let x = vec![0.0f32; 64];
        let mut c = vec![1i8; 64];
        for m in [Clip::AbsMax, Clip::Mse, Clip::Kl] {
            assert_eq!(quantize_row(&x, LevelRange::INT4_SYM7, m, &mut c), 0.0);
            assert!(c.iter().all(|&q| q == 0));
        }
    }
}
