//! The CPU backend: every op, computed as ggml-cpu computes it so results
//! match llama.cpp closely. Matmuls quantize the activations once into the
//! weight's vec-dot type, then split the weight rows across the rayon pool
//! ([`matmul`]); the kernels of each type come from `quant::TYPE_TABLE`,
//! and every choice made only to round as llama.cpp does is in [`compat`].

pub mod compat;
pub mod delta_net;
mod matmul;

use gguf::GgmlType;
use kernels::blocks::{as_blocks, Block, BlockQ4K, BlockQ4Kx8, BlockQ4_0, BlockQ4_0x8, BlockQ8_0};
use rayon::prelude::*;

use super::kv::KvCache;
use super::BackendError;
use super::{Backend, ExecCtx, Input, Node, SeqRows, Weight, Weights};
use crate::graph::{AttnParams, GateAct, Op, RopeMode, RopeParams, UnaryFn, WeightId};
use compat::{mad_f16_acc, scale_f16_acc, FLASH_ATTN_TILE};

pub use matmul::{mul_mat, mul_mat_rounded, Rounding};

/// Largest head size the attention kernel's stack buffers hold.
pub const MAX_HEAD_DIM: usize = 512;

/// Weight types the CPU matmul handles (the type table's rows with a CPU
/// matmul).
pub const MATMUL_TYPES: [GgmlType; quant::CPU_MATMUL_TYPES.len()] = quant::CPU_MATMUL_TYPES;

/// A weight matrix interleaved by eight rows at load, as llama.cpp repacks
/// it, for the kernels whose vector lanes are rows.
#[derive(Debug)]
pub enum Interleaved {
    /// Q4_0 ([`compat::interleave_q4_0`]).
    Q4_0x8(Vec<BlockQ4_0x8>),
    /// Q4_K in llama.cpp's 8x4 layout ([`compat::interleave_q4_k`]).
    Q4Kx8(Vec<BlockQ4Kx8>),
}

/// The CPU backend (stateless but for the weights it re-lays out at load:
/// threads come from the rayon pool the forward pass runs in).
#[derive(Debug, Default)]
pub struct CpuBackend {
    /// Interleaved matrices by weight id: the fast layout for this CPU's
    /// kernels, where one exists.
    interleaved: Vec<Option<Interleaved>>,
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend::default()
    }

    /// The interleaved form of weight `id`, when it was made at load.
    pub fn interleaved(&self, id: WeightId) -> Option<&Interleaved> {
        self.interleaved.get(id.0 as usize)?.as_ref()
    }
}

