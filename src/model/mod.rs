//! Transformer models built from GGUF metadata alone: llama (SmolLM2,
//! TinyLlama, Llama 2/3), qwen2, qwen3 and gemma3.
//!
//! [`Model::load`] reads the hyperparameters and binds the weights (used in
//! place from the mmap); [`Model::forward`] builds (once per batch size) the
//! tensor graph of [`crate::graph`], schedules it onto the backends of
//! [`crate::backend`] and runs it, keeping keys and values in the
//! [`State`]'s cache.

pub mod kv;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use gguf::{GgmlType, GgufFile, Value};

use crate::backend::cpu::{CpuBackend, MATMUL_TYPES, MAX_HEAD_DIM};
use crate::backend::{self, Backend, ExecCtx, Scratch, Weight, WeightData, Weights};
use crate::graph::{AttnParams, GateAct, Graph, GraphBuilder, RopeMode, RopeParams, WeightId};
use kv::KvCache;

/// Architectures this engine builds.
pub const SUPPORTED_ARCHITECTURES: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

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
    /// A KV cache type other than f16, q8_0, q4_0.
    UnsupportedCacheType { ty: String },
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
    /// Tensor data is not aligned for its block type.
    Misaligned(&'static str),
    /// The thread pool could not be built.
    ThreadPool(String),
    /// A core in the pinning list does not exist or pinning failed.
    CpuPinning(String),
    /// An internal inconsistency of a graph (a bug, reported not panicked).
    Graph(String),
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
            ModelError::UnsupportedCacheType { ty } => {
                write!(
                    f,
                    "unsupported KV cache type {ty} (supported: f16, q8_0, q4_0)"
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
            ModelError::Misaligned(what) => write!(f, "{what} data is misaligned"),
            ModelError::ThreadPool(e) => write!(f, "cannot build thread pool: {e}"),
            ModelError::CpuPinning(e) => write!(f, "cannot pin threads: {e}"),
            ModelError::Graph(e) => write!(f, "graph error: {e}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Model families, each with its own quirks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// Hyperparameters, from the GGUF metadata.
#[derive(Clone, Debug)]
pub struct HParams {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_mode: RopeMode,
    pub n_rot: usize,
    pub rope_freq_base: f32,
    /// Rope base of sliding-window layers (gemma3: 10000).
    pub rope_freq_base_swa: f32,
    pub rope_freq_scale: f32,
    pub sliding_window: Option<usize>,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// Multiplies q.k (gemma3 applies it to q instead).
    pub attn_scale: f32,
    /// Multiplies the token embeddings (gemma3: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
    pub gate_act: GateAct,
}

fn hp_err(f: &GgufFile, suffix: &str, reason: impl Into<String>) -> ModelError {
    let arch = f.architecture().unwrap_or("?");
    ModelError::InvalidHParam {
        key: format!("{arch}.{suffix}"),
        reason: reason.into(),
    }
}

fn arch_usize(f: &GgufFile, suffix: &str) -> crate::Result<usize> {
    let v = f.arch_u32(suffix)? as usize;
    if v == 0 {
        return Err(hp_err(f, suffix, "must be positive").into());
    }
    Ok(v)
}

fn arch_usize_or(f: &GgufFile, suffix: &str, default: usize) -> crate::Result<usize> {
    match f.arch_get(suffix) {
        Some(_) => arch_usize(f, suffix),
        None => Ok(default),
    }
}

fn arch_f32_or(f: &GgufFile, suffix: &str, default: f32) -> crate::Result<f32> {
    match f.arch_get(suffix) {
        Some(_) => Ok(f.arch_f32(suffix)?),
        None => Ok(default),
    }
}

impl HParams {
    /// Reads the hyperparameters of a supported architecture.
    pub fn from_gguf(f: &GgufFile) -> crate::Result<HParams> {
        let arch_name = f.architecture()?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
            arch: arch_name.to_string(),
        })?;
        let n_embd = arch_usize(f, "embedding_length")?;
        let n_layer = arch_usize(f, "block_count")?;
        let n_head = arch_usize(f, "attention.head_count")?;
        let n_head_kv = arch_usize_or(f, "attention.head_count_kv", n_head)?;
        if n_head % n_head_kv != 0 {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                format!("{n_head_kv} does not divide {n_head} heads"),
            )
            .into());
        }
        let head_dim = arch_usize_or(f, "attention.key_length", n_embd / n_head)?;
        let head_dim_v = arch_usize_or(f, "attention.value_length", head_dim)?;
        if head_dim_v != head_dim {
            return Err(hp_err(
                f,
                "attention.value_length",
                "must equal attention.key_length",
            )
            .into());
        }
        if head_dim > MAX_HEAD_DIM || head_dim % 2 != 0 {
            return Err(hp_err(
                f,
                "attention.key_length",
                format!("head size {head_dim} unsupported"),
            )
            .into());
        }
        let n_rot = arch_usize_or(f, "rope.dimension_count", head_dim)?;
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(hp_err(
                f,
                "rope.dimension_count",
                format!("{n_rot} invalid for head size {head_dim}"),
            )
            .into());
        }
        let n_ff = arch_usize(f, "feed_forward_length")?;
        let n_ctx_train = arch_usize_or(f, "context_length", 2048)?;
        let rms_eps = f.arch_f32("attention.layer_norm_rms_epsilon")?;
        let rope_freq_base = arch_f32_or(f, "rope.freq_base", 10000.0)?;
        let mut rope_freq_scale = 1.0f32;
        if let Some(Value::String(kind)) = f.arch_get("rope.scaling.type") {
            match kind.as_str() {
                "none" => {}
                "linear" => {
                    let factor = arch_f32_or(f, "rope.scaling.factor", 1.0)?;
                    if factor > 0.0 {
                        rope_freq_scale = 1.0 / factor;
                    }
                }
                other => {
                    return Err(hp_err(
                        f,
                        "rope.scaling.type",
                        format!("'{other}' is not supported"),
                    )
                    .into())
                }
            }
        }
        // Vocabulary: the tokenizer's, else the arch key, else the embedding rows.
        let n_vocab = match f.get_str_array("tokenizer.ggml.tokens") {
            Ok(t) => t.len(),
            Err(_) => match f.arch_get("vocab_size") {
                Some(_) => arch_usize(f, "vocab_size")?,
                None => f
                    .tensor("token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
                    .unwrap_or(0) as usize,
            },
        };

        let mut hp = HParams {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            rms_eps,
            rope_mode: RopeMode::Neox,
            n_rot,
            rope_freq_base,
            rope_freq_base_swa: rope_freq_base,
            rope_freq_scale,
            sliding_window: None,
            swa_layers: vec![false; n_layer],
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embd_scale: None,
            gate_act: GateAct::Silu,
        };
        match arch {
            Arch::Llama => hp.rope_mode = RopeMode::Normal,
            Arch::Qwen2 | Arch::Qwen3 => {}
            Arch::Gemma3 => {
                hp.gate_act = GateAct::GeluTanh;
                hp.embd_scale = Some((n_embd as f32).sqrt());
                // llama.cpp: the 27B model scales by n_embd / n_head instead.
                hp.attn_scale = if n_layer == 62 {
                    1.0 / ((n_embd / n_head) as f32).sqrt()
                } else {
                    1.0 / (head_dim as f32).sqrt()
                };
                let window = arch_usize_or(f, "attention.sliding_window", 0)?;
                if window > 0 {
                    // Every 6th layer is global; the others use the window
                    // and llama.cpp's fixed rope base 10000.
                    let pattern = arch_usize_or(f, "attention.sliding_window_pattern", 6)?;
                    hp.sliding_window = Some(window);
                    hp.swa_layers = (0..n_layer).map(|il| il % pattern < pattern - 1).collect();
                    hp.rope_freq_base_swa = arch_f32_or(f, "rope.freq_base_swa", 10000.0)?;
                }
            }
        }
        Ok(hp)
    }
}

