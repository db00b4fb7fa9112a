//! Backends and the scheduler that assigns graph ops to them.
//!
//! As in ggml's scheduler, every backend says which ops it supports and may
//! claim weights at load time (`prepare_weight`, e.g. the NPU converting a
//! matrix into its native layout). An op reading a weight runs on the backend
//! that holds the weight when that backend supports the op; every other op
//! runs on the first backend (in priority order) that supports it. The CPU
//! backend is always last and supports everything, so model code never names
//! a backend.

pub mod capture;
pub mod cpu;
pub mod device;
mod error;
pub mod kv;
pub mod npu;
pub mod recurrent;

use std::sync::Arc;

use gguf::{GgmlType, GgufFile};

use crate::graph::{Graph, Node, Op, OpKind, TensorDesc, WeightId};
pub use device::{Device, DeviceOptions, NpuPlacement, NpuQuant, NpuSettings, WeightCacheMode};
pub use error::BackendError;
use kv::KvCache;
use recurrent::RecurrentState;

/// Result of backend operations.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// A model weight: shape, type and where its data lives.
#[derive(Debug)]
pub struct Weight {
    /// The GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    pub ty: GgmlType,
    /// Elements per row (ggml ne0).
    pub cols: usize,
    /// Rows (ggml ne1; 1 for vectors).
    pub rows: usize,
    pub data: WeightData,
    /// Index of the backend that prepared (holds) this weight.
    pub backend: usize,
}

/// Where a weight's bytes are.
#[derive(Debug)]
pub enum WeightData {
    /// In place in the mmapped file: bytes `range` of the data of tensor
    /// `tensor` (an index into `GgufFile::tensors()`): all of it, or one
    /// expert's matrix of a 3-D expert tensor.
    Mapped {
        tensor: usize,
        range: std::ops::Range<usize>,
    },
    /// A small f32 vector (norms, biases) converted at load.
    F32(Vec<f32>),
}

impl WeightData {
    /// The bytes of a mapped weight in `file` (empty for converted vectors).
    pub fn bytes<'f>(&self, file: &'f GgufFile) -> &'f [u8] {
        match self {
            WeightData::Mapped { tensor, range } => file
                .tensors()
                .get(*tensor)
                .and_then(|t| file.tensor_data(t).get(range.clone()))
                .unwrap_or(&[]),
            WeightData::F32(_) => &[],
        }
    }
}

/// The model's weight table, shared read-only by all backends.
#[derive(Debug)]
pub struct Weights {
    pub file: Arc<GgufFile>,
    pub list: Vec<Weight>,
}

impl Weights {
    pub fn get(&self, id: WeightId) -> &Weight {
        &self.list[id.0 as usize]
    }

    /// Raw bytes of a mapped weight (empty for converted vectors).
    pub fn bytes(&self, id: WeightId) -> &[u8] {
        self.get(id).data.bytes(&self.file)
    }

    /// A weight converted to f32 at load (norm weights, biases).
    pub fn f32(&self, id: WeightId) -> Option<&[f32]> {
        match &self.get(id).data {
            WeightData::F32(v) => Some(v),
            WeightData::Mapped { .. } => None,
        }
    }

    /// `name [cols x rows] TYPE` for graph dumps.
    pub fn describe(&self, id: WeightId) -> String {
        let w = self.get(id);
        format!("{} [{} x {}] {}", w.name, w.cols, w.rows, w.ty.name())
    }
}

/// Reusable buffers of one model state, so decoding allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Quantized activations (u64 so any block type is aligned).
    pub act: Vec<u64>,
    /// Transposed matmul output for batches.
    pub tmp: Vec<f32>,
    /// Matmul work done so far, by the backend that did it.
    pub work: MatmulWork,
}

/// Multiply-accumulates of the matmuls a state ran, per backend that
/// actually computed them (a node a backend failed counts for the CPU that
/// ran it instead), so benchmarks can say where the work went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatmulWork {
    by_backend: Vec<(&'static str, u64)>,
}

