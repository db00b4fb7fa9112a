//! The tensor graph: a flat list of ops in execution order, built by the
//! model code for one batch size, scheduled onto backends once, and run op by
//! op by the backend layer's executor.
//!
//! Activations are 2-D row-major f32 tensors (`rows x cols`, one row per token
//! or per token-and-head). Their memory comes from a small set of reusable
//! slots assigned when the graph is finished: a tensor's slot is handed to a
//! later tensor once its last reader has run, as ggml-alloc does.

use std::fmt::Write as _;

/// An activation tensor of a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub u32);

/// A model weight (an index into the model's weight table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub u32);

/// How rotary embeddings pair up the elements of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs (x[2i], x[2i+1]): llama.
    Normal,
    /// Halves (x[i], x[i + n_rot/2]): GPT-NeoX, qwen, gemma.
    Neox,
}

/// The gate activation of a gated feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateAct {
    /// SiLU(gate) * up (SwiGLU).
    Silu,
    /// GELU-tanh(gate) * up (GeGLU), through ggml's f16 lookup table.
    GeluTanh,
}

/// Shape of a gated delta-net (linear attention) layer: `n_v_heads` value
/// heads, each reading key head `h % n_k_heads`; keys, queries and values
/// of `head_dim` elements; one `head_dim x head_dim` state per value head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaNetParams {
    pub layer: usize,
    pub n_k_heads: usize,
    pub n_v_heads: usize,
    pub head_dim: usize,
}

/// An elementwise function of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryFn {
    /// ggml_gelu: GELU-tanh through ggml's f16 lookup table.
    GeluTanh,
    /// ggml_tanh (libm tanhf).
    Tanh,
    /// ggml_sigmoid: 1 / (1 + exp(-x)), libm expf one element at a time.
    Sigmoid,
    /// ggml_softplus: log(1 + exp(x)), x itself above 20 (libm expf, logf).
    Softplus,
    /// ggml_silu: x * sigmoid(x) with ggml's vector expf.
    Silu,
}

/// Rotary embedding parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    pub mode: RopeMode,
    /// Elements of each head that are rotated (the rest pass through).
    pub n_rot: usize,
    pub head_dim: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// Per-pair frequency divisors (llama 3.1 `rope_freqs.weight`).
    pub freq_factors: Option<WeightId>,
}

/// Attention parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Multiplies q.k before the softmax.
    pub scale: f32,
    /// Sliding window: a query at position p sees keys at positions > p - window.
    pub window: Option<usize>,
}

