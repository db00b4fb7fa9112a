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
            Arch::Gemma4 => "gemma4",
        }
    }
}

/// The mixture-of-experts feed-forward of every layer (qwen3moe).
#[derive(Clone, Copy, Debug)]
pub struct MoeParams {
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

fn arch_f32_or(f: &GgufFile, suffix: &str, default: f32) -> Result<f32> {
    match f.arch_get(suffix) {
        Some(_) => Ok(f.arch_f32(suffix)?),
        None => Ok(default),
    }
}

/// A per-layer value: an array of `n_layer` positive integers, or one
/// integer for every layer, or `default` when the key is absent.
fn arch_per_layer(
    f: &GgufFile,
    suffix: &str,
    n_layer: usize,
    default: usize,
) -> Result<Vec<usize>> {
    let Some(Value::Array(a)) = f.arch_get(suffix) else {
        return Ok(vec![arch_usize_or(f, suffix, default)?; n_layer]);
    };
    let values: Vec<i128> = match a {
        gguf::Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
        gguf::Array::I32(v) => v.iter().map(|&x| x.into()).collect(),
        other => {
            return Err(hp_err(
                f,
                suffix,
                format!("{} is not an integer array", other.type_description()),
            ))
        }
    };
    if values.len() != n_layer || values.iter().any(|&v| v <= 0 || v > u32::MAX as i128) {
        return Err(hp_err(
            f,
            suffix,
            format!("expected {n_layer} positive values, found {values:?}"),
        ));
    }
    Ok(values.into_iter().map(|v| v as usize).collect())
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
        let n_head_kv_layers = arch_per_layer(f, "attention.head_count_kv", n_layer, n_head)?;
        let n_head_kv = n_head_kv_layers[0];
        if let Some(bad) = n_head_kv_layers.iter().find(|&&kv| n_head % kv != 0) {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                format!("{bad} does not divide {n_head} heads"),
            ));
        }
        if arch != Arch::Gemma4 && n_head_kv_layers.iter().any(|&kv| kv != n_head_kv) {
            return Err(hp_err(
                f,
                "attention.head_count_kv",
                "per-layer values are supported for gemma4 only",
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
        let n_ff = if arch == Arch::Qwen3Moe {
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
                let n_expert = arch_usize(f, "expert_count")?;
                let n_expert_used = arch_usize(f, "expert_used_count")?;
                if n_expert_used > n_expert {
                    return Err(hp_err(
                        f,
                        "expert_used_count",
                        format!("{n_expert_used} exceeds the {n_expert} experts"),
                    ));
                }
                hp.moe = Some(MoeParams {
                    n_expert,
                    n_expert_used,
                    n_ff_exp: arch_usize(f, "expert_feed_forward_length")?,
                    // llama.cpp's qwen3moe always normalizes.
                    norm_weights: true,
                    weights_scale: arch_f32_or(f, "expert_weights_scale", 0.0)?,
                });
            }
            Arch::Phi3 => hp.scale_q = true,
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