impl MatmulWork {
    /// Adds `macs` done by `backend`.
    pub fn add(&mut self, backend: &'static str, macs: u64) {
        match self.by_backend.iter_mut().find(|(b, _)| *b == backend) {
            Some((_, m)) => *m += macs,
            None => self.by_backend.push((backend, macs)),
        }
    }

    /// MACs per backend, in the order the backends first did work.
    pub fn by_backend(&self) -> &[(&'static str, u64)] {
        &self.by_backend
    }

    /// The work done since `earlier` (a snapshot of the same state).
    pub fn since(&self, earlier: &MatmulWork) -> MatmulWork {
        let mut out = MatmulWork::default();
        for &(b, m) in &self.by_backend {
            let before = earlier
                .by_backend
                .iter()
                .find(|(e, _)| *e == b)
                .map_or(0, |(_, m)| *m);
            if m > before {
                out.add(b, m - before);
            }
        }
        out
    }

    /// Fraction of all MACs done by `backend`.
    pub fn share(&self, backend: &str) -> f64 {
        let all: u64 = self.by_backend.iter().map(|(_, m)| m).sum();
        let mine: u64 = self
            .by_backend
            .iter()
            .filter(|(b, _)| *b == backend)
            .map(|(_, m)| m)
            .sum();
        if all == 0 {
            0.0
        } else {
            mine as f64 / all as f64
        }
    }

    /// "NPU 97%, CPU 3%" (largest first; "-" without matmuls).
    pub fn describe(&self) -> String {
        let all: u64 = self.by_backend.iter().map(|(_, m)| m).sum();
        if all == 0 {
            return "-".into();
        }
        let mut v = self.by_backend.clone();
        v.sort_by_key(|(_, m)| std::cmp::Reverse(*m));
        v.iter()
            .map(|(b, m)| format!("{b} {:.0}%", 100.0 * *m as f64 / all as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The rows of a batch that belong to one sequence: consecutive rows, at
/// consecutive positions of that sequence's cache.
pub struct SeqRows<'a> {
    /// The sequence's KV cache.
    pub kv: &'a mut KvCache,
    /// Position of the sequence's first row (tokens already in its cache).
    pub n_past: usize,
    /// Rows of the batch that are this sequence's tokens.
    pub n_rows: usize,
    /// Convolution windows and matrix states of the sequence's recurrent
    /// layers.
    pub recurrent: &'a mut RecurrentState,
}

/// What an op sees besides its input and output tensors.
pub struct ExecCtx<'a> {
    pub weights: &'a Weights,
    /// Token ids of the batch.
    pub tokens: &'a [u32],
    /// The sequences of the batch's rows, in row order: one for a prompt
    /// chunk or a single decode step; one per row for a decode step of
    /// several sequences ([`crate::model::Model::decode_batch`]). Ops that
    /// touch positions or caches (rope, KV store, attention) handle each
    /// sequence's rows on their own; every other op is row-wise anyway.
    pub seqs: &'a mut [SeqRows<'a>],
    pub scratch: &'a mut Scratch,
}

impl ExecCtx<'_> {
    /// Whether the rows belong to more than one sequence.
    pub fn is_multi_sequence(&self) -> bool {
        self.seqs.len() > 1
    }
}

/// An input tensor's data and shape.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    pub data: &'a [f32],
    pub desc: TensorDesc,
}

/// A compute backend.
pub trait Backend: Send + Sync {
    /// Short name for graph dumps ("CPU", "NPU").
    fn name(&self) -> &'static str;
    /// Whether this backend can run `op` (given the weights as prepared).
    fn supports(&self, op: &Op, weights: &Weights) -> bool;
    /// Whether this backend should run `op` on `rows` input rows (e.g. the
    /// NPU's placement by its cost model); by default whenever supported.
    fn supports_rows(&self, op: &Op, _rows: usize, weights: &Weights) -> bool {
        self.supports(op, weights)
    }
    /// Why `op` on `rows` rows is (or is not) placed here, for graph dumps
    /// and `--verbose`; None when this backend has nothing to say.
    fn placement_note(&self, _op: &Op, _rows: usize, _weights: &Weights) -> Option<String> {
        None
    }
    /// Offered every weight once at load, in file order. Returning `true`
    /// claims it: ops reading it then run on this backend when supported.
    fn prepare_weight(&mut self, id: WeightId, weight: &Weight, bytes: &[u8]) -> Result<bool>;
    /// Runs one node. `out` is the node's output (empty for ops that write
    /// only to the KV cache). A backend other than the CPU may return an
    /// error (or [`BackendError::Declined`]): the executor then runs the node
    /// on the CPU backend, which takes everything. `ctx.seqs` may hold
    /// several sequences (a batched decode step): a backend that cannot
    /// keep their rows apart for an op that reads positions or caches
    /// declines it.
    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        out: &mut [f32],
        ctx: &mut ExecCtx<'_>,
    ) -> Result<()>;
}

