//! The CPU backend: every op, computed as ggml-cpu computes it so results
//! match llama.cpp closely. Matmuls quantize the activations once into the
//! weight's vec-dot type, then split the weight rows across the rayon pool.

use std::sync::OnceLock;

use gguf::GgmlType;
use kernels::blocks::{
    as_blocks, as_blocks_mut, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use rayon::prelude::*;

use super::{Backend, ExecCtx, Input, Node, Weight, Weights};
use crate::graph::{AttnParams, GateAct, Op, RopeMode, RopeParams, WeightId};
use crate::model::kv::KvCache;
use crate::model::ModelError;

/// Largest head size the attention kernel's stack buffers hold.
pub const MAX_HEAD_DIM: usize = 512;

/// Token rows processed against one weight row before moving on (keeps the
/// weight row in L1 and the activation tile in L2).
const TOKEN_TILE: usize = 32;

/// Weight types the CPU matmul handles.
pub const MATMUL_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// The CPU backend (stateless: threads come from the rayon pool the
/// forward pass runs in).
#[derive(Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "CPU"
    }

    fn supports(&self, _op: &Op, _weights: &Weights) -> bool {
        true
    }

    fn prepare_weight(&mut self, _id: WeightId, _w: &Weight, _bytes: &[u8]) -> crate::Result<bool> {
        // Used in place from the mmap.
        Ok(true)
    }

    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        out: &mut [f32],
        ctx: &mut ExecCtx<'_>,
    ) -> crate::Result<()> {
        let input = |i: usize| -> Result<Input<'_>, ModelError> {
            inputs[i].ok_or_else(|| ModelError::Graph(format!("{}: missing input {i}", node.name)))
        };
        match node.op {
            Op::GetRows { table } => get_rows(ctx.weights, table, ctx.tokens, out)?,
            Op::RmsNorm { eps, .. } => {
                let x = input(0)?;
                for (xr, or) in x
                    .data
                    .chunks_exact(x.desc.cols)
                    .zip(out.chunks_exact_mut(x.desc.cols))
                {
                    rms_norm_row(xr, eps, or);
                }
            }
            Op::MulWeight { w, .. } => {
                let x = input(0)?;
                let wv = vector(ctx.weights, w, x.desc.cols)?;
                for (xr, or) in x
                    .data
                    .chunks_exact(x.desc.cols)
                    .zip(out.chunks_exact_mut(x.desc.cols))
                {
                    for ((o, &a), &b) in or.iter_mut().zip(xr).zip(wv) {
                        *o = a * b;
                    }
                }
            }
            Op::AddWeight { w, .. } => {
                let x = input(0)?;
                let wv = vector(ctx.weights, w, x.desc.cols)?;
                for (xr, or) in x
                    .data
                    .chunks_exact(x.desc.cols)
                    .zip(out.chunks_exact_mut(x.desc.cols))
                {
                    for ((o, &a), &b) in or.iter_mut().zip(xr).zip(wv) {
                        *o = a + b;
                    }
                }
            }
            Op::Add { .. } => {
                let (a, b) = (input(0)?, input(1)?);
                for ((o, &x), &y) in out.iter_mut().zip(a.data).zip(b.data) {
                    *o = x + y;
                }
            }
            Op::Scale { s, .. } => {
                let x = input(0)?;
                for (o, &v) in out.iter_mut().zip(x.data) {
                    *o = v * s;
                }
            }
            Op::MulMat { w, .. } => {
                let x = input(0)?;
                mul_mat(ctx.weights, w, x.data, x.desc.rows, out, ctx.scratch)?;
            }
            Op::Rope { p, .. } => {
                let x = input(0)?;
                let ff = match p.freq_factors {
                    Some(w) => Some(vector(ctx.weights, w, p.n_rot / 2)?),
                    None => None,
                };
                rope(x.data, x.desc.cols, ctx.n_past, &p, ff, out);
            }
            Op::StoreKv { layer, .. } => {
                let (k, v) = (input(0)?, input(1)?);
                store_kv(ctx.kv, layer, ctx.n_past, k.data, v.data)?;
            }
            Op::Attention { p, .. } => {
                let q = input(0)?;
                attention(ctx.kv, &p, ctx.n_past, q.data, q.desc.rows, out);
            }
            Op::Gated { act, .. } => {
                let (g, u) = (input(0)?, input(1)?);
                match act {
                    GateAct::Silu => {
                        for ((o, &a), &b) in out.iter_mut().zip(g.data).zip(u.data) {
                            *o = silu(a) * b;
                        }
                    }
                    GateAct::GeluTanh => {
                        let table = gelu_table();
                        for ((o, &a), &b) in out.iter_mut().zip(g.data).zip(u.data) {
                            *o = gelu_lookup(table, a) * b;
                        }
                    }
                }
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

fn vector(weights: &Weights, w: WeightId, len: usize) -> Result<&[f32], ModelError> {
    match weights.f32(w) {
        Some(v) if v.len() >= len => Ok(&v[..len]),
        _ => Err(ModelError::Graph(format!(
            "{} is not an f32 vector of {len}",
            weights.get(w).name
        ))),
    }
}

/// ggml_compute_forward_rms_norm_f32: sum of squares in f64, scale in f32.
pub fn rms_norm_row(x: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * scale;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// ggml's f16 GELU table: gelu-tanh of every f16 value, rounded to f16.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const GELU_COEF_A: f32 = 0.044715;
        (0..=u16::MAX)
            .map(|h| {
                let x = kernels::f16_to_f32(h);
                let g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
                kernels::f32_to_f16(g)
            })
            .collect()
    })
}

