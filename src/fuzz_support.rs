//! The bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz, nightly)
//! and `tests/fuzz_bounded.rs` (proptest, stable, in CI). Each takes any
//! bytes and must return without panicking; errors are the expected
//! outcome for most inputs. See docs/fuzzing.md.
#![doc(hidden)]

use crate::tokenizer::{unicode_byte_table, Tokenizer, VocabConfig};

/// Any bytes as a GGUF file: parse, then touch every value and tensor.
pub fn gguf_reader(data: &[u8]) {
    if let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) {
        for (key, value) in f.metadata() {
            let _ = (key.len(), value.summary());
        }
        for t in f.tensors() {
            let _ = f.tensor_data(t).len();
        }
        let _ = crate::tokenizer::Tokenizer::from_gguf(&f);
    }
}

/// A small SentencePiece vocabulary with overlapping user-defined
/// whitespace runs and control tokens, and a small BPE one.
pub fn vocabularies() -> Vec<Tokenizer> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for (t, ty) in [
        ("▁", 1),
        ("a", 1),
        ("ab", 1),
        ("▁a", 1),
        ("  ", 4),
        ("   ", 4),
        ("\n\n", 4),
        ("<c>", 3),
        ("<c", 3),
    ] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    let spm = VocabConfig {
        model: "llama".into(),
        scores: (0..tokens.len()).map(|i| -(i as f32)).collect(),
        tokens,
        token_types: types,
        ..Default::default()
    };
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    tokens.extend(unicode_byte_table().iter().map(|c| c.to_string()));
    tokens.extend(["lo", "low", "Ġlo", "<|im_end|>"].map(String::from));
    let mut types = vec![1; tokens.len()];
    types[0] = 3;
    let bpe = VocabConfig {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: types,
        merges: ["l o", "lo w", "Ġ lo"].map(String::from).to_vec(),
        bos: Some(0),
        eos: Some(0),
        ..Default::default()
    };
    [spm, bpe]
        .into_iter()
        .filter_map(|cfg| Tokenizer::new(cfg).ok())
        .collect()
}

/// Any text through both tokenizer families, with and without special
/// tokens, then decoded.
pub fn tokenizers(vocabularies: &[Tokenizer], data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for tok in vocabularies {
        for parse_special in [false, true] {
            if let Ok(ids) = tok.encode(&text, true, parse_special) {
                let _ = tok.decode(&ids);
            }
        }
    }
}

/// Any bytes as a KL-divergence base file: open it, read every chunk.
pub fn kl_base_reader(data: &[u8]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "rkinfer-fuzz-kld-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_ok() {
        if let Ok(mut r) = crate::perplexity::LogitsReader::open(&path) {
            let mut buf = Vec::new();
            for _ in 0..r.n_chunks {
                if r.read_chunk(&mut buf).is_err() {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// A valid NPU weight-cache entry to mutate: its key, and its bytes.
pub fn npu_cache_entry() -> (crate::npu::ops::cache::CacheKey, Vec<u8>) {
    use crate::npu::ops::cache::{CacheKey, WeightCache};
    let (n, k) = (4, 64);
    // Q8_0's default scheme (w8a8 with a Hadamard rotation): offsets-free,
    // rotated, one K segment.
    let scheme = quant::npu::default_scheme_for(gguf::GgmlType::Q8_0);
    let rows: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 3.0).collect();
    let key = CacheKey::new(
        "blk.0.ffn_up.weight",
        gguf::GgmlType::F32,
        n,
        k,
        &[1, 2, 3],
        scheme,
    );
    let dir = fuzz_dir("npu-cache-seed");
    let cache = WeightCache::new(&dir);
    let bytes = quant::npu::prepare_weight(&rows, n, k, scheme, &key.name)
        .ok()
        .and_then(|w| {
            cache.store(&key, &w);
            std::fs::read(cache.path_of(&key)).ok()
        })
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (key, bytes)
}

/// A directory of this process for one target's files.
fn fuzz_dir(target: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rkinfer-fuzz-{target}-{}", std::process::id()))
}

/// Any bytes as the NPU weight-cache entry of `key`: read back through the
/// cache as a load does (a hit must decode to the key's shape).
pub fn npu_cache_reader(key: &crate::npu::ops::cache::CacheKey, data: &[u8]) {
    use crate::npu::ops::cache::{Lookup, WeightCache};
    let dir = fuzz_dir("npu-cache");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let cache = WeightCache::new(&dir);
    if std::fs::write(cache.path_of(key), data).is_ok() {
        if let Lookup::Hit(w) = cache.load(key) {
            assert_eq!((w.n, w.k), (key.n, key.k), "a hit has the key's shape");
        }
    }
}

/// Small limits for hostile templates: a case ends in milliseconds.
pub const FUZZ_TEMPLATE_LIMITS: crate::chat::TemplateLimits = crate::chat::TemplateLimits {
    fuel: 20_000,
    max_output_bytes: 1 << 20,
};

/// Any text as a chat template: compiled, then rendered on a short
/// conversation under [`FUZZ_TEMPLATE_LIMITS`].
pub fn chat_template(data: &[u8]) {
    use crate::chat::{ChatTemplate, Message};
    let source = String::from_utf8_lossy(data);
    if let Ok(t) = ChatTemplate::from_source(&source) {
        let t = t.with_limits(FUZZ_TEMPLATE_LIMITS);
        let messages = [
            Message::system("Be brief."),
            Message::user("Hi {{ x }} {% y %}"),
            Message::assistant("Hello."),
        ];
        if let Ok(text) = t.render(&messages, true) {
            assert!(text.len() <= FUZZ_TEMPLATE_LIMITS.max_output_bytes);
        }
    }
}

/// Pieces of Jinja that hostile templates are made of (loops, doubling,
/// recursion, filters, Python methods), for structured cases.
pub const TEMPLATE_PIECES: &[&str] = &[
    "{% for i in range(9) %}",
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if messages %}",
    "{% else %}",
    "{% endif %}",
    "{% set ns = namespace(s='ab', l=['x']) %}",
    "{% set ns.s = ns.s ~ ns.s %}",
    "{% set ns.s = ns.s + ns.s %}",
    "{% set ns.s = ns.s * 3 %}",
    "{% set ns.l = ns.l + ns.l %}",
    "{% set ns.l = ns.l * 1000 %}",
    "{% set ns.s = ns.s.replace('a', ns.s) %}",
    "{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = t %}",
    "{{ ns.s }}{{ ns.l }}",
    "{% set s = s ~ s %}",
    "{% set l = l + l %}",
    "{% set s = 'ab' %}",
    "{% set l = [s, s] %}",
    "{% set s %}{{ s }}{{ s }}{% endset %}",
    "{% set s = s.replace('a', s) %}",
    "{% set s = s | replace('b', s) %}",
    "{% set s = l | join(s) %}",
    "{% set s = s.center(1000) %}",
    "{{ s }}",
    "{{ l | tojson }}",
    "{{ messages[0].content }}",
    "{{ raise_exception('no') }}",
    "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}",
    "{{ f(1) }}",
    "{{ messages | length }}",
    "{{ s | length }}",
    "{{ strftime_now('%Y') }}",
    "text",
];
