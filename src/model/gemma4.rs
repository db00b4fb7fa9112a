//! gemma4 (Gemma 4 E2B/E4B; llama.cpp's `src/models/gemma4.cpp`): gemma3's
//! block (q/k norms, post-attention and post-FFN norms, GELU gate,
//! sliding-window layers) with larger heads on the full-attention layers,
//! V RMS-normed, proportional rope through `rope_freqs` on full layers
//! only, the last layers attending over earlier layers' caches, per-layer
//! token embeddings added after every block, a constant per layer scaling
//! its output, and softcapped logits.

use super::builders::{feed_forward, input_embeddings, output_head};
use super::transformer::mix;
use super::weights::PerLayerInputs;
use super::{GraphOut, Model};
use crate::graph::{Graph, GraphBuilder, TensorId, UnaryFn};

impl Model {
    /// Every layer: x += attention(x); x += ffn(x); x += its per-layer
    /// input; x *= its output scale. Then the output head.
    pub(super) fn build_gemma4(&self, n: usize, out: GraphOut) -> Graph {
        let (hp, w) = (&self.hparams, &self.w);
        let mut g = GraphBuilder::new(n);
        let mut x = input_embeddings(&mut g, hp, w);
        let per_layer = w
            .per_layer_inputs
            .as_ref()
            .map(|p| (p, per_layer_inputs(&mut g, self, p, x)));
        for (il, layer) in w.layers.iter().enumerate() {
            let nm = |s: &str| format!("{s}-{il}");
            let mixed = mix(&mut g, hp, w, &layer.mixer, il, x);
            let attn_out = g.add(mixed, x, &nm("attn_out"));
            let d = feed_forward(&mut g, hp, &layer.ffn, il, attn_out);
            x = g.add(d, attn_out, &nm("ffn_out_res"));
            if let Some((p, all)) = &per_layer {
                let ple = hp.n_embd_per_layer;
                let pl = &p.layers[il];
                let gate = g.mul_mat(pl.inp_gate, ple, x, &nm("pe_gate"));
                let gate = g.unary(gate, UnaryFn::GeluTanh, &nm("pe_gelu"));
                let own = g.cols(*all, il * ple, ple, &nm("pe_inp"));
                let gated = g.mul(gate, own, &nm("pe_gated"));
                let proj = g.mul_mat(pl.proj, hp.n_embd, gated, &nm("pe_proj"));
                let normed = g.rms_norm(proj, hp.rms_eps, &nm("pe_norm"));
                let normed = g.mul_weight(normed, pl.post_norm, &nm("per_layer_embd_out"));
                x = g.add(x, normed, &nm("pe_out"));
            }
            if let Some(s) = w.layer_out_scale.get(il).copied().flatten() {
                x = g.scale(x, s, &nm("out_scaled"));
            }
        }
        let result = output_head(&mut g, hp, w, x, out);
        g.finish(result)
    }
}

/// Every layer's input for each token (`n_layer * n_embd_per_layer`
/// columns, layer after layer), as llama.cpp's `build_inp_per_layer` and
/// `project_per_layer_inputs`: the token's row of the per-layer table times
/// sqrt(n_embd_per_layer), plus the RMS-normed projection of the scaled
/// embeddings `x` divided by sqrt(n_embd), all divided by sqrt(2).
fn per_layer_inputs(
    g: &mut GraphBuilder,
    model: &Model,
    p: &PerLayerInputs,
    x: TensorId,
) -> TensorId {
    let hp = &model.hparams;
    let (n, ple) = (g.n_tokens(), hp.n_embd_per_layer);
    let width = ple * hp.n_layer;
    let sel = g.get_rows(p.tok_embd, width, "inp_per_layer_selected");
    let sel = g.scale(sel, (ple as f32).sqrt(), "inp_per_layer_scaled");
    let proj = g.mul_mat(p.model_proj, width, x, "per_layer_model_proj");
    let proj = g.scale(
        proj,
        1.0 / (hp.n_embd as f32).sqrt(),
        "per_layer_proj_scaled",
    );
    let r = g.reshape(proj, n * hp.n_layer, ple);
    let r = g.rms_norm(r, hp.rms_eps, "per_layer_proj_norm");
    let r = g.mul_weight(r, p.proj_norm, "per_layer_proj");
    let proj = g.reshape(r, n, width);
    let sum = g.add(proj, sel, "inp_per_layer_sum");
    g.scale(sum, 1.0 / 2f32.sqrt(), "inp_per_layer")
}
