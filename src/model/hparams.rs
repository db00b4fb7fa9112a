//! Hyperparameters of each architecture, read from the GGUF metadata
//! (`{arch}.*` keys) with llama.cpp's defaults.

use gguf::{GgufFile, Value};

use super::{ModelError, Result};
use crate::backend::cpu::MAX_HEAD_DIM;
use crate::graph::{GateAct, RopeMode};

/// Model families, each with its own quirks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Granite,
    Smollm3,
    Phi3,
    Qwen3Moe,
    Qwen35,
    Lfm2,
    Lfm2Moe,
    Gemma4,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "gemma3" => Some(Arch::Gemma3),
            "granite" => Some(Arch::Granite),
            "smollm3" => Some(Arch::Smollm3),
            "phi3" => Some(Arch::Phi3),
            "qwen3moe" => Some(Arch::Qwen3Moe),
            "qwen35" => Some(Arch::Qwen35),
            "lfm2" => Some(Arch::Lfm2),
            "lfm2moe" => Some(Arch::Lfm2Moe),
            "gemma4" => Some(Arch::Gemma4),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Granite => "granite",
            Arch::Smollm3 => "smollm3",
            Arch::Phi3 => "phi3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Qwen35 => "qwen35",
            Arch::Lfm2 => "lfm2",
            Arch::Lfm2Moe => "lfm2moe",
            Arch::Gemma4 => "gemma4",
        }
    }
}

/// How a mixture-of-experts router turns logits into probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeGating {
    /// Softmax over the experts (qwen3moe).
    Softmax,
    /// A sigmoid per expert (lfm2moe), experts chosen on the probabilities
    /// plus a per-expert bias.
    Sigmoid,
}

/// The mixture-of-experts feed-forward of every layer (qwen3moe) or of the
/// layers after the leading dense ones (lfm2moe).
#[derive(Clone, Copy, Debug)]
pub struct MoeParams {
    pub gating: MoeGating,
    pub n_expert: usize,
    /// Experts each token is routed to.
    pub n_expert_used: usize,
    /// Rows of each expert's gate and up matrices.
    pub n_ff_exp: usize,
    /// Divide the selected experts' probabilities by their sum.
    pub norm_weights: bool,
    /// Multiplies the routing weights (0 or 1: not applied).
    pub weights_scale: f32,
}

/// The gated delta-net layers of a hybrid model (qwen35's `ssm.*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaNetHParams {
    /// Taps of the causal convolution over q, k and v (`ssm.conv_kernel`).
    pub d_conv: usize,
    /// Size of each key, query and value head (`ssm.state_size`).
    pub head_dim: usize,
    /// Key (and query) heads (`ssm.group_count`).
    pub n_k_heads: usize,
    /// Value heads (`ssm.time_step_rank`), each with its own state.
    pub n_v_heads: usize,
}

