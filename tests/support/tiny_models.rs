//! Tiny random-weight GGUF models of every architecture rkinfer builds, for
//! checking each architecture against llama.cpp without downloads.
//!
//! Shared by `tests/architectures.rs` and `examples/tiny_models.rs` (which
//! writes the files `scripts/record-arch-references.py` runs llama.cpp on).
//! Everything is deterministic: a fixed-seed splitmix64 per tensor, the
//! tokenizer metadata copied from the fetched SmolLM2 model, F16 weights
//! (F32 norms), and a Q5_0 variant made with rkinfer's quantizer (which is
//! byte-exact with llama-quantize). A change here changes the files'
//! sha256, which the reference JSON records: re-record then.
#![allow(dead_code)]

use std::path::Path;

use gguf::{GgmlType, GgufFile, GgufWriter, Value};

/// Shape and quirks of one fixture.
#[derive(Clone, Copy, Debug)]
pub struct TinySpec {
    /// Fixture name (file stem, JSON key).
    pub name: &'static str,
    /// `general.architecture`.
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    /// Amplitude of the token embeddings (also the tied output matrix):
    /// sets how spread the logits are.
    pub embd_amp: f32,
    pub extra: Extra,
}

/// Architecture-specific tensors and keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Extra {
    None,
    /// qwen3: q/k norms.
    QkNorm,
    /// gemma3: q/k norms, post norms, sliding window with a pattern.
    Gemma3 {
        window: u32,
        pattern: u32,
    },
    /// llama with llama3 rope scaling: a `rope_freqs.weight` tensor.
    RopeFreqs,
    /// granite: embedding, residual, attention and logit multipliers.
    Granite {
        embedding_scale: f32,
        residual_scale: f32,
        attention_scale: f32,
        logit_scale: f32,
    },
    /// smollm3: no rope every fourth layer (llama.cpp's constant).
    Smollm3,
    /// phi3: fused QKV and fused gate-up.
    Phi3,
    /// qwen3moe: q/k norms and experts in place of the feed-forward.
    Moe {
        n_expert: u32,
        n_expert_used: u32,
        n_ff_exp: usize,
    },
    /// lfm2: short-convolution layers (bit `il` of `conv_layers`) among
    /// attention layers with q/k norms; lfm2moe when `experts` is set
    /// (sigmoid routing with a selection bias after `dense_lead` layers).
    Lfm2 {
        conv_layers: u32,
        l_cache: u32,
        experts: Option<Lfm2Experts>,
    },
    /// qwen35: gated delta-net layers (all but every `full_attention_interval`-th)
    /// and gated attention layers with q/k norms and partial IMROPE.
    Qwen35 {
        full_attention_interval: u32,
        d_conv: usize,
        /// Key, query and value head size of the delta-net.
        state_size: usize,
        n_k_heads: usize,
        n_v_heads: usize,
        /// Rotated dimensions of each attention head.
        n_rot: usize,
    },
    /// gemma4, four layers: sliding-window, full, then a sliding-window
    /// and a full layer reading the first two's caches (`shared_kv_layers`
    /// 2) with double feed-forwards. Full layers have heads twice as large,
    /// one KV head, proportional rope (a quarter of the pairs rotated) and
    /// layer 1 no `attn_v`; per-layer inputs of `n_embd_per_layer`; a
    /// constant scale per layer; logits softcapped.
    Gemma4 {
        window: u32,
        n_embd_per_layer: usize,
        softcap: f32,
    },
}

/// The experts of an lfm2moe fixture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lfm2Experts {
    pub n_expert: u32,
    pub n_expert_used: u32,
    pub n_ff_exp: usize,
    pub dense_lead: u32,
}

/// gemma4 fixture: is layer `il` a sliding-window one?
fn gemma4_swa(il: usize) -> bool {
    il.is_multiple_of(2)
}
/// gemma4 fixture: layers from this one on share earlier caches.
const GEMMA4_FIRST_SHARED: usize = 2;

