//! Transformer models built from GGUF metadata alone: llama (SmolLM2,
//! TinyLlama, Llama 2/3 with llama3 rope scaling), qwen2, qwen3, qwen3moe,
//! gemma3, granite, smollm3 and phi3 (see docs/models.md).
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

mod hparams;
mod transformer;
mod weights;

pub use hparams::{Arch, HParams, MoeParams};

use crate::backend::cpu::CpuBackend;
use crate::backend::kv::KvCache;
use crate::backend::{self, Backend, BackendError, ExecCtx, Scratch, Weights};
use crate::graph::{Graph, WeightId};
use weights::{bind_weights, ModelWeights};

/// Result of the model layer.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Architectures this engine builds (`general.architecture` values).
pub const SUPPORTED_ARCHITECTURES: [&str; 8] = [
    "llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "granite", "smollm3", "phi3",
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
    /// Forgets all tokens after the first `n` (keeps the cache for them).
    pub fn truncate(&mut self, n: usize) {
        self.n_past = self.n_past.min(n);
    }
    /// Forgets all tokens.
    pub fn clear(&mut self) {
        self.n_past = 0;
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
        let kv = KvCache::new(
            hp.n_layer,
            n_ctx,
            hp.n_head_kv * hp.head_dim,
            hp.head_dim,
            opts.type_k,
            opts.type_v,
        )?;
        Ok(State {
            n_past: 0,
            n_batch: opts.n_batch.max(1),
            kv,
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
                slots,
                scratch,
                graphs,
                logits,
                ..
            } = state;
            let graph = &graphs[gi].2;
            let mut ctx = ExecCtx {
                weights: &self.weights,
                tokens: chunk,
                n_past: *n_past,
                kv,
                scratch,
            };
            let backends = &self.backends;
            self.pool
                .install(|| backend::execute(graph, backends, slots, &mut ctx))?;
            if out != GraphOut::None {
                let d = graph.tensor(graph.output);
                logits.extend_from_slice(&slots[d.slot][..d.len()]);
            }
            *n_past += chunk.len();
        }
        Ok(&state.logits)
    }

    /// Finds or builds the graph for a batch size, growing the slots.
    fn graph_index(&self, state: &mut State, n: usize, out: GraphOut) -> usize {
        if let Some(i) = state
            .graphs
            .iter()
            .position(|(gn, go, _)| *gn == n && *go == out)
        {
            return i;
        }
        let graph = self.build_graph(n, out);
        if state.slots.len() < graph.slot_sizes.len() {
            state.slots.resize_with(graph.slot_sizes.len(), Vec::new);
        }
        for (s, &size) in state.slots.iter_mut().zip(&graph.slot_sizes) {
            if s.len() < size {
                s.resize(size, 0.0);
            }
        }
        // Keep a few graphs: decode (1 token) and the recent batch sizes.
        if state.graphs.len() >= 8 {
            let victim = state
                .graphs
                .iter()
                .position(|(gn, _, _)| *gn != 1)
                .unwrap_or(0);
            state.graphs.remove(victim);
        }
        state.graphs.push((n, out, graph));
        state.graphs.len() - 1
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
