//! The CPU matmul: activations quantized once into the weight's vec-dot
//! type, weight rows split across the rayon pool.

use gguf::GgmlType;
use kernels::blocks::{
    as_blocks, as_blocks_mut, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0x8,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use rayon::prelude::*;

use super::BackendError;
use super::Weights;
use crate::graph::WeightId;

/// Token rows processed against one weight row before moving on (keeps the
/// weight row in L1 and the activation tile in L2).
const TOKEN_TILE: usize = 32;

/// Activations of a matmul converted to the weight's vec-dot type.
fn act_bytes(scratch: &mut Vec<u64>, bytes: usize) -> &mut [u8] {
    let words = bytes.div_ceil(8);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    &mut bytemuck::cast_slice_mut(&mut scratch[..words])[..bytes]
}

/// `out[t][r] = dot(w row r, x row t)` for `n_tok` rows of `x`.
pub fn mul_mat(
    weights: &Weights,
    wid: WeightId,
    q4_0x8: Option<&[BlockQ4_0x8]>,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut super::Scratch,
) -> Result<(), BackendError> {
    let w = weights.get(wid);
    let wb = weights.bytes(wid);
    let k = w.cols;
    let misaligned = || BackendError::Misaligned("weight");
    macro_rules! quantized {
        ($wt:ty, $at:ty, $quant:path, $gemm:path) => {{
            let wblocks = as_blocks::<$wt>(wb).ok_or_else(misaligned)?;
            let act = quantized_acts::<$at>(&mut scratch.act, x, k, n_tok, $quant)?;
            run_rows(
                wblocks,
                k / <$wt as Block>::ELEMENTS,
                act,
                n_tok,
                w.rows,
                out,
                &mut scratch.tmp,
                $gemm,
            );
        }};
    }
    // llama.cpp repacks Q4_0 matrices of whole 8-row groups on x86 and
    // rounds them in its own order (batches and decode alike); the backend
    // interleaved them at load where that pays.
    if let (GgmlType::Q4_0, Some(packed)) = (w.ty, q4_0x8) {
        let act = quantized_acts(
            &mut scratch.act,
            x,
            k,
            n_tok,
            kernels::quantize_row_q8_0_rne,
        )?;
        let per_row = k / BlockQ8_0::ELEMENTS;
        run_rows_grouped(
            packed,
            8,
            per_row,
            act,
            n_tok,
            w.rows,
            out,
            &mut scratch.tmp,
            kernels::gemm_q4_0x8_q8_0,
        );
        return Ok(());
    }
    match w.ty {
        // The same rounding on the rows as stored.
        GgmlType::Q4_0 if w.rows.is_multiple_of(8) => quantized!(
            BlockQ4_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_rne,
            kernels::gemm_q4_0_q8_0_x8
        ),
        GgmlType::Q4_0 => quantized!(
            BlockQ4_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_rne,
            kernels::gemm_q4_0_q8_0
        ),
        GgmlType::Q4_1 => quantized!(
            BlockQ4_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1_rne,
            kernels::gemm_q4_1_q8_1
        ),
        GgmlType::Q5_0 => quantized!(
            BlockQ5_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_rne,
            kernels::gemm_q5_0_q8_0
        ),
        GgmlType::Q5_1 => quantized!(
            BlockQ5_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1_rne,
            kernels::gemm_q5_1_q8_1
        ),
        GgmlType::Q8_0 => quantized!(
            BlockQ8_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_rne,
            kernels::gemm_q8_0_q8_0
        ),
        GgmlType::Q2_K => quantized!(
            BlockQ2K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q2_k_q8_k
        ),
        GgmlType::Q3_K => quantized!(
            BlockQ3K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q3_k_q8_k
        ),
        GgmlType::Q4_K => {
            // llama.cpp repacks Q4_K and rounds differently in its GEMM
            // (groups of 4 tokens) and its GEMV (the n % 4 tokens left):
            // the two kernels reproduce each, on the same token split.
            let wblocks = as_blocks::<BlockQ4K>(wb).ok_or_else(misaligned)?;
            let per_row = k / BlockQ8K::ELEMENTS;
            let act = quantized_acts(&mut scratch.act, x, k, n_tok, kernels::quantize_row_q8_k)?;
            let grouped = if n_tok > 3 { n_tok - n_tok % 4 } else { 0 };
            let (act_g, act_rest) = act.split_at(grouped * per_row);
            let (out_g, out_rest) = out.split_at_mut(grouped * w.rows);
            let wpr = k / BlockQ4K::ELEMENTS;
            if grouped > 0 {
                let g = kernels::gemm_q4_k_q8_k_g64;
                run_rows(
                    wblocks,
                    wpr,
                    act_g,
                    grouped,
                    w.rows,
                    out_g,
                    &mut scratch.tmp,
                    g,
                );
            }
            if n_tok > grouped {
                let g = kernels::gemm_q4_k_q8_k;
                let rest = n_tok - grouped;
                run_rows(
                    wblocks,
                    wpr,
                    act_rest,
                    rest,
                    w.rows,
                    out_rest,
                    &mut scratch.tmp,
                    g,
                );
            }
        }
        GgmlType::Q5_K => quantized!(
            BlockQ5K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q5_k_q8_k
        ),
        // From 8 tokens llama.cpp hands K-quant matrices it did not repack
        // to its tiled matmul, which rounds Q6_K its own way.
        GgmlType::Q6_K if n_tok >= 8 => quantized!(
            BlockQ6K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q6_k_q8_k_tiled
        ),
        GgmlType::Q6_K => quantized!(
            BlockQ6K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q6_k_q8_k
        ),
        // Prompt batches of float weights: llama.cpp hands them to
        // llamafile's tinyBLAS (16-lane order) when the shapes allow it,
        // with the activations rounded to f16 first for F16 weights.
        GgmlType::F16 | GgmlType::F32
            if n_tok >= 2 && w.rows.is_multiple_of(4) && k.is_multiple_of(16) =>
        {
            let act: &mut [f32] =
                bytemuck::cast_slice_mut(act_bytes(&mut scratch.act, n_tok * k * 4));
            if w.ty == GgmlType::F16 {
                let wv: &[u16] = bytemuck::try_cast_slice(wb).map_err(|_| misaligned())?;
                quantize_rows(x, k, act, k, round_to_f16);
                run_rows(
                    wv,
                    k,
                    act,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    kernels::gemm_f16_wide,
                );
            } else {
                let wv: &[f32] = bytemuck::try_cast_slice(wb).map_err(|_| misaligned())?;
                act.copy_from_slice(&x[..n_tok * k]);
                run_rows(
                    wv,
                    k,
                    act,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    kernels::gemm_f32_wide,
                );
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            let wv: &[u16] = bytemuck::try_cast_slice(wb).map_err(|_| misaligned())?;
            let act: &mut [u16] =
                bytemuck::cast_slice_mut(act_bytes(&mut scratch.act, n_tok * k * 2));
            if w.ty == GgmlType::F16 {
                quantize_rows(x, k, act, k, kernels::f32_to_f16_row);
                run_rows(
                    wv,
                    k,
                    act,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    |x, y, n, o, ldo| by_rows(x, y, n, o, ldo, kernels::vec_dot_f16),
                );
            } else {
                quantize_rows(x, k, act, k, kernels::f32_to_bf16_row);
                run_rows(
                    wv,
                    k,
                    act,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    |x, y, n, o, ldo| by_rows(x, y, n, o, ldo, kernels::vec_dot_bf16),
                );
            }
        }
        GgmlType::F32 => {
            let wv: &[f32] = bytemuck::try_cast_slice(wb).map_err(|_| misaligned())?;
            run_rows(
                wv,
                k,
                x,
                n_tok,
                w.rows,
                out,
                &mut scratch.tmp,
                |x, y, n, o, ldo| by_rows(x, y, n, o, ldo, kernels::vec_dot_f32),
            );
        }
        other => {
            return Err(BackendError::UnsupportedType {
                tensor: w.name.clone(),
                ty: other.name().to_string(),
            })
        }
    }
    Ok(())
}

/// Q8_0 activation quantization as ggml-cpu's SIMD code does it (the
/// rounding llama.cpp's numbers come from): scale 127/amax and rounding to
/// nearest-even, where ggml's reference uses 1/(amax/127) and rounds half
/// away from zero. Tiny differences here flip int8 roundings and move
/// logits by a few hundredths. The matmul runs the bit-identical SIMD
/// kernel `kernels::quantize_row_q8_0_rne` (checked against this in the
/// tests below).
pub fn quantize_row_q8_0_x86(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        yb.d = kernels::f32_to_f16(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
        }
    }
}

/// Q8_1 counterpart of [`quantize_row_q8_0_x86`]; `s` = d * sum(q).
pub fn quantize_row_q8_1_x86(x: &[f32], y: &mut [BlockQ8_1]) {
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        yb.d = kernels::f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        yb.s = kernels::f32_to_f16(d * sum as f32);
    }
}