const fn spec(name: &'static str, arch: &'static str, n_layer: usize, extra: Extra) -> TinySpec {
    TinySpec {
        name,
        arch,
        n_layer,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_ff: 128,
        embd_amp: 0.6,
        extra,
    }
}

/// Every fixture, in the order of the reference JSON.
pub const TINY_SPECS: [TinySpec; 12] = [
    spec("llama", "llama", 2, Extra::None),
    spec("qwen3", "qwen3", 2, Extra::QkNorm),
    spec(
        "gemma3",
        "gemma3",
        3,
        Extra::Gemma3 {
            window: 32,
            pattern: 3,
        },
    ),
    spec("llama3-rope", "llama", 2, Extra::RopeFreqs),
    spec(
        "granite",
        "granite",
        2,
        Extra::Granite {
            embedding_scale: 6.0,
            residual_scale: 0.5,
            attention_scale: 0.125,
            logit_scale: 2.0,
        },
    ),
    spec("smollm3", "smollm3", 4, Extra::Smollm3),
    spec("phi3", "phi3", 2, Extra::Phi3),
    spec(
        "qwen3moe",
        "qwen3moe",
        2,
        Extra::Moe {
            n_expert: 16,
            n_expert_used: 4,
            n_ff_exp: 32,
        },
    ),
    spec(
        "lfm2",
        "lfm2",
        4,
        Extra::Lfm2 {
            conv_layers: 0b1011,
            l_cache: 3,
            experts: None,
        },
    ),
    spec(
        "lfm2moe",
        "lfm2moe",
        4,
        Extra::Lfm2 {
            conv_layers: 0b1101,
            l_cache: 3,
            experts: Some(Lfm2Experts {
                n_expert: 16,
                n_expert_used: 4,
                n_ff_exp: 32,
                dense_lead: 1,
            }),
        },
    ),
    spec(
        "qwen35",
        "qwen35",
        4,
        Extra::Qwen35 {
            full_attention_interval: 2,
            d_conv: 4,
            state_size: 64,
            n_k_heads: 2,
            n_v_heads: 4,
            n_rot: 8,
        },
    ),
    spec(
        "gemma4",
        "gemma4",
        4,
        Extra::Gemma4 {
            // Wider than the greedy prompts and their 16 steps (so no
            // ring-buffer gap as gemma3's), crossed by the perplexity chunks.
            window: 96,
            n_embd_per_layer: 32,
            softcap: 30.0,
        },
    ),
];

/// The fixture of that name.
pub fn tiny_spec(name: &str) -> Option<TinySpec> {
    TINY_SPECS.iter().copied().find(|s| s.name == name)
}

/// splitmix64: a tiny, well-mixed PRNG; one stream per tensor.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// A stream seeded by the tensor's name, so adding a tensor does not
/// change the others.
fn rng_for(name: &str) -> SplitMix64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64(h)
}

/// `n` values `center + amp * uniform`.
fn values(name: &str, n: usize, center: f32, amp: f32) -> Vec<f32> {
    let mut r = rng_for(name);
    (0..n).map(|_| center + amp * r.uniform()).collect()
}

struct Tensors<'a> {
    w: GgufWriter<'a>,
}

