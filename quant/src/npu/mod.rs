//! NPU requantization: everything between a GGUF weight and the integer or
//! fp16 matrices the RK3588 NPU multiplies, with no device involved.
//!
//! # API used by the NPU backend
//!
//! ```text
//! // once per weight, at load (rows = dequantized f32 weight, n rows of k):
//! let scheme = quant::npu::default_scheme("Q4_K");          // or "w8a8.khad".parse()?
//! let w = quant::npu::prepare_weight(&rows, n, k, scheme, "blk.0.ffn_up.weight")?;
//! // w.segments[i].packed : native B layout of K segment i (one NPU matmul each)
//! // w.scales[i * n + col] : weight scale of (segment i, output channel col)
//! // w.precision() : Fp16 / Int8 / Int4 = the NPU data types (w4a8 runs as Int8)
//!
//! // per call (x = m x k row-major f32 activations):
//! let a = quant::npu::quantize_activations(&x, m, &w)?;
//! // a.segments[i] : native A layout of segment i, a.scales[i * m + row]
//! // ... run one NPU matmul per segment: A = a.segments[i], B = w.segments[i].packed,
//! //     giving C_i in the native C layout of w.precision().output() ...
//! let mut y = vec![0f32; m * n];
//! quant::npu::dequantize_output(&w, &a, &[c_0, c_1, ...], &mut y)?;
//! // y = x W^T (m x n row-major):
//! //   y[r][c] = f * sum_i (C_i[r][c] * a.scales[i][r] * w.scales[i][c]
//! //                        + w.offsets[i][c] * a.sums[i][r])
//! //   f = w.rotation.output_factor(); offsets and sums are empty unless the
//! //   scheme is affine (`zp`). With `hilo` schemes (a.digits == 2) A and C
//! //   have 2m rows and C_i[r][c] stands for B * C_i[r][c] + C_i[m + r][c],
//! //   B = w.scheme.act_digit_base() (16 for int4, 256 for int8).
//! ```
//!
//! [`reference_matmul`] computes the `C_i` from the packed buffers with plain
//! loops (int4 x int4 saturating to int16, counted in [`MatmulStats`]); it is
//! the reference the simulator and the driver are tested against, and
//! [`matmul_reference`] chains the three steps.
//!
//! # What is done to a weight
//! 1. Rotation ([`hadamard`]): random +-1 signs per K position (splitmix64
//!    seeded with FNV-1a of the tensor name) then an unnormalized FWHT, over
//!    K padded to a power of two (rk-llama.cpp's `had`), block-diagonal over
//!    K padded to 32 (`bhad`), or block-diagonal followed by a DCT across the
//!    blocks (`khad`: whole-K spreading without padding). Activations get the
//!    same transform per call; outputs are multiplied by `1 / block`.
//! 2. K is cut into segments of at most `k_segment` (one NPU matmul each,
//!    partial sums added on the CPU), each with its own scales.
//! 3. Quantization ([`quantize`]) per output channel (or per tensor) with a
//!    clip chosen by absmax, MSE search or KL search, optionally affine
//!    (`zp`: an offset per channel and segment, whose product with the
//!    activation sums the CPU adds); activations per row and segment.
//! 4. Packing ([`layout`]) into the NPU's native layouts, zero-padded.
//!
//! Scheme names and the default per GGML type: [`scheme`]. Measured
//! accuracy: docs/quantization.md (`rkinfer quant-eval`, [`eval`]).

pub mod eval;
pub mod hadamard;
pub mod layout;
pub mod quantize;
pub mod scheme;
#[cfg(test)]
mod tests;

use std::fmt;

pub use hadamard::{Rotation, RotationPlan};
pub use layout::{OutputType, Precision};
pub use quantize::{Clip, LevelRange};
pub use scheme::{
    default_scheme, default_scheme_for, Granularity, Levels, Scheme, DEFAULT_SCHEMES, RK_LLAMA_INT4,
};

use layout::{pad_m, read_c, round_up_n};

