//! The pieces every architecture is assembled from, as llama.cpp's
//! `llm_graph_context::build_*`: input embeddings, a self-attention block,
//! a feed-forward block (dense or experts) and the output head. Each
//! architecture's file (`transformer.rs`, ...) strings them together.

use super::hparams::{HParams, MoeGating, MoeParams};
use super::weights::{Attention, Ffn, FfnBlock, GateUp, ModelWeights, Qkv};
use super::GraphOut;
use crate::graph::{AttnParams, GateAct, GraphBuilder, RopeParams, TensorId, UnaryFn, WeightId};

/// Token embeddings, scaled where the architecture says so.
pub(super) fn input_embeddings(g: &mut GraphBuilder, hp: &HParams, w: &ModelWeights) -> TensorId {
    let x = g.get_rows(w.tok_embd, hp.n_embd, "inp_embd");
    match hp.embd_scale {
        Some(s) => g.scale(x, s, "inp_scaled"),
        None => x,
    }
}

/// Self-attention of layer `il` over the normed input `x`: the block's
/// output, before the residual sum (post-norm and residual scale applied).
pub(super) fn attention(
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
    let (hd, n_head, n_head_kv) = (hp.layer_head_dim(il), hp.n_head, hp.n_head_kv_layers[il]);
    let (q_dim, kv_dim) = (n_head * hd, n_head_kv * hd);
    let swa = hp.swa_layers[il];

    let h = g.rms_norm(x, eps, &nm("norm"));
    let h = g.mul_weight(h, a.attn_norm, &nm("attn_norm"));
    // With an output gate the query projection is twice as wide.
    let q_rows = if a.q_gate { 2 * q_dim } else { q_dim };
    // k and v are None for a layer reading an earlier layer's cache.
    let (mut q, mut k, mut v) = match a.qkv {
        Qkv::Split { wq, wk, wv } => (
            g.mul_mat(wq, q_rows, h, &nm("Qcur")),
            Some(g.mul_mat(wk, kv_dim, h, &nm("Kcur"))),
            Some(g.mul_mat(wv, kv_dim, h, &nm("Vcur"))),
        ),
        Qkv::Fused(w) => {
            let qkv = g.mul_mat(w, q_rows + 2 * kv_dim, h, &nm("wqkv"));
            (
                g.cols(qkv, 0, q_rows, &nm("Qcur")),
                Some(g.cols(qkv, q_rows, kv_dim, &nm("Kcur"))),
                Some(g.cols(qkv, q_rows + kv_dim, kv_dim, &nm("Vcur"))),
            )
        }
        Qkv::KeyAsValue { wq, wk } => {
            let k = g.mul_mat(wk, kv_dim, h, &nm("Kcur"));
            (g.mul_mat(wq, q_dim, h, &nm("Qcur")), Some(k), Some(k))
        }
        Qkv::QueryOnly { wq } => (g.mul_mat(wq, q_dim, h, &nm("Qcur")), None, None),
    };
    // qwen35: per head, the query then its gate.
    let gate = if a.q_gate {
        let per_head = g.reshape(q, n * n_head, 2 * hd);
        let gate = g.cols(per_head, hd, hd, &nm("gate"));
        q = g.cols(per_head, 0, hd, &nm("Qcur_ungated"));
        q = g.reshape(q, n, q_dim);
        Some(g.reshape(gate, n, q_dim))
    } else {
        None
    };
    if let Some(b) = a.bq {
        q = g.add_weight(q, b, &nm("Qcur_b"));
    }
    if let (Some(b), Some(kc)) = (a.bk, k) {
        k = Some(g.add_weight(kc, b, &nm("Kcur_b")));
    }
    if let (Some(b), Some(vc)) = (a.bv, v) {
        v = Some(g.add_weight(vc, b, &nm("Vcur_b")));
    }
    if let Some(qn) = a.q_norm {
        let r = g.reshape(q, n * n_head, hd);
        let r = g.rms_norm(r, eps, &nm("Qcur_norm"));
        let r = g.mul_weight(r, qn, &nm("Qcur_normed"));
        q = g.reshape(r, n, n_head * hd);
    }
    if let (Some(kn), Some(kc)) = (a.k_norm, k) {
        let r = g.reshape(kc, n * n_head_kv, hd);
        let r = g.rms_norm(r, eps, &nm("Kcur_norm"));
        let r = g.mul_weight(r, kn, &nm("Kcur_normed"));
        k = Some(g.reshape(r, n, n_head_kv * hd));
    }
    if let (true, Some(vc)) = (hp.v_norm, v) {
        // gemma4: V RMS-normed per head, without a weight.
        let r = g.reshape(vc, n * n_head_kv, hd);
        let r = g.rms_norm(r, eps, &nm("Vcur_normed"));
        v = Some(g.reshape(r, n, n_head_kv * hd));
    }
    let rope = RopeParams {
        mode: hp.rope_mode,
        n_rot: hp.layer_n_rot(il),
        head_dim: hd,
        freq_base: if swa {
            hp.rope_freq_base_swa
        } else {
            hp.rope_freq_base
        },
        freq_scale: hp.rope_freq_scale,
        freq_factors: if swa && hp.rope_freqs_full_only {
            None
        } else {
            w.rope_freqs
        },
    };
    if hp.rope_layers[il] {
        q = g.rope(q, rope, &nm("Qcur_rope"));
        if let Some(kc) = k {
            k = Some(g.rope(kc, rope, &nm("Kcur_rope")));
        }
    }
    let kq_scale = if hp.scale_q {
        q = g.scale(q, hp.attn_scale, &nm("Qcur_scaled"));
        1.0
    } else {
        hp.attn_scale
    };
    if let (Some(k), Some(v)) = (k, v) {
        g.store_kv(il, k, v, &nm("kv_store"));
    }
    let attn = AttnParams {
        layer: hp.kv_source_layer(il),
        n_head,
        n_head_kv,
        head_dim: hd,
        scale: kq_scale,
        window: if swa { hp.sliding_window } else { None },
    };
    let mut att = g.attention(q, attn, &nm("kqv"));
    if let Some(gate) = gate {
        let gate = g.sigmoid(gate, &nm("gate_sigmoid"));
        att = g.mul(att, gate, &nm("attn_gated"));
    }
    let mut o = g.mul_mat(a.wo, hp.n_embd, att, &nm("attn_out"));
    if let Some(pn) = a.attn_post_norm {
        let r = g.rms_norm(o, eps, &nm("attn_post_norm"));
        o = g.mul_weight(r, pn, &nm("attn_post_normed"));
    }
    if let Some(s) = hp.residual_scale {
        o = g.scale(o, s, &nm("attn_out_scaled"));
    }
    o
}