/// Assigns each node of `graph` to a backend (see the module comment).
///
/// Backends see the rows of each op's first input (`supports_rows`), so a
/// matmul can go to the NPU for a prompt batch and stay on the CPU for
/// single-token decode.
pub fn schedule(graph: &mut Graph, backends: &[Box<dyn Backend>], weights: &Weights) {
    let rows: Vec<usize> = graph.nodes.iter().map(|n| input_rows(graph, n)).collect();
    for (node, rows) in graph.nodes.iter_mut().zip(rows) {
        let owner = node.op.weight().map(|w| weights.get(w).backend);
        let fits = |b: &dyn Backend| b.supports_rows(&node.op, rows, weights);
        node.backend = match owner {
            Some(b) if b < backends.len() && fits(&*backends[b]) => b,
            _ => backends
                .iter()
                .position(|b| fits(&**b))
                .unwrap_or(backends.len().saturating_sub(1)),
        };
    }
}

/// Rows of a node's first input (1 without inputs).
fn input_rows(graph: &Graph, node: &Node) -> usize {
    node.op.inputs()[0].map_or(1, |t| graph.tensor(t).rows)
}

/// MACs of a matmul node (0 for other ops).
fn matmul_macs(graph: &Graph, node: &Node, weights: &Weights) -> u64 {
    match node.op {
        Op::MulMat { w, x } => {
            let (rows, k) = (graph.tensor(x).rows, graph.tensor(x).cols);
            (rows * k * weights.get(w).rows) as u64
        }
        _ => 0,
    }
}

/// Every matmul of a graph: its weight and the rows it multiplies.
pub fn matmul_rows(graph: &Graph) -> Vec<(WeightId, usize)> {
    graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::MulMat { w, x } => Some((w, graph.tensor(x).rows)),
            _ => None,
        })
        .collect()
}

/// One line per matmul of a scheduled graph: where it runs and why, as the
/// backends explain it (empty when none does, e.g. on the CPU alone).
pub fn placement_report(graph: &Graph, backends: &[Box<dyn Backend>], weights: &Weights) -> String {
    let mut s = String::new();
    for node in &graph.nodes {
        let Op::MulMat { w, .. } = node.op else {
            continue;
        };
        let rows = input_rows(graph, node);
        let Some(note) = backends
            .iter()
            .find_map(|b| b.placement_note(&node.op, rows, weights))
        else {
            continue;
        };
        let on = backends.get(node.backend).map_or("?", |b| b.name());
        let wt = weights.get(w);
        s.push_str(&format!(
            "placement {:<24} M={rows} K={} N={}: {on} ({note})\n",
            wt.name, wt.cols, wt.rows
        ));
    }
    s
}