/// `bytes` (a matrix of `rows` rows of `cols` elements of blocks `B`)
/// interleaved by `repack` in groups of eight rows; `None` when the bytes
/// are not such a matrix (the plain rows are used then).
fn interleave<B: Block, P: Block + Default>(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    repack: fn(&[B], usize, &mut [P]),
) -> Option<Vec<P>> {
    let src = as_blocks::<B>(bytes)?;
    let nb = cols / B::ELEMENTS;
    if nb == 0 || src.len() != rows * nb || !rows.is_multiple_of(8) {
        return None;
    }
    let mut out = vec![P::default(); src.len() / 8];
    repack(src, nb, &mut out);
    Some(out)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "CPU"
    }

    fn supports(&self, _op: &Op, _weights: &Weights) -> bool {
        true
    }

    fn prepare_weight(&mut self, id: WeightId, w: &Weight, bytes: &[u8]) -> super::Result<bool> {
        // Used in place from the mmap, but matrices of whole 8-row groups
        // that this CPU's kernels read faster interleaved (once, here).
        let packed = match w.ty {
            GgmlType::Q4_0 if compat::interleave_q4_0(w.rows, w.cols) => {
                interleave::<BlockQ4_0, _>(bytes, w.rows, w.cols, kernels::repack_q4_0x8)
                    .map(Interleaved::Q4_0x8)
            }
            GgmlType::Q4_K if compat::interleave_q4_k(w.rows, w.cols) => {
                interleave::<BlockQ4K, _>(bytes, w.rows, w.cols, kernels::repack_q4_kx8)
                    .map(Interleaved::Q4Kx8)
            }
            _ => None,
        };
        if let Some(packed) = packed {
            let at = id.0 as usize;
            if self.interleaved.len() <= at {
                self.interleaved.resize_with(at + 1, || None);
            }
            self.interleaved[at] = Some(packed);
        }
        Ok(true)
    }

    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        out: &mut [f32],
        ctx: &mut ExecCtx<'_>,
    ) -> super::Result<()> {
        let input = |i: usize| -> Result<Input<'_>, BackendError> {
            inputs[i]
                .ok_or_else(|| BackendError::Graph(format!("{}: missing input {i}", node.name)))
        };
        // Elementwise ops write as many values as their inputs hold.
        let n_out = out.len();
        let same_len = |x: &[f32]| -> Result<(), BackendError> {
            if x.len() == n_out {
                Ok(())
            } else {
                Err(BackendError::Graph(format!(
                    "{}: {} input values for {n_out} outputs",
                    node.name,
                    x.len(),
                )))
            }
        };
        match node.op {
            Op::GetRows { table } => get_rows(ctx.weights, table, ctx.tokens, out)?,
            Op::RmsNorm { eps, .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                let c = x.desc.cols;
                par_rows(out, c, |r, or| {
                    kernels::rms_norm(&x.data[r * c..][..c], eps, or)
                });
            }
            Op::MulWeight { w, .. } | Op::AddWeight { w, .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                let c = x.desc.cols;
                let wv = vector(ctx.weights, w, c)?;
                let op = match node.op {
                    Op::MulWeight { .. } => kernels::mul,
                    _ => kernels::add,
                };
                par_rows(out, c, |r, or| {
                    or.copy_from_slice(&x.data[r * c..][..c]);
                    op(or, wv);
                });
            }
            Op::Add { .. } | Op::Mul { .. } => {
                let (a, b) = (input(0)?, input(1)?);
                same_len(a.data)?;
                same_len(b.data)?;
                let op = match node.op {
                    Op::Add { .. } => kernels::add,
                    _ => kernels::mul,
                };
                par_pieces(out, a.desc.rows, |at, o| {
                    o.copy_from_slice(&a.data[at..][..o.len()]);
                    op(o, &b.data[at..][..o.len()]);
                });
            }
            Op::Scale { s, .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                par_pieces(out, x.desc.rows, |at, o| {
                    o.copy_from_slice(&x.data[at..][..o.len()]);
                    kernels::scale(o, s);
                });
            }
            Op::Unary { f, .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                par_pieces(out, x.desc.rows, |at, o| {
                    o.copy_from_slice(&x.data[at..][..o.len()]);
                    unary(f, o);
                });
            }
            Op::MulMat { w, .. } => {
                let x = input(0)?;
                let packed = self.interleaved(w);
                let rows = x.desc.rows;
                if !ctx.is_multi_sequence() {
                    mul_mat(ctx.weights, w, packed, x.data, rows, out, ctx.scratch)?;
                } else if ctx.seqs.iter().all(|s| s.n_rows == 1) {
                    // One token of each sequence: one pass over the weight,
                    // each row rounded as that sequence's decode step alone.
                    let each = Rounding::EachRowAlone;
                    mul_mat_rounded(ctx.weights, w, packed, x.data, rows, each, out, ctx.scratch)?;
                } else {
                    // Each sequence's rows rounded as their own batch.
                    let (k, n) = (x.desc.cols, node_cols(n_out, rows));
                    let mut r0 = 0;
                    for s in ctx.seqs.iter() {
                        let r1 = r0 + s.n_rows;
                        let (xs, os) = (seq_rows(x.data, k, r0, r1)?, &mut out[r0 * n..r1 * n]);
                        mul_mat(ctx.weights, w, packed, xs, s.n_rows, os, ctx.scratch)?;
                        r0 = r1;
                    }
                }
            }
            Op::Rope { p, .. } => {
                let x = input(0)?;
                let ff = match p.freq_factors {
                    Some(w) => Some(vector(ctx.weights, w, p.n_rot / 2)?),
                    None => None,
                };
                let c = x.desc.cols;
                let mut r0 = 0;
                for s in ctx.seqs.iter() {
                    let r1 = r0 + s.n_rows;
                    let xs = seq_rows(x.data, c, r0, r1)?;
                    rope(xs, c, s.n_past, &p, ff, &mut out[r0 * c..r1 * c]);
                    r0 = r1;
                }
            }
            Op::StoreKv { layer, .. } => {
                let (k, v) = (input(0)?, input(1)?);
                let (kc, vc) = (k.desc.cols, v.desc.cols);
                let mut r0 = 0;
                for s in ctx.seqs.iter_mut() {
                    let r1 = r0 + s.n_rows;
                    let (ks, vs) = (seq_rows(k.data, kc, r0, r1)?, seq_rows(v.data, vc, r0, r1)?);
                    store_kv(s.kv, layer, s.n_past, ks, vs)?;
                    r0 = r1;
                }
            }
            Op::Attention { p, .. } => {
                let q = input(0)?;
                let (qc, oc) = (q.desc.cols, node_cols(n_out, q.desc.rows));
                let mut r0 = 0;
                for s in ctx.seqs.iter() {
                    let dim = s.kv.layer_kv_dim(p.layer);
                    if dim == 0 || dim != p.n_head_kv * p.head_dim {
                        return Err(BackendError::Graph(format!(
                            "{}: KV cache of layer {} has rows of {dim}, not {} heads of {}",
                            node.name, p.layer, p.n_head_kv, p.head_dim
                        )));
                    }
                    let r1 = r0 + s.n_rows;
                    let qs = seq_rows(q.data, qc, r0, r1)?;
                    let os = &mut out[r0 * oc..r1 * oc];
                    attention(s.kv, &p, s.n_past, qs, s.n_rows, os);
                    r0 = r1;
                }
            }
            Op::Gated { act, .. } => {
                let (g, u) = (input(0)?, input(1)?);
                same_len(g.data)?;
                same_len(u.data)?;
                let gate = match act {
                    // ggml_vec_swiglu_f32's rounding (its vector expf).
                    GateAct::Silu => kernels::swiglu,
                    // ggml_vec_geglu_f32 with GGML_GELU_FP16 (f16 table).
                    GateAct::GeluTanh => kernels::geglu_ggml,
                };
                par_pieces(out, g.desc.rows, |at, o| {
                    o.copy_from_slice(&g.data[at..][..o.len()]);
                    gate(o, &u.data[at..][..o.len()]);
                });
            }
            Op::Cols { offset, .. } => {
                let x = input(0)?;
                let (c, width) = (x.desc.cols, node_cols(n_out, x.desc.rows));
                if width == 0 || offset + width > c {
                    return Err(BackendError::Graph(format!(
                        "{}: columns {offset}..{} of rows of {c}",
                        node.name,
                        offset + width
                    )));
                }
                if x.data.len() < n_out / width * c {
                    return Err(graph_err(node, "fewer input rows than output rows"));
                }
                par_rows(out, width, |r, or| {
                    or.copy_from_slice(&x.data[r * c + offset..][..width]);
                });
            }
            Op::SoftMax { .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                let c = x.desc.cols;
                par_rows(out, c, |r, or| soft_max_row(&x.data[r * c..][..c], or));
            }
            Op::TopK { k, .. } => {
                let x = input(0)?;
                if k == 0 || k > x.desc.cols {
                    return Err(BackendError::Graph(format!(
                        "{}: top {k} of rows of {}",
                        node.name, x.desc.cols
                    )));
                }
                let mut idx: Vec<usize> = Vec::with_capacity(x.desc.cols);
                for (xr, or) in x
                    .data
                    .chunks_exact(x.desc.cols)
                    .zip(out.chunks_exact_mut(k))
                {
                    idx.clear();
                    idx.extend(0..xr.len());
                    idx.sort_by(|&a, &b| xr[b].total_cmp(&xr[a]));
                    for (o, &i) in or.iter_mut().zip(&idx) {
                        *o = i as f32;
                    }
                }
            }
            Op::MoeWeights { norm, scale, .. } => {
                let (probs, ids) = (input(0)?, input(1)?);
                same_len(ids.data)?;
                moe_weights(probs, ids, norm, scale, out).map_err(|e| graph_err(node, e))?;
            }
            Op::MulMatId {
                first, n_expert, ..
            } => {
                let (x, ids) = (input(0)?, input(1)?);
                let k = ids.desc.cols;
                let n_out = node_cols(n_out, ids.desc.len());
                let per_selection = x.desc.rows == ids.desc.len();
                if n_out == 0 || !(per_selection || x.desc.rows == ids.desc.rows) {
                    return Err(graph_err(
                        node,
                        "input rows match neither tokens nor selections",
                    ));
                }
                for (r, (&id, o)) in ids.data.iter().zip(out.chunks_exact_mut(n_out)).enumerate() {
                    let e = id as usize;
                    if id < 0.0 || e >= n_expert {
                        return Err(graph_err(node, format!("expert {id} of {n_expert}")));
                    }
                    let xr = if per_selection { r } else { r / k };
                    let xrow = &x.data[xr * x.desc.cols..(xr + 1) * x.desc.cols];
                    let w = WeightId(first.0 + e as u32);
                    // One row at a time: ggml's mul_mat_id is a vec_dot per
                    // (row, selection) whatever the batch size.
                    mul_mat(ctx.weights, w, self.interleaved(w), xrow, 1, o, ctx.scratch)?;
                }
            }
            Op::MoeCombine { .. } => {
                let (x, w) = (input(0)?, input(1)?);
                let (c, k) = (x.desc.cols, w.desc.cols);
                if x.desc.len() != w.desc.len() * c || out.len() != w.desc.rows * c {
                    return Err(graph_err(node, "shapes of experts and weights differ"));
                }
                for ((xs, ws), or) in x
                    .data
                    .chunks_exact(c * k)
                    .zip(w.data.chunks_exact(k))
                    .zip(out.chunks_exact_mut(c))
                {
                    for (j, (xr, &wj)) in xs.chunks_exact(c).zip(ws).enumerate() {
                        for (o, &v) in or.iter_mut().zip(xr) {
                            let p = v * wj;
                            *o = if j == 0 { p } else { *o + p };
                        }
                    }
                }
            }
            Op::Concat { .. } => {
                let (a, b) = (input(0)?, input(1)?);
                let (ca, cb) = (a.desc.cols, b.desc.cols);
                if a.desc.rows != b.desc.rows || n_out != a.desc.rows * (ca + cb) {
                    return Err(graph_err(node, "rows of the two parts differ"));
                }
                for ((ar, br), or) in a
                    .data
                    .chunks_exact(ca)
                    .zip(b.data.chunks_exact(cb))
                    .zip(out.chunks_exact_mut(ca + cb))
                {
                    or[..ca].copy_from_slice(ar);
                    or[ca..].copy_from_slice(br);
                }
            }
            Op::GatedDeltaNet { p, .. } => {
                let (qkv, gb) = (input(0)?, input(1)?);
                let (state, shape) = one_sequence(ctx, node)?.recurrent.matrix_mut(p.layer)?;
                let d = p.head_dim;
                if (shape.heads, shape.k_dim, shape.v_dim) != (p.n_v_heads, d, d) {
                    return Err(graph_err(
                        node,
                        format!("{} heads of {d}, state of {shape:?}", p.n_v_heads),
                    ));
                }
                delta_net::gated_delta_net(qkv.data, gb.data, qkv.desc.rows, &p, state, out)
                    .map_err(|e| graph_err(node, e))?;
            }
            Op::SsmConv { kernel, layer, .. } => {
                let x = input(0)?;
                same_len(x.data)?;
                let weights = ctx.weights;
                let (state, shape) = one_sequence(ctx, node)?.recurrent.conv_mut(layer)?;
                let taps = shape.rows + 1;
                if shape.channels != x.desc.cols {
                    return Err(graph_err(
                        node,
                        format!("{} channels, state of {}", x.desc.cols, shape.channels),
                    ));
                }
                let k = vector(weights, kernel, taps * shape.channels)?;
                ssm_conv(x.data, shape.channels, k, state, out);
            }
            Op::LastRow { .. } => {
                let x = input(0)?;
                let c = x.desc.cols;
                let last = x.desc.rows.saturating_sub(1);
                out.copy_from_slice(&x.data[last * c..(last + 1) * c]);
            }
        }
        Ok(())
    }
}

