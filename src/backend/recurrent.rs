//! Recurrent state: what the non-attention mixers of hybrid models (lfm2's
//! short convolutions, qwen35's gated delta-net) carry from one token to
//! the next, kept beside the KV cache in the model's state.
//!
//! Per layer it holds up to two f32 buffers, sized when the state is made
//! from what the layer's mixer needs:
//! - a rolling convolution window: the last `kernel_len - 1` inputs of a
//!   causal convolution, `rows x channels` row-major, oldest row first (the
//!   rows that precede the batch's first input);
//! - a matrix state (delta-net): `heads x k_dim x v_dim` f32, its inner
//!   layout being the op's that owns it.
//!
//! Unlike the KV cache, this state summarizes every position seen so far
//! and cannot be rewound to an earlier one: a model with recurrent layers
//! can only go back to position 0 (see `State::truncate`).

use super::BackendError;

/// The causal convolution window one layer keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Previous inputs kept: the kernel length minus one.
    pub rows: usize,
    /// Elements of each input.
    pub channels: usize,
}

/// The matrix state one layer keeps (per head, a `k_dim x v_dim` matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixShape {
    pub heads: usize,
    pub k_dim: usize,
    pub v_dim: usize,
}

/// What one layer's mixer keeps between tokens (attention layers: nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecurrentSpec {
    pub conv: Option<ConvShape>,
    pub matrix: Option<MatrixShape>,
}

/// The state of one layer: empty buffers for what it does not keep.
#[derive(Clone, Debug, Default)]
pub struct RecurrentLayer {
    pub spec: RecurrentSpec,
    /// `conv.rows x conv.channels`, oldest input first.
    pub conv: Vec<f32>,
    /// `heads x k_dim x v_dim`.
    pub matrix: Vec<f32>,
}

/// The recurrent state of every layer of a sequence.
#[derive(Clone, Debug, Default)]
pub struct RecurrentState {
    layers: Vec<RecurrentLayer>,
}

impl RecurrentState {
    /// Zeroed state for layers with these needs (one spec per layer).
    /// Errors if a size overflows.
    pub fn new(specs: &[RecurrentSpec]) -> Result<RecurrentState, BackendError> {
        let too_large = |layer: usize| {
            BackendError::Graph(format!(
                "recurrent state of layer {layer} is too large to allocate"
            ))
        };
        let mut layers = Vec::with_capacity(specs.len());
        for (il, spec) in specs.iter().enumerate() {
            let conv_len = match spec.conv {
                Some(c) => c
                    .rows
                    .checked_mul(c.channels)
                    .ok_or_else(|| too_large(il))?,
                None => 0,
            };
            let matrix_len = match spec.matrix {
                Some(m) => m
                    .heads
                    .checked_mul(m.k_dim)
                    .and_then(|n| n.checked_mul(m.v_dim))
                    .ok_or_else(|| too_large(il))?,
                None => 0,
            };
            layers.push(RecurrentLayer {
                spec: *spec,
                conv: vec![0.0; conv_len],
                matrix: vec![0.0; matrix_len],
            });
        }
        Ok(RecurrentState { layers })
    }

    /// Whether any layer keeps state (the model is recurrent or hybrid).
    pub fn is_empty(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.conv.is_empty() && l.matrix.is_empty())
    }

    /// Back to the state before the first token (all zeros).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.conv.fill(0.0);
            l.matrix.fill(0.0);
        }
    }

    /// Bytes the state occupies.
    pub fn size_bytes(&self) -> usize {
        let elems: usize = self
            .layers
            .iter()
            .map(|l| l.conv.len() + l.matrix.len())
            .sum();
        elems * std::mem::size_of::<f32>()
    }

    /// The state of `layer`.
    pub fn layer(&self, layer: usize) -> Result<&RecurrentLayer, BackendError> {
        self.layers
            .get(layer)
            .ok_or_else(|| BackendError::Graph(format!("no recurrent state for layer {layer}")))
    }

    /// The convolution window of `layer` and its shape; an error if the
    /// layer keeps none.
    pub fn conv_mut(&mut self, layer: usize) -> Result<(&mut [f32], ConvShape), BackendError> {
        let l = self.layers.get_mut(layer);
        match l.and_then(|l| l.spec.conv.map(|s| (s, &mut l.conv))) {
            Some((shape, buf)) => Ok((buf.as_mut_slice(), shape)),
            None => Err(BackendError::Graph(format!(
                "layer {layer} keeps no convolution state"
            ))),
        }
    }

    /// The matrix state of `layer` and its shape; an error if the layer
    /// keeps none.
    pub fn matrix_mut(&mut self, layer: usize) -> Result<(&mut [f32], MatrixShape), BackendError> {
        let l = self.layers.get_mut(layer);
        match l.and_then(|l| l.spec.matrix.map(|s| (s, &mut l.matrix))) {
            Some((shape, buf)) => Ok((buf.as_mut_slice(), shape)),
            None => Err(BackendError::Graph(format!(
                "layer {layer} keeps no matrix state"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_get_what_their_mixer_needs() {
        let conv = RecurrentSpec {
            conv: Some(ConvShape {
                rows: 2,
                channels: 8,
            }),
            matrix: None,
        };
        let delta = RecurrentSpec {
            conv: Some(ConvShape {
                rows: 3,
                channels: 4,
            }),
            matrix: Some(MatrixShape {
                heads: 2,
                k_dim: 4,
                v_dim: 3,
            }),
        };
        let mut s = RecurrentState::new(&[conv, RecurrentSpec::default(), delta]).unwrap();
        assert!(!s.is_empty());
        assert_eq!(s.size_bytes(), (16 + 12 + 24) * 4);
        assert_eq!(s.conv_mut(0).unwrap().0.len(), 16);
        assert!(s.conv_mut(1).is_err());
        assert!(s.matrix_mut(0).is_err());
        assert!(s.conv_mut(7).is_err());
        let (m, shape) = s.matrix_mut(2).unwrap();
        assert_eq!((m.len(), shape.heads), (24, 2));
        m.fill(1.0);
        s.clear();
        assert!(s.matrix_mut(2).unwrap().0.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn attention_only_models_keep_nothing() {
        let s = RecurrentState::new(&[RecurrentSpec::default(); 4]).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.size_bytes(), 0);
    }
}