impl Tensors<'_> {
    /// A matrix of `rows` rows of `cols`, in F16, with entries of size
    /// about 1/sqrt(cols) * gain (outputs of unit inputs keep unit scale).
    fn matrix(&mut self, name: &str, cols: usize, rows: usize, gain: f32) -> gguf::Result<()> {
        let amp = gain * (3.0 / cols as f32).sqrt();
        self.matrix_amp(name, cols, rows, amp)
    }
    fn matrix_amp(&mut self, name: &str, cols: usize, rows: usize, amp: f32) -> gguf::Result<()> {
        self.tensor_f16(name, &[cols, rows], amp)
    }
    /// An F16 tensor of dims (ggml order) with entries `amp * uniform`.
    fn tensor_f16(&mut self, name: &str, dims: &[usize], amp: f32) -> gguf::Result<()> {
        let v = values(name, dims.iter().product(), 0.0, amp);
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        self.w.add_tensor(name, &dims, GgmlType::F16, bytes)
    }
    /// An F32 matrix (the MoE router and gemma4's per-layer projection,
    /// which llama-quantize keeps in F32).
    fn matrix_f32(&mut self, name: &str, cols: usize, rows: usize, gain: f32) -> gguf::Result<()> {
        let amp = gain * (3.0 / cols as f32).sqrt();
        let bytes: Vec<u8> = values(name, cols * rows, 0.0, amp)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        self.w
            .add_tensor(name, &[cols as u64, rows as u64], GgmlType::F32, bytes)
    }
    /// An F32 vector `center + amp * uniform` (norm weights).
    fn vector(&mut self, name: &str, len: usize, center: f32, amp: f32) -> gguf::Result<()> {
        self.vector_values(name, &values(name, len, center, amp))
    }
    fn vector_values(&mut self, name: &str, v: &[f32]) -> gguf::Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.w
            .add_tensor(name, &[v.len() as u64], GgmlType::F32, bytes)
    }
}

