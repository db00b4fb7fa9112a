//! Transformer models built from GGUF metadata alone: llama (SmolLM2,
//! TinyLlama, Llama 2/3 with llama3 rope scaling), qwen2, qwen3, qwen3moe,
//! gemma3, gemma4, granite, smollm3, phi3, and the hybrids lfm2, lfm2moe and
//! qwen35 (see docs/models.md).
//!
//! [`Model::load`] reads the hyperparameters and binds the weights (used in
//! place from the mmap); [`Model::forward`] builds (once per batch size) the
//! tensor graph of [`crate::graph`], schedules it onto the backends of
//! [`crate::backend`] and runs it, keeping keys and values in the
//! [`State`]'s cache.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use gguf::{GgmlType, GgufFile};

mod builders;
mod gemma4;
mod hparams;
mod lfm2;
mod qwen35;
mod transformer;
mod weights;

pub use hparams::{Arch, DeltaNetHParams, HParams, MoeParams};

use crate::backend::cpu::CpuBackend;
use crate::backend::kv::{KvCache, LayerKvShape};
use crate::backend::recurrent::{ConvShape, MatrixShape, RecurrentSpec, RecurrentState};
use crate::backend::{self, Backend, BackendError, ExecCtx, Scratch, SeqRows, Weights};
use crate::graph::{Graph, WeightId};
use weights::{bind_weights, Mixer, ModelWeights};

/// Result of the model layer.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Architectures this engine builds (`general.architecture` values).
pub const SUPPORTED_ARCHITECTURES: [&str; 12] = [
    "llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "gemma4", "granite", "smollm3", "phi3",
    "lfm2", "lfm2moe", "qwen35",
];

/// Whether `general.architecture` names a model family rkinfer builds.
pub fn is_supported_architecture(name: &str) -> bool {
    Arch::from_name(name).is_some()
}

/// Everything that can go wrong loading or running a model.
#[derive(Debug)]
pub enum ModelError {
    /// `general.architecture` names a model family we do not build.
    UnknownArchitecture { arch: String },
    /// A tensor the architecture needs is not in the file.
    MissingTensor { name: String },
    /// A tensor has another shape than the hyperparameters imply.
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<u64>,
    },
    /// A tensor's type has no kernel.
    UnsupportedType { tensor: String, ty: String },
    /// A hyperparameter is missing a sensible value.
    InvalidHParam { key: String, reason: String },
    /// The batch does not fit in the context.
    ContextFull { n_ctx: usize, needed: usize },
    /// The context size is zero or too large to allocate.
    ContextTooLarge { n_ctx: usize },
    /// A token id is not in the vocabulary.
    TokenOutOfRange { token: u32, n_vocab: usize },
    /// `forward` was called with no tokens.
    EmptyBatch,
    /// A batched decode step got another number of tokens than sequences.
    BatchShape { sequences: usize, tokens: usize },
    /// The thread pool could not be built.
    ThreadPool(String),
    /// A core in the pinning list does not exist or pinning failed.
    CpuPinning(String),
    /// The file is malformed or lacks a value the model needs.
    Gguf(gguf::GgufError),
    /// A backend failed to prepare a weight or run an op.
    Backend(BackendError),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::UnknownArchitecture { arch } => write!(
                f,
                "unknown model architecture {} (supported: {})",
                gguf::quote(arch),
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
            ModelError::MissingTensor { name } => write!(f, "missing tensor '{name}'"),
            ModelError::TensorShape {
                name,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor '{name}' has shape {found:?}, expected {expected:?}"
                )
            }
            ModelError::UnsupportedType { tensor, ty } => {
                write!(
                    f,
                    "tensor '{tensor}' has type {ty}, which has no CPU kernel yet"
                )
            }
            ModelError::InvalidHParam { key, reason } => {
                write!(f, "hyperparameter {key}: {reason}")
            }
            ModelError::ContextFull { n_ctx, needed } => {
                write!(
                    f,
                    "context full: {needed} tokens needed, context size is {n_ctx}"
                )
            }
            ModelError::ContextTooLarge { n_ctx } => write!(f, "invalid context size {n_ctx}"),
            ModelError::TokenOutOfRange { token, n_vocab } => {
                write!(
                    f,
                    "token id {token} is out of range (vocabulary size {n_vocab})"
                )
            }
            ModelError::EmptyBatch => write!(f, "no tokens to evaluate"),
            ModelError::BatchShape { sequences, tokens } => write!(
                f,
                "a decode batch needs one token per sequence: {tokens} tokens for {sequences} sequences"
            ),
            ModelError::ThreadPool(e) => write!(f, "cannot build thread pool: {e}"),
            ModelError::CpuPinning(e) => write!(f, "cannot pin threads: {e}"),
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::Backend(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::Gguf(e) => Some(e),
            ModelError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

impl From<gguf::GgufError> for ModelError {
    fn from(e: gguf::GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

impl From<BackendError> for ModelError {
    fn from(e: BackendError) -> Self {
        ModelError::Backend(e)
    }
}

/// Options for [`Model::load`].
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Worker threads (0: all available cores).
    pub n_threads: usize,
    /// Cores to pin the workers to, e.g. `[4, 5, 6, 7]` for the RK3588's
    /// fast cores (empty: no pinning). Workers take them round-robin.
    pub cpus: Vec<usize>,
}

/// Options for [`Model::new_state`].
#[derive(Clone, Debug)]
pub struct StateOptions {
    /// Context size in tokens (0: the model's training context).
    pub n_ctx: usize,
    /// Cache type of keys and values: F16 (default), Q8_0 or Q4_0.
    pub type_k: GgmlType,
    pub type_v: GgmlType,
    /// Largest batch evaluated in one graph (longer inputs are split).
    pub n_batch: usize,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            n_ctx: 0,
            type_k: GgmlType::F16,
            type_v: GgmlType::F16,
            n_batch: 512,
        }
    }
}