impl DeltaNetHParams {
    pub fn key_dim(&self) -> usize {
        self.n_k_heads * self.head_dim
    }
    pub fn value_dim(&self) -> usize {
        self.n_v_heads * self.head_dim
    }
    /// Channels of the convolution: q, k and v.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
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
    /// Multiplies q itself, the attention then running with scale 1
    /// (gemma3, phi3), instead of multiplying q.k.
    pub scale_q: bool,
    /// Multiplies the token embeddings (gemma3: sqrt(n_embd); granite).
    pub embd_scale: Option<f32>,
    /// Multiplies each block's attention and FFN outputs before the
    /// residual sum (granite).
    pub residual_scale: Option<f32>,
    /// Multiplies the logits (granite: 1 / logit_scale).
    pub logit_scale: Option<f32>,
    /// Per layer: is rope applied? (smollm3 skips every fourth layer.)
    pub rope_layers: Vec<bool>,
    pub gate_act: GateAct,
    /// Experts instead of one feed-forward block (qwen3moe).
    pub moe: Option<MoeParams>,
    /// Gated delta-net layers (qwen35).
    pub delta_net: Option<DeltaNetHParams>,
    /// Per layer: is it a recurrent (delta-net) layer rather than attention?
    pub recurrent_layers: Vec<bool>,
    /// Layers before the first expert layer, which have a dense feed-forward.
    pub n_layer_dense_lead: usize,
    /// Per layer: a short-convolution mixer instead of attention (lfm2:
    /// the layers with no key-value heads).
    pub shortconv_layers: Vec<bool>,
    /// Taps of the short convolutions (lfm2's `shortconv.l_cache`).
    pub shortconv_l_cache: usize,
    /// Per layer: KV heads (`attention.head_count_kv` may be an array:
    /// gemma4 has fewer on its full-attention layers).
    pub n_head_kv_layers: Vec<usize>,
    /// Per layer: feed-forward length (gemma4 doubles it on the layers
    /// that share another's KV cache).
    pub n_ff_layers: Vec<usize>,
    /// Head size and rotated dimensions of sliding-window layers (gemma4:
    /// `key_length_swa`, `rope.dimension_count_swa`); head_dim and n_rot
    /// elsewhere.
    pub head_dim_swa: usize,
    pub n_rot_swa: usize,
    /// Layers `n_layer_kv..` have no KV cache of their own and attend over
    /// the cache of the last earlier layer of their kind (gemma4's
    /// `shared_kv_layers`); n_layer elsewhere.
    pub n_layer_kv: usize,
    /// V is RMS-normed per head (no weight) before the cache (gemma4).
    pub v_norm: bool,
    /// `rope_freqs.weight` applies to full-attention layers only (gemma4's
    /// proportional rope); to every layer elsewhere (llama 3).
    pub rope_freqs_full_only: bool,
    /// Width of each layer's slice of the per-layer token embeddings
    /// (gemma4's `embedding_length_per_layer_input`; 0: none).
    pub n_embd_per_layer: usize,
    /// Logits become `cap * tanh(logits / cap)` (gemma4).
    pub final_logit_softcap: Option<f32>,
}

impl HParams {
    /// Head size of layer `il`.
    pub fn layer_head_dim(&self, il: usize) -> usize {
        if self.swa_layers[il] {
            self.head_dim_swa
        } else {
            self.head_dim
        }
    }
    /// Rotated dimensions of each head of layer `il`.
    pub fn layer_n_rot(&self, il: usize) -> usize {
        if self.swa_layers[il] {
            self.n_rot_swa
        } else {
            self.n_rot
        }
    }
    /// Elements of one cache row (all KV heads) of layer `il`.
    pub fn layer_kv_dim(&self, il: usize) -> usize {
        self.n_head_kv_layers[il] * self.layer_head_dim(il)
    }
    /// The layer whose KV cache layer `il` attends over: itself, or for a
    /// layer past `n_layer_kv` the last cache-owning layer (sliding-window
    /// layers the one before it), as llama.cpp's layer reuse for gemma4.
    pub fn kv_source_layer(&self, il: usize) -> usize {
        if il < self.n_layer_kv {
            il
        } else if self.swa_layers[il] {
            self.n_layer_kv - 2
        } else {
            self.n_layer_kv - 1
        }
    }
}

fn hp_err(f: &GgufFile, suffix: &str, reason: impl Into<String>) -> ModelError {
    let arch = f.architecture().unwrap_or("?");
    ModelError::InvalidHParam {
        key: format!("{arch}.{suffix}"),
        reason: reason.into(),
    }
}

fn arch_usize(f: &GgufFile, suffix: &str) -> Result<usize> {
    let v = f.arch_u32(suffix)? as usize;
    if v == 0 {
        return Err(hp_err(f, suffix, "must be positive"));
    }
    Ok(v)
}

fn arch_usize_or(f: &GgufFile, suffix: &str, default: usize) -> Result<usize> {
    match f.arch_get(suffix) {
        Some(_) => arch_usize(f, suffix),
        None => Ok(default),
    }
}

/// A per-layer count given as one number or as an array of `n_layer`.
fn arch_per_layer(
    f: &GgufFile,
    suffix: &str,
    n_layer: usize,
    default: usize,
) -> Result<Vec<usize>> {
    use gguf::Array;
    let v: Vec<usize> = match f.arch_get(suffix) {
        None => vec![default; n_layer],
        Some(Value::Array(Array::U32(a))) => a.iter().map(|&v| v as usize).collect(),
        Some(Value::Array(Array::I32(a))) => a.iter().map(|&v| v.max(0) as usize).collect(),
        Some(Value::Array(_)) => return Err(hp_err(f, suffix, "array of unexpected type")),
        Some(_) => vec![f.arch_u32(suffix)? as usize; n_layer],
    };
    if v.len() != n_layer {
        return Err(hp_err(
            f,
            suffix,
            format!("{} values for {n_layer} layers", v.len()),
        ));
    }
    Ok(v)
}