/// Weights of one transformer block.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: WeightId,
    wq: WeightId,
    wk: WeightId,
    wv: WeightId,
    wo: WeightId,
    bq: Option<WeightId>,
    bk: Option<WeightId>,
    bv: Option<WeightId>,
    q_norm: Option<WeightId>,
    k_norm: Option<WeightId>,
    attn_post_norm: Option<WeightId>,
    ffn_norm: WeightId,
    ffn_gate: WeightId,
    ffn_up: WeightId,
    ffn_down: WeightId,
    ffn_post_norm: Option<WeightId>,
}

#[derive(Debug, Clone)]
struct ModelWeights {
    tok_embd: WeightId,
    output_norm: WeightId,
    output: WeightId,
    rope_freqs: Option<WeightId>,
    layers: Vec<Layer>,
}

/// Binds GGUF tensors to weight ids, checking names, shapes and types.
struct Binder<'a> {
    file: &'a GgufFile,
    list: Vec<Weight>,
}

impl Binder<'_> {
    fn find(&self, name: &str, shape: &[usize]) -> crate::Result<Option<usize>> {
        let Some(idx) = self.file.tensors().iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let t = &self.file.tensors()[idx];
        // Trailing dimensions of 1 are insignificant.
        let mut dims: Vec<u64> = t.dims.clone();
        while dims.len() > shape.len() && dims.last() == Some(&1) {
            dims.pop();
        }
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if dims != want {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims.clone(),
            }
            .into());
        }
        Ok(Some(idx))
    }

    /// A matrix used by matmul / get_rows, kept in the mmap.
    fn matrix(&mut self, name: &str, cols: usize, rows: usize) -> crate::Result<WeightId> {
        self.opt_matrix(name, cols, rows)?.ok_or_else(|| {
            ModelError::MissingTensor {
                name: name.to_string(),
            }
            .into()
        })
    }

    fn opt_matrix(
        &mut self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> crate::Result<Option<WeightId>> {
        let Some(idx) = self.find(name, &[cols, rows])? else {
            return Ok(None);
        };
        let ty = self.file.tensors()[idx].ggml_type;
        if !MATMUL_TYPES.contains(&ty) {
            return Err(ModelError::UnsupportedType {
                tensor: name.to_string(),
                ty: ty.name().to_string(),
            }
            .into());
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: vec![cols, rows],
                found: self.file.tensors()[idx].dims.clone(),
            }
            .into());
        }
        Ok(Some(self.push(
            name,
            ty,
            cols,
            rows,
            WeightData::Mapped { tensor: idx },
        )))
    }

    /// A vector (norm weight, bias) converted to f32.
    fn vector(&mut self, name: &str, len: usize) -> crate::Result<WeightId> {
        self.opt_vector(name, len)?.ok_or_else(|| {
            ModelError::MissingTensor {
                name: name.to_string(),
            }
            .into()
        })
    }

    fn opt_vector(&mut self, name: &str, len: usize) -> crate::Result<Option<WeightId>> {
        let Some(idx) = self.find(name, &[len])? else {
            return Ok(None);
        };
        let t = &self.file.tensors()[idx];
        let bytes = self.file.tensor_data(t);
        let mut v = vec![0f32; len];
        match t.ggml_type {
            GgmlType::F32 => {
                for (o, c) in v.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in v.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = kernels::f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            other => {
                return Err(ModelError::UnsupportedType {
                    tensor: name.to_string(),
                    ty: other.name().to_string(),
                }
                .into())
            }
        }
        let ty = t.ggml_type;
        Ok(Some(self.push(name, ty, len, 1, WeightData::F32(v))))
    }

    fn push(
        &mut self,
        name: &str,
        ty: GgmlType,
        cols: usize,
        rows: usize,
        data: WeightData,
    ) -> WeightId {
        let id = WeightId(self.list.len() as u32);
        self.list.push(Weight {
            name: name.to_string(),
            ty,
            cols,
            rows,
            data,
            backend: usize::MAX,
        });
        id
    }
}