/// Writes the F16 fixture `spec` to `out`, with the tokenizer of
/// `tokenizer_src` (every `tokenizer.*` key).
pub fn write_tiny_model(spec: &TinySpec, tokenizer_src: &GgufFile, out: &Path) -> gguf::Result<()> {
    let mut w = GgufWriter::new();
    let a = spec.arch;
    let key = |s: &str| format!("{a}.{s}");
    let (e, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
    w.add_kv("general.architecture", a.to_string())?;
    // No architecture in the name: llama.cpp keys tokenizer quirks on it
    // (a "phi3" name expects SentencePiece's "</s>").
    w.add_kv(
        "general.name",
        "rkinfer tiny random-weight model".to_string(),
    )?;
    w.add_kv("general.file_type", 1u32)?;
    w.add_kv(key("context_length"), 512u32)?;
    w.add_kv(key("embedding_length"), e as u32)?;
    w.add_kv(key("block_count"), spec.n_layer as u32)?;
    // gemma4's per-layer shapes (see gemma4_layer).
    let g4_layers: Vec<_> = (0..spec.n_layer).map(|il| gemma4_layer(spec, il)).collect();
    let g4_per_layer = |f: fn(&Gemma4Layer) -> usize| -> Vec<u32> {
        g4_layers.iter().map(|l| f(l) as u32).collect()
    };
    if matches!(spec.extra, Extra::Gemma4 { .. }) {
        w.add_kv(key("feed_forward_length"), g4_per_layer(|l| l.n_ff))?;
    } else {
        w.add_kv(key("feed_forward_length"), ff as u32)?;
    }
    w.add_kv(key("attention.head_count"), spec.n_head as u32)?;
    // lfm2 lists key-value heads per layer: none for convolution layers.
    let is_conv = |il: usize| match spec.extra {
        Extra::Lfm2 { conv_layers, .. } => conv_layers >> il & 1 == 1,
        _ => false,
    };
    if let Extra::Gemma4 {
        window,
        n_embd_per_layer,
        softcap,
    } = spec.extra
    {
        w.add_kv(
            key("attention.head_count_kv"),
            g4_per_layer(|l| l.n_head_kv),
        )?;
        w.add_kv(key("attention.key_length"), 2 * hd as u32)?;
        w.add_kv(key("attention.value_length"), 2 * hd as u32)?;
        w.add_kv(key("attention.key_length_swa"), hd as u32)?;
        w.add_kv(key("attention.value_length_swa"), hd as u32)?;
        w.add_kv(key("rope.dimension_count"), 2 * hd as u32)?;
        w.add_kv(key("rope.dimension_count_swa"), hd as u32)?;
        w.add_kv(key("rope.freq_base_swa"), 10000.0f32)?;
        let swa: Vec<bool> = (0..spec.n_layer).map(gemma4_swa).collect();
        w.add_kv(key("attention.sliding_window_pattern"), swa)?;
        w.add_kv(key("attention.sliding_window"), window)?;
        w.add_kv(
            key("attention.shared_kv_layers"),
            (spec.n_layer - GEMMA4_FIRST_SHARED) as u32,
        )?;
        w.add_kv(
            key("embedding_length_per_layer_input"),
            n_embd_per_layer as u32,
        )?;
        w.add_kv(key("final_logit_softcapping"), softcap)?;
    } else {
        if let Extra::Lfm2 { .. } = spec.extra {
            let heads: Vec<u32> = (0..spec.n_layer)
                .map(|il| {
                    if is_conv(il) {
                        0
                    } else {
                        spec.n_head_kv as u32
                    }
                })
                .collect();
            w.add_kv(key("attention.head_count_kv"), heads)?;
        } else {
            w.add_kv(key("attention.head_count_kv"), spec.n_head_kv as u32)?;
        }
        w.add_kv(key("attention.key_length"), hd as u32)?;
        w.add_kv(key("attention.value_length"), hd as u32)?;
        let n_rot = match spec.extra {
            Extra::Qwen35 { n_rot, .. } => n_rot,
            _ => hd,
        };
        w.add_kv(key("rope.dimension_count"), n_rot as u32)?;
    }
    w.add_kv(key("attention.layer_norm_rms_epsilon"), 1e-5f32)?;
    let freq_base: f32 = match spec.extra {
        Extra::RopeFreqs => 500000.0,
        Extra::Gemma3 { .. } | Extra::Gemma4 { .. } => 1000000.0,
        _ => 10000.0,
    };
    w.add_kv(key("rope.freq_base"), freq_base)?;
    match spec.extra {
        Extra::Gemma3 { window, pattern } => {
            w.add_kv(key("attention.sliding_window"), window)?;
            w.add_kv(key("attention.sliding_window_pattern"), pattern)?;
        }
        Extra::Granite {
            embedding_scale,
            residual_scale,
            attention_scale,
            logit_scale,
        } => {
            w.add_kv(key("embedding_scale"), embedding_scale)?;
            w.add_kv(key("residual_scale"), residual_scale)?;
            w.add_kv(key("attention.scale"), attention_scale)?;
            w.add_kv(key("logit_scale"), logit_scale)?;
        }
        Extra::Moe {
            n_expert,
            n_expert_used,
            n_ff_exp,
        } => {
            w.add_kv(key("expert_count"), n_expert)?;
            w.add_kv(key("expert_used_count"), n_expert_used)?;
            w.add_kv(key("expert_feed_forward_length"), n_ff_exp as u32)?;
        }
        Extra::Lfm2 {
            l_cache, experts, ..
        } => {
            w.add_kv(key("shortconv.l_cache"), l_cache)?;
            if let Some(x) = experts {
                w.add_kv(key("expert_count"), x.n_expert)?;
                w.add_kv(key("expert_used_count"), x.n_expert_used)?;
                w.add_kv(key("expert_feed_forward_length"), x.n_ff_exp as u32)?;
                w.add_kv(key("leading_dense_block_count"), x.dense_lead)?;
                // llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID.
                w.add_kv(key("expert_gating_func"), 2u32)?;
            }
        }
        Extra::Qwen35 {
            full_attention_interval,
            d_conv,
            state_size,
            n_k_heads,
            n_v_heads,
            n_rot,
        } => {
            w.add_kv(key("full_attention_interval"), full_attention_interval)?;
            w.add_kv(key("ssm.conv_kernel"), d_conv as u32)?;
            w.add_kv(key("ssm.state_size"), state_size as u32)?;
            w.add_kv(key("ssm.group_count"), n_k_heads as u32)?;
            w.add_kv(key("ssm.time_step_rank"), n_v_heads as u32)?;
            w.add_kv(key("ssm.inner_size"), (n_v_heads * state_size) as u32)?;
            // Interleaved sections t, h, w of the rotated pairs (text
            // positions: all the token's position).
            let pairs = (n_rot / 2) as i32;
            let sections = vec![pairs - 2 * (pairs / 4), pairs / 4, pairs / 4, 0i32];
            w.add_kv(key("rope.dimension_sections"), sections)?;
        }
        _ => {}
    }
    for (k, v) in tokenizer_src.metadata() {
        if k.starts_with("tokenizer.") {
            w.add_kv(k.clone(), v.clone())?;
        }
    }
    let n_vocab = match tokenizer_src.get("tokenizer.ggml.tokens") {
        Some(Value::Array(t)) => t.len(),
        _ => {
            return Err(gguf::GgufError::MissingKey {
                key: "tokenizer.ggml.tokens".into(),
            })
        }
    };

    let mut t = Tensors { w };
    // Tied output: the embedding table is also the output matrix.
    t.matrix_amp("token_embd.weight", e, n_vocab, spec.embd_amp)?;
    // lfm2's final norm is named token_embd_norm by llama.cpp's converter.
    let output_norm = match spec.extra {
        Extra::Lfm2 { .. } => "token_embd_norm.weight",
        _ => "output_norm.weight",
    };
    t.vector(output_norm, e, 1.0, 0.2)?;
    if spec.extra == Extra::RopeFreqs {
        // llama3-style factors: 1 for high frequencies, up to 8 for low.
        let ff: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 + 7.0 * (i as f32 / (hd / 2 - 1) as f32).powi(2))
            .collect();
        t.vector_values("rope_freqs.weight", &ff)?;
    }
    if let Extra::Gemma4 {
        n_embd_per_layer, ..
    } = spec.extra
    {
        return write_gemma4_tensors(spec, t, n_vocab, n_embd_per_layer, out);
    }
    for il in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        t.vector(&n("attn_norm.weight"), e, 1.0, 0.2)?;
        if let Extra::Lfm2 {
            l_cache, experts, ..
        } = spec.extra
        {
            lfm2_layer(&mut t, spec, il, is_conv(il), l_cache as usize, experts)?;
            continue;
        }
        if let Extra::Qwen35 {
            full_attention_interval,
            ..
        } = spec.extra
        {
            let recurrent = (il + 1) % full_attention_interval as usize != 0;
            qwen35_mixer(&mut t, spec, il, recurrent)?;
            t.vector(&n("post_attention_norm.weight"), e, 1.0, 0.2)?;
            t.matrix(&n("ffn_gate.weight"), e, ff, 1.0)?;
            t.matrix(&n("ffn_up.weight"), e, ff, 1.0)?;
            t.matrix(&n("ffn_down.weight"), ff, e, 1.0)?;
            continue;
        }
        if spec.extra == Extra::Phi3 {
            t.matrix(&n("attn_qkv.weight"), e, q_dim + 2 * kv_dim, 1.0)?;
        } else {
            t.matrix(&n("attn_q.weight"), e, q_dim, 1.0)?;
            t.matrix(&n("attn_k.weight"), e, kv_dim, 1.0)?;
            t.matrix(&n("attn_v.weight"), e, kv_dim, 1.0)?;
        }
        t.matrix(&n("attn_output.weight"), q_dim, e, 1.0)?;
        if matches!(
            spec.extra,
            Extra::QkNorm | Extra::Gemma3 { .. } | Extra::Moe { .. }
        ) {
            t.vector(&n("attn_q_norm.weight"), hd, 1.0, 0.2)?;
            t.vector(&n("attn_k_norm.weight"), hd, 1.0, 0.2)?;
        }
        if matches!(spec.extra, Extra::Gemma3 { .. }) {
            t.vector(&n("post_attention_norm.weight"), e, 1.0, 0.2)?;
            t.vector(&n("post_ffw_norm.weight"), e, 1.0, 0.2)?;
        }
        t.vector(&n("ffn_norm.weight"), e, 1.0, 0.2)?;
        if let Extra::Moe {
            n_expert, n_ff_exp, ..
        } = spec.extra
        {
            // A strong router so the selection is clear-cut.
            let ne = n_expert as usize;
            t.matrix_f32(&n("ffn_gate_inp.weight"), e, ne, 2.0)?;
            let amp_in = (3.0 / e as f32).sqrt();
            let amp_down = (3.0 / n_ff_exp as f32).sqrt();
            t.tensor_f16(&n("ffn_gate_exps.weight"), &[e, n_ff_exp, ne], amp_in)?;
            t.tensor_f16(&n("ffn_up_exps.weight"), &[e, n_ff_exp, ne], amp_in)?;
            t.tensor_f16(&n("ffn_down_exps.weight"), &[n_ff_exp, e, ne], amp_down)?;
            continue;
        }
        if spec.extra == Extra::Phi3 {
            t.matrix(&n("ffn_up.weight"), e, 2 * ff, 1.0)?;
        } else {
            t.matrix(&n("ffn_gate.weight"), e, ff, 1.0)?;
            t.matrix(&n("ffn_up.weight"), e, ff, 1.0)?;
        }
        t.matrix(&n("ffn_down.weight"), ff, e, 1.0)?;
    }
    t.w.write(out)
}

