//! `rkinfer info MODEL.gguf`: a readable summary of a GGUF file, `--json` for
//! machines, `--tensors` for the full tensor list.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use gguf::{Array, GgmlType, GgufFile, Value};
use serde_json::{json, Map, Value as Json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also list every tensor (name, type, shape, bytes, offset).
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(args: Args) -> crate::Result<()> {
    let file = GgufFile::open(&args.model)?;
    let summary = Summary::of(&file);
    let out = if args.json {
        let mut j = summary.to_json(&args.model, &file);
        if args.tensors {
            j["tensors"] = tensors_json(&file);
        }
        let mut s = serde_json::to_string_pretty(&j).map_err(|e| {
            crate::Error::InvalidArgument(format!("cannot encode the summary as JSON: {e}"))
        })?;
        s.push('\n');
        s
    } else {
        let mut s = summary.to_text(&args.model, &file);
        if args.tensors {
            s.push_str(&tensors_text(&file));
        }
        s
    };
    print_or_ignore_broken_pipe(&out)
}

/// Writes to stdout; a closed pipe (`rkinfer info m.gguf | head`) is not an error.
fn print_or_ignore_broken_pipe(s: &str) -> crate::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(crate::Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        }),
    }
}

/// Per ggml type: number of tensors, elements and bytes.
#[derive(Default, Clone, Copy)]
struct TypeStats {
    count: usize,
    elements: u64,
    bytes: u64,
}

/// The facts `info` reports; absent keys are None.
struct Summary {
    architecture: Option<String>,
    name: Option<String>,
    file_type: Option<u32>,
    n_params: u64,
    context_length: Option<u64>,
    block_count: Option<u64>,
    embedding_length: Option<u64>,
    feed_forward_length: Option<u64>,
    head_count: Option<u64>,
    head_count_kv: Option<u64>,
    head_dim: Option<u64>,
    rope_freq_base: Option<f32>,
    rms_eps: Option<f32>,
    tokenizer_model: Option<String>,
    tokenizer_pre: Option<String>,
    vocab_size: Option<u64>,
    bos: Option<u64>,
    eos: Option<u64>,
    types: BTreeMap<GgmlType, TypeStats>,
}

/// The largest value of a per-layer array key (lfm2's key-value heads,
/// 0 for its convolution layers).
fn largest_per_layer(f: &GgufFile, suffix: &str) -> Option<u64> {
    match f.arch_get(suffix)? {
        gguf::Value::Array(gguf::Array::U32(v)) => v.iter().max().map(|&m| m as u64),
        gguf::Value::Array(gguf::Array::I32(v)) => v.iter().max().map(|&m| m.max(0) as u64),
        _ => None,
    }
}

impl Summary {
    fn of(f: &GgufFile) -> Summary {
        let arch_u64 = |s: &str| f.arch_u64(s).ok();
        let arch_f32 = |s: &str| f.arch_f32(s).ok();
        let head_count = arch_u64("attention.head_count");
        let embedding_length = arch_u64("embedding_length");
        // Explicit key length if given (Gemma), else n_embd / n_head.
        let head_dim = arch_u64("attention.key_length").or(match (embedding_length, head_count) {
            (Some(e), Some(h)) if h > 0 => Some(e / h),
            _ => None,
        });
        let vocab_size = f
            .get_array("tokenizer.ggml.tokens")
            .ok()
            .map(|a| a.len() as u64)
            .or_else(|| arch_u64("vocab_size"));
        let mut types: BTreeMap<GgmlType, TypeStats> = BTreeMap::new();
        for t in f.tensors() {
            let s = types.entry(t.ggml_type).or_default();
            s.count += 1;
            s.elements = s.elements.saturating_add(t.n_elements());
            s.bytes = s.bytes.saturating_add(t.size);
        }
        Summary {
            architecture: f.architecture().ok().map(str::to_string),
            name: f.get_str("general.name").ok().map(str::to_string),
            file_type: f.get_u32("general.file_type").ok(),
            n_params: f.n_params(),
            context_length: arch_u64("context_length"),
            block_count: arch_u64("block_count"),
            embedding_length,
            feed_forward_length: arch_u64("feed_forward_length"),
            head_count,
            head_count_kv: arch_u64("attention.head_count_kv")
                .or_else(|| largest_per_layer(f, "attention.head_count_kv"))
                .or(head_count),
            head_dim,
            rope_freq_base: arch_f32("rope.freq_base"),
            rms_eps: arch_f32("attention.layer_norm_rms_epsilon"),
            tokenizer_model: f.get_str("tokenizer.ggml.model").ok().map(str::to_string),
            tokenizer_pre: f.get_str("tokenizer.ggml.pre").ok().map(str::to_string),
            vocab_size,
            bos: f.get_u64("tokenizer.ggml.bos_token_id").ok(),
            eos: f.get_u64("tokenizer.ggml.eos_token_id").ok(),
            types,
        }
    }

