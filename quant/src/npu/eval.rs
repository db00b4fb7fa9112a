//! The accuracy harness (`rkinfer quant-eval`): seeded activations with
//! outlier channels, the exact product, the relative output error of each
//! scheme on each matmul weight of a GGUF model, and the summary table.

use gguf::{GgufFile, TensorInfo};

use super::hadamard::{seed_from_name, SplitMix64};
use super::quantize::gaussian;
use super::{matmul_reference, prepare_weight, MatmulStats, NpuQuantError, Scheme, RK_LLAMA_INT4};

/// Shape of the synthetic activations.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticActivations {
    /// Fraction of channels that are outliers (at least one channel).
    pub outlier_fraction: f32,
    /// Magnitude multiplier of the outlier channels.
    pub outlier_scale: f32,
    pub seed: u64,
}

impl Default for SyntheticActivations {
    fn default() -> Self {
        SyntheticActivations {
            outlier_fraction: 0.01,
            outlier_scale: 20.0,
            seed: 0x5eed,
        }
    }
}

impl SyntheticActivations {
    /// `m x k` row-major activations: Gaussian values times a log-normal
    /// per-channel scale (sigma 0.5) times a log-normal per-token scale
    /// (sigma 0.3); a fixed set of outlier channels is multiplied by
    /// `outlier_scale`, like the massive channels of real LLM activations.
    pub fn generate(&self, m: usize, k: usize) -> Vec<f32> {
        let mut rng = SplitMix64(self.seed ^ (k as u64).wrapping_mul(0x9e37_79b9));
        let mut chan: Vec<f32> = (0..k).map(|_| (0.5 * gaussian(&mut rng)).exp()).collect();
        let n_out = ((k as f32 * self.outlier_fraction).ceil() as usize).clamp(1, k.max(1));
        for _ in 0..n_out {
            let c = (rng.next_u64() % k.max(1) as u64) as usize;
            chan[c] = self.outlier_scale;
        }
        let mut x = Vec::with_capacity(m * k);
        for _ in 0..m {
            let tok = (0.3 * gaussian(&mut rng)).exp();
            for &cs in &chan {
                x.push(gaussian(&mut rng) * cs * tok);
            }
        }
        x
    }
}

/// `Y = X W^T` accumulated in f64 (`m x n`).
pub fn exact_product(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        for c in 0..n {
            let wr = &w[c * k..(c + 1) * k];
            y[r * n + c] = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
        }
    }
    y
}

/// `||y - yref|| / ||yref||` (Frobenius); 0 when both are zero.
pub fn relative_error(y: &[f32], yref: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in y.iter().zip(yref) {
        num += (*a as f64 - b).powi(2);
        den += b * b;
    }
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}

/// Result of one scheme on one matrix.
#[derive(Clone, Debug)]
pub struct SchemeResult {
    pub scheme: Scheme,
    pub rel_error: f64,
    pub stats: MatmulStats,
    /// Rotated, padded K the NPU multiplies.
    pub k_pad: usize,
}

