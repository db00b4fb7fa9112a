//! The decoder-only transformers (llama, qwen2, qwen3, qwen3moe, gemma3,
//! granite, smollm3, phi3; llama.cpp's `llama.cpp`, `qwen2.cpp`,
//! `qwen3.cpp`, `qwen3moe.cpp`, `gemma3.cpp`, `granite.cpp`, `smollm3.cpp`,
//! `phi3.cpp`) and the hybrids lfm2 (its convolution block in `lfm2.rs`)
//! and qwen35 (its gated delta-net block in `qwen35.rs`),
//! llama2.c style: one pass over the layers, top to bottom.
//! They differ only in flags of [`HParams`] and in the shapes of a layer's
//! weights (fused projections, biases, norms, experts), which the shared
//! builders handle.

use super::builders::{attention, feed_forward, input_embeddings, output_head};
use super::hparams::HParams;
use super::weights::{Mixer, ModelWeights};
use super::{GraphOut, Model};
use crate::graph::{Graph, GraphBuilder, TensorId};

/// The block's mixer over `x`, whatever its kind: its output before the
/// residual sum.
pub(super) fn mix(
    g: &mut GraphBuilder,
    hp: &HParams,
    w: &ModelWeights,
    mixer: &Mixer,
    il: usize,
    x: TensorId,
) -> TensorId {
    match mixer {
        Mixer::Attention(a) => attention(g, hp, w, a, il, x),
        Mixer::DeltaNet(d) => super::qwen35::delta_net(g, hp, d, il, x),
        Mixer::ShortConv(s) => super::lfm2::shortconv(g, hp, s, il, x),
    }
}

impl Model {
    /// Every layer: x += mixer(x); x += ffn(x). Then the output head.
    pub(super) fn build_transformer(&self, n: usize, out: GraphOut) -> Graph {
        let (hp, w) = (&self.hparams, &self.w);
        let mut g = GraphBuilder::new(n);
        let mut x = input_embeddings(&mut g, hp, w);
        for (il, layer) in w.layers.iter().enumerate() {
            let mixed = mix(&mut g, hp, w, &layer.mixer, il, x);
            x = g.add(mixed, x, &format!("ffn_inp-{il}"));
            let d = feed_forward(&mut g, hp, &layer.ffn, il, x);
            x = g.add(d, x, &format!("l_out-{il}"));
        }
        let result = output_head(&mut g, hp, w, x, out);
        g.finish(result)
    }
}
