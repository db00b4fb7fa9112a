//! Model quantization, as `llama-quantize` does it.
//!
//! [`quantize_model`] reads a GGUF model, picks every tensor's output type
//! with llama.cpp's rules (src/llama-quant.cpp: which tensors may be
//! quantized, the K-quant mixtures, the tied-embedding rule, the fallback
//! for rows that do not divide into blocks), converts the data with ggml's
//! reference quantizers (bit-exact, see the `quant` crate) and writes a GGUF
//! whose tensor data, order and metadata match llama-quantize's output.
//!
//! The output is written to a unique temporary file beside it, synced and
//! renamed when complete (see [`crate::output_file`]), so a failed or
//! interrupted run never leaves a partial model behind, and two runs to
//! the same output never mix their bytes.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};

use crate::output_file::OutputFile;
use rayon::prelude::*;

/// llama.cpp's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// llama.cpp's `llama_ftype` values (`general.file_type`) and their names:
/// the ones rkinfer writes ([`FileType`]) and the rest, so that files made
/// by other tools are named too.
pub const LLAMA_FTYPES: [(u32, &str); 33] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4"),
];

/// The name of `llama_ftype` value `id` ("Q4_K_M"), if llama.cpp has one.
pub fn llama_ftype_name(id: u32) -> Option<&'static str> {
    LLAMA_FTYPES
        .iter()
        .find(|&&(i, _)| i == id)
        .map(|&(_, n)| n)
}

/// A target file type (llama.cpp `llama_ftype`): the default tensor type
/// plus, for the K-quant mixtures, rules that give some tensors more bits.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl FileType {
    /// Every supported file type, in llama-quantize's listing order.
    pub const ALL: [FileType; 17] = [
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
        FileType::Q8_0,
        FileType::F16,
        FileType::BF16,
        FileType::F32,
    ];

    /// The `llama_ftype` value stored as `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The name llama-quantize accepts ("Q4_K_M", "F16", ...), from
    /// [`LLAMA_FTYPES`].
    pub fn name(self) -> &'static str {
        // Every variant's id is in the list (checked by a unit test).
        llama_ftype_name(self.id()).unwrap_or("?")
    }

    /// Parses a name case-insensitively; "Q3_K", "Q4_K" and "Q5_K" are
    /// llama-quantize's aliases of the _M mixtures.
    pub fn from_name(name: &str) -> Option<FileType> {
        let upper = name.to_ascii_uppercase();
        let alias = match upper.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            other => other,
        };
        FileType::ALL.iter().copied().find(|t| t.name() == alias)
    }

    /// The names accepted by [`FileType::from_name`], comma separated.
    pub fn valid_names() -> String {
        let mut names: Vec<&str> = FileType::ALL.iter().map(|t| t.name()).collect();
        names.extend(["Q3_K", "Q4_K", "Q5_K"]);
        names.join(", ")
    }

    /// The tensor type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => GgmlType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => GgmlType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => GgmlType::Q5_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to quantize.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub file_type: FileType,
    /// Allow converting tensors that are already quantized (lossy twice).
    pub allow_requantize: bool,
    /// Overwrite an existing output file.
    pub force: bool,
    /// Worker threads; 0 means all cores.
    pub n_threads: usize,
    /// Print a line per tensor on stderr.
    pub progress: bool,
    /// Type for `token_embd.weight` (llama-quantize --token-embedding-type).
    pub token_embedding_type: Option<GgmlType>,
    /// Type for `output.weight` (llama-quantize --output-tensor-type).
    pub output_tensor_type: Option<GgmlType>,
}