/// One operation. Inputs are tensors of the same graph or model weights.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The rows of an embedding table picked by the batch's token ids.
    GetRows { table: WeightId },
    /// Each row divided by its root mean square (sums in f64 as ggml).
    RmsNorm { x: TensorId, eps: f32 },
    /// Elementwise product with a weight vector broadcast over rows.
    MulWeight { x: TensorId, w: WeightId },
    /// Elementwise sum with a weight vector broadcast over rows (biases).
    AddWeight { x: TensorId, w: WeightId },
    /// Elementwise sum of two tensors of the same shape.
    Add { a: TensorId, b: TensorId },
    /// Multiplication by a constant.
    Scale { x: TensorId, s: f32 },
    /// An elementwise function.
    Unary { x: TensorId, f: UnaryFn },
    /// `out[t][r] = dot(weight row r, x row t)`.
    MulMat { w: WeightId, x: TensorId },
    /// Rotary position embedding of every head of every token row.
    Rope { x: TensorId, p: RopeParams },
    /// Copies the batch's K and V rows into the layer's cache (converting to
    /// the cache type). Produces no tensor.
    StoreKv {
        layer: usize,
        k: TensorId,
        v: TensorId,
    },
    /// softmax(scale * q.K^T + causal/window mask) . V over the layer's cache,
    /// computed as ggml's flash-attention kernel does (online softmax).
    Attention { q: TensorId, p: AttnParams },
    /// act(gate) * up.
    Gated {
        gate: TensorId,
        up: TensorId,
        act: GateAct,
    },
    /// A copy of the last row (only the last token's logits are wanted).
    LastRow { x: TensorId },
    /// A copy of columns `offset..offset + out cols` of every row (a part
    /// of a fused projection's output).
    Cols { x: TensorId, offset: usize },
    /// Softmax of every row (ggml_soft_max without mask or scale).
    SoftMax { x: TensorId },
    /// The column indices of the `k` largest values of each row, largest
    /// first, as f32 (ggml_argsort_top_k).
    TopK { x: TensorId, k: usize },
    /// Mixture-of-experts routing weights: the probabilities `probs` of the
    /// experts selected by `ids` (a TopK output), divided by their sum when
    /// `norm` is set, times `scale` unless it is 0 or 1 (llama.cpp's
    /// build_moe_ffn).
    MoeWeights {
        probs: TensorId,
        ids: TensorId,
        norm: bool,
        scale: f32,
    },
    /// Expert matmuls (ggml_mul_mat_id): output row `t * k + j` is expert
    /// `ids[t][j]`'s matrix (weights `first + expert`) times row `t` of `x`
    /// (`x` with one row per token) or row `t * k + j` (one per selection).
    MulMatId {
        first: WeightId,
        n_expert: usize,
        x: TensorId,
        ids: TensorId,
    },
    /// Elementwise product of two tensors of the same shape (ggml_mul).
    Mul { a: TensorId, b: TensorId },
    /// Causal depthwise convolution over time (ggml_ssm_conv) with the
    /// layer's rolling window of previous inputs: output row `t`, channel
    /// `c` is `sum_i window[t + i][c] * kernel[c][i]` over `[state; x]`;
    /// the window then keeps the last `kernel_len - 1` rows. `kernel` is an
    /// f32 weight of one row of `kernel_len` taps per channel.
    SsmConv {
        x: TensorId,
        kernel: WeightId,
        layer: usize,
    },
    /// Each row of `a` followed by the same row of `b` (ggml_concat along
    /// the row).
    Concat { a: TensorId, b: TensorId },
    /// The gated delta rule over the batch, token by token, from and into
    /// the layer's recurrent matrix state (ggml_gated_delta_net, as
    /// llama.cpp's CPU backend runs it for prompts and decoding alike).
    /// `qkv` rows: q (`n_k_heads x head_dim`, l2-normed), k (same), v
    /// (`n_v_heads x head_dim`); `gb` rows: the log-decay g of each value
    /// head, then its beta. Output rows: `n_v_heads x head_dim`.
    GatedDeltaNet {
        qkv: TensorId,
        gb: TensorId,
        p: DeltaNetParams,
    },
    /// `sum_j w[t][j] * x[t * k + j]`: each product rounded, then added in
    /// order of `j` (ggml_mul then a chain of ggml_add).
    MoeCombine { x: TensorId, w: TensorId },
}

/// The broad kind of an op, which backends use to say what they support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    GetRows,
    RmsNorm,
    Mul,
    Add,
    Scale,
    MulMat,
    Rope,
    Cpy,
    FlashAttn,
    Glu,
    View,
    SoftMax,
    ArgSort,
    Div,
    MulMatId,
    Unary,
    SsmConv,
    Concat,
    GatedDeltaNet,
}