/// Everything that can go wrong preparing or applying an NPU quantization.
#[derive(Debug, Clone, PartialEq)]
pub enum NpuQuantError {
    /// A scheme name or combination is invalid.
    BadScheme(String),
    /// A buffer does not have the length its shape implies.
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A dimension is zero.
    EmptyShape { what: &'static str },
    /// A weight or activation is NaN or infinite.
    NonFinite {
        what: &'static str,
        tensor: String,
        row: usize,
        col: usize,
    },
    /// Outputs passed to `dequantize_output` do not match the weight.
    SegmentCount { expected: usize, got: usize },
    /// A GGUF tensor could not be read as f32 rows.
    Tensor { tensor: String, what: String },
}

impl fmt::Display for NpuQuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpuQuantError::BadScheme(m) => write!(f, "bad NPU quantization scheme {m}"),
            NpuQuantError::Shape {
                what,
                expected,
                got,
            } => {
                write!(f, "{what}: expected {expected} elements/bytes, got {got}")
            }
            NpuQuantError::EmptyShape { what } => write!(f, "{what}: zero-sized dimension"),
            NpuQuantError::NonFinite {
                what,
                tensor,
                row,
                col,
            } => write!(
                f,
                "{what} {tensor:?}: non-finite value at row {row}, column {col}"
            ),
            NpuQuantError::SegmentCount { expected, got } => {
                write!(f, "expected {expected} NPU output segments, got {got}")
            }
            NpuQuantError::Tensor { tensor, what } => write!(f, "tensor {tensor:?}: {what}"),
        }
    }
}

impl std::error::Error for NpuQuantError {}

/// One K segment of a prepared weight: one NPU matmul.
#[derive(Clone, Debug)]
pub struct WeightSegment {
    /// First rotated-K position of the segment.
    pub k_start: usize,
    /// Length (a multiple of 32): the K of this NPU matmul.
    pub k_len: usize,
    /// Native B layout, `n_pad x k_len`.
    pub packed: Vec<u8>,
}

/// A weight requantized and packed for the NPU.
#[derive(Clone, Debug)]
pub struct PreparedWeight {
    pub name: String,
    pub scheme: Scheme,
    /// Output channels (rows of W).
    pub n: usize,
    /// Logical K (row length of W).
    pub k: usize,
    /// N padded to the precision's alignment.
    pub n_pad: usize,
    /// Rotated, padded K (sum of the segment lengths).
    pub k_pad: usize,
    /// The rotation: seed (FNV-1a of the name), block, signs.
    pub rotation: RotationPlan,
    pub segments: Vec<WeightSegment>,
    /// Weight scales, `[segment][n]` (1.0 for fp16; may be negative with
    /// int4 [-8, 7], see [`quantize::quantize_with_clip`]).
    pub scales: Vec<f32>,
    /// Weight offsets `[segment][n]` for `zp` schemes (empty otherwise).
    pub offsets: Vec<f32>,
}

impl PreparedWeight {
    pub fn precision(&self) -> Precision {
        self.scheme.precision()
    }

    /// Device bytes of all packed segments.
    pub fn packed_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.packed.len()).sum()
    }

    /// The weight as the NPU sees it, dequantized: `n x k_pad`, in the
    /// rotated domain (for error analysis and tests).
    pub fn dequantize_rotated(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.n * self.k_pad];
        let p = self.precision();
        for (si, seg) in self.segments.iter().enumerate() {
            let vals: Vec<f32> = match p {
                Precision::Fp16 => layout::unpack_b_f16(&seg.packed, self.n, seg.k_len, seg.k_len)
                    .into_iter()
                    .map(|h| half::f16::from_bits(h).to_f32())
                    .collect(),
                _ => layout::unpack_b_int(p, &seg.packed, self.n, seg.k_len, seg.k_len)
                    .into_iter()
                    .map(|c| c as f32)
                    .collect(),
            };
            for r in 0..self.n {
                let s = self.scales[si * self.n + r];
                let o = self.offsets.get(si * self.n + r).copied().unwrap_or(0.0);
                let dst = &mut out[r * self.k_pad + seg.k_start..][..seg.k_len];
                for (d, v) in dst
                    .iter_mut()
                    .zip(&vals[r * seg.k_len..(r + 1) * seg.k_len])
                {
                    *d = v * s + o;
                }
            }
        }
        out
    }
}

/// Activations quantized and packed for one call against a prepared weight.
#[derive(Clone, Debug)]
pub struct PackedActivations {
    /// Rows (tokens).
    pub m: usize,
    /// Int4 digits per code (2 for `hilo` schemes, else 1): the A and C
    /// layouts hold `digits * m` rows, the high digits of every token first,
    /// then the low digits.
    pub digits: usize,
    /// `digits * m` as padded in the A and C layouts.
    pub m_pad: usize,
    /// Native A layout per K segment (`m_pad x k_len`).
    pub segments: Vec<Vec<u8>>,
    /// Activation scales `[segment][m]` (1.0 for fp16).
    pub scales: Vec<f32>,
    /// Sums of the rotated f32 activations `[segment][m]`, for `zp` weights
    /// (empty otherwise).
    pub sums: Vec<f32>,
}