/// ggml_compute_forward_ssm_conv_f32 for kernels shorter than 8 taps,
/// whose per-channel sum the compiler fuses: `sum = fma(w, k, sum)` from 0,
/// tap by tap; with 8 or more taps, whole groups of 8 are multiplied, then
/// added in order, and only the rest is fused. `state` holds the
/// `taps - 1` inputs before `x` (oldest first) and is left holding the last
/// `taps - 1` inputs of `[state; x]`.
fn ssm_conv(x: &[f32], channels: usize, kernel: &[f32], state: &mut [f32], out: &mut [f32]) {
    let taps = kernel.len() / channels.max(1);
    let kept = taps.saturating_sub(1);
    let unfused = taps / 8 * 8;
    let n = x.len() / channels.max(1);
    for (t, or) in out.chunks_exact_mut(channels).enumerate() {
        for (c, o) in or.iter_mut().enumerate() {
            let kc = &kernel[c * taps..(c + 1) * taps];
            let mut sum = 0f32;
            for (i, &w) in kc.iter().enumerate() {
                let r = t + i;
                let v = if r < kept {
                    state[r * channels + c]
                } else {
                    x[(r - kept) * channels + c]
                };
                sum = if i < unfused {
                    sum + v * w
                } else {
                    v.mul_add(w, sum)
                };
            }
            *o = sum;
        }
    }
    // The new window: rows n..n + kept of [state; x] (ascending, so rows
    // still to be read from `state` lie after the one being written).
    for r in 0..kept {
        let src = n + r;
        if src < kept {
            state.copy_within(src * channels..(src + 1) * channels, r * channels);
        } else {
            let from = (src - kept) * channels;
            state[r * channels..(r + 1) * channels].copy_from_slice(&x[from..from + channels]);
        }
    }
}