/// SmoothQuant factors (alpha 1/2) per K channel: `s_j = sqrt(max_t |x_tj|
/// / max_c |w_cj|)`, 1 where either side is zero. `W diag(s)` times
/// `diag(1/s) x` is the same product with the activation outliers moved
/// into the weights.
pub fn smoothing_factors(w: &[f32], n: usize, x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let col_max = |v: &[f32], rows: usize| {
        let mut mx = vec![0.0f32; k];
        for r in v.chunks_exact(k).take(rows) {
            for (a, b) in mx.iter_mut().zip(r) {
                *a = a.max(b.abs());
            }
        }
        mx
    };
    let (xm, wm) = (col_max(x, m), col_max(w, n));
    xm.iter()
        .zip(&wm)
        .map(|(&a, &b)| {
            let s = (a / b).sqrt();
            if a > 0.0 && b > 0.0 && s.is_finite() && s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect()
}

/// Multiplies every row of `v` (`rows x s.len()`) by `s`, or divides.
fn scale_columns(v: &[f32], s: &[f32], divide: bool) -> Vec<f32> {
    let mut out = v.to_vec();
    for r in out.chunks_exact_mut(s.len()) {
        for (a, f) in r.iter_mut().zip(s) {
            *a = if divide { *a / f } else { *a * f };
        }
    }
    out
}

/// Runs every scheme on one weight (`n x k` rows) against activations `x`
/// (`m x k`) and the exact product. `sq` schemes are smoothed with factors
/// from these same activations.
pub fn eval_matrix(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    name: &str,
    schemes: &[Scheme],
) -> Result<Vec<SchemeResult>, NpuQuantError> {
    if n == 0 || k == 0 || m == 0 {
        return Err(NpuQuantError::EmptyShape {
            what: "evaluated matrix",
        });
    }
    for (what, expected, got) in [
        ("weight rows", n * k, w.len()),
        ("activations", m * k, x.len()),
    ] {
        if expected != got {
            return Err(NpuQuantError::Shape {
                what,
                expected,
                got,
            });
        }
    }
    let yref = exact_product(x, m, w, n, k);
    let mut out = Vec::with_capacity(schemes.len());
    for &scheme in schemes {
        let (pw, (y, stats)) = if scheme.smooth {
            let s = smoothing_factors(w, n, x, m, k);
            let pw = prepare_weight(&scale_columns(w, &s, false), n, k, scheme, name)?;
            let r = matmul_reference(&pw, &scale_columns(x, &s, true), m)?;
            (pw, r)
        } else {
            let pw = prepare_weight(w, n, k, scheme, name)?;
            let r = matmul_reference(&pw, x, m)?;
            (pw, r)
        };
        out.push(SchemeResult {
            scheme,
            rel_error: relative_error(&y, &yref),
            stats,
            k_pad: pw.k_pad,
        });
    }
    Ok(out)
}

/// The weights fed to matmuls: 2-D tensors other than norms and the token
/// embedding, plus the token embedding when it doubles as the output head.
pub fn matmul_weights(f: &GgufFile) -> Vec<&TensorInfo> {
    let has_output = f.tensor("output.weight").is_some();
    f.tensors()
        .iter()
        .filter(|t| t.dims.len() == 2 && t.dims[1] > 1)
        .filter(|t| t.name != "token_embd.weight" || !has_output)
        .filter(|t| !t.name.contains("_norm") && !t.name.starts_with("rope"))
        .collect()
}

/// The type table's decoder (`crate::dequantize_row`), under the name
/// the NPU backend calls it by.
pub use crate::dequantize_row;

/// Dequantizes the chosen rows of a tensor to f32 (`rows.len() x k`).
pub fn dequantize_rows(
    f: &GgufFile,
    t: &TensorInfo,
    rows: &[usize],
) -> Result<Vec<f32>, NpuQuantError> {
    let k = t.row_len() as usize;
    let bad = |what: String| NpuQuantError::Tensor {
        tensor: t.name.clone(),
        what,
    };
    let row_bytes = t
        .ggml_type
        .row_bytes(k as u64)
        .ok_or_else(|| bad(format!("row of {k} does not fit {}", t.ggml_type.name())))?
        as usize;
    let data = f.tensor_data(t);
    let mut out = vec![0.0f32; rows.len() * k];
    for (i, &r) in rows.iter().enumerate() {
        let src = data
            .get(r * row_bytes..(r + 1) * row_bytes)
            .ok_or_else(|| bad(format!("row {r} beyond the data")))?;
        dequantize_row(t.ggml_type, src, &mut out[i * k..(i + 1) * k])
            .map_err(|e| bad(format!("row {r}: {e}")))?;
    }
    Ok(out)
}

/// Settings of one harness run.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Activation rows per matrix.
    pub tokens: usize,
    /// Output rows evaluated per matrix (evenly subsampled beyond).
    pub max_rows: usize,
    pub schemes: Vec<Scheme>,
    /// Only tensors whose name contains this (or one of these,
    /// comma-separated).
    pub filter: Option<String>,
    pub seed: u64,
    pub threads: usize,
}

/// Results of every scheme on one matrix.
#[derive(Clone, Debug)]
pub struct MatrixReport {
    pub name: String,
    pub ggml_type: &'static str,
    /// Full output rows and K of the tensor.
    pub n: usize,
    pub k: usize,
    /// Output rows evaluated.
    pub n_eval: usize,
    pub results: Vec<SchemeResult>,
}

/// Runs the harness over a model on seeded synthetic activations
/// (`opts.tokens` rows per matrix); `progress(i, total, tensor)` is called
/// before each matrix.
pub fn evaluate_model(
    f: &GgufFile,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize, &TensorInfo),
) -> Result<Vec<MatrixReport>, NpuQuantError> {
    if opts.tokens == 0 {
        return Err(NpuQuantError::EmptyShape { what: "tokens" });
    }
    let mut synthetic = |t: &TensorInfo| -> Result<Option<(Vec<f32>, usize)>, NpuQuantError> {
        let x = SyntheticActivations {
            seed: opts.seed ^ seed_from_name(&t.name),
            ..Default::default()
        }
        .generate(opts.tokens, t.row_len() as usize);
        Ok(Some((x, opts.tokens)))
    };
    evaluate_model_with(f, opts, &mut synthetic, progress)
}