fn bind_weights(file: &GgufFile, hp: &HParams) -> crate::Result<(ModelWeights, Vec<Weight>)> {
    let mut b = Binder {
        file,
        list: Vec::new(),
    };
    let (e, hd) = (hp.n_embd, hp.head_dim);
    let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_head_kv * hd);
    let tok_embd = b.matrix("token_embd.weight", e, hp.n_vocab)?;
    let output_norm = b.vector("output_norm.weight", e)?;
    // Tied embeddings: no output.weight means the embedding table.
    let output = b
        .opt_matrix("output.weight", e, hp.n_vocab)?
        .unwrap_or(tok_embd);
    let rope_freqs = b.opt_vector("rope_freqs.weight", hp.n_rot / 2)?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        let qkv_bias = hp.arch == Arch::Qwen2;
        let qk_norm = matches!(hp.arch, Arch::Qwen3 | Arch::Gemma3);
        let post_norms = hp.arch == Arch::Gemma3;
        let layer = Layer {
            attn_norm: b.vector(&n("attn_norm.weight"), e)?,
            wq: b.matrix(&n("attn_q.weight"), e, q_dim)?,
            wk: b.matrix(&n("attn_k.weight"), e, kv_dim)?,
            wv: b.matrix(&n("attn_v.weight"), e, kv_dim)?,
            wo: b.matrix(&n("attn_output.weight"), q_dim, e)?,
            bq: if qkv_bias {
                Some(b.vector(&n("attn_q.bias"), q_dim)?)
            } else {
                b.opt_vector(&n("attn_q.bias"), q_dim)?
            },
            bk: if qkv_bias {
                Some(b.vector(&n("attn_k.bias"), kv_dim)?)
            } else {
                b.opt_vector(&n("attn_k.bias"), kv_dim)?
            },
            bv: if qkv_bias {
                Some(b.vector(&n("attn_v.bias"), kv_dim)?)
            } else {
                b.opt_vector(&n("attn_v.bias"), kv_dim)?
            },
            q_norm: if qk_norm {
                Some(b.vector(&n("attn_q_norm.weight"), hd)?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(b.vector(&n("attn_k_norm.weight"), hd)?)
            } else {
                None
            },
            attn_post_norm: if post_norms {
                Some(b.vector(&n("post_attention_norm.weight"), e)?)
            } else {
                None
            },
            ffn_norm: b.vector(&n("ffn_norm.weight"), e)?,
            ffn_gate: b.matrix(&n("ffn_gate.weight"), e, hp.n_ff)?,
            ffn_up: b.matrix(&n("ffn_up.weight"), e, hp.n_ff)?,
            ffn_down: b.matrix(&n("ffn_down.weight"), hp.n_ff, e)?,
            ffn_post_norm: if post_norms {
                Some(b.vector(&n("post_ffw_norm.weight"), e)?)
            } else {
                None
            },
        };
        layers.push(layer);
    }
    Ok((
        ModelWeights {
            tok_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
        },
        b.list,
    ))
}