/// Rows `r0..r1` of a tensor of `cols` columns: one sequence's rows of a
/// batch (an error when the sequences claim more rows than there are).
fn seq_rows(x: &[f32], cols: usize, r0: usize, r1: usize) -> Result<&[f32], BackendError> {
    x.get(r0 * cols..r1 * cols).ok_or_else(|| {
        BackendError::Graph(format!(
            "the batch's sequences cover rows {r0}..{r1}, the tensor has {}",
            x.len().checked_div(cols).unwrap_or(0)
        ))
    })
}

/// The batch's only sequence, for ops that carry a recurrent state from
/// row to row (they do not batch sequences: `Op::batches_sequences`).
fn one_sequence<'c, 'a>(
    ctx: &'c mut ExecCtx<'a>,
    node: &Node,
) -> Result<&'c mut SeqRows<'a>, BackendError> {
    match &mut *ctx.seqs {
        [seq] => Ok(seq),
        seqs => Err(graph_err(
            node,
            format!("{} sequences in one batch for a recurrent op", seqs.len()),
        )),
    }
}

fn graph_err(node: &Node, what: impl std::fmt::Display) -> BackendError {
    BackendError::Graph(format!("{}: {what}", node.name))
}

/// ggml_compute_forward_soft_max_f32 on one row (no mask, scale 1): the
/// max, exp(x - max) with ggml's vector expf for whole 16-lane steps and
/// libm's expf for the rest, summed per step into f64, then scaled by the
/// f32 of 1/sum.
fn soft_max_row(x: &[f32], out: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    out.copy_from_slice(x);
    let mut sum = 0f64;
    let whole = out.len() / 16 * 16;
    for lanes in out[..whole].chunks_exact_mut(16) {
        kernels::exp_shift(lanes, max);
        sum += kernels::scalar::reduce_add_16(lanes) as f64;
    }
    for v in &mut out[whole..] {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    kernels::scale(out, (1.0 / sum) as f32);
}

/// build_moe_ffn's weights: gathered probabilities, over their clamped
/// f64 sum (ggml_sum_rows, ggml_clamp, ggml_div), then scaled.
fn moe_weights(
    probs: Input<'_>,
    ids: Input<'_>,
    norm: bool,
    scale: f32,
    out: &mut [f32],
) -> Result<(), String> {
    let (n_expert, k) = (probs.desc.cols, ids.desc.cols);
    if probs.desc.rows != ids.desc.rows || k == 0 {
        return Err("probabilities and selections differ in rows".into());
    }
    for ((pr, ir), or) in probs
        .data
        .chunks_exact(n_expert)
        .zip(ids.data.chunks_exact(k))
        .zip(out.chunks_exact_mut(k))
    {
        for (o, &id) in or.iter_mut().zip(ir) {
            *o = *pr
                .get(id as usize)
                .ok_or_else(|| format!("expert {id} of {n_expert}"))?;
        }
        if norm {
            let sum = or.iter().map(|&v| v as f64).sum::<f64>() as f32;
            // llama.cpp clamps at 6.103515625e-5 = 2^-14.
            let sum = sum.clamp(1.0 / 16384.0, f32::INFINITY);
            or.iter_mut().for_each(|v| *v /= sum);
        }
        if scale != 0.0 && scale != 1.0 {
            kernels::scale(or, scale);
        }
    }
    Ok(())
}

/// Below this many values an op runs on the calling thread: splitting it
/// would cost more than it saves.
const PAR_MIN_VALUES: usize = 16 * 1024;

/// Pieces of elementwise ops start at multiples of this many values: a
/// multiple of every kernel's vector width and of [`unary`]'s chunk, so
/// the vector tails stay where they are over the whole tensor (the last
/// `len % 16` values), and the results do not depend on the split.
const PIECE_UNIT: usize = 256;

/// Calls `f(at, piece)` over `out` cut into consecutive pieces (`at` is
/// a piece's offset, a multiple of [`PIECE_UNIT`]), in parallel when the
/// tensor has several rows and enough values; otherwise once, over all of
/// `out`, on this thread, so that a decode step (one row) pays no rayon
/// dispatch per op.
fn par_pieces(out: &mut [f32], rows: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    split_pieces(out, rows, PIECE_UNIT, f);
}

/// Calls `f(r, out_row)` for every row of `cols` values of `out`: rows
/// split across the rayon pool as in [`par_pieces`].
fn par_rows(out: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if cols == 0 {
        return;
    }
    let rows = out.len() / cols;
    split_pieces(out, rows, cols, |at, piece| {
        for (i, row) in piece.chunks_exact_mut(cols).enumerate() {
            f(at / cols + i, row);
        }
    });
}

/// [`par_pieces`] with pieces of whole multiples of `unit` values.
fn split_pieces(out: &mut [f32], rows: usize, unit: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let threads = rayon::current_num_threads();
    if rows < 2 || out.len() < PAR_MIN_VALUES || threads < 2 {
        f(0, out);
        return;
    }
    // A few pieces per thread, so that a busy thread's share is taken.
    let piece = out.len().div_ceil(threads * 4).next_multiple_of(unit);
    out.par_chunks_mut(piece)
        .enumerate()
        .for_each(|(i, o)| f(i * piece, o));
}

/// An elementwise function of a unary op, in place.
fn unary(f: UnaryFn, x: &mut [f32]) {
    match f {
        UnaryFn::GeluTanh => kernels::gelu_ggml(x),
        // ggml_vec_tanh_f32 calls tanhf per element, as f32::tanh does.
        UnaryFn::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
        // ggml's op_sigmoid: libm expf, one element at a time.
        UnaryFn::Sigmoid => x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        // ggml's op_softplus: libm's expf and logf.
        UnaryFn::Softplus => x
            .iter_mut()
            .for_each(|v| *v = if *v > 20.0 { *v } else { (1.0 + v.exp()).ln() }),
        // silu(x) * 1 is silu(x) exactly: the SwiGLU kernel rounds silu as
        // ggml_vec_silu_f32 does. Chunks of 256 (PIECE_UNIT) keep the
        // kernel's vector tail where it was (the last len % 16).
        UnaryFn::Silu => {
            const ONES: [f32; PIECE_UNIT] = [1.0; PIECE_UNIT];
            for chunk in x.chunks_mut(ONES.len()) {
                kernels::swiglu(chunk, &ONES[..chunk.len()]);
            }
        }
    }
}

/// Columns of an output of `len` values over `rows` rows.
fn node_cols(len: usize, rows: usize) -> usize {
    len.checked_div(rows).unwrap_or(0)
}

fn vector(weights: &Weights, w: WeightId, len: usize) -> Result<&[f32], BackendError> {
    match weights.f32(w) {
        Some(v) if v.len() >= len => Ok(&v[..len]),
        _ => Err(BackendError::Graph(format!(
            "{} is not an f32 vector of {len}",
            weights.get(w).name
        ))),
    }
}

fn get_rows(
    weights: &Weights,
    table: WeightId,
    tokens: &[u32],
    out: &mut [f32],
) -> Result<(), BackendError> {
    let w = weights.get(table);
    let bytes = weights.bytes(table);
    let row_bytes = w.ty.row_bytes(w.cols as u64).unwrap_or(0) as usize;
    for (&tok, o) in tokens.iter().zip(out.chunks_exact_mut(w.cols)) {
        if tok as usize >= w.rows {
            return Err(BackendError::TokenOutOfRange {
                token: tok,
                n_vocab: w.rows,
            });
        }
        let row = &bytes[tok as usize * row_bytes..(tok as usize + 1) * row_bytes];
        quant::dequantize_row(w.ty, row, o).map_err(|e| match e {
            quant::QuantError::UnsupportedType(_) => BackendError::UnsupportedType {
                tensor: w.name.clone(),
                ty: w.ty.name().to_string(),
            },
            other => BackendError::Graph(format!("{}: {other}", w.name)),
        })?;
    }
    Ok(())
}

/// ggml_rope_cache_init + rotation, for rows of `n_head * head_dim` values.
fn rope(
    x: &[f32],
    cols: usize,
    n_past: usize,
    p: &RopeParams,
    ff: Option<&[f32]>,
    out: &mut [f32],
) {
    let half = p.n_rot / 2;
    let theta_scale = p.freq_base.powf(-2.0 / p.n_rot as f32);
    par_rows(out, cols, |t, or| {
        let xr = &x[t * cols..][..cols];
        let mut cos = [0f32; MAX_HEAD_DIM / 2];
        let mut sin = [0f32; MAX_HEAD_DIM / 2];
        let mut theta = (n_past + t) as f32;
        for i in 0..half {
            let f = ff.map_or(1.0, |f| f[i]);
            let th = p.freq_scale * (theta / f);
            cos[i] = th.cos();
            sin[i] = th.sin();
            theta *= theta_scale;
        }
        for (xh, oh) in xr
            .chunks_exact(p.head_dim)
            .zip(or.chunks_exact_mut(p.head_dim))
        {
            oh.copy_from_slice(xh);
            match p.mode {
                RopeMode::Normal => kernels::rope_pairs(oh, &cos[..half], &sin[..half]),
                RopeMode::Neox => kernels::rope_neox(oh, &cos[..half], &sin[..half]),
            }
        }
    });
}

/// Converts one f32 row into a cache row of type `ty`.
fn to_cache_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), BackendError> {
    if !quant::traits(ty).is_some_and(|t| t.kv_cache) {
        return Err(BackendError::UnsupportedCacheType {
            ty: ty.name().to_string(),
        });
    }
    quant::quantize_row(ty, x, dst).map_err(|e| BackendError::Graph(format!("KV cache: {e}")))
}