/// Which logits [`Model::forward`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsMode {
    /// The last token's: 1 x n_vocab.
    Last,
    /// Every token's: len x n_vocab, row-major.
    All,
}

/// What a graph ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraphOut {
    /// Hidden states only (a chunk whose logits are not wanted).
    None,
    Last,
    All,
}

/// A sequence being evaluated: KV cache, activation memory, scratch and the
/// graphs built so far (decoding reuses them and allocates nothing).
pub struct State {
    n_past: usize,
    n_batch: usize,
    kv: KvCache,
    /// What recurrent layers carry between tokens (empty for transformers).
    recurrent: RecurrentState,
    slots: Vec<Vec<f32>>,
    scratch: Scratch,
    graphs: Vec<(usize, GraphOut, Graph)>,
    logits: Vec<f32>,
}

impl State {
    /// Tokens in the cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }
    /// Context size.
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }
    /// Forgets all tokens after the first `n` (keeps the cache for them)
    /// and returns how many tokens the state still holds. A model with
    /// recurrent layers cannot rewind their state to an earlier position:
    /// going back forgets everything (returns 0), and the caller evaluates
    /// the tokens it keeps again.
    pub fn truncate(&mut self, n: usize) -> usize {
        if n < self.n_past && !self.recurrent.is_empty() {
            self.clear();
        } else {
            self.n_past = self.n_past.min(n);
        }
        self.n_past
    }
    /// Forgets all tokens.
    pub fn clear(&mut self) {
        self.n_past = 0;
        self.recurrent.clear();
    }
    /// Whether `truncate` can keep a prefix (false: it starts over).
    pub fn can_rewind(&self) -> bool {
        self.recurrent.is_empty()
    }
    /// Bytes of the recurrent state (0 for transformers).
    pub fn recurrent_bytes(&self) -> usize {
        self.recurrent.size_bytes()
    }
    /// Bytes of the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.kv.size_bytes()
    }
    /// Matmul work this state ran so far, by backend.
    pub fn matmul_work(&self) -> &crate::backend::MatmulWork {
        &self.scratch.work
    }
}