/// An lfm2 block after its operator norm: a short convolution or attention
/// with q/k norms, then a dense or expert feed-forward.
fn lfm2_layer(
    t: &mut Tensors<'_>,
    spec: &TinySpec,
    il: usize,
    conv: bool,
    l_cache: usize,
    experts: Option<Lfm2Experts>,
) -> gguf::Result<()> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (e, hd, ff) = (spec.n_embd, spec.head_dim, spec.n_ff);
    if conv {
        t.matrix(&n("shortconv.in_proj.weight"), e, 3 * e, 1.0)?;
        // F32 taps (ggml_ssm_conv reads f32 only).
        let taps = values(&n("shortconv.conv.weight"), l_cache * e, 0.0, 0.8);
        let bytes: Vec<u8> = taps.iter().flat_map(|x| x.to_le_bytes()).collect();
        t.w.add_tensor(
            n("shortconv.conv.weight"),
            &[l_cache as u64, e as u64],
            GgmlType::F32,
            bytes,
        )?;
        t.matrix(&n("shortconv.out_proj.weight"), e, e, 1.0)?;
    } else {
        let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
        t.matrix(&n("attn_q.weight"), e, q_dim, 1.0)?;
        t.matrix(&n("attn_k.weight"), e, kv_dim, 1.0)?;
        t.matrix(&n("attn_v.weight"), e, kv_dim, 1.0)?;
        t.matrix(&n("attn_output.weight"), q_dim, e, 1.0)?;
        t.vector(&n("attn_q_norm.weight"), hd, 1.0, 0.2)?;
        t.vector(&n("attn_k_norm.weight"), hd, 1.0, 0.2)?;
    }
    t.vector(&n("ffn_norm.weight"), e, 1.0, 0.2)?;
    match experts {
        Some(x) if il >= x.dense_lead as usize => {
            let ne = x.n_expert as usize;
            t.matrix_f32(&n("ffn_gate_inp.weight"), e, ne, 2.0)?;
            // The selection bias reorders some choices.
            t.vector(&n("exp_probs_b.bias"), ne, 0.0, 0.3)?;
            let amp_in = (3.0 / e as f32).sqrt();
            let amp_down = (3.0 / x.n_ff_exp as f32).sqrt();
            t.tensor_f16(&n("ffn_gate_exps.weight"), &[e, x.n_ff_exp, ne], amp_in)?;
            t.tensor_f16(&n("ffn_up_exps.weight"), &[e, x.n_ff_exp, ne], amp_in)?;
            t.tensor_f16(&n("ffn_down_exps.weight"), &[x.n_ff_exp, e, ne], amp_down)?;
        }
        _ => {
            t.matrix(&n("ffn_gate.weight"), e, ff, 1.0)?;
            t.matrix(&n("ffn_up.weight"), e, ff, 1.0)?;
            t.matrix(&n("ffn_down.weight"), ff, e, 1.0)?;
        }
    }
    Ok(())
}