impl QuantizeOptions {
    pub fn new(file_type: FileType) -> Self {
        QuantizeOptions {
            file_type,
            allow_requantize: false,
            force: false,
            n_threads: 0,
            progress: true,
            token_embedding_type: None,
            output_tensor_type: None,
        }
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    /// The row length did not divide into blocks of the chosen type and a
    /// fallback type was used.
    pub fallback: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Summary of a quantization run.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    /// Every tensor in output order.
    pub tensors: Vec<TensorReport>,
    pub n_fallback: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub seconds: f64,
}

pub use crate::error::QuantizeError;

/// The log target of the per-tensor progress lines (`QuantizeOptions::progress`),
/// llama-quantize's format; the CLI prints it as it is.
pub const PROGRESS_TARGET: &str = "rkinfer::progress";

// ---------------------------------------------------------------------------
// Tensor type rules (llama-quant.cpp)

/// Broad tensor roles the type rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionKvB,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    let table = [
        ("attn_qkv.weight", Category::AttentionQkv),
        ("attn_kv_b.weight", Category::AttentionKvB),
        ("attn_v.weight", Category::AttentionV),
        ("attn_k.weight", Category::AttentionK),
        ("attn_q.weight", Category::AttentionQ),
        ("attn_output.weight", Category::AttentionOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ];
    table
        .iter()
        .find(|(pat, _)| name.contains(pat))
        .map_or(Category::Other, |&(_, c)| c)
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(
        c,
        Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
    )
}

/// ggml_n_dims: dimensions up to the last one above 1.
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// Whether llama-quantize would change this tensor's type at all.
fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    if n_dims(dims) < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: &[&str] = &[
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    if KEEP.iter().any(|p| name.contains(p)) {
        return false;
    }
    name != "position_embd.weight" && name != "token_types.weight"
}

/// The hyperparameters the rules depend on.
struct ModelFacts {
    is_falcon: bool,
    is_70b: bool,
    n_layer: i32,
    n_gqa: u32,
    n_expert: u32,
}

fn model_facts(f: &GgufFile) -> Result<ModelFacts, QuantizeError> {
    let missing = |key: String, e: gguf::GgufError| QuantizeError::MissingMetadata {
        key,
        reason: e.to_string(),
    };
    let arch = f
        .architecture()
        .map_err(|e| missing("general.architecture".into(), e))?
        .to_string();
    let n_layer = f
        .arch_u32("block_count")
        .map_err(|e| missing(format!("{arch}.block_count"), e))?;
    // Head counts only matter for the Q2_K/Q3_K attn_v rules; llama.cpp
    // allows n_head_kv to be absent (then equal to n_head).
    let n_head = f.arch_u32("attention.head_count").unwrap_or(0);
    let n_head_kv = f.arch_u32("attention.head_count_kv").unwrap_or(n_head);
    let n_expert = f.arch_u32("expert_count").unwrap_or(0);
    Ok(ModelFacts {
        is_falcon: arch == "falcon",
        is_70b: arch == "llama" && n_layer == 80 && n_head != n_head_kv,
        n_layer: n_layer as i32,
        n_gqa: n_head.checked_div(n_head_kv).unwrap_or(0),
        n_expert,
    })
}

/// Running state of the per-layer rules (llama-quant.cpp quantize_state).
struct RuleState {
    n_attention_wv: i32,
    i_attention_wv: i32,
    i_ffn_down: i32,
    has_tied_embeddings: bool,
}