fn arch_f32_or(f: &GgufFile, suffix: &str, default: f32) -> Result<f32> {
    match f.arch_get(suffix) {
        Some(_) => Ok(f.arch_f32(suffix)?),
        None => Ok(default),
    }
}

/// Expert counts and sizes (`expert_*` keys), selections normalized.
fn read_experts(f: &GgufFile, gating: MoeGating) -> Result<MoeParams> {
    let n_expert = arch_usize(f, "expert_count")?;
    let n_expert_used = arch_usize(f, "expert_used_count")?;
    if n_expert_used > n_expert {
        return Err(hp_err(
            f,
            "expert_used_count",
            format!("{n_expert_used} exceeds the {n_expert} experts"),
        ));
    }
    Ok(MoeParams {
        gating,
        n_expert,
        n_expert_used,
        n_ff_exp: arch_usize(f, "expert_feed_forward_length")?,
        norm_weights: true,
        weights_scale: 0.0,
    })
}

/// The layer kinds of `attention.sliding_window_pattern` given as one flag
/// per layer (gemma4; gemma3 gives a period instead).
fn arch_layer_flags(f: &GgufFile, suffix: &str, n_layer: usize) -> Result<Vec<bool>> {
    let flags: Vec<bool> = match f.arch_get(suffix) {
        Some(Value::Array(gguf::Array::Bool(v))) => v.clone(),
        Some(Value::Array(gguf::Array::U32(v))) => v.iter().map(|&x| x != 0).collect(),
        Some(Value::Array(gguf::Array::I32(v))) => v.iter().map(|&x| x != 0).collect(),
        Some(other) => {
            return Err(hp_err(
                f,
                suffix,
                format!("{} is not a per-layer array", other.type_description()),
            ))
        }
        None => return Err(hp_err(f, suffix, "missing")),
    };
    if flags.len() != n_layer {
        return Err(hp_err(
            f,
            suffix,
            format!("{} flags for {n_layer} layers", flags.len()),
        ));
    }
    Ok(flags)
}