/// The mixer of qwen35 layer `il`: a gated delta-net (`recurrent`) or a
/// gated attention (query projection of query and gate per head).
fn qwen35_mixer(
    t: &mut Tensors<'_>,
    spec: &TinySpec,
    il: usize,
    recurrent: bool,
) -> gguf::Result<()> {
    let n = |s: &str| format!("blk.{il}.{s}");
    let (e, hd) = (spec.n_embd, spec.head_dim);
    let Extra::Qwen35 {
        d_conv,
        state_size: sd,
        n_k_heads,
        n_v_heads,
        ..
    } = spec.extra
    else {
        return Ok(());
    };
    if !recurrent {
        let (q_dim, kv_dim) = (spec.n_head * hd, spec.n_head_kv * hd);
        t.matrix(&n("attn_q.weight"), e, 2 * q_dim, 1.0)?;
        t.matrix(&n("attn_k.weight"), e, kv_dim, 1.0)?;
        t.matrix(&n("attn_v.weight"), e, kv_dim, 1.0)?;
        t.matrix(&n("attn_output.weight"), q_dim, e, 1.0)?;
        t.vector(&n("attn_q_norm.weight"), hd, 1.0, 0.2)?;
        t.vector(&n("attn_k_norm.weight"), hd, 1.0, 0.2)?;
        return Ok(());
    }
    let (key_dim, value_dim) = (n_k_heads * sd, n_v_heads * sd);
    let conv_dim = 2 * key_dim + value_dim;
    t.matrix(&n("attn_qkv.weight"), e, conv_dim, 1.0)?;
    t.matrix(&n("attn_gate.weight"), e, value_dim, 1.0)?;
    // Convolution taps stay f32 (llama.cpp's ssm_conv reads f32 only).
    let taps: Vec<u8> = values(&n("ssm_conv1d.weight"), d_conv * conv_dim, 0.0, 0.6)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    t.w.add_tensor(
        n("ssm_conv1d.weight"),
        &[d_conv as u64, conv_dim as u64],
        GgmlType::F32,
        taps,
    )?;
    // Decay per step exp(softplus(alpha + dt) * a) with a in [-1, -0.2]:
    // the state forgets over a few tokens, not at once.
    t.vector(&n("ssm_dt.bias"), n_v_heads, 0.0, 1.0)?;
    t.vector(&n("ssm_a"), n_v_heads, -0.6, 0.4)?;
    t.matrix(&n("ssm_beta.weight"), e, n_v_heads, 1.0)?;
    t.matrix(&n("ssm_alpha.weight"), e, n_v_heads, 1.0)?;
    t.vector(&n("ssm_norm.weight"), sd, 1.0, 0.2)?;
    t.matrix(&n("ssm_out.weight"), value_dim, e, 1.0)?;
    Ok(())
}

