//! `rkinfer perplexity` refuses what would give a meaningless number: no
//! chunks, a model producing NaN, a corrupted KL-divergence base file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rkinfer(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("rkinfer starts")
}

fn perplexity(model: &Path, extra: &[&str]) -> Output {
    let corpus = common::corpus_path();
    let mut args = vec![
        "perplexity".as_ref(),
        "-m".as_ref(),
        model.as_os_str(),
        "-f".as_ref(),
        corpus.as_os_str(),
        "-c".as_ref(),
        "128".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    rkinfer(&args)
}

/// Exit code 1, `needle` on stderr, no PPL on stdout, no panic.
fn assert_fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {stdout}\nstderr {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stdout.contains("PPL"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn zero_chunks_is_refused() {
    let out = perplexity(&common::model_path("smollm2-q4_1"), &["--chunks", "0"]);
    assert_fails(&out, "at least 1 chunk");
}

/// A copy of SmolLM2 whose final norm weights are NaN: every logit is NaN.
fn nan_model() -> PathBuf {
    let src = common::model_path("smollm2-q4_1");
    let file = gguf::GgufFile::open(&src).expect("open smollm2");
    let t = file.tensor("output_norm.weight").expect("output_norm");
    assert_eq!(t.ggml_type, gguf::GgmlType::F32);
    let start = (file.data_offset() + t.offset) as usize;
    let mut bytes = std::fs::read(&src).expect("read smollm2");
    for v in bytes[start..start + t.size as usize].chunks_exact_mut(4) {
        v.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let path = common::temp_path("nan.gguf");
    std::fs::write(&path, bytes).expect("write");
    path
}

#[test]
fn nan_weights_are_an_error_not_ppl_nan() {
    let model = nan_model();
    let out = perplexity(&model, &["--chunks", "1"]);
    let base = common::temp_path("nan-base.kld");
    let saving = perplexity(
        &model,
        &[
            "--chunks",
            "1",
            "--kl-divergence-base",
            base.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&model);
    assert_fails(&out, "NaN");
    assert_fails(&saving, "NaN");
    assert!(!base.exists(), "a partial base file was left behind");
}

#[test]
fn a_corrupted_kl_divergence_base_is_refused() {
    let model = common::model_path("smollm2-q4_1");
    let base = common::temp_path("base.kld");
    let b = base.to_str().unwrap();
    let saved = perplexity(&model, &["--chunks", "1", "--kl-divergence-base", b]);
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let mut bytes = std::fs::read(&base).expect("base written");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&base, &bytes).unwrap();
    let compared = perplexity(
        &model,
        &[
            "--chunks",
            "1",
            "--kl-divergence-base",
            b,
            "--kl-divergence",
        ],
    );
    let _ = std::fs::remove_file(&base);
    assert_fails(&compared, "checksum");
}