impl HParams {
    /// Reads the hyperparameters of a supported architecture.
    pub fn from_gguf(f: &GgufFile) -> Result<HParams> {
        let arch_name = f.architecture()?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
            arch: arch_name.to_string(),
        })?;
        let n_embd = arch_usize(f, "embedding_length")?;
        let n_layer = arch_usize(f, "block_count")?;
        // Per-layer tables are sized by the block count: check it against
        // the tensors present before anything is allocated.
        let last_block = format!("blk.{}.", n_layer - 1);
        if n_layer > f.tensors().len()
            || !f.tensors().iter().any(|t| t.name.starts_with(&last_block))
        {
            return Err(hp_err(
                f,
                "block_count",
                format!("{n_layer} layers, but the file has no {last_block}* tensors"),
            ));
        }
        let n_head = arch_usize(f, "attention.head_count")?;
        // lfm2 lists key-value heads per layer, 0 for its convolution
        // layers; gemma4 has fewer on its full-attention layers.
        let is_lfm2 = matches!(arch, Arch::Lfm2 | Arch::Lfm2Moe);
        let n_head_kv_layers = arch_per_layer(f, "attention.head_count_kv", n_layer, n_head)?;
        let shortconv_layers: Vec<bool> = n_head_kv_layers
            .iter()
            .map(|&kv| is_lfm2 && kv == 0)
            .collect();
        if !is_lfm2 && n_head_kv_layers.contains(&0) {
            return Err(hp_err(f, "attention.head_count_kv", "must be positive"));
        }
        let attention_kv = || n_head_kv_layers.iter().copied().filter(|&kv| kv > 0);
        let n_head_kv = attention_kv().next().unwrap_or(n_head);
        if let Some(bad) = attention_kv().find(|&kv| n_head % kv != 0) {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                format!("{bad} does not divide {n_head} heads"),
            ));
        }
        if arch != Arch::Gemma4 && attention_kv().any(|kv| kv != n_head_kv) {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                "attention layers with different key-value head counts (supported for gemma4 only)",
            ));
        }
        let head_dim = arch_usize_or(f, "attention.key_length", n_embd / n_head)?;
        let head_dim_v = arch_usize_or(f, "attention.value_length", head_dim)?;
        if head_dim_v != head_dim {
            return Err(hp_err(
                f,
                "attention.value_length",
                "must equal attention.key_length",
            ));
        }
        if head_dim > MAX_HEAD_DIM || head_dim % 2 != 0 {
            return Err(hp_err(
                f,
                "attention.key_length",
                format!("head size {head_dim} unsupported"),
            ));
        }
        let n_rot = arch_usize_or(f, "rope.dimension_count", head_dim)?;
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(hp_err(
                f,
                "rope.dimension_count",
                format!("{n_rot} invalid for head size {head_dim}"),
            ));
        }
        // MoE models need no dense feed-forward length.
        let n_ff = if matches!(arch, Arch::Qwen3Moe | Arch::Lfm2Moe) {
            arch_usize_or(f, "feed_forward_length", 0)?
        } else if arch == Arch::Gemma4 {
            0 // per layer, below
        } else {
            arch_usize(f, "feed_forward_length")?
        };
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
                    ))
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
            scale_q: false,
            embd_scale: None,
            residual_scale: None,
            logit_scale: None,
            rope_layers: vec![true; n_layer],
            gate_act: GateAct::Silu,
            moe: None,
            delta_net: None,
            recurrent_layers: vec![false; n_layer],
            n_layer_dense_lead: 0,
            shortconv_layers,
            shortconv_l_cache: 0,
            n_ff_layers: vec![n_ff; n_layer],
            n_head_kv_layers,
            head_dim_swa: head_dim,
            n_rot_swa: n_rot,
            n_layer_kv: n_layer,
            v_norm: false,
            rope_freqs_full_only: false,
            n_embd_per_layer: 0,
            final_logit_softcap: None,
        };
        match arch {
            Arch::Llama => hp.rope_mode = RopeMode::Normal,
            Arch::Qwen2 | Arch::Qwen3 => {}
            Arch::Qwen3Moe => {
                hp.moe = Some(MoeParams {
                    // llama.cpp's qwen3moe always normalizes.
                    weights_scale: arch_f32_or(f, "expert_weights_scale", 0.0)?,
                    ..read_experts(f, MoeGating::Softmax)?
                });
            }
            Arch::Lfm2 | Arch::Lfm2Moe => {
                let l_cache = arch_usize(f, "shortconv.l_cache")?;
                if l_cache < 2 {
                    return Err(hp_err(f, "shortconv.l_cache", "must be at least 2"));
                }
                hp.shortconv_l_cache = l_cache;
                if arch == Arch::Lfm2Moe {
                    // lfm2moe.cpp reads no weights scale: 0, not applied.
                    let gating = match f.arch_u32("expert_gating_func")? {
                        1 => MoeGating::Softmax,
                        2 => MoeGating::Sigmoid,
                        other => {
                            return Err(hp_err(
                                f,
                                "expert_gating_func",
                                format!("gating function {other} is not supported"),
                            ))
                        }
                    };
                    hp.moe = Some(read_experts(f, gating)?);
                    hp.n_layer_dense_lead =
                        arch_usize_or(f, "leading_dense_block_count", 0)?.min(n_layer);
                    if hp.n_layer_dense_lead > 0 && n_ff == 0 {
                        return Err(hp_err(
                            f,
                            "feed_forward_length",
                            "needed by the dense layers",
                        ));
                    }
                }
            }
            Arch::Phi3 => hp.scale_q = true,
            Arch::Qwen35 => {
                hp.delta_net = Some(qwen35_delta_net(f)?);
                hp.recurrent_layers = qwen35_recurrent_layers(f, n_layer)?;
                check_text_mrope(f, n_rot)?;
            }
            Arch::Smollm3 => {
                // llama.cpp's constant n_no_rope_layer_step.
                hp.rope_mode = RopeMode::Normal;
                hp.rope_layers = (0..n_layer).map(|il| (il + 1) % 4 != 0).collect();
            }
            Arch::Granite => {
                hp.rope_mode = RopeMode::Normal;
                // llama.cpp reads these as "0: absent".
                let nonzero = |v: f32| (v != 0.0).then_some(v);
                hp.embd_scale = nonzero(arch_f32_or(f, "embedding_scale", 0.0)?);
                hp.residual_scale = nonzero(arch_f32_or(f, "residual_scale", 0.0)?);
                if let Some(s) = nonzero(arch_f32_or(f, "attention.scale", 0.0)?) {
                    hp.attn_scale = s;
                }
                let logit_scale = f.arch_f32("logit_scale")?;
                if logit_scale == 0.0 {
                    return Err(hp_err(f, "logit_scale", "must not be zero"));
                }
                hp.logit_scale = Some(1.0 / logit_scale);
                // rope_finetuned false switches rope off in every layer.
                if let Some(Value::Bool(false)) = f.arch_get("rope.scaling.finetuned") {
                    hp.rope_layers = vec![false; n_layer];
                }
            }
            Arch::Gemma3 => {
                hp.scale_q = true;
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
            Arch::Gemma4 => read_gemma4(f, &mut hp)?,
        }
        Ok(hp)
    }
}