/// Options for [`Model::load`].
#[derive(Clone, Debug, Default)]
pub struct ModelOptions {
    /// Worker threads (0: all available cores).
    pub n_threads: usize,
    /// Cores to pin the workers to, e.g. `[4, 5, 6, 7]` for the RK3588's
    /// fast cores (empty: no pinning). Workers take them round-robin.
    pub cpus: Vec<usize>,
    /// Where matmuls run: the NPU backend goes before the CPU for npu/npu-sim.
    pub device: crate::backend::npu::Device,
    /// How weights are requantized for the NPU (`--npu-quant`).
    pub npu_quant: crate::backend::npu::NpuQuant,
    /// NPU cores the matmuls are split across (`--npu-cores`; empty: core 0).
    pub npu_cores: Vec<u32>,
    /// Where prepared NPU weights are cached between runs (`--npu-cache`).
    pub npu_cache: crate::backend::npu::WeightCacheMode,
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
    /// Loads a GGUF model for the CPU.
    pub fn load(path: &Path, opts: &ModelOptions) -> crate::Result<Model> {
        let settings = crate::backend::npu::NpuSettings {
            quant: opts.npu_quant,
            cores: opts.npu_cores.clone(),
            cache: opts.npu_cache.clone(),
            progress: false,
        };
        let extra = crate::backend::npu::backends_for_model(opts.device, &settings, path)?;
        Model::load_with_backends(path, opts, extra)
    }