/// f32 -> f16 -> f32: the values of an activation row converted to f16.
fn round_to_f16(x: &[f32], y: &mut [f32]) {
    let mut half = [0u16; 256];
    for (xc, yc) in x.chunks(256).zip(y.chunks_mut(256)) {
        let h = &mut half[..xc.len()];
        kernels::f32_to_f16_row(xc, h);
        kernels::f16_to_f32_row(h, yc);
    }
}

/// The `n_tok` activation rows of `x` quantized into the scratch buffer as
/// the weight's vec-dot type (once per matmul, shared by all threads).
fn quantized_acts<'s, A: Block + Send>(
    scratch: &'s mut Vec<u64>,
    x: &[f32],
    k: usize,
    n_tok: usize,
    quant: fn(&[f32], &mut [A]),
) -> Result<&'s mut [A], BackendError> {
    let per_row = k / A::ELEMENTS;
    let bytes = n_tok * per_row * std::mem::size_of::<A>();
    let act = as_blocks_mut::<A>(act_bytes(scratch, bytes))
        .ok_or(BackendError::Misaligned("activation"))?;
    quantize_rows(x, k, act, per_row, quant);
    Ok(act)
}

/// Converts each activation row (in parallel for batches).
fn quantize_rows<A: Send>(
    x: &[f32],
    k: usize,
    act: &mut [A],
    per_row: usize,
    f: fn(&[f32], &mut [A]),
) {
    if x.len() / k <= 1 {
        f(&x[..k], &mut act[..per_row]);
    } else {
        act.par_chunks_mut(per_row)
            .zip(x.par_chunks(k))
            .for_each(|(a, xr)| f(xr, a));
    }
}