/// The delta-net shape of a qwen35 file (llama.cpp's `ssm_*` hparams),
/// checked as llama.cpp asserts it: value heads of the key head size, a
/// whole number of value heads per key head.
fn qwen35_delta_net(f: &GgufFile) -> Result<DeltaNetHParams> {
    let dn = DeltaNetHParams {
        d_conv: arch_usize(f, "ssm.conv_kernel")?,
        head_dim: arch_usize(f, "ssm.state_size")?,
        n_k_heads: arch_usize(f, "ssm.group_count")?,
        n_v_heads: arch_usize(f, "ssm.time_step_rank")?,
    };
    let d_inner = arch_usize(f, "ssm.inner_size")?;
    if d_inner != dn.value_dim() {
        return Err(hp_err(
            f,
            "ssm.inner_size",
            format!(
                "{d_inner} is not {} value heads of {}",
                dn.n_v_heads, dn.head_dim
            ),
        ));
    }
    if !dn.n_v_heads.is_multiple_of(dn.n_k_heads) {
        return Err(hp_err(
            f,
            "ssm.time_step_rank",
            format!(
                "{} value heads are not a multiple of {} key heads",
                dn.n_v_heads, dn.n_k_heads
            ),
        ));
    }
    if dn.d_conv < 2 {
        return Err(hp_err(f, "ssm.conv_kernel", "must be at least 2"));
    }
    Ok(dn)
}

/// Which layers are recurrent: `attention.recurrent_layers` if present,
/// else every layer but each `full_attention_interval`-th (default 4).
fn qwen35_recurrent_layers(f: &GgufFile, n_layer: usize) -> Result<Vec<bool>> {
    if let Some(v) = f.arch_get("attention.recurrent_layers") {
        return match v {
            Value::Array(gguf::Array::Bool(b)) if b.len() >= n_layer => Ok(b[..n_layer].to_vec()),
            _ => Err(hp_err(
                f,
                "attention.recurrent_layers",
                format!("expected {n_layer} booleans"),
            )),
        };
    }
    let interval = arch_usize_or(f, "full_attention_interval", 4)?;
    Ok((0..n_layer).map(|il| (il + 1) % interval != 0).collect())
}

/// qwen35's interleaved multi-section rope (IMROPE): for text, llama.cpp
/// gives the first three position components the token's position and the
/// fourth 0. Rotated pairs that fall to a section of the first three are
/// then plain NEOX rope; one that would take the fourth (position 0, not
/// rotated) is refused rather than computed wrong.
fn check_text_mrope(f: &GgufFile, n_rot: usize) -> Result<()> {
    let key = "rope.dimension_sections";
    let Some(v) = f.arch_get(key) else {
        return Ok(());
    };
    let sections: Vec<i64> = match v {
        Value::Array(gguf::Array::I32(s)) => s.iter().map(|&x| x as i64).collect(),
        Value::Array(gguf::Array::U32(s)) => s.iter().map(|&x| x as i64).collect(),
        _ => return Err(hp_err(f, key, "expected an integer array")),
    };
    let mut sec = [0i64; 4];
    for (d, s) in sec.iter_mut().zip(&sections) {
        *d = *s;
    }
    let total: i64 = sec.iter().sum();
    if total <= 0 || sec.iter().any(|&s| s < 0) {
        return Err(hp_err(f, key, format!("invalid sections {sections:?}")));
    }
    for pair in 0..n_rot / 2 {
        let sector = pair as i64 % total;
        // ggml_mrope_cache_init's interleaved choice of component.
        let text = (sector % 3 == 1 && sector < 3 * sec[1])
            || (sector % 3 == 2 && sector < 3 * sec[2])
            || (sector % 3 == 0 && sector < 3 * sec[0]);
        if !text {
            return Err(hp_err(
                f,
                key,
                format!("rotary pair {pair} uses the fourth section ({sections:?}): not supported"),
            ));
        }
    }
    Ok(())
}

