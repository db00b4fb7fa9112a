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
pub const TINY_SPECS: [TinySpec; 9] = [
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
        w.add_kv(key("attention.head_count_kv"), spec.n_head_kv as u32)?;
        w.add_kv(key("attention.key_length"), hd as u32)?;
        w.add_kv(key("attention.value_length"), hd as u32)?;
        w.add_kv(key("rope.dimension_count"), hd as u32)?;
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
    t.vector("output_norm.weight", e, 1.0, 0.2)?;
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
