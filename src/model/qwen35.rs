//! Qwen3.5's gated delta-net layers (llama.cpp's `src/models/qwen35.cpp`
//! and `delta-net-base.cpp`). The model is a hybrid run by
//! [`Model::build_transformer`](super::Model): these layers, and gated full
//! attention layers (every `full_attention_interval`-th; the shared
//! attention builder with `q_gate`), each followed by a SwiGLU feed-forward
//! normed by `post_attention_norm`.
//!
//! The delta-net runs as llama.cpp's CPU backend runs it: the fused
//! GATED_DELTA_NET op for prompt batches and single tokens alike (its
//! chunked graph is for backends without that op).

use super::hparams::HParams;
use super::weights::DeltaNet;
use crate::graph::{DeltaNetParams, GateAct, GraphBuilder, TensorId, WeightId};

/// RMS norm of every `head_dim` piece of each row, times `w` if given.
fn head_norm(
    g: &mut GraphBuilder,
    x: TensorId,
    head_dim: usize,
    eps: f32,
    w: Option<WeightId>,
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
