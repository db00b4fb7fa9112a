//! A corrupted length field can make a string in a model file megabytes
//! long; error messages quote a short prefix of it, never the whole string.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use gguf::GgufWriter;

/// Longest acceptable error output in bytes.
const MAX_MESSAGE: usize = 1000;

fn rkinfer(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("rkinfer starts")
}

fn assert_short_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start: String = stderr.chars().take(300).collect();
    assert_eq!(out.status.code(), Some(1), "{start}");
    assert!(
        stderr.len() < MAX_MESSAGE,
        "{} bytes of stderr: {start}...",
        stderr.len()
    );
    assert!(stderr.contains(needle), "{stderr}");
}

/// The case: one flipped byte in the length of a metadata key of
/// the Gemma file (`gemma3.attention.key_length`, at offset 626) makes the
/// key swallow 3.5 MB of the vocabulary.
#[test]
fn info_on_a_flipped_key_length_prints_a_short_line() {
    let mut head = Vec::new();
    std::fs::File::open(common::model_path("gemma3-q4_k_m"))
        .expect("open gemma")
        .take(8 << 20)
        .read_to_end(&mut head)
        .expect("read gemma");
    assert_eq!(&head[634..661], b"gemma3.attention.key_length");
    head[626 + 2] = 0x35;
    let path = common::temp_path("flipped.gguf");
    std::fs::write(&path, &head).expect("write");
    let out = rkinfer(&["info".as_ref(), path.as_os_str()]);
    let _ = std::fs::remove_file(&path);
    assert_short_failure(&out, "gemma3.attention.key_length");
}

fn file_with(key: &str, value: &str, path: &Path) {
    let mut w = GgufWriter::new();
    w.add_kv(key, value).expect("add_kv");
    w.write(path).expect("write");
}

#[test]
fn a_huge_architecture_name_is_cut_in_the_message() {
    let path = common::temp_path("arch.gguf");
    file_with("general.architecture", &"x".repeat(3_500_000), &path);
    let out = rkinfer(&[
        "run".as_ref(),
        "-m".as_ref(),
        path.as_os_str(),
        "-p".as_ref(),
        "hi".as_ref(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_short_failure(&out, "3500000 bytes");
}

#[test]
fn a_huge_tokenizer_model_name_is_cut_in_the_message() {
    let path = common::temp_path("tokmodel.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("tokenizer.ggml.model", "y".repeat(3_500_000))
        .expect("add_kv");
    w.add_kv(
        "tokenizer.ggml.tokens",
        gguf::Value::Array(gguf::Array::String(vec!["a".into(), "b".into()])),
    )
    .expect("add_kv");
    w.write(&path).expect("write");
    let out = rkinfer(&[
        "tokenize".as_ref(),
        "-m".as_ref(),
        path.as_os_str(),
        "-p".as_ref(),
        "hi".as_ref(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_short_failure(&out, "3500000 bytes");
}