/// Gives the activations of a weight: `m x k` row-major and `m`, or `None`
/// to skip the weight.
pub type ActivationSource<'a> =
    dyn FnMut(&TensorInfo) -> Result<Option<(Vec<f32>, usize)>, NpuQuantError> + 'a;

/// Runs the harness over a model with the activations `activations(tensor)`
/// returns (`m x k` row-major and `m`, e.g. captured from a forward pass);
/// tensors it returns `None` for are skipped. `opts.tokens` and `opts.seed`
/// are not used.
pub fn evaluate_model_with(
    f: &GgufFile,
    opts: &EvalOptions,
    activations: &mut ActivationSource<'_>,
    progress: &mut dyn FnMut(usize, usize, &TensorInfo),
) -> Result<Vec<MatrixReport>, NpuQuantError> {
    if opts.max_rows == 0 {
        return Err(NpuQuantError::EmptyShape { what: "max_rows" });
    }
    let weights: Vec<&TensorInfo> = matmul_weights(f)
        .into_iter()
        .filter(|t| {
            opts.filter
                .as_deref()
                .is_none_or(|s| s.split(',').any(|p| t.name.contains(p)))
        })
        .collect();
    let mut reports = Vec::with_capacity(weights.len());
    for (i, t) in weights.iter().enumerate() {
        progress(i, weights.len(), t);
        let (k, n) = (t.row_len() as usize, t.n_rows() as usize);
        let rows: Vec<usize> = if n > opts.max_rows {
            (0..opts.max_rows).map(|j| j * n / opts.max_rows).collect()
        } else {
            (0..n).collect()
        };
        let Some((x, m)) = activations(t)? else {
            continue;
        };
        if m == 0 {
            return Err(NpuQuantError::EmptyShape {
                what: "activations",
            });
        }
        if x.len() != m * k {
            return Err(NpuQuantError::Shape {
                what: "activations of a weight",
                expected: m * k,
                got: x.len(),
            });
        }
        let w = dequantize_rows(f, t, &rows)?;
        let results = eval_parallel(
            &w,
            rows.len(),
            k,
            &x,
            m,
            &t.name,
            &opts.schemes,
            opts.threads,
        )?;
        reports.push(MatrixReport {
            name: t.name.clone(),
            ggml_type: t.ggml_type.name(),
            n,
            k,
            n_eval: rows.len(),
            results,
        });
    }
    Ok(reports)
}

