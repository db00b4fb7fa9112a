//! Qwen3.5 (llama.cpp's `src/models/qwen35.cpp` and `delta-net-base.cpp`):
//! a hybrid of gated delta-net (linear attention) layers and gated full
//! attention layers (every `full_attention_interval`-th), each followed by
//! a SwiGLU feed-forward normed by `post_attention_norm`.
//!
//! The delta-net runs as llama.cpp's CPU backend runs it: the fused
//! GATED_DELTA_NET op for prompt batches and single tokens alike (its
//! chunked graph is for backends without that op).

use super::builders::{feed_forward, input_embeddings, output_head};
use super::hparams::HParams;
use super::weights::{Attention, DeltaNet, Mixer, ModelWeights, Qkv};
use super::{GraphOut, Model};
use crate::graph::{
    AttnParams, DeltaNetParams, GateAct, Graph, GraphBuilder, RopeParams, TensorId,
};

impl Model {
    /// Every layer: x += mixer(x); x += ffn(x). Then the output head.
    pub(super) fn build_qwen35(&self, n: usize, out: GraphOut) -> Graph {
        let (hp, w) = (&self.hparams, &self.w);
        let mut g = GraphBuilder::new(n);
        let mut x = input_embeddings(&mut g, hp, w);
        for (il, layer) in w.layers.iter().enumerate() {
            let mixed = match &layer.mixer {
                Mixer::DeltaNet(d) => delta_net(&mut g, hp, d, il, x),
                Mixer::Attention(a) => gated_attention(&mut g, hp, w, a, il, x),
                Mixer::ShortConv(s) => super::lfm2::shortconv(&mut g, hp, s, il, x),
            };
            x = g.add(mixed, x, &format!("attn_residual-{il}"));
            let d = feed_forward(&mut g, hp, &layer.ffn, il, x);
            x = g.add(d, x, &format!("post_ffn-{il}"));
        }
        let result = output_head(&mut g, hp, w, x, out);
        g.finish(result)
    }
}

/// RMS norm of every `head_dim` piece of each row, times `w` if given.
fn head_norm(
    g: &mut GraphBuilder,
    x: TensorId,
    head_dim: usize,
    eps: f32,
    w: Option<crate::graph::WeightId>,
    name: &str,
) -> TensorId {
    let (rows, cols) = g.shape(x);
    let r = g.reshape(x, rows * cols / head_dim, head_dim);
    let mut r = g.rms_norm(r, eps, name);
    if let Some(w) = w {
        r = g.mul_weight(r, w, &format!("{name}_w"));
    }
    g.reshape(r, rows, cols)
}

/// Full attention with an output gate (`build_layer_attn`): the query
/// projection yields, per head, the query then a gate; q and k are RMS
/// normed and roped (IMROPE, which for text positions is NEOX rope over
/// `n_rot` dimensions); the attention output is multiplied by
/// sigmoid(gate) before the output projection.
fn gated_attention(
    g: &mut GraphBuilder,
    hp: &HParams,
    w: &ModelWeights,
    a: &Attention,
    il: usize,
    x: TensorId,
) -> TensorId {
    let nm = |s: &str| format!("{s}-{il}");
    let n = g.n_tokens();
    let eps = hp.rms_eps;
    let (hd, n_head, n_head_kv) = (hp.head_dim, hp.n_head, hp.n_head_kv);
    let (q_dim, kv_dim) = (n_head * hd, n_head_kv * hd);
    let h = g.rms_norm(x, eps, &nm("norm"));
    let h = g.mul_weight(h, a.attn_norm, &nm("attn_norm"));
    let (q_full, k, v) = match a.qkv {
        Qkv::Split { wq, wk, wv } => (
            g.mul_mat(wq, 2 * q_dim, h, &nm("Qcur_full")),
            g.mul_mat(wk, kv_dim, h, &nm("Kcur")),
            g.mul_mat(wv, kv_dim, h, &nm("Vcur")),
        ),
        Qkv::Fused(wqkv) => {
            let qkv = g.mul_mat(wqkv, 2 * q_dim + 2 * kv_dim, h, &nm("wqkv"));
            (
                g.cols(qkv, 0, 2 * q_dim, &nm("Qcur_full")),
                g.cols(qkv, 2 * q_dim, kv_dim, &nm("Kcur")),
                g.cols(qkv, 2 * q_dim + kv_dim, kv_dim, &nm("Vcur")),
            )
        }
    };
    let per_head = g.reshape(q_full, n * n_head, 2 * hd);
    let q = g.cols(per_head, 0, hd, &nm("Qcur"));
    let gate = g.cols(per_head, hd, hd, &nm("gate"));
    let gate = g.reshape(gate, n, q_dim);
    let q = head_norm(g, q, hd, eps, a.q_norm, &nm("Qcur_normed"));
    let q = g.reshape(q, n, q_dim);
    let k = head_norm(g, k, hd, eps, a.k_norm, &nm("Kcur_normed"));
    let rope = RopeParams {
        mode: hp.rope_mode,
        n_rot: hp.n_rot,
        head_dim: hd,
        freq_base: hp.rope_freq_base,
        freq_scale: hp.rope_freq_scale,
        freq_factors: w.rope_freqs,
    };
    let q = g.rope(q, rope, &nm("Qcur_rope"));
    let k = g.rope(k, rope, &nm("Kcur_rope"));
    g.store_kv(il, k, v, &nm("kv_store"));
    let attn = AttnParams {
        layer: il,
        n_head,
        n_head_kv,
        head_dim: hd,
        scale: hp.attn_scale,
        window: None,
    };
    let att = g.attention(q, attn, &nm("attn_pregate"));
    let gate = g.sigmoid(gate, &nm("gate_sigmoid"));
    let att = g.mul(att, gate, &nm("attn_gated"));
    g.mul_mat(a.wo, hp.n_embd, att, &nm("attn_output"))
}