impl OpKind {
    /// ggml's name for the op (as --dump-graph prints it).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::GetRows => "GET_ROWS",
            OpKind::RmsNorm => "RMS_NORM",
            OpKind::Mul => "MUL",
            OpKind::Add => "ADD",
            OpKind::Scale => "SCALE",
            OpKind::MulMat => "MUL_MAT",
            OpKind::Rope => "ROPE",
            OpKind::Cpy => "CPY",
            OpKind::FlashAttn => "FLASH_ATTN_EXT",
            OpKind::Glu => "GLU",
            OpKind::View => "VIEW",
            OpKind::SoftMax => "SOFT_MAX",
            OpKind::ArgSort => "ARGSORT",
            OpKind::Div => "DIV",
            OpKind::MulMatId => "MUL_MAT_ID",
            OpKind::Unary => "UNARY",
            OpKind::SsmConv => "SSM_CONV",
            OpKind::Concat => "CONCAT",
            OpKind::GatedDeltaNet => "GATED_DELTA_NET",
        }
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::GetRows { .. } => OpKind::GetRows,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::MulWeight { .. } => OpKind::Mul,
            Op::AddWeight { .. } | Op::Add { .. } => OpKind::Add,
            Op::Scale { .. } => OpKind::Scale,
            Op::MulMat { .. } => OpKind::MulMat,
            Op::Rope { .. } => OpKind::Rope,
            Op::StoreKv { .. } => OpKind::Cpy,
            Op::Attention { .. } => OpKind::FlashAttn,
            Op::Gated { .. } => OpKind::Glu,
            Op::LastRow { .. } | Op::Cols { .. } => OpKind::View,
            Op::SoftMax { .. } => OpKind::SoftMax,
            Op::TopK { .. } => OpKind::ArgSort,
            Op::MoeWeights { .. } => OpKind::Div,
            Op::MulMatId { .. } => OpKind::MulMatId,
            Op::MoeCombine { .. } | Op::Mul { .. } => OpKind::Mul,
            Op::Unary { .. } => OpKind::Unary,
            Op::Concat { .. } => OpKind::Concat,
            Op::GatedDeltaNet { .. } => OpKind::GatedDeltaNet,
            Op::SsmConv { .. } => OpKind::SsmConv,
        }
    }

    /// Whether the op can run a batch whose rows belong to different
    /// sequences (a batched decode step): row-wise ops can, and so can the
    /// ones that read positions or caches, which the backends run per
    /// sequence. An op keeping other per-sequence state would not.
    pub fn batches_sequences(&self) -> bool {
        match self {
            Op::GetRows { .. }
            | Op::RmsNorm { .. }
            | Op::MulWeight { .. }
            | Op::AddWeight { .. }
            | Op::Add { .. }
            | Op::Scale { .. }
            | Op::MulMat { .. }
            | Op::Rope { .. }
            | Op::StoreKv { .. }
            | Op::Attention { .. }
            | Op::Gated { .. }
            | Op::Cols { .. }
            | Op::SoftMax { .. }
            | Op::TopK { .. }
            | Op::MoeWeights { .. }
            | Op::MulMatId { .. }
            | Op::MoeCombine { .. }
            | Op::Mul { .. }
            | Op::Concat { .. }
            | Op::Unary { .. } => true,
            // The last row of the batch is one sequence's.
            Op::LastRow { .. } => false,
            // They carry a recurrent state from row to row.
            Op::SsmConv { .. } | Op::GatedDeltaNet { .. } => false,
        }
    }

    /// The tensors this op reads (at most two).
    pub fn inputs(&self) -> [Option<TensorId>; 2] {
        match *self {
            Op::GetRows { .. } => [None, None],
            Op::RmsNorm { x, .. }
            | Op::MulWeight { x, .. }
            | Op::AddWeight { x, .. }
            | Op::Scale { x, .. }
            | Op::MulMat { x, .. }
            | Op::Rope { x, .. }
            | Op::LastRow { x }
            | Op::Cols { x, .. }
            | Op::SoftMax { x }
            | Op::TopK { x, .. }
            | Op::Unary { x, .. }
            | Op::SsmConv { x, .. } => [Some(x), None],
            Op::Mul { a, b } | Op::Concat { a, b } => [Some(a), Some(b)],
            Op::GatedDeltaNet { qkv, gb, .. } => [Some(qkv), Some(gb)],
            Op::MoeWeights { probs, ids, .. } => [Some(probs), Some(ids)],
            Op::MulMatId { x, ids, .. } => [Some(x), Some(ids)],
            Op::MoeCombine { x, w } => [Some(x), Some(w)],
            Op::Add { a, b } => [Some(a), Some(b)],
            Op::StoreKv { k, v, .. } => [Some(k), Some(v)],
            Op::Attention { q, .. } => [Some(q), None],
            Op::Gated { gate, up, .. } => [Some(gate), Some(up)],
        }
    }

    /// The weight this op reads, if any (the scheduler keeps an op whose
    /// weight a backend prepared on that backend).
    pub fn weight(&self) -> Option<WeightId> {
        match *self {
            Op::GetRows { table } => Some(table),
            Op::MulWeight { w, .. } | Op::AddWeight { w, .. } | Op::MulMat { w, .. } => Some(w),
            Op::MulMatId { first, .. } => Some(first),
            Op::SsmConv { kernel, .. } => Some(kernel),
            Op::Rope { p, .. } => p.freq_factors,
            _ => None,
        }
    }
}

/// An op with its output, a readable name and the backend it runs on.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub out: Option<TensorId>,
    pub name: String,
    /// Index into the executor's backend list, set by the scheduler.
    pub backend: usize,
}