fn store_kv(
    kv: &mut KvCache,
    layer: usize,
    n_past: usize,
    k: &[f32],
    v: &[f32],
) -> Result<(), BackendError> {
    let dim = kv.layer_kv_dim(layer);
    if dim == 0 || k.len() != v.len() || !k.len().is_multiple_of(dim) {
        return Err(BackendError::Graph(format!(
            "KV cache of layer {layer}: {} keys and {} values for rows of {dim}",
            k.len(),
            v.len()
        )));
    }
    let n = k.len() / dim;
    if n_past + n > kv.n_ctx {
        return Err(BackendError::ContextFull {
            n_ctx: kv.n_ctx,
            needed: n_past + n,
        });
    }
    let (tk, tv) = (kv.type_k, kv.type_v);
    for t in 0..n {
        let (kd, vd) = kv.rows_mut(layer, n_past + t);
        to_cache_row(tk, &k[t * dim..(t + 1) * dim], kd)?;
        to_cache_row(tv, &v[t * dim..(t + 1) * dim], vd)?;
    }
    Ok(())
}

/// Attention of every (token, head) over the cache, as ggml's
/// flash-attention CPU kernel: q rounded to the K vec-dot type, online
/// softmax in f32, V accumulated in f16 for an f16 cache.
fn attention(
    kv: &KvCache,
    p: &AttnParams,
    n_past: usize,
    q: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let group = p.n_head / p.n_head_kv.max(1);
    let n_kv = n_past + n_tokens;
    let k_all = kv.k_rows(p.layer, n_kv);
    let v_all = kv.v_rows(p.layer, n_kv);
    let (kr, vr) = (kv.k_row_bytes(p.layer), kv.v_row_bytes(p.layer));
    let kh = KvCache::head_bytes(kv.type_k, hd);
    let vh = KvCache::head_bytes(kv.type_v, hd);
    let (type_k, type_v) = (kv.type_k, kv.type_v);
    if n_tokens >= FLASH_ATTN_TILE && type_k == GgmlType::F16 && type_v == GgmlType::F16 {
        let n_kv_head = p.n_head / group.max(1);
        let k_row = |kvh: usize, j: usize| -> &[u16] {
            bytemuck::cast_slice(&k_all[j * kr + kvh * kh..][..kh])
        };
        let v_row = |kvh: usize, j: usize| -> &[u16] {
            bytemuck::cast_slice(&v_all[j * vr + kvh * vh..][..vh])
        };
        let wide = WideKv::new(n_kv_head, n_kv, hd, k_row, v_row);
        out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (t, h) = (i / p.n_head, i % p.n_head);
            let pos = n_past + t;
            let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let qh = &q[t * p.n_head * hd + h * hd..][..hd];
            wide.attend(h / group, qh, lo, pos, p.scale, o);
        });
        return;
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / p.n_head, i % p.n_head);
        let pos = n_past + t;
        let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let kvh = h / group;
        let qh = &q[t * p.n_head * hd + h * hd..][..hd];
        let k_at = |j: usize| &k_all[j * kr + kvh * kh..][..kh];
        let v_at = |j: usize| &v_all[j * vr + kvh * vh..][..vh];

        // q in the K vec-dot type.
        let mut q16 = [0u16; MAX_HEAD_DIM];
        let mut q8 = [BlockQ8_0 { d: 0, qs: [0; 32] }; MAX_HEAD_DIM / 32];
        if type_k == GgmlType::F16 {
            kernels::f32_to_f16_row(qh, &mut q16[..hd]);
        } else {
            kernels::quantize_row_q8_0(qh, &mut q8[..hd / 32]);
        }
        let dot = |k: &[u8]| -> f32 {
            match type_k {
                GgmlType::F16 => kernels::vec_dot_f16(bytemuck::cast_slice(k), &q16[..hd]),
                GgmlType::Q8_0 => as_blocks::<BlockQ8_0>(k)
                    .map_or(0.0, |kb| kernels::vec_dot_q8_0_q8_0(kb, &q8[..hd / 32])),
                _ => as_blocks::<BlockQ4_0>(k)
                    .map_or(0.0, |kb| kernels::vec_dot_q4_0_q8_0(kb, &q8[..hd / 32])),
            }
        };

        let mut s_sum = 0f32;
        let mut m = f32::NEG_INFINITY;
        if type_v == GgmlType::F16 {
            let mut acc = [0u16; MAX_HEAD_DIM];
            let acc = &mut acc[..hd];
            for j in lo..=pos {
                let s = dot(k_at(j)) * p.scale;
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if s > m {
                    let m_old = m;
                    m = s;
                    ms = (m_old - m).exp();
                    scale_f16_acc(acc, ms);
                } else {
                    vs = (s - m).exp();
                }
                let vrow: &[u16] = bytemuck::cast_slice(v_at(j));
                mad_f16_acc(acc, vrow, vs);
                s_sum = s_sum.mul_add(ms, vs); // GCC fuses ggml's `S = S*ms + vs`
            }
            kernels::f16_to_f32_row(acc, o);
        } else {
            let mut tmp = [0f32; MAX_HEAD_DIM];
            o.fill(0.0);
            for j in lo..=pos {
                let s = dot(k_at(j)) * p.scale;
                let (mut ms, mut vs) = (1.0f32, 1.0f32);
                if s > m {
                    let m_old = m;
                    m = s;
                    ms = (m_old - m).exp();
                    o.iter_mut().for_each(|a| *a *= ms);
                } else {
                    vs = (s - m).exp();
                }
                if quant::dequantize_row(type_v, v_at(j), &mut tmp[..hd]).is_ok() {
                    for (a, &vv) in o.iter_mut().zip(&tmp[..hd]) {
                        *a += vv * vs;
                    }
                }
                s_sum = s_sum.mul_add(ms, vs); // GCC fuses ggml's `S = S*ms + vs`
            }
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        o.iter_mut().for_each(|a| *a *= inv);
    });
}