/// Counters of one reference matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulStats {
    /// Outputs computed (m x n x segments).
    pub outputs: u64,
    /// Int4 x int4 outputs whose exact sum left the int16 range and were
    /// clamped.
    pub int16_saturations: u64,
}

impl MatmulStats {
    pub fn add(&mut self, o: MatmulStats) {
        self.outputs += o.outputs;
        self.int16_saturations += o.int16_saturations;
    }
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), NpuQuantError> {
    if expected != got {
        return Err(NpuQuantError::Shape {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

fn check_finite(
    what: &'static str,
    name: &str,
    x: &[f32],
    cols: usize,
) -> Result<(), NpuQuantError> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(NpuQuantError::NonFinite {
            what,
            tensor: name.to_string(),
            row: i / cols.max(1),
            col: i % cols.max(1),
        });
    }
    Ok(())
}

/// Segment boundaries of a rotated K.
fn segment_bounds(k_pad: usize, k_segment: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut s = 0;
    while s < k_pad {
        let len = k_segment.min(k_pad - s);
        v.push((s, len));
        s += len;
    }
    v
}

fn to_f16_bits(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|v| half::f16::from_f32(*v).to_bits())
        .collect()
}

/// Requantizes a weight (`n` rows of `k` f32, row-major, as
/// `quant::dequantize_row` produces) for the NPU under `scheme`. `name` seeds
/// the rotation signs.
pub fn prepare_weight(
    rows: &[f32],
    n: usize,
    k: usize,
    scheme: Scheme,
    name: &str,
) -> Result<PreparedWeight, NpuQuantError> {
    scheme.validate()?;
    if n == 0 || k == 0 {
        return Err(NpuQuantError::EmptyShape { what: "weight" });
    }
    check_len("weight rows", n * k, rows.len())?;
    check_finite("weight", name, rows, k)?;
    let p = scheme.precision();
    let plan = RotationPlan::with_segment(
        scheme.effective_rotation(),
        k,
        p.k_align(),
        hadamard::seed_from_name(name),
        scheme.k_segment,
    );
    let k_pad = plan.k_rot;
    let rotated = plan.rotate_rows(rows, n);
    let n_pad = round_up_n(n, p);
    let bounds = segment_bounds(k_pad, scheme.k_segment);
    let mut segments = Vec::with_capacity(bounds.len());
    let mut scales = Vec::with_capacity(bounds.len() * n);
    let mut offsets = Vec::new();
    let mut seg_vals = Vec::new();
    for &(k_start, k_len) in &bounds {
        seg_vals.clear();
        for r in 0..n {
            seg_vals.extend_from_slice(&rotated[r * k_pad + k_start..][..k_len]);
        }
        let packed = if scheme.weight == Levels::F16 {
            scales.extend(std::iter::repeat_n(1.0, n));
            layout::pack_b_f16(&to_f16_bits(&seg_vals), n, k_len, k_len)
        } else {
            let range = scheme.weight_range();
            let mut codes = vec![0i8; n * k_len];
            match scheme.granularity {
                _ if scheme.weight_offset => {
                    for (x, c) in seg_vals
                        .chunks_exact(k_len)
                        .zip(codes.chunks_exact_mut(k_len))
                    {
                        let (s, o) = quantize::quantize_affine(x, range, c);
                        scales.push(s);
                        offsets.push(o);
                    }
                }
                Granularity::PerChannel => {
                    for (x, c) in seg_vals
                        .chunks_exact(k_len)
                        .zip(codes.chunks_exact_mut(k_len))
                    {
                        scales.push(quantize::quantize_row(x, range, scheme.weight_clip, c));
                    }
                }
                Granularity::PerTensor => {
                    let clip = quantize::choose_clip(&seg_vals, range, scheme.weight_clip);
                    for (x, c) in seg_vals
                        .chunks_exact(k_len)
                        .zip(codes.chunks_exact_mut(k_len))
                    {
                        scales.push(quantize::quantize_with_clip(x, clip, range, c));
                    }
                }
            }
            layout::pack_b_int(p, &codes, n, k_len, k_len)
        };
        segments.push(WeightSegment {
            k_start,
            k_len,
            packed,
        });
    }
    Ok(PreparedWeight {
        name: name.to_string(),
        scheme,
        n,
        k,
        n_pad,
        k_pad,
        rotation: plan,
        segments,
        scales,
        offsets,
    })
}

/// Rotates, quantizes per row and packs `m x k` activations for `w`.
pub fn quantize_activations(
    x: &[f32],
    m: usize,
    w: &PreparedWeight,
) -> Result<PackedActivations, NpuQuantError> {
    if m == 0 {
        return Err(NpuQuantError::EmptyShape {
            what: "activations",
        });
    }
    check_len("activations", m * w.k, x.len())?;
    check_finite("activations for", &w.name, x, w.k)?;
    let sc = &w.scheme;
    let p = sc.precision();
    let rotated = w.rotation.rotate_rows(x, m);
    let mut segments = Vec::with_capacity(w.segments.len());
    let mut scales = Vec::with_capacity(w.segments.len() * m);
    let mut sums = Vec::new();
    let mut seg_vals = Vec::new();
    for seg in &w.segments {
        seg_vals.clear();
        for r in 0..m {
            seg_vals.extend_from_slice(&rotated[r * w.k_pad + seg.k_start..][..seg.k_len]);
        }
        if sc.weight_offset {
            sums.extend(
                seg_vals
                    .chunks_exact(seg.k_len)
                    .map(|row| row.iter().map(|v| *v as f64).sum::<f64>() as f32),
            );
        }
        let packed = if sc.act == Levels::F16 {
            scales.extend(std::iter::repeat_n(1.0, m));
            layout::pack_a_f16(&to_f16_bits(&seg_vals), m, seg.k_len, seg.k_len)
        } else {
            let range = sc.act_range();
            if sc.act_digits() == 2 {
                // High digits of all rows, then low digits.
                let base = sc.act_digit_base();
                let mut wide = vec![0i32; seg.k_len];
                let mut digits = vec![0i8; 2 * m * seg.k_len];
                let (hi, lo) = digits.split_at_mut(m * seg.k_len);
                for ((xr, h), l) in seg_vals
                    .chunks_exact(seg.k_len)
                    .zip(hi.chunks_exact_mut(seg.k_len))
                    .zip(lo.chunks_exact_mut(seg.k_len))
                {
                    scales.push(quantize::quantize_row_wide(
                        xr,
                        range,
                        sc.act_clip,
                        &mut wide,
                    ));
                    for ((c, hd), ld) in wide.iter().zip(h.iter_mut()).zip(l.iter_mut()) {
                        (*hd, *ld) = quantize::split_two_digits(*c, base);
                    }
                }
                layout::pack_a_int(p, &digits, 2 * m, seg.k_len, seg.k_len)
            } else {
                let mut codes = vec![0i8; m * seg.k_len];
                for (xr, c) in seg_vals
                    .chunks_exact(seg.k_len)
                    .zip(codes.chunks_exact_mut(seg.k_len))
                {
                    scales.push(quantize::quantize_row(xr, range, sc.act_clip, c));
                }
                layout::pack_a_int(p, &codes, m, seg.k_len, seg.k_len)
            }
        };
        segments.push(packed);
    }
    Ok(PackedActivations {
        m,
        digits: sc.act_digits(),
        m_pad: pad_m(sc.act_digits() * m),
        segments,
        scales,
        sums,
    })
}

/// The NPU's result for every segment, computed from the packed buffers
/// with plain loops: `C_i = A_i B_i^T` in the native C layout. Int4 x int4
/// sums are exact, then clamped to int16 (counted); fp16 products are
/// accumulated in f32.
pub fn reference_matmul(
    w: &PreparedWeight,
    a: &PackedActivations,
) -> Result<(Vec<Vec<u8>>, MatmulStats), NpuQuantError> {
    if a.segments.len() != w.segments.len() {
        return Err(NpuQuantError::SegmentCount {
            expected: w.segments.len(),
            got: a.segments.len(),
        });
    }
    let p = w.precision();
    let o = p.output();
    // Rows of A: every digit row is multiplied like a token.
    let (m, n) = (a.m * a.digits, w.n);
    let mut outs = Vec::with_capacity(w.segments.len());
    let mut stats = MatmulStats::default();
    for (seg, abuf) in w.segments.iter().zip(&a.segments) {
        let kl = seg.k_len;
        check_len(
            "packed activations",
            layout::a_bytes(p, a.m_pad, kl),
            abuf.len(),
        )?;
        check_len(
            "packed weights",
            layout::b_bytes(p, w.n_pad, kl),
            seg.packed.len(),
        )?;
        let mut vals = vec![0u32; m * n];
        if p == Precision::Fp16 {
            let av: Vec<f32> = layout::unpack_a_f16(abuf, m, kl, kl)
                .into_iter()
                .map(|h| half::f16::from_bits(h).to_f32())
                .collect();
            let bv: Vec<f32> = layout::unpack_b_f16(&seg.packed, n, kl, kl)
                .into_iter()
                .map(|h| half::f16::from_bits(h).to_f32())
                .collect();
            for r in 0..m {
                let ar = &av[r * kl..(r + 1) * kl];
                for c in 0..n {
                    let br = &bv[c * kl..(c + 1) * kl];
                    let s: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
                    vals[r * n + c] = s.to_bits();
                }
            }
        } else {
            let av: Vec<i16> = layout::unpack_a_int(p, abuf, m, kl, kl)
                .into_iter()
                .map(i16::from)
                .collect();
            let bv: Vec<i16> = layout::unpack_b_int(p, &seg.packed, n, kl, kl)
                .into_iter()
                .map(i16::from)
                .collect();
            for r in 0..m {
                let ar = &av[r * kl..(r + 1) * kl];
                for c in 0..n {
                    let br = &bv[c * kl..(c + 1) * kl];
                    let s: i32 = ar
                        .iter()
                        .zip(br)
                        .map(|(x, y)| (*x as i32) * (*y as i32))
                        .sum();
                    vals[r * n + c] = if o == OutputType::I16 {
                        let cl = s.clamp(i16::MIN as i32, i16::MAX as i32);
                        if cl != s {
                            stats.int16_saturations += 1;
                        }
                        cl as i16 as u16 as u32
                    } else {
                        s as u32
                    };
                }
            }
        }
        stats.outputs += (m * n) as u64;
        outs.push(layout::pack_c_bits(o, &vals, m, n, w.n_pad));
    }
    Ok((outs, stats))
}

/// Turns the NPU outputs of every segment (native C layout of
/// `w.precision().output()`) into `y = x W^T` (`m x n` row-major f32):
/// `y[r][c] = f * sum_i (C_i[r][c] * s_act[i][r] * s_w[i][c] + o_w[i][c] * sum_act[i][r])`,
/// `f = rotation.output_factor()`, the offset term only for `zp` schemes;
/// for two-digit activations `C_i[r][c]` is `B C_i[r][c] + C_i[m + r][c]`
/// with `B = w.scheme.act_digit_base()`.
pub fn dequantize_output<B: AsRef<[u8]>>(
    w: &PreparedWeight,
    a: &PackedActivations,
    outputs: &[B],
    y: &mut [f32],
) -> Result<(), NpuQuantError> {
    if outputs.len() != w.segments.len() || a.segments.len() != w.segments.len() {
        return Err(NpuQuantError::SegmentCount {
            expected: w.segments.len(),
            got: outputs.len().min(a.segments.len()),
        });
    }
    let (m, n) = (a.m, w.n);
    check_len("output y", m * n, y.len())?;
    let o = w.precision().output();
    for buf in outputs {
        check_len(
            "NPU output",
            layout::c_bytes(o, a.m_pad, w.n_pad),
            buf.as_ref().len(),
        )?;
    }
    if a.digits != w.scheme.act_digits() {
        return Err(NpuQuantError::BadScheme(format!(
            "{}: activations carry {} digit(s), the scheme {}",
            w.name,
            a.digits,
            w.scheme.act_digits()
        )));
    }
    let factor = w.rotation.output_factor() as f64;
    let base = w.scheme.act_digit_base() as f64;
    let with_offsets = !w.offsets.is_empty();
    if with_offsets {
        check_len("weight offsets", w.segments.len() * n, w.offsets.len())?;
        check_len("activation sums", w.segments.len() * m, a.sums.len())?;
    }
    for r in 0..m {
        for c in 0..n {
            let mut acc = 0.0f64;
            for (i, buf) in outputs.iter().enumerate() {
                let mut v = read_c(o, buf.as_ref(), a.m_pad, r, c);
                if a.digits == 2 {
                    v = base * v + read_c(o, buf.as_ref(), a.m_pad, m + r, c);
                }
                acc += v * a.scales[i * m + r] as f64 * w.scales[i * n + c] as f64;
                if with_offsets {
                    acc += w.offsets[i * n + c] as f64 * a.sums[i * m + r] as f64;
                }
            }
            y[r * n + c] = (acc * factor) as f32;
        }
    }
    Ok(())
}

/// `y = x W^T` through the whole NPU path with [`reference_matmul`] in
/// place of the device.
pub fn matmul_reference(
    w: &PreparedWeight,
    x: &[f32],
    m: usize,
) -> Result<(Vec<f32>, MatmulStats), NpuQuantError> {
    let a = quantize_activations(x, m, w)?;
    let (outs, stats) = reference_matmul(w, &a)?;
    let mut y = vec![0.0f32; m * w.n];
    dequantize_output(w, &a, &outs, &mut y)?;
    Ok((y, stats))
}