/// ggml_vec_geglu_f32 with GGML_GELU_FP16: input rounded to f16, table lookup.
fn gelu_lookup(table: &[u16], x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        kernels::f16_to_f32(table[kernels::f32_to_f16(x) as usize])
    }
}

fn get_rows(
    weights: &Weights,
    table: WeightId,
    tokens: &[u32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let w = weights.get(table);
    let bytes = weights.bytes(table);
    let row_bytes = w.ty.row_bytes(w.cols as u64).unwrap_or(0) as usize;
    for (&tok, o) in tokens.iter().zip(out.chunks_exact_mut(w.cols)) {
        if tok as usize >= w.rows {
            return Err(ModelError::TokenOutOfRange {
                token: tok,
                n_vocab: w.rows,
            });
        }
        let row = &bytes[tok as usize * row_bytes..(tok as usize + 1) * row_bytes];
        dequantize_row(w.ty, row, o).ok_or_else(|| ModelError::UnsupportedType {
            tensor: w.name.clone(),
            ty: w.ty.name().to_string(),
        })?;
    }
    Ok(())
}

/// Dequantizes one row of `ty` (None: type without kernel or bad length).
pub fn dequantize_row(ty: GgmlType, x: &[u8], y: &mut [f32]) -> Option<()> {
    macro_rules! blocks {
        ($bt:ty, $f:path) => {{
            let b = as_blocks::<$bt>(x)?;
            if b.len() * <$bt as Block>::ELEMENTS != y.len() {
                return None;
            }
            $f(b, y)
        }};
    }
    match ty {
        GgmlType::F32 => {
            if x.len() != y.len() * 4 {
                return None;
            }
            for (o, c) in y.iter_mut().zip(x.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            let h: &[u16] = bytemuck::try_cast_slice(x).ok()?;
            if h.len() != y.len() {
                return None;
            }
            if ty == GgmlType::F16 {
                kernels::f16_to_f32_row(h, y)
            } else {
                kernels::bf16_to_f32_row(h, y)
            }
        }
        GgmlType::Q4_0 => blocks!(BlockQ4_0, kernels::dequantize_row_q4_0),
        GgmlType::Q4_1 => blocks!(BlockQ4_1, kernels::dequantize_row_q4_1),
        GgmlType::Q5_0 => blocks!(BlockQ5_0, kernels::dequantize_row_q5_0),
        GgmlType::Q5_1 => blocks!(BlockQ5_1, kernels::dequantize_row_q5_1),
        GgmlType::Q8_0 => blocks!(BlockQ8_0, kernels::dequantize_row_q8_0),
        GgmlType::Q2_K => blocks!(BlockQ2K, kernels::dequantize_row_q2_k),
        GgmlType::Q3_K => blocks!(BlockQ3K, kernels::dequantize_row_q3_k),
        GgmlType::Q4_K => blocks!(BlockQ4K, kernels::dequantize_row_q4_k),
        GgmlType::Q5_K => blocks!(BlockQ5K, kernels::dequantize_row_q5_k),
        GgmlType::Q6_K => blocks!(BlockQ6K, kernels::dequantize_row_q6_k),
        _ => return None,
    }
    Some(())
}

/// ggml's quantize_row_q4_0_ref, for a Q4_0 KV cache.
fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        // The value of largest magnitude, with its sign.
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        yb.d = kernels::f32_to_f16(d);
        for j in 0..16 {
            let x0 = xb[j] * id;
            let x1 = xb[16 + j] * id;
            let q0 = ((x0 + 8.5) as i8).min(15) as u8;
            let q1 = ((x1 + 8.5) as i8).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
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
    let mut cos = [0f32; MAX_HEAD_DIM / 2];
    let mut sin = [0f32; MAX_HEAD_DIM / 2];
    for (t, (xr, or)) in x
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .enumerate()
    {
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
            match p.mode {
                RopeMode::Normal => {
                    for i in 0..half {
                        let (x0, x1) = (xh[2 * i], xh[2 * i + 1]);
                        oh[2 * i] = x0 * cos[i] - x1 * sin[i];
                        oh[2 * i + 1] = x0 * sin[i] + x1 * cos[i];
                    }
                }
                RopeMode::Neox => {
                    for i in 0..half {
                        let (x0, x1) = (xh[i], xh[i + half]);
                        oh[i] = x0 * cos[i] - x1 * sin[i];
                        oh[i + half] = x0 * sin[i] + x1 * cos[i];
                    }
                }
            }
            oh[p.n_rot..].copy_from_slice(&xh[p.n_rot..]);
        }
    }
}

/// Converts one f32 row into a cache row of type `ty`.
fn to_cache_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), ModelError> {
    match ty {
        GgmlType::F16 => {
            let d: &mut [u16] = bytemuck::cast_slice_mut(dst);
            kernels::f32_to_f16_row(x, d);
        }
        GgmlType::Q8_0 => {
            let d = as_blocks_mut::<BlockQ8_0>(dst).ok_or(ModelError::Misaligned("KV cache"))?;
            kernels::quantize_row_q8_0(x, d);
        }
        GgmlType::Q4_0 => {
            let d = as_blocks_mut::<BlockQ4_0>(dst).ok_or(ModelError::Misaligned("KV cache"))?;
            quantize_row_q4_0(x, d);
        }
        other => {
            return Err(ModelError::UnsupportedCacheType {
                ty: other.name().to_string(),
            })
        }
    }
    Ok(())
}