    /// Loads a model with extra backends in priority order (e.g. the NPU);
    /// the CPU backend is appended last and takes whatever they leave.
    pub fn load_with_backends(
        path: &Path,
        opts: &ModelOptions,
        backends: Vec<Box<dyn Backend>>,
    ) -> crate::Result<Model> {
        let file = GgufFile::open(path)?;
        Model::from_gguf(file, opts, backends)
    }

    /// Builds a model from an opened GGUF file.
    pub fn from_gguf(
        file: GgufFile,
        opts: &ModelOptions,
        mut backends: Vec<Box<dyn Backend>>,
    ) -> crate::Result<Model> {
        let hparams = HParams::from_gguf(&file)?;
        let (w, mut list) = bind_weights(&file, &hparams)?;
        backends.push(Box::new(CpuBackend::new()));
        for (i, weight) in list.iter_mut().enumerate() {
            let bytes: &[u8] = match weight.data {
                WeightData::Mapped { tensor } => file.tensor_data(&file.tensors()[tensor]),
                WeightData::F32(_) => &[],
            };
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
            return Err(ModelError::CpuPinning(format!("core {c} does not exist")).into());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads)
            .thread_name(|i| format!("rkinfer-{i}"))
            .start_handler(move |i| {
                if !cpus.is_empty() {
                    if let Err(e) = pin_to_cpu(cpus[i % cpus.len()]) {
                        eprintln!("warning: {e}");
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
    /// The weight table (names, types, owning backend).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// A fresh state with an empty KV cache.
    pub fn new_state(&self, opts: &StateOptions) -> crate::Result<State> {
        let n_ctx = if opts.n_ctx == 0 {
            self.hparams.n_ctx_train
        } else {
            opts.n_ctx
        };
        if n_ctx == 0 || n_ctx > (1 << 24) {
            return Err(ModelError::ContextTooLarge { n_ctx }.into());
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
    ) -> crate::Result<&'s [f32]> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyBatch.into());
        }
        let needed = state.n_past + tokens.len();
        if needed > state.kv.n_ctx {
            return Err(ModelError::ContextFull {
                n_ctx: state.kv.n_ctx,
                needed,
            }
            .into());
        }
        let n_vocab = self.hparams.n_vocab;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::TokenOutOfRange { token: t, n_vocab }.into());
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
        g.describe(&|w| self.weights.describe(w), &names)
    }

    /// The model, llama2.c style: one pass over the layers, written once for
    /// every supported architecture.
    fn build_graph(&self, n: usize, out: GraphOut) -> Graph {
        let hp = &self.hparams;
        let w = &self.w;
        let eps = hp.rms_eps;
        let (hd, n_head, n_head_kv) = (hp.head_dim, hp.n_head, hp.n_head_kv);
        let mut g = GraphBuilder::new(n);

        let mut x = g.get_rows(w.tok_embd, hp.n_embd, "inp_embd");
        if let Some(s) = hp.embd_scale {
            x = g.scale(x, s, "inp_scaled");
        }
        for (il, l) in w.layers.iter().enumerate() {
            let nm = |s: &str| format!("{s}-{il}");
            let swa = hp.swa_layers[il];

            // Attention.
            let h = g.rms_norm(x, eps, &nm("norm"));
            let h = g.mul_weight(h, l.attn_norm, &nm("attn_norm"));
            let mut q = g.mul_mat(l.wq, n_head * hd, h, &nm("Qcur"));
            let mut k = g.mul_mat(l.wk, n_head_kv * hd, h, &nm("Kcur"));
            let mut v = g.mul_mat(l.wv, n_head_kv * hd, h, &nm("Vcur"));
            if let Some(b) = l.bq {
                q = g.add_weight(q, b, &nm("Qcur_b"));
            }
            if let Some(b) = l.bk {
                k = g.add_weight(k, b, &nm("Kcur_b"));
            }
            if let Some(b) = l.bv {
                v = g.add_weight(v, b, &nm("Vcur_b"));
            }
            if let Some(qn) = l.q_norm {
                let r = g.reshape(q, n * n_head, hd);
                let r = g.rms_norm(r, eps, &nm("Qcur_norm"));
                let r = g.mul_weight(r, qn, &nm("Qcur_normed"));
                q = g.reshape(r, n, n_head * hd);
            }
            if let Some(kn) = l.k_norm {
                let r = g.reshape(k, n * n_head_kv, hd);
                let r = g.rms_norm(r, eps, &nm("Kcur_norm"));
                let r = g.mul_weight(r, kn, &nm("Kcur_normed"));
                k = g.reshape(r, n, n_head_kv * hd);
            }
            let rope = RopeParams {
                mode: hp.rope_mode,
                n_rot: hp.n_rot,
                head_dim: hd,
                freq_base: if swa {
                    hp.rope_freq_base_swa
                } else {
                    hp.rope_freq_base
                },
                freq_scale: hp.rope_freq_scale,
                freq_factors: w.rope_freqs,
            };
            q = g.rope(q, rope, &nm("Qcur_rope"));
            k = g.rope(k, rope, &nm("Kcur_rope"));
            // gemma3 scales q itself and attends with scale 1.
            let kq_scale = if hp.arch == Arch::Gemma3 {
                q = g.scale(q, hp.attn_scale, &nm("Qcur_scaled"));
                1.0
            } else {
                hp.attn_scale
            };
            g.store_kv(il, k, v, &nm("kv_store"));
            let attn = AttnParams {
                layer: il,
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: kq_scale,
                window: if swa { hp.sliding_window } else { None },
            };
            let a = g.attention(q, attn, &nm("kqv"));
            let mut o = g.mul_mat(l.wo, hp.n_embd, a, &nm("attn_out"));
            if let Some(pn) = l.attn_post_norm {
                let r = g.rms_norm(o, eps, &nm("attn_post_norm"));
                o = g.mul_weight(r, pn, &nm("attn_post_normed"));
            }
            x = g.add(o, x, &nm("ffn_inp"));

            // Feed-forward.
            let h = g.rms_norm(x, eps, &nm("norm"));
            let h = g.mul_weight(h, l.ffn_norm, &nm("ffn_norm"));
            let gate = g.mul_mat(l.ffn_gate, hp.n_ff, h, &nm("ffn_gate"));
            let up = g.mul_mat(l.ffn_up, hp.n_ff, h, &nm("ffn_up"));
            let act = g.gated(gate, up, hp.gate_act, &nm("ffn_gated"));
            let mut d = g.mul_mat(l.ffn_down, hp.n_embd, act, &nm("ffn_out"));
            if let Some(pn) = l.ffn_post_norm {
                let r = g.rms_norm(d, eps, &nm("ffn_post_norm"));
                d = g.mul_weight(r, pn, &nm("ffn_post_normed"));
            }
            x = g.add(d, x, &nm("l_out"));
        }
        let mut graph = if out == GraphOut::None {
            g.finish(x)
        } else {
            if out == GraphOut::Last && n > 1 {
                x = g.last_row(x, "last_row");
            }
            let h = g.rms_norm(x, eps, "norm");
            let h = g.mul_weight(h, w.output_norm, "result_norm");
            let logits = g.mul_mat(w.output, hp.n_vocab, h, "result_output");
            g.finish(logits)
        };
        backend::schedule(&mut graph, &self.backends, &self.weights);
        graph
    }
}
