//! End-to-end tests of `rkinfer info` on the two real models (facts from
//! llama.cpp, tests/data/llamacpp/README.md) and on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// $RKINFER_MODELS/NAME or <repo>/models/NAME; fails when missing.
fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("RKINFER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "model {} not found: run scripts/fetch-models.sh first (or set RKINFER_MODELS)",
        path.display()
    );
    path
}

fn rkinfer(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .arg("info")
        .args(args)
        .output()
        .expect("run rkinfer")
}

fn ok_stdout(args: &[&std::ffi::OsStr]) -> String {
    let out = rkinfer(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rkinfer info {args:?} failed: {stderr}"
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn info_json(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec![path.as_os_str(), "--json".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    serde_json::from_str(&ok_stdout(&args)).expect("valid JSON")
}

fn type_counts(j: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = j["tensor_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap().to_string(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn strs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = v.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    v.sort();
    v
}

#[test]
fn info_smollm2_json_matches_llamacpp() {
    let j = info_json(&model(SMOLLM2), &[]);
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["gguf_version"], 3);
    assert_eq!(j["block_count"], 30);
    assert_eq!(j["embedding_length"], 576);
    assert_eq!(j["feed_forward_length"], 1536);
    assert_eq!(j["head_count"], 9);
    assert_eq!(j["head_count_kv"], 3);
    assert_eq!(j["head_dim"], 64);
    assert_eq!(j["context_length"], 8192);
    assert_eq!(j["rope_freq_base"], 100000.0);
    assert_eq!(j["tokenizer_model"], "gpt2");
    assert_eq!(j["tokenizer_pre"], "smollm");
    assert_eq!(j["vocab_size"], 49152);
    assert_eq!(j["bos_token_id"], 1);
    assert_eq!(j["eos_token_id"], 2);
    assert_eq!(j["n_params"], 134_515_008u64);
    assert_eq!(j["n_tensors"], 272);
    assert_eq!(
        type_counts(&j),
        strs(&[("Q4_1", 210), ("Q8_0", 1), ("F32", 61)])
    );
    let size = std::fs::metadata(model(SMOLLM2)).unwrap().len();
    assert_eq!(j["file_size"], size);
    assert_eq!(j["metadata"]["general.architecture"], "llama");
    assert_eq!(j["metadata"]["tokenizer.ggml.tokens"]["len"], 49152);
    assert!(
        j.get("tensors").is_none(),
        "tensor list only with --tensors"
    );
}

#[test]
fn info_gemma3_json_matches_llamacpp() {
    let j = info_json(&model(GEMMA3), &[]);
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["block_count"], 18);
    assert_eq!(j["embedding_length"], 640);
    assert_eq!(j["feed_forward_length"], 2048);
    assert_eq!(j["head_count"], 4);
    assert_eq!(j["head_count_kv"], 1);
    assert_eq!(j["head_dim"], 256);
    assert_eq!(j["rope_freq_base"], 1e6);
    assert_eq!(j["tokenizer_model"], "llama");
    assert_eq!(j["tokenizer_pre"], "default");
    assert_eq!(j["vocab_size"], 262144);
    assert_eq!(j["bos_token_id"], 2);
    assert_eq!(j["eos_token_id"], 1);
    assert_eq!(j["n_params"], 268_098_176u64);
    assert_eq!(
        type_counts(&j),
        strs(&[
            ("Q5_0", 81),
            ("Q4_K", 27),
            ("Q8_0", 10),
            ("Q6_K", 9),
            ("F32", 109)
        ])
    );
}

#[test]
fn info_text_summary() {
    let s = ok_stdout(&[model(SMOLLM2).as_os_str()]);
    for needle in [
        "architecture:   llama",
        "layers:         30",
        "embedding:      576",
        "feed-forward:   1536",
        "heads:          9 (KV heads 3)",
        "head dim:       64",
        "rope base:      100000",
        "context length: 8192",
        "gpt2 (pre smollm), vocabulary 49152",
        "134,515,008",
        "GGUF v3",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    let row = |t: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with(&format!("{t} ")))
            .map(str::to_string)
    };
    let q41 = row("Q4_1").expect("Q4_1 row");
    assert!(q41.split_whitespace().nth(1) == Some("210"), "{q41}");
    let f32row = row("F32").expect("F32 row");
    assert!(f32row.split_whitespace().nth(1) == Some("61"), "{f32row}");
    assert!(row("total").unwrap().split_whitespace().nth(1) == Some("272"));
    assert!(
        !s.contains("blk.0.attn_q.weight"),
        "no tensor list without --tensors"
    );

    let g = ok_stdout(&[model(GEMMA3).as_os_str()]);
    for needle in [
        "architecture:   gemma3",
        "layers:         18",
        "heads:          4 (KV heads 1)",
        "268,098,176",
        "vocabulary 262144",
    ] {
        assert!(g.contains(needle), "missing {needle:?} in:\n{g}");
    }
}

#[test]
fn info_tensors_lists_every_tensor() {
    let s = ok_stdout(&[model(SMOLLM2).as_os_str(), "--tensors".as_ref()]);
    let listed = s
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("blk.")
                || l.trim_start().starts_with("token_embd")
                || l.trim_start().starts_with("output_norm")
        })
        .count();
    assert_eq!(listed, 272);
    let embd = s
        .lines()
        .find(|l| l.trim_start().starts_with("token_embd.weight"))
        .unwrap();
    assert!(
        embd.contains("Q8_0") && embd.contains("576 x 49152"),
        "{embd}"
    );

    let j = info_json(&model(GEMMA3), &["--tensors"]);
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 236);
    let embd = tensors
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(embd["type"], "Q8_0");
    assert_eq!(embd["dims"], serde_json::json!([640, 262144]));
    assert_eq!(embd["bytes"], 178_257_920u64);
}

