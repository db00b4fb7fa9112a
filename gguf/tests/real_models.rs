//! The reader on the two real models, checked against what llama.cpp reports
//! (shared/reference/llamacpp/README.md and model-files.json).

mod common;

use std::collections::BTreeMap;

use common::{model_path, GEMMA3, SMOLLM2};
use gguf::{GgmlType, GgufFile, GgufWriter, Value};
use sha2::{Digest, Sha256};

fn type_counts(f: &GgufFile) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in f.tensors() {
        *m.entry(t.ggml_type.name()).or_insert(0) += 1;
    }
    m
}

fn sha16(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Checks tensors against llama.cpp's model-files.json (type, shape, first 16
/// hex digits of the sha256 of the data bytes).
fn check_tensors(f: &GgufFile, expected: &[(&str, GgmlType, &[u64], &str)]) {
    for &(name, ty, shape, hash) in expected {
        let t = f
            .tensor(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(t.ggml_type, ty, "{name}");
        assert_eq!(t.dims, shape, "{name}");
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, t.size, "{name}");
        assert_eq!(sha16(data), hash, "{name} data hash");
    }
}

/// Every tensor's data is in bounds, aligned and of the right size.
fn check_layout(f: &GgufFile) {
    for t in f.tensors() {
        assert_eq!(t.offset % f.alignment(), 0, "{}", t.name);
        assert_eq!(
            Some(t.size),
            t.ggml_type.row_bytes(t.n_elements()),
            "{}",
            t.name
        );
        assert_eq!(f.tensor_data(t).len() as u64, t.size, "{}", t.name);
        assert!(f.data_offset() + t.offset + t.size <= f.file_size());
    }
}

#[test]
fn smollm2_matches_llamacpp() {
    let f = GgufFile::open(model_path(SMOLLM2)).unwrap();
    assert!(f.is_mapped());
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.arch_u32("block_count").unwrap(), 30);
    assert_eq!(f.arch_u32("embedding_length").unwrap(), 576);
    assert_eq!(f.arch_u32("feed_forward_length").unwrap(), 1536);
    assert_eq!(f.arch_u32("attention.head_count").unwrap(), 9);
    assert_eq!(f.arch_u32("attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.arch_u32("context_length").unwrap(), 8192);
    assert_eq!(f.arch_f32("rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.arch_f32("attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert!(!f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.n_params(), 134_515_008);
    assert_eq!(f.tensors().len(), 272);
    assert!(f.tensor("output.weight").is_none(), "tied output");
    let counts = type_counts(&f);
    assert_eq!(
        counts,
        BTreeMap::from([("F32", 61), ("Q4_1", 210), ("Q8_0", 1)])
    );
    check_layout(&f);
    check_tensors(
        &f,
        &[
            (
                "token_embd.weight",
                GgmlType::Q8_0,
                &[576, 49152],
                "0d728edd2a012d16",
            ),
            (
                "output_norm.weight",
                GgmlType::F32,
                &[576],
                "3b87f8e27335e67f",
            ),
            (
                "blk.0.attn_q.weight",
                GgmlType::Q4_1,
                &[576, 576],
                "a8a1da23623a6021",
            ),
            (
                "blk.17.ffn_down.weight",
                GgmlType::Q4_1,
                &[1536, 576],
                "918cfc7e38dcf9c3",
            ),
            (
                "blk.29.ffn_down.weight",
                GgmlType::Q4_1,
                &[1536, 576],
                "390f8753cf01dc75",
            ),
        ],
    );
}

#[test]
fn gemma3_matches_llamacpp() {
    let f = GgufFile::open(model_path(GEMMA3)).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "gemma3");
    assert_eq!(f.arch_u32("block_count").unwrap(), 18);
    assert_eq!(f.arch_u32("embedding_length").unwrap(), 640);
    assert_eq!(f.arch_u32("feed_forward_length").unwrap(), 2048);
    assert_eq!(f.arch_u32("attention.head_count").unwrap(), 4);
    assert_eq!(f.arch_u32("attention.head_count_kv").unwrap(), 1);
    assert_eq!(f.arch_u32("attention.key_length").unwrap(), 256);
    assert_eq!(f.arch_u32("attention.sliding_window").unwrap(), 512);
    assert_eq!(f.arch_f32("rope.freq_base").unwrap(), 1e6);
    assert_eq!(
        f.arch_f32("attention.layer_norm_rms_epsilon").unwrap(),
        1e-6
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "default");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        262144
    );
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
        262144
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 2);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 1);
    assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(f.n_params(), 268_098_176);
    let counts = type_counts(&f);
    assert_eq!(
        counts,
        BTreeMap::from([
            ("F32", 109),
            ("Q4_K", 27),
            ("Q5_0", 81),
            ("Q6_K", 9),
            ("Q8_0", 10)
        ])
    );
    check_layout(&f);
    check_tensors(
        &f,
        &[
            (
                "token_embd.weight",
                GgmlType::Q8_0,
                &[640, 262144],
                "f04e39f80b7a3c7a",
            ),
            (
                "output_norm.weight",
                GgmlType::F32,
                &[640],
                "7c6f10fe176e85ae",
            ),
            (
                "blk.0.attn_q.weight",
                GgmlType::Q5_0,
                &[640, 1024],
                "d964a6a0c705bbe8",
            ),
            (
                "blk.17.ffn_down.weight",
                GgmlType::Q6_K,
                &[2048, 640],
                "2fd6dbc1bcd027f8",
            ),
        ],
    );
}

#[test]
fn getter_errors_name_the_key() {
    let f = GgufFile::open(model_path(SMOLLM2)).unwrap();
    let e = f.get_u32("llama.no_such_key").unwrap_err();
    assert!(matches!(e, gguf::GgufError::MissingKey { .. }), "{e:?}");
    assert!(e.to_string().contains("llama.no_such_key"), "{e}");
    let e = f.get_u32("general.architecture").unwrap_err();
    assert!(matches!(e, gguf::GgufError::WrongType { .. }), "{e:?}");
    assert!(e.to_string().contains("general.architecture"), "{e}");
    let e = f.get_str_array("tokenizer.ggml.token_type").unwrap_err();
    assert!(e.to_string().contains("array[i32; 49152]"), "{e}");
    // Integer getters widen and narrow when the value fits.
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_i32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_usize("llama.vocab_size").unwrap(), 49152);
    assert!(f.arch_get("rope.dimension_count").is_some());
    assert!(f.arch_get("nothing").is_none());
    assert!(matches!(f.get("llama.rope.freq_base"), Some(Value::F32(_))));
}

/// Copying a real model through GgufWriter (borrowing the tensor data from
/// the mapped input) gives a file that reads back identical.
#[test]
fn rewrite_smollm2_reads_back_identical() {
    let src = GgufFile::open(model_path(SMOLLM2)).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.add_kv(k.clone(), v.clone()).unwrap();
    }
    for t in src.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, src.tensor_data(t))
            .unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let back = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(back.version(), 3);
    assert_eq!(back.metadata(), src.metadata());
    assert_eq!(back.tensors(), src.tensors());
    for (a, b) in src.tensors().iter().zip(back.tensors()) {
        assert!(src.tensor_data(a) == back.tensor_data(b), "{}", a.name);
    }
    // The source was written by llama.cpp with the same layout rules, so the
    // bytes are the same too.
    assert_eq!(back.file_size(), src.file_size());
    assert!(back.as_bytes() == src.as_bytes());
}