/// Shape and storage of an activation tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc {
    pub rows: usize,
    pub cols: usize,
    /// The tensor whose memory this one uses (itself unless it is a view).
    pub base: TensorId,
    /// Memory slot, assigned by [`GraphBuilder::finish`].
    pub slot: usize,
}

impl TensorDesc {
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A finished graph: nodes in execution order, tensor shapes, slot sizes.
#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub tensors: Vec<TensorDesc>,
    /// f32 elements each slot must hold.
    pub slot_sizes: Vec<usize>,
    pub n_tokens: usize,
    /// The tensor holding the logits.
    pub output: TensorId,
}

impl Graph {
    pub fn tensor(&self, id: TensorId) -> &TensorDesc {
        &self.tensors[id.0 as usize]
    }

    /// One line per op: index, op, name, output shape, backend name.
    pub fn describe(&self, weight_desc: &dyn Fn(WeightId) -> String, backends: &[&str]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "graph: {} tokens, {} nodes, {} slots ({:.1} MiB of activations)",
            self.n_tokens,
            self.nodes.len(),
            self.slot_sizes.len(),
            self.slot_sizes.iter().sum::<usize>() as f64 * 4.0 / (1024.0 * 1024.0)
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let shape = match n.out {
                Some(t) => {
                    let d = self.tensor(t);
                    format!("[{} x {}] f32", d.cols, d.rows)
                }
                None => "(cache)".to_string(),
            };
            let w =
                n.op.weight()
                    .map(|w| format!(" w={}", weight_desc(w)))
                    .unwrap_or_default();
            let be = backends.get(n.backend).copied().unwrap_or("?");
            let _ = writeln!(
                s,
                "{:4} {:<15} {:<28} {:<20} {:<5}{}",
                i,
                n.op.kind().name(),
                n.name,
                shape,
                be,
                w
            );
        }
        s
    }
}

/// Builds a graph node by node; [`GraphBuilder::finish`] assigns memory.
pub struct GraphBuilder {
    nodes: Vec<Node>,
    tensors: Vec<TensorDesc>,
    n_tokens: usize,
}

impl GraphBuilder {
    pub fn new(n_tokens: usize) -> Self {
        GraphBuilder {
            nodes: Vec::new(),
            tensors: Vec::new(),
            n_tokens,
        }
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub fn shape(&self, t: TensorId) -> (usize, usize) {
        let d = &self.tensors[t.0 as usize];
        (d.rows, d.cols)
    }

    fn new_tensor(&mut self, rows: usize, cols: usize) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(TensorDesc {
            rows,
            cols,
            base: id,
            slot: usize::MAX,
        });
        id
    }

    /// Appends an op producing a `rows x cols` tensor.
    pub fn push(&mut self, op: Op, rows: usize, cols: usize, name: impl Into<String>) -> TensorId {
        let out = self.new_tensor(rows, cols);
        self.nodes.push(Node {
            op,
            out: Some(out),
            name: name.into(),
            backend: 0,
        });
        out
    }

    /// Appends an op with no output tensor (writes to the KV cache).
    pub fn push_effect(&mut self, op: Op, name: impl Into<String>) {
        self.nodes.push(Node {
            op,
            out: None,
            name: name.into(),
            backend: 0,
        });
    }

    /// The same memory seen with another shape (same number of elements).
    pub fn reshape(&mut self, x: TensorId, rows: usize, cols: usize) -> TensorId {
        let d = self.tensors[x.0 as usize];
        debug_assert_eq!(d.rows * d.cols, rows * cols);
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(TensorDesc {
            rows,
            cols,
            base: d.base,
            slot: usize::MAX,
        });
        id
    }

    // Convenience constructors, one per op, used by the model code.

