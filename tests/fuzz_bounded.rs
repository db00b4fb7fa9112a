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