/// [`eval_matrix`] with the schemes spread over `threads` threads.
#[allow(clippy::too_many_arguments)]
fn eval_parallel(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    name: &str,
    schemes: &[Scheme],
    threads: usize,
) -> Result<Vec<SchemeResult>, NpuQuantError> {
    let threads = threads.clamp(1, schemes.len().max(1));
    let per = schemes.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<SchemeResult>, NpuQuantError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = schemes
            .chunks(per)
            .map(|chunk| sc.spawn(move || eval_matrix(w, n, k, x, m, name, chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(NpuQuantError::BadScheme(
                        "evaluation thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(schemes.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Totals of one scheme over all matrices.
#[derive(Clone, Debug)]
pub struct SchemeSummary {
    pub scheme: Scheme,
    pub mean: f64,
    pub worst: f64,
    pub worst_tensor: String,
    pub int16_saturations: u64,
    pub outputs: u64,
    /// Device bytes of the packed weights per original weight (rotation
    /// padding makes this exceed bits/8).
    pub k_pad_ratio: f64,
}

/// Mean / worst relative error per scheme, in the order of `schemes`.
pub fn summarize(reports: &[MatrixReport], schemes: &[Scheme]) -> Vec<SchemeSummary> {
    schemes
        .iter()
        .map(|s| {
            let mut sum = SchemeSummary {
                scheme: *s,
                mean: 0.0,
                worst: 0.0,
                worst_tensor: String::new(),
                int16_saturations: 0,
                outputs: 0,
                k_pad_ratio: 0.0,
            };
            let (mut count, mut kw, mut kpw) = (0usize, 0.0f64, 0.0f64);
            for r in reports {
                for res in r.results.iter().filter(|res| res.scheme == *s) {
                    count += 1;
                    sum.mean += res.rel_error;
                    if res.rel_error > sum.worst {
                        sum.worst = res.rel_error;
                        sum.worst_tensor = r.name.clone();
                    }
                    sum.int16_saturations += res.stats.int16_saturations;
                    sum.outputs += res.stats.outputs;
                    kw += (r.n * r.k) as f64;
                    kpw += (r.n * res.k_pad) as f64;
                }
            }
            sum.mean /= count.max(1) as f64;
            sum.k_pad_ratio = if kw > 0.0 { kpw / kw } else { 1.0 };
            sum
        })
        .collect()
}

/// The summary as a markdown table, with the ratio to rk-llama.cpp's
/// per-tensor int4 when it was measured.
pub fn markdown_table(summaries: &[SchemeSummary]) -> String {
    let baseline = summaries
        .iter()
        .find(|s| s.scheme.to_string() == RK_LLAMA_INT4)
        .map(|s| s.mean);
    let mut out = String::from(
        "| scheme | mean rel. error | worst rel. error | worst tensor | rk-llama.cpp int4 / this | K padding | int16 saturations |\n|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        let name = s.scheme.to_string();
        let ratio = baseline
            .map(|b| format!("{:.2}x", b / s.mean.max(1e-300)))
            .unwrap_or_default();
        let sat = if s.scheme.precision() == super::Precision::Int4 {
            format!("{} / {}", s.int16_saturations, s.outputs)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "| `{name}` | {:.3}% | {:.3}% | {} | {ratio} | {:.2}x | {sat} |\n",
            100.0 * s.mean,
            100.0 * s.worst,
            s.worst_tensor,
            s.k_pad_ratio
        ));
    }
    out
}

/// Mean relative error per scheme (rows) and source GGML type (columns), as
/// a markdown table: which scheme suits which source type.
pub fn markdown_by_type(reports: &[MatrixReport], schemes: &[Scheme]) -> String {
    let mut types: Vec<&'static str> = reports.iter().map(|r| r.ggml_type).collect();
    types.sort_unstable();
    types.dedup();
    let mut out = String::from("| scheme |");
    for t in &types {
        let n = reports.iter().filter(|r| r.ggml_type == *t).count();
        out.push_str(&format!(" {t} ({n}) |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(types.len()));
    out.push('\n');
    for s in schemes {
        out.push_str(&format!("| `{s}` |"));
        for t in &types {
            let errs: Vec<f64> = reports
                .iter()
                .filter(|r| r.ggml_type == *t)
                .flat_map(|r| {
                    r.results
                        .iter()
                        .filter(|x| x.scheme == *s)
                        .map(|x| x.rel_error)
                })
                .collect();
            let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
            out.push_str(&format!(" {:.2}% |", 100.0 * mean));
        }
        out.push('\n');
    }
    out
}