/// gemma4 (llama.cpp's `llama_model_gemma4::load_arch_hparams`): sliding
/// window layers flagged one by one, with their own head size, rotated
/// dimensions and rope base; per-layer feed-forward lengths; the last
/// `shared_kv_layers` layers reuse earlier caches; per-layer token
/// embeddings; logit softcapping; no query scaling (q.k times 1).
fn read_gemma4(f: &GgufFile, hp: &mut HParams) -> Result<()> {
    let n_layer = hp.n_layer;
    hp.gate_act = GateAct::GeluTanh;
    hp.embd_scale = Some((hp.n_embd as f32).sqrt());
    hp.attn_scale = 1.0;
    hp.v_norm = true;
    hp.rope_freqs_full_only = true;
    hp.n_ff_layers = arch_per_layer(f, "feed_forward_length", n_layer, 0)?;
    if hp.n_ff_layers.contains(&0) {
        return Err(hp_err(f, "feed_forward_length", "missing"));
    }
    hp.n_ff = hp.n_ff_layers[0];
    hp.swa_layers = arch_layer_flags(f, "attention.sliding_window_pattern", n_layer)?;
    hp.sliding_window = Some(arch_usize(f, "attention.sliding_window")?);
    hp.rope_freq_base_swa = arch_f32_or(f, "rope.freq_base_swa", 10000.0)?;
    hp.head_dim_swa = arch_usize(f, "attention.key_length_swa")?;
    if arch_usize_or(f, "attention.value_length_swa", hp.head_dim_swa)? != hp.head_dim_swa {
        return Err(hp_err(
            f,
            "attention.value_length_swa",
            "must equal attention.key_length_swa",
        ));
    }
    if hp.head_dim_swa > MAX_HEAD_DIM || !hp.head_dim_swa.is_multiple_of(2) {
        return Err(hp_err(
            f,
            "attention.key_length_swa",
            format!("head size {} unsupported", hp.head_dim_swa),
        ));
    }
    hp.n_rot_swa = arch_usize_or(f, "rope.dimension_count_swa", hp.n_rot)?;
    if hp.n_rot_swa > hp.head_dim_swa || !hp.n_rot_swa.is_multiple_of(2) {
        return Err(hp_err(
            f,
            "rope.dimension_count_swa",
            format!("{} invalid for head size {}", hp.n_rot_swa, hp.head_dim_swa),
        ));
    }
    let shared = match f.arch_get("attention.shared_kv_layers") {
        Some(_) => f.arch_u32("attention.shared_kv_layers")? as usize,
        None => 0,
    };
    if shared > 0 {
        hp.n_layer_kv = n_layer.saturating_sub(shared);
        // The last two cache-owning layers must be a sliding-window one,
        // then a full one: the sharing layers of each kind read them.
        let kv = hp.n_layer_kv;
        if kv < 2 || !hp.swa_layers[kv - 2] || hp.swa_layers[kv - 1] {
            return Err(hp_err(
                f,
                "attention.shared_kv_layers",
                format!(
                    "{shared} of {n_layer} layers: the last two layers with a cache \
                     must be sliding-window, then full attention"
                ),
            ));
        }
        let differs = (kv..n_layer).find(|&il| {
            let src = hp.kv_source_layer(il);
            hp.n_head_kv_layers[il] != hp.n_head_kv_layers[src]
        });
        if let Some(il) = differs {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                format!("layer {il} shares a cache with another number of KV heads"),
            ));
        }
    }
    hp.n_embd_per_layer = match f.arch_get("embedding_length_per_layer_input") {
        Some(_) => f.arch_u32("embedding_length_per_layer_input")? as usize,
        None => 0,
    };
    let cap = arch_f32_or(f, "final_logit_softcapping", 0.0)?;
    hp.final_logit_softcap = (cap != 0.0).then_some(cap);
    Ok(())
}