/// Runs a scheduled graph node by node. `slots` must hold at least
/// `graph.slot_sizes` elements each. The last backend is the fallback: a
/// node another backend declines or fails is run there, here and only here
/// (backends never carry a CPU backend of their own).
pub fn execute(
    graph: &Graph,
    backends: &[Box<dyn Backend>],
    slots: &mut [Vec<f32>],
    ctx: &mut ExecCtx<'_>,
) -> Result<()> {
    let Some((fallback, _)) = backends.split_last() else {
        return Err(BackendError::Graph("no backend to run the graph on".into()));
    };
    for node in &graph.nodes {
        // Take the output slot out so inputs can be borrowed from the rest;
        // the allocator guarantees they never share it.
        let (out_slot, out_len) = match node.out {
            Some(t) => {
                let d = graph.tensor(t);
                (Some(d.slot), d.len())
            }
            None => (None, 0),
        };
        let mut out_buf = out_slot
            .map(|s| std::mem::take(&mut slots[s]))
            .unwrap_or_default();
        let ins = node.op.inputs();
        let get = |t: Option<crate::graph::TensorId>| {
            t.map(|t| {
                let desc = *graph.tensor(t);
                Input {
                    data: &slots[desc.slot][..desc.len()],
                    desc,
                }
            })
        };
        let inputs = [get(ins[0]), get(ins[1])];
        let on_fallback = node.backend + 1 >= backends.len();
        let backend = if on_fallback {
            fallback
        } else {
            &backends[node.backend]
        };
        let mut r = backend.compute(node, inputs, &mut out_buf[..out_len], ctx);
        let mut ran_on = backend.name();
        if let (Err(e), false) = (&r, on_fallback) {
            if !matches!(e, BackendError::Declined) {
                log::debug!(
                    "{} on {}: {e}; running it on {}",
                    node.name,
                    backend.name(),
                    fallback.name()
                );
            }
            r = fallback.compute(node, inputs, &mut out_buf[..out_len], ctx);
            ran_on = fallback.name();
        }
        if r.is_ok() {
            let macs = matmul_macs(graph, node, ctx.weights);
            if macs > 0 {
                ctx.scratch.work.add(ran_on, macs);
            }
        }
        if dump_ops_enabled() && r.is_ok() {
            dump_op(node, graph, &out_buf[..out_len]);
        }
        if let Some(s) = out_slot {
            slots[s] = out_buf;
        }
        r?;
    }
    Ok(())
}

/// `RKINFER_DUMP_OPS=1` prints every op's output (shape, sum, first values)
/// on stderr, in the form of llama.cpp's eval-callback tool, so the two
/// engines can be compared tensor by tensor.
fn dump_ops_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RKINFER_DUMP_OPS").is_some_and(|v| v != "0"))
}

/// The log target of the op dump.
pub const DUMP_TARGET: &str = "rkinfer::dump";

fn dump_op(node: &Node, graph: &Graph, out: &[f32]) {
    let Some(t) = node.out else { return };
    let d = graph.tensor(t);
    let sum: f64 = out.iter().map(|&v| v as f64).sum();
    let head: Vec<String> = out.iter().take(4).map(|v| format!("{v:.6}")).collect();
    let last_row = &out[out.len().saturating_sub(d.cols)..];
    let tail: Vec<String> = last_row.iter().take(4).map(|v| format!("{v:.6}")).collect();
    if let Some(dir) = std::env::var_os("RKINFER_DUMP_DIR") {
        static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        if let Ok(mut seen) = SEEN.lock() {
            let k = seen.iter().filter(|n| **n == node.name).count();
            seen.push(node.name.clone());
            let path = std::path::Path::new(&dir).join(format!("{}.{k}.bin", node.name));
            let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
            let _ = std::fs::write(path, bytes);
        }
    }
    // A debugging tool asked for by its environment variable: logged under
    // its own target, which the CLI's logger always shows.
    log::info!(
        target: DUMP_TARGET,
        "op {:<24} {:>5}x{:<6} sum={:<16.6} first=[{}] last_row=[{}]",
        node.name,
        d.rows,
        d.cols,
        sum,
        head.join(", "),
        tail.join(", ")
    );
}

/// Op kinds every backend must at least be asked about (for listings).
pub const ALL_OP_KINDS: [OpKind; 19] = [
    OpKind::GetRows,
    OpKind::RmsNorm,
    OpKind::Mul,
    OpKind::Add,
    OpKind::Scale,
    OpKind::MulMat,
    OpKind::Rope,
    OpKind::Cpy,
    OpKind::FlashAttn,
    OpKind::Glu,
    OpKind::View,
    OpKind::SoftMax,
    OpKind::ArgSort,
    OpKind::Div,
    OpKind::MulMatId,
    OpKind::Unary,
    OpKind::Concat,
    OpKind::SsmConv,
    OpKind::GatedDeltaNet,
];