fn use_more_bits(i_layer: i32, n_layers: i32) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// llama_tensor_get_type_impl for the file types rkinfer supports.
fn mixture_type(
    st: &mut RuleState,
    m: &ModelFacts,
    ftype: FileType,
    name: &str,
    row_len: u64,
    cat: Category,
    mut new_type: GgmlType,
) -> Result<GgmlType, QuantizeError> {
    use FileType as F;
    use GgmlType as T;
    if cat == Category::Output || (st.has_tied_embeddings && cat == Category::TokenEmbd) {
        if m.is_falcon || !row_len.is_multiple_of(new_type.block_size() as u64) {
            new_type = T::Q8_0;
        } else if new_type != T::Q8_0 {
            new_type = T::Q6_K;
        }
    } else if cat == Category::TokenEmbd {
        // Only the IQ/TQ mixtures change an untied token embedding.
    } else if is_attn_v_like(cat) {
        match ftype {
            F::Q2_K => new_type = if m.n_gqa >= 4 { T::Q4_K } else { T::Q3_K },
            F::Q3_K_M => {
                new_type = if st.i_attention_wv < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            }
            F::Q3_K_L => new_type = T::Q5_K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(st.i_attention_wv, st.n_attention_wv) => {
                new_type = T::Q6_K
            }
            F::Q4_K_S if st.i_attention_wv < 4 => new_type = T::Q5_K,
            _ => {}
        }
        if m.is_70b && matches!(new_type, T::Q3_K | T::Q4_K) {
            new_type = T::Q5_K;
        }
        if m.n_expert == 8 {
            new_type = T::Q8_0;
        }
        st.i_attention_wv += 1;
    } else if cat == Category::AttentionK {
        if m.n_expert == 8 {
            new_type = T::Q8_0;
        }
    } else if cat == Category::FfnDown {
        let n_layer = m.n_layer;
        let i_layer = if m.n_expert > 1 {
            layer_of(name)
                .filter(|&l| l >= 0 && l < n_layer)
                .ok_or_else(|| QuantizeError::MissingMetadata {
                    key: name.to_string(),
                    reason: format!("no layer number in [0, {n_layer}) in the tensor name"),
                })?
        } else {
            st.i_ffn_down
        };
        let more = use_more_bits(i_layer, n_layer);
        match ftype {
            F::Q2_K => new_type = T::Q3_K,
            F::Q3_K_M => {
                new_type = if i_layer < n_layer / 16 {
                    T::Q5_K
                } else if !m.is_falcon || more {
                    T::Q4_K
                } else {
                    T::Q3_K
                }
            }
            F::Q3_K_L => new_type = if m.is_falcon { T::Q4_K } else { T::Q5_K },
            F::Q4_K_M => {
                if m.is_falcon {
                    new_type = if i_layer < n_layer / 16 {
                        T::Q6_K
                    } else if more {
                        T::Q5_K
                    } else {
                        T::Q4_K
                    };
                } else if more {
                    new_type = T::Q6_K;
                }
            }
            F::Q5_K_M if more => new_type = T::Q6_K,
            F::Q4_K_S if !m.is_falcon && i_layer < n_layer / 8 => new_type = T::Q5_K,
            _ => {}
        }
        st.i_ffn_down += 1;
    } else if cat == Category::AttentionOutput {
        if !m.is_falcon {
            if m.n_expert == 8 {
                if matches!(
                    ftype,
                    F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::Q4_K_S | F::Q4_K_M
                ) {
                    new_type = T::Q5_K;
                }
            } else {
                match ftype {
                    F::Q2_K => new_type = T::Q3_K,
                    F::Q3_K_M => new_type = T::Q4_K,
                    F::Q3_K_L => new_type = T::Q5_K,
                    _ => {}
                }
            }
        } else if ftype == F::Q3_K_L {
            new_type = T::Q4_K;
        }
    }
    Ok(new_type)
}

/// tensor_type_fallback: a compatible type when rows do not divide into
/// blocks of `ty`; (type, whether a fallback was needed).
fn fallback_type(name: &str, row_len: u64, ty: GgmlType) -> (GgmlType, bool) {
    use GgmlType as T;
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return (ty, false);
    }
    let mut ret = match ty {
        T::IQ1_S
        | T::IQ1_M
        | T::IQ2_XXS
        | T::IQ2_XS
        | T::IQ2_S
        | T::IQ3_XXS
        | T::IQ3_S
        | T::IQ4_XS => T::IQ4_NL,
        T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        // 32-element blocks: nothing smaller to demote to; F16 below.
        other => other,
    };
    if !row_len.is_multiple_of(ret.block_size() as u64) {
        ret = T::F16;
    }
    let _ = name;
    (ret, true)
}

/// "blk.N." prefix of a tensor name, as sscanf("blk.%d.") reads it.
fn layer_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest.find(|c: char| !c.is_ascii_digit() && c != '-' && c != '+')?;
    if !rest[end..].starts_with('.') {
        return None;
    }
    rest[..end].parse().ok()
}