    fn to_text(&self, path: &std::path::Path, f: &GgufFile) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let optf = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v}"));
        let opts = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
        let mut s = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(s, "{:<16}{}", format!("{label}:"), value);
        };
        line("file", path.display().to_string());
        line(
            "file size",
            format!(
                "{} ({} bytes)",
                human_bytes(f.file_size()),
                group(f.file_size())
            ),
        );
        line(
            "format",
            format!(
                "GGUF v{}, alignment {}, {} metadata keys, {} tensors, data at offset {}",
                f.version(),
                f.alignment(),
                f.metadata().len(),
                f.tensors().len(),
                f.data_offset()
            ),
        );
        line(
            "architecture",
            match &self.architecture {
                Some(a) if crate::model::is_supported_architecture(a) => {
                    format!("{a} (supported)")
                }
                Some(a) => format!(
                    "{a} (not supported; rkinfer runs {})",
                    crate::model::SUPPORTED_ARCHITECTURES.join(", ")
                ),
                None => opts(&self.architecture),
            },
        );
        line("name", opts(&self.name));
        if let Some(ft) = self.file_type {
            line("file type", format!("{} ({ft})", file_type_name(ft)));
        }
        line(
            "parameters",
            format!("{} ({})", human_count(self.n_params), group(self.n_params)),
        );
        line("context length", opt(self.context_length));
        line("layers", opt(self.block_count));
        line("embedding", opt(self.embedding_length));
        line("feed-forward", opt(self.feed_forward_length));
        line(
            "heads",
            format!(
                "{} (KV heads {})",
                opt(self.head_count),
                opt(self.head_count_kv)
            ),
        );
        line("head dim", opt(self.head_dim));
        line("rope base", optf(self.rope_freq_base));
        line("rms norm eps", optf(self.rms_eps));
        line(
            "tokenizer",
            format!(
                "{} (pre {}), vocabulary {}, BOS {}, EOS {}",
                opts(&self.tokenizer_model),
                opts(&self.tokenizer_pre),
                opt(self.vocab_size),
                opt(self.bos),
                opt(self.eos)
            ),
        );
        s.push_str("\ntensor types:\n");
        let _ = writeln!(
            s,
            "  {:<8} {:>6} {:>14} {:>16} {:>10}",
            "type", "count", "elements", "bytes", "size"
        );
        let mut total = TypeStats::default();
        for (t, st) in &self.types {
            let _ = writeln!(
                s,
                "  {:<8} {:>6} {:>14} {:>16} {:>10}",
                t.name(),
                st.count,
                group(st.elements),
                group(st.bytes),
                human_bytes(st.bytes)
            );
            total.count += st.count;
            total.elements = total.elements.saturating_add(st.elements);
            total.bytes = total.bytes.saturating_add(st.bytes);
        }
        let _ = writeln!(
            s,
            "  {:<8} {:>6} {:>14} {:>16} {:>10}",
            "total",
            total.count,
            group(total.elements),
            group(total.bytes),
            human_bytes(total.bytes)
        );
        if total.elements > 0 {
            let _ = writeln!(
                s,
                "  {:.2} bits per weight",
                total.bytes as f64 * 8.0 / total.elements as f64
            );
        }
        s
    }

    fn to_json(&self, path: &std::path::Path, f: &GgufFile) -> Json {
        let types: Vec<Json> = self
            .types
            .iter()
            .map(|(t, st)| {
                // What rkinfer can do with the type, from the type table.
                let row = quant::traits(*t);
                json!({
                    "type": t.name(),
                    "count": st.count,
                    "elements": st.elements,
                    "bytes": st.bytes,
                    "block_size": t.block_size(),
                    "type_size": t.type_size(),
                    "vec_dot_type": row.map(|r| r.vec_dot_type.name()),
                    "cpu_matmul": row.is_some_and(|r| r.cpu_matmul.is_some()),
                    "kv_cache": row.is_some_and(|r| r.kv_cache),
                })
            })
            .collect();
        let mut metadata = Map::new();
        for (k, v) in f.metadata() {
            metadata.insert(k.clone(), value_json(v));
        }
        json!({
            "file": path.display().to_string(),
            "file_size": f.file_size(),
            "gguf_version": f.version(),
            "alignment": f.alignment(),
            "data_offset": f.data_offset(),
            "architecture": self.architecture,
            "architecture_supported": self
                .architecture
                .as_deref()
                .is_some_and(crate::model::is_supported_architecture),
            "supported_architectures": crate::model::SUPPORTED_ARCHITECTURES,
            "name": self.name,
            "file_type": self.file_type,
            "file_type_name": self.file_type.map(file_type_name),
            "n_params": self.n_params,
            "context_length": self.context_length,
            "block_count": self.block_count,
            "embedding_length": self.embedding_length,
            "feed_forward_length": self.feed_forward_length,
            "head_count": self.head_count,
            "head_count_kv": self.head_count_kv,
            "head_dim": self.head_dim,
            "rope_freq_base": self.rope_freq_base,
            "rms_norm_eps": self.rms_eps,
            "tokenizer_model": self.tokenizer_model,
            "tokenizer_pre": self.tokenizer_pre,
            "vocab_size": self.vocab_size,
            "bos_token_id": self.bos,
            "eos_token_id": self.eos,
            "n_tensors": f.tensors().len(),
            "tensor_types": types,
            "metadata": metadata,
        })
    }
}