/// Activation memory and graphs for decode steps of several sequences at
/// once ([`Model::decode_batch`]). It holds no sequence: one serves any set
/// of [`State`]s, whose caches and positions stay theirs.
#[derive(Default)]
pub struct DecodeBatch {
    slots: Vec<Vec<f32>>,
    scratch: Scratch,
    graphs: Vec<(usize, GraphOut, Graph)>,
    logits: Vec<f32>,
}

impl DecodeBatch {
    pub fn new() -> DecodeBatch {
        DecodeBatch::default()
    }
}

/// The index in `graphs` of the graph for `n` rows ending in `out`, built
/// by `build` when missing; `slots` grow to hold its tensors.
fn cached_graph(
    graphs: &mut Vec<(usize, GraphOut, Graph)>,
    slots: &mut Vec<Vec<f32>>,
    n: usize,
    out: GraphOut,
    build: impl FnOnce() -> Graph,
) -> usize {
    if let Some(i) = graphs.iter().position(|(gn, go, _)| *gn == n && *go == out) {
        return i;
    }
    let graph = build();
    if slots.len() < graph.slot_sizes.len() {
        slots.resize_with(graph.slot_sizes.len(), Vec::new);
    }
    for (s, &size) in slots.iter_mut().zip(&graph.slot_sizes) {
        if s.len() < size {
            s.resize(size, 0.0);
        }
    }
    // Keep a few graphs: decode (1 token) and the recent batch sizes.
    if graphs.len() >= 8 {
        let victim = graphs.iter().position(|(gn, _, _)| *gn != 1).unwrap_or(0);
        graphs.remove(victim);
    }
    graphs.push((n, out, graph));
    graphs.len() - 1
}

/// Whether every op of `graph` can run rows of different sequences.
fn graph_batches_sequences(graph: &Graph) -> bool {
    graph.nodes.iter().all(|n| n.op.batches_sequences())
}

/// A loaded model: hyperparameters, weights (prepared per backend), the
/// backends and the thread pool.
pub struct Model {
    file: Arc<GgufFile>,
    hparams: HParams,
    w: ModelWeights,
    weights: Weights,
    backends: Vec<Box<dyn Backend>>,
    pool: rayon::ThreadPool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("hparams", &self.hparams)
            .finish_non_exhaustive()
    }
}

/// Pins the calling thread to one core.
fn pin_to_cpu(cpu: usize) -> Result<(), ModelError> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)
        .map_err(|e| ModelError::CpuPinning(format!("core {cpu}: {e}")))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| ModelError::CpuPinning(format!("core {cpu}: {e}")))
}

impl Model {
    /// Loads a GGUF model for the CPU alone.
    pub fn load(path: &Path, opts: &ModelOptions) -> Result<Model> {
        Model::load_with_backends(path, opts, Vec::new())
    }