/// A gated delta-net layer (`build_layer_attn_linear`): q, k, v through
/// the causal convolution and SiLU, q and k l2-normed per head (as
/// llama.cpp's `build_gdn_l2_norm`: RMS norm with eps / d, times
/// 1 / sqrt(d)); g = softplus(alpha + dt_bias) * a, beta = sigmoid(beta);
/// the delta rule; each head's output RMS normed and gated by silu(z).
pub(super) fn delta_net(
    g: &mut GraphBuilder,
    hp: &HParams,
    d: &DeltaNet,
    il: usize,
    x: TensorId,
) -> TensorId {
    let nm = |s: &str| format!("{s}-{il}");
    let dn = d.shape;
    let eps = hp.rms_eps;
    let (kd, vd, hv) = (dn.key_dim(), dn.value_dim(), dn.n_v_heads);
    let h = g.rms_norm(x, eps, &nm("norm"));
    let h = g.mul_weight(h, d.attn_norm, &nm("attn_norm"));
    let qkv_mixed = g.mul_mat(d.wqkv, dn.conv_dim(), h, &nm("linear_attn_qkv_mixed"));
    let z = g.mul_mat(d.wgate, vd, h, &nm("z"));
    let beta = g.mul_mat(d.w_beta, hv, h, &nm("beta"));
    let beta = g.sigmoid(beta, &nm("beta_sigmoid"));
    let alpha = g.mul_mat(d.w_alpha, hv, h, &nm("alpha"));
    let alpha = g.add_weight(alpha, d.dt_bias, &nm("alpha_biased"));
    let alpha = g.softplus(alpha, &nm("a_softplus"));
    let gate = g.mul_weight(alpha, d.ssm_a, &nm("gate"));

    let conv = g.ssm_conv(qkv_mixed, d.conv, il, &nm("conv_output_raw"));
    let conv = g.silu(conv, &nm("conv_output_silu"));
    let l2 = |g: &mut GraphBuilder, t: TensorId, name: &str| {
        let sd = dn.head_dim as f32;
        let r = head_norm(g, t, dn.head_dim, eps / sd, None, name);
        g.scale(r, 1.0 / sd.sqrt(), &format!("{name}_scaled"))
    };
    let q = g.cols(conv, 0, kd, &nm("q_conv"));
    let q = l2(g, q, &nm("q_conv_l2"));
    let k = g.cols(conv, kd, kd, &nm("k_conv"));
    let k = l2(g, k, &nm("k_conv_l2"));
    let v = g.cols(conv, 2 * kd, vd, &nm("v_conv"));
    let qk = g.concat(q, k, &nm("qk"));
    let qkv = g.concat(qk, v, &nm("qkv_predelta"));
    let gb = g.concat(gate, beta, &nm("gate_beta"));
    let p = DeltaNetParams {
        layer: il,
        n_k_heads: dn.n_k_heads,
        n_v_heads: hv,
        head_dim: dn.head_dim,
    };
    let o = g.gated_delta_net(qkv, gb, p, &nm("attn_output"));
    let o = head_norm(
        g,
        o,
        dn.head_dim,
        eps,
        Some(d.ssm_norm),
        &nm("attn_out_norm"),
    );
    let y = g.gated(z, o, GateAct::Silu, &nm("final_output"));
    g.mul_mat(d.ssm_out, hp.n_embd, y, &nm("linear_attn_out"))
}
