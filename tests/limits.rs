//! Sizes are checked before memory is taken: an absurd block count or a
//! context whose KV cache cannot fit is an error that says so, never an
//! abort in the allocator; more threads than cores are capped and said.

mod common;

use std::process::{Command, Output};

use gguf::{GgmlType, GgufFile, GgufWriter, Value};
use rkinfer::model::{Model, ModelOptions};

fn rkinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("rkinfer starts")
}

/// A llama file whose metadata claims `block_count` layers but holds the
/// tensors of one.
fn file_claiming_layers(block_count: u32) -> GgufFile {
    let (e, ff, vocab) = (32u64, 64u64, 8u64);
    let mut w = GgufWriter::new();
    let kv = |k: &str| format!("llama.{k}");
    w.add_kv("general.architecture", Value::String("llama".into()))
        .unwrap();
    for (k, v) in [
        ("context_length", 64),
        ("embedding_length", e as u32),
        ("block_count", block_count),
        ("feed_forward_length", ff as u32),
        ("attention.head_count", 1),
        ("vocab_size", vocab as u32),
    ] {
        w.add_kv(kv(k), Value::U32(v)).unwrap();
    }
    w.add_kv(kv("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .unwrap();
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![e, vocab]),
        ("output_norm.weight".to_string(), vec![e]),
    ];
    for (n, d) in [
        ("attn_norm.weight", vec![e]),
        ("attn_q.weight", vec![e, e]),
        ("attn_k.weight", vec![e, e]),
        ("attn_v.weight", vec![e, e]),
        ("attn_output.weight", vec![e, e]),
        ("ffn_norm.weight", vec![e]),
        ("ffn_gate.weight", vec![e, ff]),
        ("ffn_up.weight", vec![e, ff]),
        ("ffn_down.weight", vec![ff, e]),
    ] {
        tensors.push((format!("blk.0.{n}"), d));
    }
    for (name, dims) in tensors {
        let n: u64 = dims.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| 0.5f32.to_le_bytes()).collect();
        w.add_tensor(&name, &dims, GgmlType::F32, data).unwrap();
    }
    GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap()
}

#[test]
fn an_absurd_block_count_is_an_error_before_any_allocation() {
    let opts = ModelOptions {
        n_threads: 1,
        ..Default::default()
    };
    // The honest file loads.
    Model::from_gguf(file_claiming_layers(1), &opts, Vec::new()).expect("one layer loads");
    for claimed in [2, 1000, u32::MAX] {
        let err = Model::from_gguf(file_claiming_layers(claimed), &opts, Vec::new())
            .expect_err("more layers than the file holds");
        let msg = err.to_string();
        assert!(msg.contains("block_count"), "{msg}");
    }
}

#[test]
fn a_kv_cache_larger_than_memory_is_refused_with_its_size() {
    let model = common::model_path("smollm2-q4_1");
    let o = rkinfer(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-c",
        "10000000",
        "-p",
        "Hi",
        "-n",
        "1",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains("KV cache") && e.contains("MiB"), "{e}");
}

#[test]
fn more_threads_than_cores_are_capped_and_said() {
    let model = common::model_path("smollm2-q4_1");
    let o = rkinfer(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-t",
        "3000",
        "-p",
        "Hi",
        "-n",
        "1",
        "--temp",
        "0",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("3000 threads") && e.contains("cores"), "{e}");
}
