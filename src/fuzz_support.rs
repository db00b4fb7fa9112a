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