    pub fn get_rows(&mut self, table: WeightId, n_embd: usize, name: &str) -> TensorId {
        let n = self.n_tokens;
        self.push(Op::GetRows { table }, n, n_embd, name)
    }
    pub fn rms_norm(&mut self, x: TensorId, eps: f32, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::RmsNorm { x, eps }, r, c, name)
    }
    pub fn mul_weight(&mut self, x: TensorId, w: WeightId, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::MulWeight { x, w }, r, c, name)
    }
    pub fn add_weight(&mut self, x: TensorId, w: WeightId, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::AddWeight { x, w }, r, c, name)
    }
    pub fn add(&mut self, a: TensorId, b: TensorId, name: &str) -> TensorId {
        let (r, c) = self.shape(a);
        self.push(Op::Add { a, b }, r, c, name)
    }
    pub fn mul(&mut self, a: TensorId, b: TensorId, name: &str) -> TensorId {
        let (r, c) = self.shape(a);
        self.push(Op::Mul { a, b }, r, c, name)
    }
    pub fn sigmoid(&mut self, x: TensorId, name: &str) -> TensorId {
        self.unary(x, UnaryFn::Sigmoid, name)
    }
    pub fn softplus(&mut self, x: TensorId, name: &str) -> TensorId {
        self.unary(x, UnaryFn::Softplus, name)
    }
    pub fn silu(&mut self, x: TensorId, name: &str) -> TensorId {
        self.unary(x, UnaryFn::Silu, name)
    }
    /// Rows of `a` and `b` (same row count) joined.
    pub fn concat(&mut self, a: TensorId, b: TensorId, name: &str) -> TensorId {
        let ((r, ca), (_, cb)) = (self.shape(a), self.shape(b));
        self.push(Op::Concat { a, b }, r, ca + cb, name)
    }
    /// The delta rule over `qkv` and `gb` (see [`Op::GatedDeltaNet`]).
    pub fn gated_delta_net(
        &mut self,
        qkv: TensorId,
        gb: TensorId,
        p: DeltaNetParams,
        name: &str,
    ) -> TensorId {
        let (r, _) = self.shape(qkv);
        let op = Op::GatedDeltaNet { qkv, gb, p };
        self.push(op, r, p.n_v_heads * p.head_dim, name)
    }
    /// Short causal convolution of `x` (tokens x channels) with `layer`'s
    /// rolling window (see [`Op::SsmConv`]).
    pub fn ssm_conv(
        &mut self,
        x: TensorId,
        kernel: WeightId,
        layer: usize,
        name: &str,
    ) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::SsmConv { x, kernel, layer }, r, c, name)
    }
    pub fn scale(&mut self, x: TensorId, s: f32, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::Scale { x, s }, r, c, name)
    }
    pub fn unary(&mut self, x: TensorId, f: UnaryFn, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::Unary { x, f }, r, c, name)
    }
    /// `w` has `n_out` rows of `x`'s row length.
    pub fn mul_mat(&mut self, w: WeightId, n_out: usize, x: TensorId, name: &str) -> TensorId {
        let (r, _) = self.shape(x);
        self.push(Op::MulMat { w, x }, r, n_out, name)
    }
    pub fn rope(&mut self, x: TensorId, p: RopeParams, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::Rope { x, p }, r, c, name)
    }
    pub fn store_kv(&mut self, layer: usize, k: TensorId, v: TensorId, name: &str) {
        self.push_effect(Op::StoreKv { layer, k, v }, name)
    }
    pub fn attention(&mut self, q: TensorId, p: AttnParams, name: &str) -> TensorId {
        let (r, _) = self.shape(q);
        self.push(Op::Attention { q, p }, r, p.n_head * p.head_dim, name)
    }
    pub fn gated(&mut self, gate: TensorId, up: TensorId, act: GateAct, name: &str) -> TensorId {
        let (r, c) = self.shape(gate);
        self.push(Op::Gated { gate, up, act }, r, c, name)
    }
    /// Columns `offset..offset + cols` of every row of `x`.
    pub fn cols(&mut self, x: TensorId, offset: usize, cols: usize, name: &str) -> TensorId {
        let (r, _) = self.shape(x);
        self.push(Op::Cols { x, offset }, r, cols, name)
    }
    pub fn soft_max(&mut self, x: TensorId, name: &str) -> TensorId {
        let (r, c) = self.shape(x);
        self.push(Op::SoftMax { x }, r, c, name)
    }
    pub fn top_k(&mut self, x: TensorId, k: usize, name: &str) -> TensorId {
        let (r, _) = self.shape(x);
        self.push(Op::TopK { x, k }, r, k, name)
    }
    pub fn moe_weights(
        &mut self,
        probs: TensorId,
        ids: TensorId,
        norm: bool,
        scale: f32,
        name: &str,
    ) -> TensorId {
        let (r, k) = self.shape(ids);
        let op = Op::MoeWeights {
            probs,
            ids,
            norm,
            scale,
        };
        self.push(op, r, k, name)
    }
    /// `first..first + n_expert` are matrices of `n_out` rows; `ids` is a
    /// TopK output.
    pub fn mul_mat_id(
        &mut self,
        first: WeightId,
        n_expert: usize,
        n_out: usize,
        x: TensorId,
        ids: TensorId,
        name: &str,
    ) -> TensorId {
        let (n, k) = self.shape(ids);
        let op = Op::MulMatId {
            first,
            n_expert,
            x,
            ids,
        };
        self.push(op, n * k, n_out, name)
    }
    pub fn moe_combine(&mut self, x: TensorId, w: TensorId, name: &str) -> TensorId {
        let (n, _) = self.shape(w);
        let (_, c) = self.shape(x);
        self.push(Op::MoeCombine { x, w }, n, c, name)
    }
    pub fn last_row(&mut self, x: TensorId, name: &str) -> TensorId {
        let (_, c) = self.shape(x);
        self.push(Op::LastRow { x }, 1, c, name)
    }

    /// Assigns memory slots (reusing a slot once its tensor is dead) and
    /// returns the graph. `output` stays alive to the end.
    pub fn finish(mut self, output: TensorId) -> Graph {
        let n_t = self.tensors.len();
        // Last node reading each base tensor.
        let mut last_use = vec![0usize; n_t];
        for (i, node) in self.nodes.iter().enumerate() {
            for t in node.op.inputs().into_iter().flatten() {
                let b = self.tensors[t.0 as usize].base;
                last_use[b.0 as usize] = i;
            }
        }
        let out_base = self.tensors[output.0 as usize].base;
        last_use[out_base.0 as usize] = usize::MAX;

        // Size each base needs: the largest view of it.
        let mut need = vec![0usize; n_t];
        for d in &self.tensors {
            let b = d.base.0 as usize;
            need[b] = need[b].max(d.len());
        }

        let mut slot_sizes: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut base_slot = vec![usize::MAX; n_t];
        for i in 0..self.nodes.len() {
            if let Some(out) = self.nodes[i].out {
                let b = self.tensors[out.0 as usize].base.0 as usize;
                if base_slot[b] == usize::MAX {
                    let n = need[b];
                    // Best fit among free slots: the smallest that holds it,
                    // else the largest (grown).
                    let pick = free
                        .iter()
                        .enumerate()
                        .filter(|(_, &s)| slot_sizes[s] >= n)
                        .min_by_key(|(_, &s)| slot_sizes[s])
                        .or_else(|| free.iter().enumerate().max_by_key(|(_, &s)| slot_sizes[s]))
                        .map(|(j, _)| j);
                    let slot = match pick {
                        Some(j) => free.swap_remove(j),
                        None => {
                            slot_sizes.push(0);
                            slot_sizes.len() - 1
                        }
                    };
                    slot_sizes[slot] = slot_sizes[slot].max(n);
                    base_slot[b] = slot;
                }
            }
            // Release bases whose last reader is this node.
            for t in self.nodes[i].op.inputs().into_iter().flatten() {
                let b = self.tensors[t.0 as usize].base.0 as usize;
                if last_use[b] == i && base_slot[b] != usize::MAX && !free.contains(&base_slot[b]) {
                    free.push(base_slot[b]);
                }
            }
        }
        for d in self.tensors.iter_mut() {
            d.slot = base_slot[d.base.0 as usize];
        }
        Graph {
            nodes: self.nodes,
            tensors: self.tensors,
            slot_sizes,
            n_tokens: self.n_tokens,
            output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_never_shared_by_live_tensors() {
        let mut g = GraphBuilder::new(4);
        let x = g.get_rows(WeightId(0), 8, "x");
        let mut cur = x;
        for i in 0..5 {
            let n = g.rms_norm(cur, 1e-5, &format!("n{i}"));
            let m = g.mul_mat(WeightId(1), 8, n, &format!("m{i}"));
            cur = g.add(cur, m, &format!("r{i}"));
        }
        let graph = g.finish(cur);
        assert!(graph.slot_sizes.len() <= 4, "{:?}", graph.slot_sizes);
        // An op's output never shares a slot with one of its inputs.
        for node in &graph.nodes {
            let out = graph.tensor(node.out.unwrap()).slot;
            for t in node.op.inputs().into_iter().flatten() {
                assert_ne!(graph.tensor(t).slot, out, "{}", node.name);
            }
        }
    }
}