    /// Loads a model onto `backends` in priority order (e.g. the NPU, as
    /// [`crate::backend::DeviceOptions::backends`] opens them); the CPU
    /// backend is appended last, takes whatever they leave and runs what
    /// they decline.
    pub fn load_with_backends(
        path: &Path,
        opts: &ModelOptions,
        backends: Vec<Box<dyn Backend>>,
    ) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Model::from_gguf(file, opts, backends)
    }

    /// Builds a model from an opened GGUF file.
    pub fn from_gguf(
        file: GgufFile,
        opts: &ModelOptions,
        mut backends: Vec<Box<dyn Backend>>,
    ) -> Result<Model> {
        let hparams = HParams::from_gguf(&file)?;
        let (w, mut list) = bind_weights(&file, &hparams)?;
        backends.push(Box::new(CpuBackend::new()));
        for (i, weight) in list.iter_mut().enumerate() {
            let bytes = weight.data.bytes(&file);
            for (bi, be) in backends.iter_mut().enumerate() {
                if be.prepare_weight(WeightId(i as u32), weight, bytes)? {
                    weight.backend = bi;
                    break;
                }
            }
        }
        let n_threads = if opts.n_threads > 0 {
            opts.n_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let cpus = opts.cpus.clone();
        if let Some(&c) = cpus.iter().find(|&&c| c >= 1024) {
            return Err(ModelError::CpuPinning(format!("core {c} does not exist")));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .thread_name(|i| format!("rkinfer-{i}"))
            .start_handler(move |i| {
                if !cpus.is_empty() {
                    if let Err(e) = pin_to_cpu(cpus[i % cpus.len()]) {
                        log::warn!("{e}");
                    }
                }
            })
            .build()
            .map_err(|e| ModelError::ThreadPool(e.to_string()))?;
        let file = Arc::new(file);
        let weights = Weights {
            file: Arc::clone(&file),
            list,
        };
        Ok(Model {
            file,
            hparams,
            w,
            weights,
            backends,
            pool,
        })
    }

    /// The GGUF file (metadata, tokenizer vocabulary).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }
    pub fn hparams(&self) -> &HParams {
        &self.hparams
    }
    pub fn n_vocab(&self) -> usize {
        self.hparams.n_vocab
    }
    pub fn n_ctx_train(&self) -> usize {
        self.hparams.n_ctx_train
    }
    pub fn n_threads(&self) -> usize {
        self.pool.current_num_threads()
    }
    /// The backends in priority order, by name ("NPU,CPU"; "CPU" alone).
    pub fn backend_names(&self) -> String {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        names.join(",")
    }
    /// The weight table (names, types, owning backend).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// A fresh state with an empty KV cache.
    pub fn new_state(&self, opts: &StateOptions) -> Result<State> {
        let n_ctx = if opts.n_ctx == 0 {
            self.hparams.n_ctx_train
        } else {
            opts.n_ctx
        };
        if n_ctx == 0 || n_ctx > (1 << 24) {
            return Err(ModelError::ContextTooLarge { n_ctx });
        }
        let hp = &self.hparams;
        // Layers attending over another layer's cache have none of their own.
        let shapes: Vec<LayerKvShape> = (0..hp.n_layer)
            .map(|il| LayerKvShape {
                kv_dim: if hp.kv_source_layer(il) == il {
                    hp.layer_kv_dim(il)
                } else {
                    0
                },
                head_dim: hp.layer_head_dim(il),
            })
            .collect();
        let kv = KvCache::with_layer_shapes(&shapes, n_ctx, opts.type_k, opts.type_v)?;
        let recurrent = RecurrentState::new(&self.recurrent_specs())?;
        Ok(State {
            n_past: 0,
            n_batch: opts.n_batch.max(1),
            kv,
            recurrent,
            slots: Vec::new(),
            scratch: Scratch::default(),
            graphs: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// Evaluates `tokens` at positions `n_past..n_past+len` and returns
    /// their logits (see [`LogitsMode`]).
    pub fn forward<'s>(
        &self,
        state: &'s mut State,
        tokens: &[u32],
        mode: LogitsMode,
    ) -> Result<&'s [f32]> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        let needed = state.n_past + tokens.len();
        if needed > state.kv.n_ctx {
            return Err(ModelError::ContextFull {
                n_ctx: state.kv.n_ctx,
                needed,
            });
        }
        let n_vocab = self.hparams.n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { token: t, n_vocab });
        }
        state.logits.clear();
        let n_chunks = tokens.len().div_ceil(state.n_batch);
        for (ci, chunk) in tokens.chunks(state.n_batch).enumerate() {
            let out = match mode {
                LogitsMode::All => GraphOut::All,
                LogitsMode::Last if ci + 1 == n_chunks => GraphOut::Last,
                LogitsMode::Last => GraphOut::None,
            };
            let gi = self.graph_index(state, chunk.len(), out);
            let State {
                n_past,
                kv,
                recurrent,
                slots,
                scratch,
                graphs,
                logits,
                ..
            } = state;
            let graph = &graphs[gi].2;
            let mut seq = [SeqRows {
                kv,
                n_past: *n_past,
                n_rows: chunk.len(),
                recurrent,
            }];
            let mut ctx = ExecCtx {
                weights: &self.weights,
                tokens: chunk,
                seqs: &mut seq,
                scratch,
            };
            let backends = &self.backends;
            let run = self
                .pool
                .install(|| backend::execute(graph, backends, slots, &mut ctx));
            if let Err(e) = run {
                // A failed pass may have updated some layers' recurrent
                // state: it no longer matches n_past, so start over.
                if !recurrent.is_empty() {
                    *n_past = 0;
                    recurrent.clear();
                }
                return Err(e.into());
            }
            if out != GraphOut::None {
                let d = graph.tensor(graph.output);
                logits.extend_from_slice(&slots[d.slot][..d.len()]);
            }
            *n_past += chunk.len();
        }
        Ok(&state.logits)
    }

    /// What each layer keeps between tokens besides the KV cache.
    fn recurrent_specs(&self) -> Vec<RecurrentSpec> {
        self.w
            .layers
            .iter()
            .map(|layer| match &layer.mixer {
                Mixer::Attention(_) => RecurrentSpec::default(),
                // The convolution window over q, k, v; one state matrix per
                // value head.
                Mixer::DeltaNet(d) => RecurrentSpec {
                    conv: Some(ConvShape {
                        rows: d.shape.d_conv - 1,
                        channels: d.shape.conv_dim(),
                    }),
                    matrix: Some(MatrixShape {
                        heads: d.shape.n_v_heads,
                        k_dim: d.shape.head_dim,
                        v_dim: d.shape.head_dim,
                    }),
                },
                Mixer::ShortConv(_) => RecurrentSpec {
                    conv: Some(ConvShape {
                        rows: self.hparams.shortconv_l_cache - 1,
                        channels: self.hparams.n_embd,
                    }),
                    matrix: None,
                },
            })
            .collect()
    }

    /// The graph of `n` tokens for this model's architecture, scheduled
    /// onto the backends.
    fn build_graph(&self, n: usize, out: GraphOut) -> Graph {
        let mut graph = match self.hparams.arch {
            Arch::Llama
            | Arch::Qwen2
            | Arch::Qwen3
            | Arch::Gemma3
            | Arch::Granite
            | Arch::Smollm3
            | Arch::Phi3
            | Arch::Qwen3Moe
            | Arch::Lfm2
            | Arch::Lfm2Moe
            | Arch::Qwen35 => self.build_transformer(n, out),
            Arch::Gemma4 => self.build_gemma4(n, out),
        };
        backend::schedule(&mut graph, &self.backends, &self.weights);
        graph
    }

    /// Finds or builds the graph for a batch size, growing the slots.
    fn graph_index(&self, state: &mut State, n: usize, out: GraphOut) -> usize {
        cached_graph(&mut state.graphs, &mut state.slots, n, out, || {
            self.build_graph(n, out)
        })
    }

    /// Whether [`Model::decode_batch`] runs its sequences as one batch:
    /// every op of the model can keep rows of different sequences apart
    /// (otherwise it evaluates them one after the other, with the same
    /// results).
    pub fn supports_decode_batch(&self) -> bool {
        graph_batches_sequences(&self.build_graph(2, GraphOut::All))
    }

    /// One decode step of several sequences at once: `tokens[i]` is
    /// evaluated at the next position of `seqs[i]` (its own cache, its own
    /// position). The rows share every matmul (one pass over each weight
    /// for all sequences), while rope, the cache store and attention work
    /// on each row's own sequence; each row is rounded as that sequence's
    /// decode step alone would be, so the logits are bit-identical to
    /// [`Model::forward`] of each token by itself. Returns `seqs.len()`
    /// rows of `n_vocab` logits, row-major, in the order of `seqs`.
    pub fn decode_batch<'b>(
        &self,
        batch: &'b mut DecodeBatch,
        seqs: &mut [&mut State],
        tokens: &[u32],
    ) -> Result<&'b [f32]> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyBatch);
        }
        if seqs.len() != tokens.len() {
            return Err(ModelError::BatchShape {
                sequences: seqs.len(),
                tokens: tokens.len(),
            });
        }
        for s in seqs.iter() {
            if s.n_past + 1 > s.kv.n_ctx {
                return Err(ModelError::ContextFull {
                    n_ctx: s.kv.n_ctx,
                    needed: s.n_past + 1,
                });
            }
        }
        let n_vocab = self.hparams.n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { token: t, n_vocab });
        }
        batch.logits.clear();
        let n = tokens.len();
        let gi = cached_graph(
            &mut batch.graphs,
            &mut batch.slots,
            n,
            GraphOut::All,
            || self.build_graph(n, GraphOut::All),
        );
        let graph = &batch.graphs[gi].2;
        if n > 1 && !graph_batches_sequences(graph) {
            // One sequence at a time, through its own state.
            for (s, &t) in seqs.iter_mut().zip(tokens) {
                let logits = self.forward(s, &[t], LogitsMode::Last)?;
                batch.logits.extend_from_slice(logits);
            }
            return Ok(&batch.logits);
        }
        let mut rows: Vec<SeqRows<'_>> = seqs
            .iter_mut()
            .map(|s| SeqRows {
                n_past: s.n_past,
                kv: &mut s.kv,
                n_rows: 1,
                recurrent: &mut s.recurrent,
            })
            .collect();
        let mut ctx = ExecCtx {
            weights: &self.weights,
            tokens,
            seqs: &mut rows,
            scratch: &mut batch.scratch,
        };
        let (backends, slots) = (&self.backends, &mut batch.slots);
        self.pool
            .install(|| backend::execute(graph, backends, slots, &mut ctx))?;
        let d = graph.tensor(graph.output);
        batch
            .logits
            .extend_from_slice(&batch.slots[d.slot][..d.len()]);
        for s in seqs.iter_mut() {
            s.n_past += 1;
        }
        Ok(&batch.logits)
    }

    /// The graph for `n_tokens` tokens, printed with each op's shape, type
    /// and backend (`--dump-graph`).
    pub fn describe_graph(&self, n_tokens: usize) -> String {
        let g = self.build_graph(n_tokens.max(1), GraphOut::Last);
        let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
        let mut s = g.describe(&|w| self.weights.describe(w), &names);
        s.push_str(&backend::placement_report(
            &g,
            &self.backends,
            &self.weights,
        ));
        s
    }

    /// Every matmul of an `n_tokens` forward (last logits only): its
    /// weight and the rows it multiplies.
    pub fn matmul_rows(&self, n_tokens: usize) -> Vec<(WeightId, usize)> {
        backend::matmul_rows(&self.build_graph(n_tokens.max(1), GraphOut::Last))
    }

    /// Where each matmul of an `n_tokens` batch runs and why (empty when
    /// only the CPU runs).
    pub fn placement_report(&self, n_tokens: usize) -> String {
        let g = self.build_graph(n_tokens.max(1), GraphOut::Last);
        backend::placement_report(&g, &self.backends, &self.weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_list_names_every_architecture_built() {
        for name in SUPPORTED_ARCHITECTURES {
            let arch = Arch::from_name(name).expect("listed architectures parse");
            assert_eq!(arch.name(), name);
        }
        assert!(!is_supported_architecture("mamba"));
        let err = ModelError::UnknownArchitecture {
            arch: "mamba".into(),
        };
        assert!(err.to_string().contains("lfm2, lfm2moe"), "{err}");
    }
}