/// A scratch directory for bad input files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("rkinfer-info-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exit code 1 and exactly one line on stderr, "error: ...", containing all
/// of `needles`; nothing on stdout; no panic.
fn assert_fails(path: &Path, needles: &[&str]) {
    let out = rkinfer(&[path.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{path:?}: stderr {stderr}");
    assert!(out.stdout.is_empty(), "{path:?}: stdout not empty");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{path:?}: want one line, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{path:?}: {n:?} not in {stderr:?}");
    }
}

#[test]
fn info_bad_input_is_one_line_and_exit_1() {
    let scratch = Scratch::new("bad");
    let missing = scratch.0.join("missing.gguf");
    assert_fails(&missing, &["missing.gguf", "no such file"]);
    assert_fails(&scratch.0, &["is a directory"]);
    assert_fails(
        &scratch.file("empty.gguf", b""),
        &["empty.gguf", "empty file"],
    );
    assert_fails(
        &scratch.file("garbage.gguf", b"<html>not a model</html>\n"),
        &["garbage.gguf", "not a GGUF file", "offset 0"],
    );

    let real = std::fs::read(model(SMOLLM2)).unwrap();
    // Cut inside the metadata, inside the tensor infos and inside the data.
    for (len, needle) in [
        (20, "metadata count at offset 16"),
        (3000, "truncated"),
        (1_780_000, "truncated"),
        (real.len() - 100, "truncated"),
    ] {
        let p = scratch.file(&format!("cut{len}.gguf"), &real[..len]);
        assert_fails(&p, &[&format!("cut{len}.gguf"), needle, "offset"]);
    }
    let mut old = real[..4096].to_vec();
    old[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_fails(&scratch.file("v1.gguf", &old), &["version 1", "offset 4"]);
    let mut bad_type = real[..4096].to_vec();
    // The first metadata value's type field (after 24 header bytes, an 8-byte
    // key length and the 20-byte key "general.architecture").
    bad_type[52..56].copy_from_slice(&77u32.to_le_bytes());
    assert_fails(
        &scratch.file("badtype.gguf", &bad_type),
        &["unknown value type 77", "offset 52"],
    );
}