/// The feed-forward block of layer `il` over `x`: its output, before the
/// residual sum (post-norm and residual scale applied).
pub(super) fn feed_forward(
    g: &mut GraphBuilder,
    hp: &HParams,
    f: &FfnBlock,
    il: usize,
    x: TensorId,
) -> TensorId {
    let nm = |s: &str| format!("{s}-{il}");
    let eps = hp.rms_eps;
    let h = g.rms_norm(x, eps, &nm("norm"));
    let h = g.mul_weight(h, f.ffn_norm, &nm("ffn_norm"));
    let mut d = match &f.ffn {
        Ffn::Dense { gate_up, down } => {
            let n_ff = hp.n_ff_layers[il];
            let (gate, up) = match *gate_up {
                GateUp::Split { gate, up } => (
                    g.mul_mat(gate, n_ff, h, &nm("ffn_gate")),
                    g.mul_mat(up, n_ff, h, &nm("ffn_up")),
                ),
                GateUp::Fused(w) => {
                    let gu = g.mul_mat(w, 2 * n_ff, h, &nm("ffn_up"));
                    (
                        g.cols(gu, 0, n_ff, &nm("ffn_gate_part")),
                        g.cols(gu, n_ff, n_ff, &nm("ffn_up_part")),
                    )
                }
            };
            let act = g.gated(gate, up, hp.gate_act, &nm("ffn_gated"));
            g.mul_mat(*down, hp.n_embd, act, &nm("ffn_out"))
        }
        Ffn::Moe {
            params,
            gate_inp,
            gate_exps,
            up_exps,
            down_exps,
            exp_probs_b,
        } => {
            let w = [*gate_inp, *gate_exps, *up_exps, *down_exps];
            moe_ffn(g, *params, h, w, *exp_probs_b, hp.n_embd, il)
        }
    };
    if let Some(pn) = f.ffn_post_norm {
        let r = g.rms_norm(d, eps, &nm("ffn_post_norm"));
        d = g.mul_weight(r, pn, &nm("ffn_post_normed"));
    }
    if let Some(s) = hp.residual_scale {
        d = g.scale(d, s, &nm("ffn_out_scaled"));
    }
    d
}

