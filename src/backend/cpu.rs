//! The CPU backend: every op, computed as ggml-cpu computes it so results
//! match llama.cpp closely. Matmuls quantize the activations once into the
//! weight's vec-dot type, then split the weight rows across the rayon pool.

use std::sync::OnceLock;

use gguf::GgmlType;
use kernels::blocks::{
    as_blocks, as_blocks_mut, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_0x8,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use rayon::prelude::*;

use super::kv::KvCache;
use super::BackendError;
use super::{Backend, ExecCtx, Input, Node, Weight, Weights};
use crate::graph::{AttnParams, GateAct, Op, RopeMode, RopeParams, WeightId};

pub use super::cpu_matmul::{mul_mat, quantize_row_q8_0_x86, quantize_row_q8_1_x86};

/// Largest head size the attention kernel's stack buffers hold.
pub const MAX_HEAD_DIM: usize = 512;

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
pub struct CpuBackend {
    /// Q4_0 matrices interleaved by eight rows at load (by weight id), as
    /// llama.cpp repacks them: the fast layout for this CPU's kernels.
    q4_0x8: Vec<Option<Vec<BlockQ4_0x8>>>,
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend::default()
    }

    /// The interleaved form of weight `id`, when it was made at load.
    pub fn interleaved(&self, id: WeightId) -> Option<&[BlockQ4_0x8]> {
        self.q4_0x8.get(id.0 as usize)?.as_deref()
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "CPU"
    }

    fn supports(&self, _op: &Op, _weights: &Weights) -> bool {
        true
    }

    fn prepare_weight(&mut self, id: WeightId, w: &Weight, bytes: &[u8]) -> super::Result<bool> {
        // Used in place from the mmap, but Q4_0 matrices of whole 8-row
        // groups, which are interleaved once when the kernels gain by it.
        if w.ty == GgmlType::Q4_0
            && w.rows.is_multiple_of(8)
            && w.cols.is_multiple_of(32)
            && kernels::interleaved_q4_0_pays()
        {
            if let Some(rows) = as_blocks::<BlockQ4_0>(bytes) {
                let nb = w.cols / 32;
                if rows.len() == w.rows * nb {
                    let mut packed = vec![BlockQ4_0x8::default(); rows.len() / 8];
                    kernels::repack_q4_0x8(rows, nb, &mut packed);
                    let at = id.0 as usize;
                    if self.q4_0x8.len() <= at {
                        self.q4_0x8.resize(at + 1, None);
                    }
                    self.q4_0x8[at] = Some(packed);
                }
            }
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
                let packed = self.interleaved(w);
                mul_mat(
                    ctx.weights,
                    w,
                    packed,
                    x.data,
                    x.desc.rows,
                    out,
                    ctx.scratch,
                )?;
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
                        // ggml_vec_swiglu_f32's rounding (its vector expf).
                        out.copy_from_slice(g.data);
                        kernels::swiglu(out, u.data);
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

fn vector(weights: &Weights, w: WeightId, len: usize) -> Result<&[f32], BackendError> {
    match weights.f32(w) {
        Some(v) if v.len() >= len => Ok(&v[..len]),
        _ => Err(BackendError::Graph(format!(
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

/// ggml's f16 GELU table: gelu-tanh of every f16 value, rounded to f16.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const GELU_COEF_A: f32 = 0.044715;
        (0..=u16::MAX)
            .map(|h| {
                let x = kernels::f16_to_f32(h);
                // GCC fuses ggml's `1.0f + GELU_COEF_A*x*x` into one fma.
                let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
                let g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh());
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
        dequantize_row(w.ty, row, o).ok_or_else(|| BackendError::UnsupportedType {
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
            oh.copy_from_slice(xh);
            match p.mode {
                RopeMode::Normal => kernels::rope_pairs(oh, &cos[..half], &sin[..half]),
                RopeMode::Neox => kernels::rope_neox(oh, &cos[..half], &sin[..half]),
            }
        }
    }
}

/// Converts one f32 row into a cache row of type `ty`.
fn to_cache_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), BackendError> {
    match ty {
        GgmlType::F16 => {
            let d: &mut [u16] = bytemuck::cast_slice_mut(dst);
            kernels::f32_to_f16_row(x, d);
        }
        GgmlType::Q8_0 => {
            let d = as_blocks_mut::<BlockQ8_0>(dst).ok_or(BackendError::Misaligned("KV cache"))?;
            kernels::quantize_row_q8_0(x, d);
        }
        GgmlType::Q4_0 => {
            let d = as_blocks_mut::<BlockQ4_0>(dst).ok_or(BackendError::Misaligned("KV cache"))?;
            quantize_row_q4_0(x, d);
        }
        other => {
            return Err(BackendError::UnsupportedCacheType {
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
) -> Result<(), BackendError> {
    let dim = kv.kv_dim;
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
    let (kr, vr) = (kv.k_row_bytes(), kv.v_row_bytes());
    let kh = KvCache::head_bytes(kv.type_k, hd);
    let vh = KvCache::head_bytes(kv.type_v, hd);
    let (type_k, type_v) = (kv.type_k, kv.type_v);
    if n_tokens >= FA_TILE && type_k == GgmlType::F16 && type_v == GgmlType::F16 {
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
                if dequantize_row(type_v, v_at(j), &mut tmp[..hd]).is_some() {
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

/// Query rows from which ggml switches to its tiled flash-attention kernel
/// (GGML_FA_TILE_Q); it also walks the keys in tiles of this many.
const FA_TILE: usize = 64;

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
        let n_tiles = n_kv.div_ceil(FA_TILE);
        let tile_len = hd * FA_TILE;
        // Keys past the end of the last tile stay 0 (masked anyway).
        let mut keys_t = vec![0f32; n_kv_head * n_tiles * tile_len];
        keys_t
            .par_chunks_mut(tile_len)
            .enumerate()
            .for_each(|(i, kt)| {
                let (kvh, tile) = (i / n_tiles, i % n_tiles);
                let mut kf = [0f32; MAX_HEAD_DIM];
                for j in tile * FA_TILE..((tile + 1) * FA_TILE).min(n_kv) {
                    kernels::f16_to_f32_row(k_row(kvh, j), &mut kf[..hd]);
                    for (d, &v) in kf[..hd].iter().enumerate() {
                        kt[d * FA_TILE + (j - tile * FA_TILE)] = v;
                    }
                }
            });
        let mut values = vec![0f32; n_kv_head * n_kv * hd];
        values
            .par_chunks_mut(hd * FA_TILE)
            .enumerate()
            .for_each(|(i, rows)| {
                let first = i * FA_TILE;
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
        let tile_len = hd * FA_TILE;
        let keys_t = &self.keys_t[kvh * self.n_tiles * tile_len..][..self.n_tiles * tile_len];
        let values = &self.values[kvh * self.n_kv * hd..][..self.n_kv * hd];
        let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
        out.fill(0.0);
        let mut tile = (lo / FA_TILE) * FA_TILE;
        while tile <= pos {
            let (first, last) = (tile.max(lo), (tile + FA_TILE - 1).min(pos));
            let mut kq = [0f32; FA_TILE];
            kernels::fma_rows(
                q,
                &keys_t[(tile / FA_TILE) * tile_len..][..tile_len],
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
            tile += FA_TILE;
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        kernels::scale(out, inv);
    }
}

/// Elements of the f16 accumulator that llama.cpp's reference build (x86
/// with AVX512-FP16) updates with native f16 arithmetic: whole 128-element
/// steps; the rest goes through f32 as on any other x86 CPU.
/// `RKINFER_F16_NATIVE=0` rounds as builds without AVX512-FP16 instead.
fn f16_native_len(n: usize) -> usize {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var_os("RKINFER_F16_NATIVE").is_none_or(|v| v != "0"));
    if on {
        n - n % 128
    } else {
        0
    }
}

/// ggml_vec_scale_f16: y *= v.
fn scale_f16_acc(y: &mut [u16], v: f32) {
    let n = f16_native_len(y.len());
    let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
    let mut wide = [0f32; 128];
    for a in y[..n].chunks_exact_mut(128) {
        // f16 x f16 is exact in f32, so this rounds once, as vmulph does.
        kernels::f16_to_f32_row(a, &mut wide);
        kernels::scale(&mut wide, v16);
        kernels::f32_to_f16_row(&wide, a);
    }
    kernels::vec_scale_f16(&mut y[n..], v);
}

/// x * v + y rounded to odd in f32, for f16 values x, v, y: the product is
/// exact in f32 (11 x 11 significant bits) and TwoSum gives the sum's exact
/// error; rounding this to f16 equals rounding the exact sum once, as
/// AVX512-FP16's `vfmadd*ph` does. Branch-free so that loops vectorize.
#[inline(always)]
fn fma_odd_f32(x: f32, v: f32, y: f32) -> f32 {
    let p = x * v;
    let s = p + y;
    let p_part = s - y;
    let y_part = s - p_part;
    let err = (p - p_part) + (y - y_part);
    let bits = s.to_bits();
    // |s| overshooting the exact sum steps back toward zero, then the
    // sticky bit marks the result inexact.
    let overshoot = ((err < 0.0) != (s < 0.0)) as u32;
    let odd = (bits - overshoot) | 1;
    f32::from_bits(if err == 0.0 { bits } else { odd })
}

/// ggml_vec_mad_f16: y += x * v.
fn mad_f16_acc(y: &mut [u16], x: &[u16], v: f32) {
    let n = f16_native_len(y.len());
    let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
    let (mut xs, mut ys) = ([0f32; 128], [0f32; 128]);
    for (a, b) in y[..n].chunks_exact_mut(128).zip(x[..n].chunks_exact(128)) {
        kernels::f16_to_f32_row(b, &mut xs);
        kernels::f16_to_f32_row(a, &mut ys);
        for (yv, &xv) in ys.iter_mut().zip(&xs) {
            *yv = fma_odd_f32(xv, v16, *yv);
        }
        kernels::f32_to_f16_row(&ys, a);
    }
    kernels::vec_mad_f16(&mut y[n..], &x[n..], v);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds to the nearest f16, ties to even, in one step (going through f32
    /// would round twice).
    fn f64_to_f16(v: f64) -> u16 {
        let sign = if v.is_sign_negative() { 0x8000u16 } else { 0 };
        let a = v.abs();
        if a.is_nan() {
            return 0x7e00;
        }
        let round_even = |r: f64| {
            let f = r.floor();
            let d = r - f;
            if d > 0.5 || (d == 0.5 && f % 2.0 != 0.0) {
                f + 1.0
            } else {
                f
            }
        };
        const MIN_NORMAL: f64 = 1.0 / 16384.0; // 2^-14
        let bits = if a < MIN_NORMAL {
            // Subnormal: multiples of 2^-24 (1024 carries into the normals).
            round_even(a * 16_777_216.0) as u16
        } else {
            let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
            let mant = a / 2f64.powi(e);
            let mut q = round_even((mant - 1.0) * 1024.0) as u32;
            let mut e = e;
            if q == 1024 {
                q = 0;
                e += 1;
            }
            if e + 15 >= 31 {
                0x7c00
            } else {
                (((e + 15) as u32) << 10 | q) as u16
            }
        };
        sign | bits
    }

    /// f16(x * v + y) with a single rounding, as `vfmadd*ph` computes it, for
    /// f16 values x, v, y: the product is exact in f32 (11 x 11 significant
    /// bits); the sum is rounded to odd in f32, using its exact error (TwoSum),
    /// and rounding that to f16 then equals rounding the exact sum once.
    fn fma_f16_once(x: f32, v: f32, y: f32) -> u16 {
        kernels::f32_to_f16(fma_odd_f32(x, v, y))
    }

    /// The f16 accumulator update on 128-element steps is the scalar single
    /// rounding, element by element.
    #[test]
    fn mad_f16_acc_rounds_each_element_once() {
        let n = 256;
        let x: Vec<u16> = (0..n)
            .map(|i| kernels::f32_to_f16((i as f32 * 0.731).sin() * 3.0))
            .collect();
        let mut y: Vec<u16> = (0..n)
            .map(|i| kernels::f32_to_f16((i as f32 * 0.219).cos() * 0.01))
            .collect();
        let v = 0.123_456_7f32;
        let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
        let want: Vec<u16> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| fma_f16_once(kernels::f16_to_f32(a), v16, kernels::f16_to_f32(b)))
            .collect();
        if f16_native_len(n) == n {
            mad_f16_acc(&mut y, &x, v);
            assert_eq!(y, want);
        }
    }

    /// The fast single rounding against the f64 one on f16 triples of
    /// every magnitude, ties included.
    #[test]
    fn fma_f16_once_rounds_like_f64() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let finite = |h: u16| h & 0x7c00 != 0x7c00;
        let mut checked = 0;
        while checked < 200_000 {
            let r = next();
            let (x, v, y) = (r as u16, (r >> 16) as u16, (r >> 32) as u16);
            if !(finite(x) && finite(v) && finite(y)) {
                continue;
            }
            let (xf, vf, yf) = (
                kernels::f16_to_f32(x),
                kernels::f16_to_f32(v),
                kernels::f16_to_f32(y),
            );
            let exact = xf as f64 * vf as f64 + yf as f64;
            let want = f64_to_f16(exact);
            let got = fma_f16_once(xf, vf, yf);
            // -0 and +0 both stand for an exact zero sum.
            if want & 0x7fff != 0 || got & 0x7fff != 0 {
                assert_eq!(got, want, "{x:#x} * {v:#x} + {y:#x}");
            }
            checked += 1;
        }
        // A tie in f16 reached only through the low product bits.
        let (xf, vf) = (kernels::f16_to_f32(0x3c01), kernels::f16_to_f32(0x3c01));
        let exact = xf as f64 * vf as f64;
        assert_eq!(fma_f16_once(xf, vf, 0.0), f64_to_f16(exact));
    }

    #[test]
    fn f64_to_f16_rounds_once_to_nearest_even() {
        for h in (0u16..0x7c00).step_by(7) {
            let x = kernels::f16_to_f32(h) as f64;
            assert_eq!(f64_to_f16(x), h);
            assert_eq!(f64_to_f16(-x), h | 0x8000);
            let next = kernels::f16_to_f32(h + 1) as f64;
            let mid = (x + next) / 2.0;
            let even = if h % 2 == 0 { h } else { h + 1 };
            assert_eq!(f64_to_f16(mid), even, "tie above {h:#x}");
            assert_eq!(f64_to_f16(mid - (next - x) * 1e-6), h);
            assert_eq!(f64_to_f16(mid + (next - x) * 1e-6), h + 1);
        }
        assert_eq!(f64_to_f16(65520.0), 0x7c00);
        assert_eq!(f64_to_f16(65519.0), 0x7bff);
    }

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