fn store_kv(
    kv: &mut KvCache,
    layer: usize,
    n_past: usize,
    k: &[f32],
    v: &[f32],
) -> Result<(), ModelError> {
    let dim = kv.kv_dim;
    let n = k.len() / dim;
    if n_past + n > kv.n_ctx {
        return Err(ModelError::ContextFull {
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
    let (kr, vr) = (kv.k_row_bytes(), kv.v_row_bytes());
    let kh = KvCache::head_bytes(kv.type_k, hd);
    let vh = KvCache::head_bytes(kv.type_v, hd);
    let (type_k, type_v) = (kv.type_k, kv.type_v);
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
                    for a in acc.iter_mut() {
                        *a = kernels::f32_to_f16(kernels::f16_to_f32(*a) * ms);
                    }
                } else {
                    vs = (s - m).exp();
                }
                let vrow: &[u16] = bytemuck::cast_slice(v_at(j));
                for (a, &vv) in acc.iter_mut().zip(vrow) {
                    *a =
                        kernels::f32_to_f16(kernels::f16_to_f32(*a) + kernels::f16_to_f32(vv) * vs);
                }
                s_sum = s_sum * ms + vs;
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
                if dequantize_row(type_v, v_at(j), &mut tmp[..hd]).is_some() {
                    for (a, &vv) in o.iter_mut().zip(&tmp[..hd]) {
                        *a += vv * vs;
                    }
                }
                s_sum = s_sum * ms + vs;
            }
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        o.iter_mut().for_each(|a| *a *= inv);
    });
}

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
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut super::Scratch,
) -> Result<(), ModelError> {
    let w = weights.get(wid);
    let wb = weights.bytes(wid);
    let k = w.cols;
    let misaligned = || ModelError::Misaligned("weight");
    macro_rules! quantized {
        ($wt:ty, $at:ty, $quant:path, $dot:path) => {{
            let wblocks = as_blocks::<$wt>(wb).ok_or_else(misaligned)?;
            let per_row = k / <$at as Block>::ELEMENTS;
            let abytes = n_tok * per_row * std::mem::size_of::<$at>();
            let act =
                as_blocks_mut::<$at>(act_bytes(&mut scratch.act, abytes)).ok_or_else(misaligned)?;
            quantize_rows(x, k, act, per_row, $quant);
            run_rows(
                wblocks,
                k / <$wt as Block>::ELEMENTS,
                act,
                per_row,
                n_tok,
                w.rows,
                out,
                &mut scratch.tmp,
                $dot,
            );
        }};
    }
    match w.ty {
        GgmlType::Q4_0 => quantized!(
            BlockQ4_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0,
            kernels::vec_dot_q4_0_q8_0
        ),
        GgmlType::Q4_1 => quantized!(
            BlockQ4_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1,
            kernels::vec_dot_q4_1_q8_1
        ),
        GgmlType::Q5_0 => quantized!(
            BlockQ5_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0,
            kernels::vec_dot_q5_0_q8_0
        ),
        GgmlType::Q5_1 => quantized!(
            BlockQ5_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1,
            kernels::vec_dot_q5_1_q8_1
        ),
        GgmlType::Q8_0 => quantized!(
            BlockQ8_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0,
            kernels::vec_dot_q8_0_q8_0
        ),
        GgmlType::Q2_K => quantized!(
            BlockQ2K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::vec_dot_q2_k_q8_k
        ),
        GgmlType::Q3_K => quantized!(
            BlockQ3K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::vec_dot_q3_k_q8_k
        ),
        GgmlType::Q4_K => quantized!(
            BlockQ4K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::vec_dot_q4_k_q8_k
        ),
        GgmlType::Q5_K => quantized!(
            BlockQ5K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::vec_dot_q5_k_q8_k
        ),
        GgmlType::Q6_K => quantized!(
            BlockQ6K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::vec_dot_q6_k_q8_k
        ),
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
                    k,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    kernels::vec_dot_f16,
                );
            } else {
                quantize_rows(x, k, act, k, kernels::f32_to_bf16_row);
                run_rows(
                    wv,
                    k,
                    act,
                    k,
                    n_tok,
                    w.rows,
                    out,
                    &mut scratch.tmp,
                    kernels::vec_dot_bf16,
                );
            }
        }
        GgmlType::F32 => {
            let wv: &[f32] = bytemuck::try_cast_slice(wb).map_err(|_| misaligned())?;
            run_rows(
                wv,
                k,
                x,
                k,
                n_tok,
                w.rows,
                out,
                &mut scratch.tmp,
                kernels::vec_dot_f32,
            );
        }
        other => {
            return Err(ModelError::UnsupportedType {
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
/// logits by a few hundredths.
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

/// The matmul driver: weight rows split across threads in chunks; for
/// batches each weight row meets a tile of token rows while it is in L1.
#[allow(clippy::too_many_arguments)]
fn run_rows<W: Sync, A: Sync>(
    w: &[W],
    w_per_row: usize,
    act: &[A],
    a_per_row: usize,
    n_tok: usize,
    n_out: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    dot: fn(&[W], &[A]) -> f32,
) {
    let n_threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance, large enough to amortise the dispatch.
    let chunk = (n_out / (n_threads * 8)).clamp(16, 256).min(n_out.max(1));
    let wrow = |r: usize| &w[r * w_per_row..(r + 1) * w_per_row];
    let arow = |t: usize| &act[t * a_per_row..(t + 1) * a_per_row];
    if n_tok == 1 {
        out[..n_out]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| {
                let r0 = c * chunk;
                let a = arow(0);
                for (i, v) in o.iter_mut().enumerate() {
                    *v = dot(wrow(r0 + i), a);
                }
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
            let r0 = c * chunk;
            let rows = o.len() / n_tok;
            let mut t0 = 0;
            while t0 < n_tok {
                let t1 = (t0 + TOKEN_TILE).min(n_tok);
                for i in 0..rows {
                    let wr = wrow(r0 + i);
                    for t in t0..t1 {
                        o[i * n_tok + t] = dot(wr, arow(t));
                    }
                }
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
    fn rms_norm_matches_definition() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let mut o = [0f32; 4];
        rms_norm_row(&x, 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        for (a, b) in o.iter().zip(x) {
            assert!((a - b / rms).abs() < 1e-6);
        }
    }

    #[test]
    fn gelu_table_is_close_to_formula() {
        let t = gelu_table();
        for &x in &[-3.0f32, -0.5, 0.0, 0.3, 1.0, 2.5] {
            let exact = 0.5 * x * (1.0 + (0.797_884_6 * x * (1.0 + 0.044715 * x * x)).tanh());
            assert!(
                (gelu_lookup(t, x) - exact).abs() < 2e-3 * (1.0 + exact.abs()),
                "{x}"
            );
        }
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
