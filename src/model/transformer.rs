//! The decoder-only transformers (llama, qwen2, qwen3, qwen3moe, gemma3,
//! granite, smollm3, phi3; llama.cpp's `llama.cpp`, `qwen2.cpp`,
//! `qwen3.cpp`, `qwen3moe.cpp`, `gemma3.cpp`, `granite.cpp`, `smollm3.cpp`,
//! `phi3.cpp`), llama2.c style: one pass over the layers, top to bottom.
//! They differ only in flags of [`HParams`] and in the shapes of a layer's
//! weights (fused projections, biases, norms, experts), which the shared
//! builders handle.

use super::builders::{attention, feed_forward, input_embeddings, output_head};
use super::weights::Mixer;
use super::{GraphOut, Model};
use crate::graph::{Graph, GraphBuilder};

impl Model {
    /// Every layer: x += attention(x); x += ffn(x). Then the output head.
    pub(super) fn build_transformer(&self, n: usize, out: GraphOut) -> Graph {
        let (hp, w) = (&self.hparams, &self.w);
        let mut g = GraphBuilder::new(n);
        let mut x = input_embeddings(&mut g, hp, w);
        for (il, layer) in w.layers.iter().enumerate() {
            let mixed = match &layer.mixer {
                Mixer::Attention(a) => attention(&mut g, hp, w, a, il, x),
            };
            x = g.add(mixed, x, &format!("ffn_inp-{il}"));
            let d = feed_forward(&mut g, hp, &layer.ffn, il, x);
            x = g.add(d, x, &format!("l_out-{il}"));
        }
        let result = output_head(&mut g, hp, w, x, out);
        g.finish(result)
    }
}
