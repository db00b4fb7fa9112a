//! The fuzz targets of `fuzz/` on stable, for a bounded number of cases
//! (proptest with arbitrary bytes, plus mutations of valid inputs): any
//! input gives an error or a result, never a panic. See docs/fuzzing.md.

use proptest::prelude::*;
use rkinfer::fuzz_support;

/// A valid small GGUF file to mutate.
fn small_gguf() -> Vec<u8> {
    let mut w = rkinfer::gguf::GgufWriter::new();
    w.add_kv("general.architecture", "llama").unwrap();
    w.add_kv("general.alignment", 32u32).unwrap();
    w.add_tensor("t", &[8], rkinfer::gguf::GgmlType::F32, vec![0u8; 32])
        .unwrap();
    w.to_bytes().unwrap()
}

/// Small vocabularies of the tokenizer types added for llama.cpp's
/// tokenizer suite: WordPiece, Gemma 4's raw-UTF-8 BPE, and byte-level BPE
/// with the qwen35 and deepseek-llm pre-tokenizers.
fn suite_vocabularies() -> Vec<rkinfer::tokenizer::Tokenizer> {
    use rkinfer::tokenizer::{unicode_byte_table, Tokenizer, VocabConfig};
    let wpm_tokens = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁a", "b", "▁ab", "▁,", "▁你",
    ];
    let wpm = VocabConfig {
        model: "bert".into(),
        tokens: wpm_tokens.map(String::from).to_vec(),
        token_types: vec![3, 2, 3, 3, 1, 1, 1, 1, 1],
        unk: Some(1),
        bos: Some(2),
        sep: Some(3),
        pad: Some(0),
        ..Default::default()
    };
    let mut gemma_tokens: Vec<String> = vec!["<pad>".into(), "<eos>".into(), "<bos>".into()];
    let mut gemma_types = vec![3, 3, 3];
    for b in 0..=255u8 {
        gemma_tokens.push(format!("<0x{b:02X}>"));
        gemma_types.push(6);
    }
    for t in ["▁", "a", "b", "▁a", "ab", "\n", "\n\n"] {
        gemma_tokens.push(t.into());
        gemma_types.push(1);
    }
    let gemma4 = VocabConfig {
        model: "gemma4".into(),
        tokens: gemma_tokens,
        token_types: gemma_types,
        merges: ["▁ a", "a b"].map(String::from).to_vec(),
        bos: Some(2),
        eos: Some(1),
        ..Default::default()
    };
    let byte_level = |pre: &str| {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
        tokens.extend(unicode_byte_table().iter().map(|c| c.to_string()));
        tokens.extend(["lo", "Ġlo"].map(String::from));
        let mut types = vec![1; tokens.len()];
        types[0] = 3;
        VocabConfig {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens,
            token_types: types,
            merges: ["l o", "Ġ lo"].map(String::from).to_vec(),
            bos: Some(0),
            eos: Some(0),
            ..Default::default()
        }
    };
    [
        wpm,
        gemma4,
        byte_level("qwen35"),
        byte_level("deepseek-llm"),
    ]
    .into_iter()
    .map(|cfg| Tokenizer::new(cfg).expect("the vocabulary builds"))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn gguf_reader_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_support::gguf_reader(&data);
    }

    #[test]
    fn gguf_reader_mutated_file(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut data = small_gguf();
        for (at, v) in flips {
            let i = at % data.len();
            data[i] = v;
        }
        fuzz_support::gguf_reader(&data);
    }

    #[test]
    fn tokenizers_any_text(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        thread_local! {
            static VOCABS: Vec<rkinfer::tokenizer::Tokenizer> = fuzz_support::vocabularies();
        }
        VOCABS.with(|v| {
            assert_eq!(v.len(), 2, "both families build");
            fuzz_support::tokenizers(v, &data)
        });
    }

    #[test]
    fn suite_tokenizers_any_text(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        thread_local! {
            static VOCABS: Vec<rkinfer::tokenizer::Tokenizer> = suite_vocabularies();
        }
        VOCABS.with(|v| fuzz_support::tokenizers(v, &data));
    }

    #[test]
    fn kl_base_reader_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz_support::kl_base_reader(&data);
    }

    #[test]
    fn kl_base_reader_valid_header(n_ctx in 0u32..40, n_vocab in 0u32..8, n_chunks in 0u32..3, tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut data = b"RKLOGP02".to_vec();
        for v in [n_ctx, n_vocab, n_chunks, n_ctx / 2] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&tail);
        fuzz_support::kl_base_reader(&data);
    }

    #[test]
    fn npu_cache_reader_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        NPU_ENTRY.with(|(key, _)| fuzz_support::npu_cache_reader(key, &data));
    }

    #[test]
    fn npu_cache_reader_mutated_entry(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        NPU_ENTRY.with(|(key, entry)| {
            assert!(!entry.is_empty(), "the seed entry is written");
            let mut data = entry.clone();
            for (at, v) in flips {
                let i = at % data.len();
                data[i] = v;
            }
            // Sometimes cut short too.
            if cut % 4 == 0 {
                data.truncate(cut % (data.len() + 1));
            }
            fuzz_support::npu_cache_reader(key, &data);
        });
    }

    #[test]
    fn server_chat_request_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        rkinfer::server::fuzz_chat_request(&data);
    }

    #[test]
    fn server_chat_request_json_shapes(
        role in prop::sample::select(vec!["system", "user", "assistant", "tool", "x", ""]),
        content in ".{0,40}",
        field in prop::sample::select(vec!["temperature", "top_p", "top_k", "max_tokens", "n", "stop", "logit_bias", "min_p", "seed", "response_format"]),
        value in prop::sample::select(vec!["-1", "0", "1e39", "0.5", "null", "\"x\"", "[]", "{}", "[\"a\"]", "{\"5\": 1}", "{\"type\": \"json_object\"}", "18446744073709551616"]),
    ) {
        let body = format!(
            "{{\"messages\": [{{\"role\": {}, \"content\": {}}}], \"{field}\": {value}}}",
            serde_json::json!(role),
            serde_json::json!(content)
        );
        rkinfer::server::fuzz_chat_request(body.as_bytes());
    }

    #[test]
    fn chat_template_hostile_pieces(pieces in proptest::collection::vec(0..fuzz_support::TEMPLATE_PIECES.len(), 1..12)) {
        let source: String = pieces.iter().map(|&i| fuzz_support::TEMPLATE_PIECES[i]).collect();
        fuzz_support::chat_template(source.as_bytes());
    }

    #[test]
    fn chat_template_hostile_loops(pieces in proptest::collection::vec(0..fuzz_support::TEMPLATE_PIECES.len(), 1..6), depth in 0usize..3) {
        // Balanced: the pieces run inside `depth` nested loops of 9, after
        // a namespace to grow.
        let body: String = pieces
            .iter()
            .map(|&i| fuzz_support::TEMPLATE_PIECES[i])
            .filter(|p| !p.contains("for ") && !p.contains("endfor") && !p.contains("if ") && !p.contains("else") && !p.contains("endif"))
            .collect();
        let source = format!(
            "{{% set ns = namespace(s='ab', l=['x']) %}}{}{body}{}",
            "{% for i in range(9) %}".repeat(depth),
            "{% endfor %}".repeat(depth)
        );
        fuzz_support::chat_template(source.as_bytes());
    }

    #[test]
    fn chat_template_any_text(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz_support::chat_template(&data);
    }
}

thread_local! {
    /// The NPU weight-cache key and a valid entry of it.
    static NPU_ENTRY: (rkinfer::npu::ops::cache::CacheKey, Vec<u8>) = fuzz_support::npu_cache_entry();
}
