//! A tap on the input of every matmul, for accuracy studies
//! (`rkinfer quant-eval` captures the real activations each weight sees).
//!
//! The tap is a backend placed before the CPU backend: it claims every 2-D
//! weight, so the scheduler routes each `MulMat` to it. It hands the input
//! rows to an observer, then declines the op, so the executor's fallback
//! (the CPU backend) computes the product. A model loaded without it pays
//! nothing.

use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, ExecCtx, Input, Weight, Weights};
use crate::graph::{Node, Op, WeightId};

/// The input of one matmul, as the observer sees it.
#[derive(Clone, Copy, Debug)]
pub struct MatMulInput<'a> {
    pub weight: WeightId,
    /// The GGUF name of the weight.
    pub name: &'a str,
    /// `rows x k` row-major activations (one row per token).
    pub x: &'a [f32],
    pub rows: usize,
    pub k: usize,
    /// Output features (rows of the weight).
    pub n_out: usize,
}

/// Called before each matmul is computed.
pub type MatMulObserver = dyn FnMut(&MatMulInput<'_>) + Send;

/// A backend that shows every matmul input to an observer and leaves the
/// product to the fallback backend.
pub struct ObservingBackend {
    observer: Mutex<Box<MatMulObserver>>,
}

impl ObservingBackend {
    pub fn new(observer: Box<MatMulObserver>) -> Self {
        ObservingBackend {
            observer: Mutex::new(observer),
        }
    }
}

impl Backend for ObservingBackend {
    fn name(&self) -> &'static str {
        "CPU+tap"
    }

    fn supports(&self, op: &Op, _weights: &Weights) -> bool {
        matches!(op, Op::MulMat { .. })
    }

    fn prepare_weight(
        &mut self,
        _id: WeightId,
        weight: &Weight,
        _bytes: &[u8],
    ) -> super::Result<bool> {
        // Matrices only; vectors (norms, biases) stay with the CPU.
        Ok(weight.rows > 1)
    }

    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        _out: &mut [f32],
        ctx: &mut ExecCtx<'_>,
    ) -> super::Result<()> {
        if let (Op::MulMat { w, .. }, Some(x)) = (&node.op, inputs[0]) {
            let weight = ctx.weights.get(*w);
            let seen = MatMulInput {
                weight: *w,
                name: &weight.name,
                x: x.data,
                rows: x.desc.rows,
                k: x.desc.cols,
                n_out: weight.rows,
            };
            // A poisoned lock only means an earlier observer call panicked;
            // the observer itself is still usable.
            let mut obs = self.observer.lock().unwrap_or_else(|e| e.into_inner());
            (*obs)(&seen);
        }
        Err(BackendError::Declined)
    }
}

/// The activations one weight saw during a capture.
#[derive(Clone, Debug)]
pub struct CapturedMatmul {
    /// The GGUF name of the weight.
    pub name: String,
    /// Row length (the weight's K).
    pub k: usize,
    /// Output features (rows of the weight).
    pub n_out: usize,
    /// Rows captured (tokens, over every call).
    pub rows: usize,
    /// `rows x k` row-major.
    pub x: Vec<f32>,
}

/// Collects the input rows of every matmul, one entry per weight in the
/// order weights are first used; rows of repeated calls are appended.
#[derive(Clone, Default)]
pub struct ActivationCapture {
    store: Arc<Mutex<Vec<CapturedMatmul>>>,
}

impl ActivationCapture {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend feeding this capture, to load a model with.
    pub fn backend(&self) -> Box<dyn Backend> {
        let store = Arc::clone(&self.store);
        Box::new(ObservingBackend::new(Box::new(
            move |m: &MatMulInput<'_>| {
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                let used = m.rows * m.k;
                let x = m.x.get(..used).unwrap_or(m.x);
                match s.iter_mut().find(|c| c.name == m.name) {
                    Some(c) if c.k == m.k => {
                        c.x.extend_from_slice(x);
                        c.rows += x.len() / m.k.max(1);
                    }
                    // A weight fed rows of another width is not a matmul
                    // this capture can describe; keep the first shape.
                    Some(_) => {}
                    None => s.push(CapturedMatmul {
                        name: m.name.to_string(),
                        k: m.k,
                        n_out: m.n_out,
                        rows: x.len() / m.k.max(1),
                        x: x.to_vec(),
                    }),
                }
            },
        )))
    }

    /// Everything captured so far (the capture is emptied).
    pub fn take(&self) -> Vec<CapturedMatmul> {
        std::mem::take(&mut *self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