/// Shapes of one gemma4 fixture layer.
struct Gemma4Layer {
    swa: bool,
    head_dim: usize,
    n_head_kv: usize,
    n_ff: usize,
    /// Has its own KV cache (else reads an earlier layer's).
    own_kv: bool,
}

fn gemma4_layer(spec: &TinySpec, il: usize) -> Gemma4Layer {
    let swa = gemma4_swa(il);
    let own_kv = il < GEMMA4_FIRST_SHARED;
    Gemma4Layer {
        swa,
        head_dim: if swa {
            spec.head_dim
        } else {
            2 * spec.head_dim
        },
        n_head_kv: if swa { spec.n_head_kv } else { 1 },
        // llama.cpp's use_double_wide_mlp on the sharing layers.
        n_ff: if own_kv { spec.n_ff } else { 2 * spec.n_ff },
        own_kv,
    }
}

/// The tensors of the gemma4 fixture (after the embedding table and the
/// output norm).
fn write_gemma4_tensors(
    spec: &TinySpec,
    mut t: Tensors<'_>,
    n_vocab: usize,
    ple: usize,
    out: &Path,
) -> gguf::Result<()> {
    let e = spec.n_embd;
    // Proportional rope of the full layers: a quarter of the pairs rotate,
    // the others get a huge divisor (as convert_hf_to_gguf.py writes it).
    let pairs = spec.head_dim; // full head size / 2
    let factors: Vec<f32> = (0..pairs)
        .map(|i| if i < pairs / 4 { 1.0 } else { 1e30 })
        .collect();
    t.vector_values("rope_freqs.weight", &factors)?;
    let width = ple * spec.n_layer;
    t.matrix_amp("per_layer_token_embd.weight", width, n_vocab, 1.0)?;
    // F32, which llama-quantize keeps: F16 would bring the F16 matmul gap
    // (docs/models.md) into the Q5_0 fixture.
    t.matrix_f32("per_layer_model_proj.weight", e, width, 1.0)?;
    t.vector("per_layer_proj_norm.weight", ple, 1.0, 0.2)?;
    for il in 0..spec.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        let l = gemma4_layer(spec, il);
        let (q_dim, kv_dim) = (spec.n_head * l.head_dim, l.n_head_kv * l.head_dim);
        t.vector(&n("attn_norm.weight"), e, 1.0, 0.2)?;
        t.matrix(&n("attn_q.weight"), e, q_dim, 1.0)?;
        t.vector(&n("attn_q_norm.weight"), l.head_dim, 1.0, 0.2)?;
        if l.own_kv {
            t.matrix(&n("attn_k.weight"), e, kv_dim, 1.0)?;
            t.vector(&n("attn_k_norm.weight"), l.head_dim, 1.0, 0.2)?;
            // The full layer has no attn_v: its keys are its values.
            if l.swa {
                t.matrix(&n("attn_v.weight"), e, kv_dim, 1.0)?;
            }
        }
        t.matrix(&n("attn_output.weight"), q_dim, e, 1.0)?;
        t.vector(&n("post_attention_norm.weight"), e, 1.0, 0.2)?;
        t.vector(&n("ffn_norm.weight"), e, 1.0, 0.2)?;
        t.matrix(&n("ffn_gate.weight"), e, l.n_ff, 1.0)?;
        t.matrix(&n("ffn_up.weight"), e, l.n_ff, 1.0)?;
        t.matrix(&n("ffn_down.weight"), l.n_ff, e, 1.0)?;
        t.vector(&n("post_ffw_norm.weight"), e, 1.0, 0.2)?;
        t.matrix(&n("inp_gate.weight"), e, ple, 1.0)?;
        t.matrix(&n("proj.weight"), ple, e, 1.0)?;
        t.vector(&n("post_norm.weight"), e, 1.0, 0.2)?;
        t.vector(&n("layer_output_scale.weight"), 1, 0.9, 0.3)?;
    }
    t.w.write(out)
}