/// The untiled multi-row product for the float types: one `dot` per
/// (weight row, activation row), `out[r * ldo + t]`, as the `gemm_*`
/// kernels lay it out.
fn by_rows<W, A>(
    x: &[W],
    y: &[A],
    n: usize,
    out: &mut [f32],
    ldo: usize,
    dot: fn(&[W], &[A]) -> f32,
) {
    for (r, xr) in x.chunks_exact(n).enumerate() {
        for (t, yt) in y.chunks_exact(n).enumerate() {
            out[r * ldo + t] = dot(xr, yt);
        }
    }
}

/// The matmul driver: weight rows split across threads in chunks; each
/// chunk meets the activations a tile of token rows at a time (weight
/// rows in L1, the activation tile in L2), through a multi-row kernel
/// writing `tile[r * ldo + t]`.
#[allow(clippy::too_many_arguments)]
fn run_rows<W: Sync, A: Sync>(
    w: &[W],
    w_per_row: usize,
    act: &[A],
    n_tok: usize,
    n_out: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    gemm: impl Fn(&[W], &[A], usize, &mut [f32], usize) + Sync,
) {
    run_rows_grouped(w, 1, w_per_row, act, n_tok, n_out, out, tmp, gemm)
}

/// [`run_rows`] for weights stored `group` rows per unit (interleaved
/// layouts): `w` holds `n_out / group` units of `w_per_row` blocks each.
#[allow(clippy::too_many_arguments)]
fn run_rows_grouped<W: Sync, A: Sync>(
    w: &[W],
    group: usize,
    w_per_row: usize,
    act: &[A],
    n_tok: usize,
    n_out: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    gemm: impl Fn(&[W], &[A], usize, &mut [f32], usize) + Sync,
) {
    let n_threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance, large enough to amortise the dispatch; a
    // multiple of the kernels' 4-row tiles and of 8-row groups.
    let chunk = (n_out / (n_threads * 8)).clamp(16, 256).next_multiple_of(8);
    let chunk = chunk.min(n_out.max(1));
    // Activation blocks per row equal weight blocks per row for every pairing.
    let a_per_row = w_per_row;
    let wrows =
        |r0: usize, rows: usize| &w[r0 / group * w_per_row..(r0 + rows) / group * w_per_row];
    if n_tok == 1 {
        out[..n_out]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| {
                gemm(
                    wrows(c * chunk, o.len()),
                    &act[..a_per_row],
                    w_per_row,
                    o,
                    1,
                )
            });
        return;
    }
    // Transposed tile per chunk of weight rows, then scattered.
    if tmp.len() < n_out * n_tok {
        tmp.resize(n_out * n_tok, 0.0);
    }
    let tmp = &mut tmp[..n_out * n_tok];
    tmp.par_chunks_mut(chunk * n_tok)
        .enumerate()
        .for_each(|(c, o)| {
            let wr = wrows(c * chunk, o.len() / n_tok);
            let mut t0 = 0;
            while t0 < n_tok {
                let t1 = (t0 + TOKEN_TILE).min(n_tok);
                let a = &act[t0 * a_per_row..t1 * a_per_row];
                gemm(wr, a, w_per_row, &mut o[t0..], n_tok);
                t0 = t1;
            }
        });
    out[..n_out * n_tok]
        .par_chunks_mut(n_out)
        .enumerate()
        .for_each(|(t, o)| {
            for (r, v) in o.iter_mut().enumerate() {
                *v = tmp[r * n_tok + t];
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rne_kernels_match_the_x86_quantizers() {
        let mut seed = 0x1234_5678u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        for nb in [1usize, 3, 18, 48] {
            let mut x: Vec<f32> = (0..nb * 32).map(|_| next()).collect();
            x[5] = 0.0;
            x[7] = x[8] * 0.5; // assorted ties after scaling are data-dependent
            let z0 = BlockQ8_0 { d: 0, qs: [0; 32] };
            let (mut a, mut b) = (vec![z0; nb], vec![z0; nb]);
            quantize_row_q8_0_x86(&x, &mut a);
            kernels::quantize_row_q8_0_rne(&x, &mut b);
            assert_eq!(a, b);
            let z1 = BlockQ8_1 {
                d: 0,
                s: 0,
                qs: [0; 32],
            };
            let (mut a, mut b) = (vec![z1; nb], vec![z1; nb]);
            quantize_row_q8_1_x86(&x, &mut a);
            kernels::quantize_row_q8_1_rne(&x, &mut b);
            assert_eq!(a, b);
        }
    }
}