/// Keys and values of every KV head widened from f16 to f32 once per batch
/// for ggml's tiled flash attention (prompt batches of 64 and more,
/// perplexity): keys transposed tile by tile (`[head][tile][dim][key]`) so
/// that q.k runs over a tile's 64 keys at once, values row by row
/// (`[head][key][dim]`).
struct WideKv {
    hd: usize,
    n_tiles: usize,
    n_kv: usize,
    keys_t: Vec<f32>,
    values: Vec<f32>,
}

impl WideKv {
    fn new<'a>(
        n_kv_head: usize,
        n_kv: usize,
        hd: usize,
        k_row: impl Fn(usize, usize) -> &'a [u16] + Sync,
        v_row: impl Fn(usize, usize) -> &'a [u16] + Sync,
    ) -> WideKv {
        let n_tiles = n_kv.div_ceil(FLASH_ATTN_TILE);
        let tile_len = hd * FLASH_ATTN_TILE;
        // Keys past the end of the last tile stay 0 (masked anyway).
        let mut keys_t = vec![0f32; n_kv_head * n_tiles * tile_len];
        keys_t
            .par_chunks_mut(tile_len)
            .enumerate()
            .for_each(|(i, kt)| {
                let (kvh, tile) = (i / n_tiles, i % n_tiles);
                let mut kf = [0f32; MAX_HEAD_DIM];
                for j in tile * FLASH_ATTN_TILE..((tile + 1) * FLASH_ATTN_TILE).min(n_kv) {
                    kernels::f16_to_f32_row(k_row(kvh, j), &mut kf[..hd]);
                    for (d, &v) in kf[..hd].iter().enumerate() {
                        kt[d * FLASH_ATTN_TILE + (j - tile * FLASH_ATTN_TILE)] = v;
                    }
                }
            });
        let mut values = vec![0f32; n_kv_head * n_kv * hd];
        values
            .par_chunks_mut(hd * FLASH_ATTN_TILE)
            .enumerate()
            .for_each(|(i, rows)| {
                let first = i * FLASH_ATTN_TILE;
                for (r, row) in rows.chunks_exact_mut(hd).enumerate() {
                    let at = first + r;
                    kernels::f16_to_f32_row(v_row(at / n_kv, at % n_kv), row);
                }
            });
        WideKv {
            hd,
            n_tiles,
            n_kv,
            keys_t,
            values,
        }
    }

    /// One query row, rounded as ggml rounds it: everything in f32; per
    /// 64-key tile, q.k as a chain of fused multiply-adds over the head
    /// dimension, softmax with ggml's vector expf summed per 16 lanes into
    /// f64, and V accumulated key by key, fused.
    fn attend(&self, kvh: usize, q: &[f32], lo: usize, pos: usize, scale: f32, out: &mut [f32]) {
        let hd = self.hd;
        let tile_len = hd * FLASH_ATTN_TILE;
        let keys_t = &self.keys_t[kvh * self.n_tiles * tile_len..][..self.n_tiles * tile_len];
        let values = &self.values[kvh * self.n_kv * hd..][..self.n_kv * hd];
        let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
        out.fill(0.0);
        let mut tile = (lo / FLASH_ATTN_TILE) * FLASH_ATTN_TILE;
        while tile <= pos {
            let (first, last) = (tile.max(lo), (tile + FLASH_ATTN_TILE - 1).min(pos));
            let mut kq = [0f32; FLASH_ATTN_TILE];
            kernels::fma_rows(
                q,
                &keys_t[(tile / FLASH_ATTN_TILE) * tile_len..][..tile_len],
                &mut kq,
            );
            let mut tile_max = f32::NEG_INFINITY;
            for (k, v) in kq.iter_mut().enumerate() {
                let j = tile + k;
                *v = if j < first || j > last {
                    f32::NEG_INFINITY
                } else {
                    *v * scale
                };
                tile_max = tile_max.max(*v);
            }
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                kernels::scale(out, ms);
                s_sum *= ms;
            }
            m = m_new;
            kernels::exp_shift(&mut kq, m);
            let tile_sum: f64 = kq
                .chunks_exact(16)
                .map(|l| kernels::scalar::reduce_add_16(l) as f64)
                .sum();
            s_sum = (s_sum as f64 + tile_sum) as f32;
            kernels::fma_rows(
                &kq[first - tile..=last - tile],
                &values[first * hd..(last + 1) * hd],
                out,
            );
            tile += FLASH_ATTN_TILE;
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        kernels::scale(out, inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short convolution by its definition over the zero-padded input.
    fn conv_reference(x: &[f32], channels: usize, kernel: &[f32]) -> Vec<f32> {
        let taps = kernel.len() / channels;
        let n = x.len() / channels;
        let mut out = vec![0f32; x.len()];
        for t in 0..n {
            for c in 0..channels {
                let mut sum = 0f32;
                for i in 0..taps {
                    let v = (t + i)
                        .checked_sub(taps - 1)
                        .map_or(0.0, |r| x[r * channels + c]);
                    sum = v.mul_add(kernel[c * taps + i], sum);
                }
                out[t * channels + c] = sum;
            }
        }
        out
    }

    #[test]
    fn ssm_conv_carries_its_window_across_batches() {
        let channels = 5;
        for taps in [2usize, 3, 4] {
            let kernel: Vec<f32> = (0..channels * taps)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let x: Vec<f32> = (0..7 * channels).map(|i| (i as f32 * 0.11).cos()).collect();
            let whole = conv_reference(&x, channels, &kernel);
            // Batches of 1, 2 and 4 tokens through one rolling window.
            let mut state = vec![0f32; (taps - 1) * channels];
            let mut got = Vec::new();
            let mut at = 0;
            for len in [1usize, 2, 4] {
                let xs = &x[at * channels..(at + len) * channels];
                let mut out = vec![0f32; xs.len()];
                ssm_conv(xs, channels, &kernel, &mut state, &mut out);
                got.extend(out);
                at += len;
            }
            assert_eq!(got, whole, "{taps} taps");
            // The window holds the last inputs, oldest first.
            assert_eq!(state, x[(7 - (taps - 1)) * channels..].to_vec());
        }
    }

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let mut o = [0f32; 4];
        kernels::rms_norm(&x, 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        for (a, b) in o.iter().zip(x) {
            assert!((a - b / rms).abs() < 1e-6);
        }
    }

    #[test]
    fn soft_max_row_matches_the_definition_with_and_without_whole_lanes() {
        for n in [8usize, 16, 21] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 5) as f32 * 0.7 - 1.3).collect();
            let mut o = vec![0f32; n];
            soft_max_row(&x, &mut o);
            let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
            for (&got, &v) in o.iter().zip(&x) {
                let want = (v as f64 - max).exp() / sum;
                assert!((got as f64 - want).abs() < 1e-6, "n {n}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn moe_weights_gather_and_normalize() {
        let probs = [0.1f32, 0.4, 0.2, 0.3];
        let ids = [1.0f32, 3.0];
        let desc = |rows, cols| crate::graph::TensorDesc {
            rows,
            cols,
            base: crate::graph::TensorId(0),
            slot: 0,
        };
        let p = Input {
            data: &probs,
            desc: desc(1, 4),
        };
        let i = Input {
            data: &ids,
            desc: desc(1, 2),
        };
        let mut o = [0f32; 2];
        moe_weights(p, i, false, 0.0, &mut o).unwrap();
        assert_eq!(o, [0.4, 0.3]);
        moe_weights(p, i, true, 2.0, &mut o).unwrap();
        assert!((o[0] - 2.0 * 0.4 / 0.7).abs() < 1e-6 && (o[1] - 2.0 * 0.3 / 0.7).abs() < 1e-6);
        let bad = [7.0f32, 0.0];
        let b = Input {
            data: &bad,
            desc: desc(1, 2),
        };
        assert!(moe_weights(p, b, true, 0.0, &mut o).is_err());
    }

    #[test]
    fn rope_position_zero_is_identity_and_preserves_norm() {
        let p = RopeParams {
            mode: RopeMode::Neox,
            n_rot: 8,
            head_dim: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
        };
        let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        let mut o = vec![0f32; 16];
        rope(&x, 8, 0, &p, None, &mut o);
        assert_eq!(&o[..8], &x[..8]); // token 0 at position 0, token 1 at 1
        let n0: f32 = x[8..].iter().map(|v| v * v).sum();
        let n1: f32 = o[8..].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-5);
        assert_ne!(&o[8..], &x[8..]);
    }
}