/// The order llama-quantize writes tensors in (its weights_map comparator):
/// by layer number (no layer first), then by name.
fn output_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = layer_of(a).unwrap_or(-1);
    let lb = layer_of(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

/// One tensor's plan.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub fallback: bool,
}

/// Chooses every tensor's output type exactly as llama-quantize does, in
/// llama-quantize's output order. Fails on tensors it would not convert.
pub fn plan(f: &GgufFile, opts: &QuantizeOptions) -> crate::Result<Vec<TensorPlan>> {
    let facts = model_facts(f)?;
    let mut tensors: Vec<&TensorInfo> = f.tensors().iter().collect();
    tensors.sort_by(|a, b| output_order(&a.name, &b.name));

    let mut st = RuleState {
        n_attention_wv: tensors
            .iter()
            .filter(|t| is_attn_v_like(category(&t.name)))
            .count() as i32,
        i_attention_wv: 0,
        i_ffn_down: 0,
        has_tied_embeddings: !tensors
            .iter()
            .any(|t| category(&t.name) == Category::Output),
    };
    let default_type = opts.file_type.default_type();
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let row_len = t.dims.first().copied().unwrap_or(1);
        let cat = category(&t.name);
        let mut fallback = false;
        let to = if !allows_quantization(&t.name, &t.dims) {
            t.ggml_type
        } else if let (Some(ty), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            ty
        } else if let (Some(ty), Category::Output) = (opts.output_tensor_type, cat) {
            ty
        } else if default_type.is_quantized() {
            let ty = mixture_type(
                &mut st,
                &facts,
                opts.file_type,
                &t.name,
                row_len,
                cat,
                default_type,
            )?;
            let (ty, fb) = fallback_type(&t.name, row_len, ty);
            fallback = fb;
            ty
        } else {
            default_type
        };
        if to != t.ggml_type {
            if !row_len.is_multiple_of(to.block_size() as u64) {
                return Err(QuantizeError::RowNotDivisible {
                    tensor: t.name.clone(),
                    row_len,
                    ty: to,
                    block_size: to.block_size(),
                }
                .into());
            }
            if !quant::is_supported(to) {
                return Err(QuantizeError::UnsupportedType {
                    tensor: t.name.clone(),
                    ty: to,
                }
                .into());
            }
            if !quant::is_supported(t.ggml_type) || t.ggml_type == GgmlType::Q8_K {
                return Err(QuantizeError::UnsupportedType {
                    tensor: t.name.clone(),
                    ty: t.ggml_type,
                }
                .into());
            }
            if t.ggml_type.is_quantized() && !opts.allow_requantize {
                return Err(QuantizeError::RequantizeNotAllowed {
                    tensor: t.name.clone(),
                    ty: t.ggml_type,
                }
                .into());
            }
        }
        out.push(TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.ggml_type,
            to,
            fallback,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Conversion and writing

/// Rows converted per parallel task (enough to amortise scheduling).
const ROWS_PER_TASK: usize = 16;

/// Converts `src` (rows of `row_len` elements of type `from`) into `dst`
/// (type `to`), row by row through f32, over the pool's threads.
fn convert_rows(
    src: &[u8],
    dst: &mut [u8],
    row_len: usize,
    from: GgmlType,
    to: GgmlType,
) -> Result<(), quant::QuantError> {
    let in_row = quant::row_size(from, row_len)?;
    let out_row = quant::row_size(to, row_len)?;
    dst.par_chunks_mut(out_row * ROWS_PER_TASK)
        .zip(src.par_chunks(in_row * ROWS_PER_TASK))
        .try_for_each_init(
            || vec![0f32; row_len],
            |buf, (d, s)| {
                for (drow, srow) in d.chunks_mut(out_row).zip(s.chunks(in_row)) {
                    quant::dequantize_row(from, srow, buf)?;
                    quant::quantize_row_ref(to, buf, drow)?;
                }
                Ok(())
            },
        )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// Output metadata: the input's keys in order, without the ones llama.cpp
/// sets (moved to the end with their new values) or drops (split keys).
fn output_metadata(f: &GgufFile, ftype: FileType) -> Vec<(String, Value)> {
    const REPLACED: [&str; 5] = [
        "general.quantization_version",
        "general.file_type",
        "split.no",
        "split.count",
        "split.tensors.count",
    ];
    let mut kv: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter(|(k, _)| !REPLACED.contains(&k.as_str()))
        .cloned()
        .collect();
    kv.push((
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    ));
    kv.push(("general.file_type".into(), Value::U32(ftype.id())));
    kv
}

fn io_err(path: &Path, source: std::io::Error) -> crate::Error {
    crate::Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Quantizes the GGUF model `input` into `output` (see the module docs).
pub fn quantize_model(
    input: &Path,
    output: &Path,
    opts: &QuantizeOptions,
) -> crate::Result<QuantizeReport> {
    let start = Instant::now();
    if output.exists() {
        let same = match (input.canonicalize(), output.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            return Err(QuantizeError::SameFile {
                path: output.to_path_buf(),
            }
            .into());
        }
        if !opts.force {
            return Err(QuantizeError::OutputExists {
                path: output.to_path_buf(),
            }
            .into());
        }
    }
    let file = GgufFile::open(input)?;
    let plans = plan(&file, opts)?;

    let mut writer = GgufWriter::new();
    for (k, v) in output_metadata(&file, opts.file_type) {
        writer.add_kv(k, v)?;
    }
    for p in &plans {
        writer.add_tensor_info(p.name.clone(), &p.dims, p.to)?;
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.n_threads)
        .build()
        .map_err(|e| crate::Error::InvalidArgument(format!("thread pool: {e}")))?;

    let mut out_file = OutputFile::create(output)?;
    let temp_path = out_file.temp_path().to_path_buf();
    let result = (|| -> crate::Result<QuantizeReport> {
        let sink = std::io::BufWriter::with_capacity(1 << 20, out_file.file());
        let mut stream = writer.stream_to_file(sink, &temp_path)?;
        let mut reports = Vec::with_capacity(plans.len());
        let mut converted = Vec::new();
        let n = plans.len();
        for (i, p) in plans.iter().enumerate() {
            if crate::output_file::interrupted() {
                return Err(crate::Error::Interrupted(format!(
                    "{} not written",
                    output.display()
                )));
            }
            let info = file.tensor(&p.name).ok_or_else(|| {
                crate::Error::InvalidArgument(format!("tensor {} vanished", p.name))
            })?;
            let data = file.tensor_data(info);
            let bytes_out = if p.to == p.from {
                stream.write_tensor_data(data)?;
                data.len() as u64
            } else {
                let row_len = p.dims.first().copied().unwrap_or(1) as usize;
                let n_rows = (info.n_elements() as usize) / row_len.max(1);
                let out_size = quant::row_size(p.to, row_len).map_err(|e| {
                    crate::Error::InvalidArgument(format!("tensor {}: {e}", p.name))
                })? * n_rows;
                converted.clear();
                converted.resize(out_size, 0u8);
                pool.install(|| convert_rows(data, &mut converted, row_len, p.from, p.to))
                    .map_err(|e| {
                        crate::Error::InvalidArgument(format!("tensor {}: {e}", p.name))
                    })?;
                stream.write_tensor_data(&converted)?;
                out_size as u64
            };
            if opts.progress {
                let dims: Vec<String> = p.dims.iter().map(|d| d.to_string()).collect();
                let what = if p.to == p.from {
                    format!("size = {:8.3} MiB", mib(bytes_out))
                } else {
                    format!(
                        "converting to {}{} .. size = {:8.2} MiB -> {:8.2} MiB",
                        p.to,
                        if p.fallback { " (fallback)" } else { "" },
                        mib(data.len() as u64),
                        mib(bytes_out)
                    )
                };
                log::info!(
                    target: PROGRESS_TARGET,
                    "[{:4}/{:4}] {:36} - [{}], type = {:>6}, {}",
                    i + 1,
                    n,
                    p.name,
                    dims.join(", "),
                    p.from.name(),
                    what
                );
            }
            reports.push(TensorReport {
                name: p.name.clone(),
                dims: p.dims.clone(),
                from: p.from,
                to: p.to,
                fallback: p.fallback,
                bytes_in: data.len() as u64,
                bytes_out,
            });
        }
        stream
            .finish()?
            .into_inner()
            .map_err(|e| io_err(&temp_path, e.into_error()))?;
        let bytes_in = reports.iter().map(|r| r.bytes_in).sum();
        let bytes_out = reports.iter().map(|r| r.bytes_out).sum();
        Ok(QuantizeReport {
            n_fallback: reports.iter().filter(|r| r.fallback).count(),
            tensors: reports,
            bytes_in,
            bytes_out,
            seconds: 0.0,
        })
    })();
    match result {
        Ok(mut report) => {
            // Without --force, an output another run wrote meanwhile stays.
            out_file.commit(opts.force).map_err(|e| match e {
                crate::Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    QuantizeError::OutputExists {
                        path: output.to_path_buf(),
                    }
                    .into()
                }
                other => other,
            })?;
            report.seconds = start.elapsed().as_secs_f64();
            if opts.progress {
                log::info!(
                    target: PROGRESS_TARGET,
                    "quantize: {} -> {} ({}): {:.2} MiB -> {:.2} MiB, {} fallback tensor(s), {:.1} s",
                    input.display(),
                    output.display(),
                    opts.file_type,
                    mib(report.bytes_in),
                    mib(report.bytes_out),
                    report.n_fallback,
                    report.seconds
                );
            }
            Ok(report)
        }
        // Dropping `out_file` removes the temporary file.
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_and_order_follow_llama_cpp() {
        assert_eq!(layer_of("blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of("token_embd.weight"), None);
        let mut names = vec![
            "token_embd.weight",
            "blk.10.ffn_up.weight",
            "blk.2.attn_q.weight",
            "output_norm.weight",
            "blk.2.attn_k.weight",
        ];
        names.sort_by(|a, b| output_order(a, b));
        assert_eq!(
            names,
            [
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.attn_q.weight",
                "blk.10.ffn_up.weight"
            ]
        );
    }

    #[test]
    fn file_type_names_and_aliases() {
        assert_eq!(FileType::from_name("q4_k"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::from_name("Q8_0"), Some(FileType::Q8_0));
        assert_eq!(FileType::from_name("Q4_K_S").map(|t| t.id()), Some(14));
        assert_eq!(FileType::from_name("Q7_0"), None);
        for t in FileType::ALL {
            assert_eq!(FileType::from_name(t.name()), Some(t));
            assert_eq!(llama_ftype_name(t.id()), Some(t.name()));
        }
        assert_eq!(FileType::Q4_K_M.name(), "Q4_K_M");
        assert_eq!(llama_ftype_name(4), None);
    }

    #[test]
    fn fallbacks_are_llama_cpps() {
        assert_eq!(
            fallback_type("x", 640, GgmlType::Q4_K),
            (GgmlType::Q5_0, true)
        );
        assert_eq!(
            fallback_type("x", 640, GgmlType::Q6_K),
            (GgmlType::Q8_0, true)
        );
        assert_eq!(
            fallback_type("x", 576, GgmlType::Q5_K),
            (GgmlType::Q5_1, true)
        );
        assert_eq!(
            fallback_type("x", 100, GgmlType::Q4_0),
            (GgmlType::F16, true)
        );
        assert_eq!(
            fallback_type("x", 512, GgmlType::Q4_K),
            (GgmlType::Q4_K, false)
        );
    }

    #[test]
    fn only_2d_weights_that_are_not_norms_are_quantized() {
        assert!(allows_quantization("blk.0.attn_q.weight", &[576, 576]));
        assert!(!allows_quantization("blk.0.attn_norm.weight", &[576]));
        assert!(!allows_quantization("blk.0.attn_q_norm.weight", &[256, 1]));
        assert!(!allows_quantization("blk.0.ffn_gate_inp.weight", &[576, 8]));
        assert!(!allows_quantization("blk.0.attn_q.bias", &[576, 2]));
    }
}