/// Metadata as JSON; arrays longer than 16 elements are summarised by their
/// type and length so the output stays small (the vocabulary has 262144).
fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float_json(f64::from(*x)),
        Value::F64(x) => float_json(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) if a.len() > 16 => {
            json!({"array": a.element_type().name(), "len": a.len()})
        }
        Value::Array(a) => array_json(a),
    }
}

/// JSON has no NaN or infinity: those become strings.
fn float_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

fn array_json(a: &Array) -> Json {
    fn list<T>(v: &[T], f: impl Fn(&T) -> Json) -> Json {
        Json::Array(v.iter().map(f).collect())
    }
    match a {
        Array::U8(v) => list(v, |x| json!(x)),
        Array::I8(v) => list(v, |x| json!(x)),
        Array::U16(v) => list(v, |x| json!(x)),
        Array::I16(v) => list(v, |x| json!(x)),
        Array::U32(v) => list(v, |x| json!(x)),
        Array::I32(v) => list(v, |x| json!(x)),
        Array::U64(v) => list(v, |x| json!(x)),
        Array::I64(v) => list(v, |x| json!(x)),
        Array::F32(v) => list(v, |x| float_json(f64::from(*x))),
        Array::F64(v) => list(v, |x| float_json(*x)),
        Array::Bool(v) => list(v, |x| json!(x)),
        Array::String(v) => list(v, |x| json!(x)),
        Array::Array(v) => list(v, array_json),
    }
}

fn tensors_json(f: &GgufFile) -> Json {
    Json::Array(
        f.tensors()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.ggml_type.name(),
                    "dims": t.dims,
                    "n_elements": t.n_elements(),
                    "offset": f.data_offset() + t.offset,
                    "bytes": t.size,
                })
            })
            .collect(),
    )
}

fn tensors_text(f: &GgufFile) -> String {
    let width = f
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = String::from("\ntensors:\n");
    let _ = writeln!(
        s,
        "  {:<width$} {:<7} {:<22} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    for t in f.tensors() {
        let shape = t
            .dims
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" x ");
        let _ = writeln!(
            s,
            "  {:<width$} {:<7} {:<22} {:>12} {:>12}",
            t.name,
            t.ggml_type.name(),
            shape,
            t.size,
            f.data_offset() + t.offset
        );
    }
    s
}

/// llama.cpp's description of a `llama_ftype` (general.file_type).
fn file_type_name(ft: u32) -> String {
    match (ft, crate::quantize::llama_ftype_name(ft)) {
        (0, Some(name)) => format!("all {name}"),
        (38, Some(name)) => format!("mostly {name} (MoE)"),
        (_, Some(name)) => format!("mostly {name}"),
        (_, None) => "unknown".to_string(),
    }
}

/// 134515008 -> "134,515,008".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 134515008 -> "134.52 M".
fn human_count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.2} K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

/// Bytes in binary units: "128.31 MiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(134_515_008), "134,515,008");
        assert_eq!(human_count(134_515_008), "134.52 M");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