/// llama.cpp's build_moe_ffn with softmax or sigmoid gating and SwiGLU
/// experts: route each token to its `n_expert_used` most probable experts
/// (probabilities plus `probs_bias` when given) and sum their outputs
/// weighted by the (normalized) probabilities.
pub(super) fn moe_ffn(
    g: &mut GraphBuilder,
    m: MoeParams,
    h: TensorId,
    [gate_inp, gate_exps, up_exps, down_exps]: [WeightId; 4],
    probs_bias: Option<WeightId>,
    n_embd: usize,
    il: usize,
) -> TensorId {
    let nm = |s: &str| format!("{s}-{il}");
    let logits = g.mul_mat(gate_inp, m.n_expert, h, &nm("ffn_moe_logits"));
    let probs = match m.gating {
        MoeGating::Softmax => g.soft_max(logits, &nm("ffn_moe_probs")),
        MoeGating::Sigmoid => g.sigmoid(logits, &nm("ffn_moe_probs")),
    };
    let selection = match probs_bias {
        Some(b) => g.add_weight(probs, b, &nm("ffn_moe_probs_biased")),
        None => probs,
    };
    let ids = g.top_k(selection, m.n_expert_used, &nm("ffn_moe_topk"));
    let weights = g.moe_weights(
        probs,
        ids,
        m.norm_weights,
        m.weights_scale,
        &nm("ffn_moe_weights"),
    );
    let up = g.mul_mat_id(up_exps, m.n_expert, m.n_ff_exp, h, ids, &nm("ffn_moe_up"));
    let gate = g.mul_mat_id(
        gate_exps,
        m.n_expert,
        m.n_ff_exp,
        h,
        ids,
        &nm("ffn_moe_gate"),
    );
    let act = g.gated(gate, up, GateAct::Silu, &nm("ffn_moe_swiglu"));
    let down = g.mul_mat_id(down_exps, m.n_expert, n_embd, act, ids, &nm("ffn_moe_down"));
    g.moe_combine(down, weights, &nm("ffn_moe_out"))
}

/// The output head: final norm and the vocabulary projection (of the last
/// row only when that is all that is wanted), or `x` itself when no logits
/// are wanted. Returns the graph's output tensor.
pub(super) fn output_head(
    g: &mut GraphBuilder,
    hp: &HParams,
    w: &ModelWeights,
    mut x: TensorId,
    out: GraphOut,
) -> TensorId {
    if out == GraphOut::None {
        return x;
    }
    if out == GraphOut::Last && g.n_tokens() > 1 {
        x = g.last_row(x, "last_row");
    }
    let h = g.rms_norm(x, hp.rms_eps, "norm");
    let h = g.mul_weight(h, w.output_norm, "result_norm");
    let mut logits = g.mul_mat(w.output, hp.n_vocab, h, "result_output");
    if let Some(s) = hp.logit_scale {
        logits = g.scale(logits, s, "result_output_scaled");
    }
    if let Some(cap) = hp.final_logit_softcap {
        logits = g.scale(logits, 1.0 / cap, "result_output_capped");
        logits = g.unary(logits, UnaryFn::Tanh, "result_output_tanh");
        logits = g.scale(logits, cap, "result_output_softcapped");
    }
    logits
}