/// The weight types each fixture comes in: F16 as written, Q5_0 quantized
/// from it.
pub const TINY_TYPES: [&str; 2] = ["f16", "q5_0"];

/// Writes fixture `spec` of type `ty` ("f16" or "q5_0") into `dir` as
/// `<name>-<ty>.gguf` and returns its path.
pub fn make_tiny_model(
    spec: &TinySpec,
    ty: &str,
    tokenizer_src: &GgufFile,
    dir: &Path,
) -> Result<std::path::PathBuf, String> {
    use rkinfer::quantize::{quantize_model, FileType, QuantizeOptions};
    let f16 = dir.join(format!("{}-f16.gguf", spec.name));
    write_tiny_model(spec, tokenizer_src, &f16).map_err(|e| format!("{}: {e}", f16.display()))?;
    match ty {
        "f16" => Ok(f16),
        "q5_0" => {
            let out = dir.join(format!("{}-q5_0.gguf", spec.name));
            let mut opts = QuantizeOptions::new(FileType::Q5_0);
            opts.force = true;
            opts.progress = false;
            opts.n_threads = 1;
            // Not the Q8_0 llama-quantize picks for a tied embedding:
            // llama.cpp's AMX kernels take Q8_0 on the recording machine.
            opts.token_embedding_type = Some(GgmlType::Q5_0);
            quantize_model(&f16, &out, &opts).map_err(|e| format!("{}: {e}", out.display()))?;
            Ok(out)
        }
        other => Err(format!("unknown fixture type {other:?}")),
    }
}

/// Hex sha256 of a file.
pub fn sha256_hex(path: &Path) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
