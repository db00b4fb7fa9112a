//! `rkinfer run` and `rkinfer perplexity` on the command line: output format
//! and clear errors (never a panic) on bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn smollm2() -> PathBuf {
    let dir = match std::env::var_os("RKINFER_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
    };
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

fn rkinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(args)
        .output()
        .expect("rkinfer starts")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a clean failure, got {:?}; stderr:\n{e}",
        o.status
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}:\n{e}");
    }
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rkinfer-run-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    let p = d.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn run_json_greedy_matches_reference_start() {
    let m = smollm2();
    let o = rkinfer(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "8",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let ids = |k: &str| -> Vec<u64> {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    // greedy.json, smollm2-q4_1, first case (no near-tie in the first 8 steps)
    assert_eq!(ids("prompt_ids"), vec![504, 3575, 282, 4649, 314]);
    assert_eq!(ids("generated_ids").len(), 8);
    assert!(
        v["text"].as_str().unwrap().starts_with(" Paris."),
        "{}",
        v["text"]
    );
    assert!(v["timings"]["prompt_tokens"].as_u64().unwrap() == 5);
}

#[test]
fn run_streams_text_and_prints_timings() {
    let m = smollm2();
    let o = rkinfer(&[
        "run",
        m.to_str().unwrap(),
        "-p",
        "The capital of France is",
        "-n",
        "4",
        "--temp",
        "0",
        "-s",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).expect("utf-8");
    assert!(out.starts_with("The capital of France is Paris."), "{out}");
    let e = stderr(&o);
    for k in [
        "load time",
        "prompt eval time",
        "eval time",
        "tokens per second",
    ] {
        assert!(e.contains(k), "timings lack {k}: {e}");
    }
}

#[test]
fn run_prompt_longer_than_context() {
    let m = smollm2();
    let long = "word ".repeat(100);
    let o = rkinfer(&["run", "-m", m.to_str().unwrap(), "-c", "32", "-p", &long]);
    fails_with(&o, &["context holds 32", "--truncate"]);
    let o = rkinfer(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-c",
        "32",
        "-p",
        &long,
        "--truncate",
        "-n",
        "2",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v["prompt_ids"].as_array().unwrap().len(),
        16,
        "tail of n_ctx/2 kept"
    );
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 2);
}

#[test]
fn run_n_larger_than_space_left() {
    let m = smollm2();
    let o = rkinfer(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-c",
        "32",
        "-p",
        "Hello there",
        "-n",
        "100",
    ]);
    fails_with(&o, &["-n 100", "holds 32", "left"]);
}

#[test]
fn run_invalid_utf8_prompt_file() {
    let m = smollm2();
    let f = temp("bad.txt", b"abc\xff\xfedef");
    let o = rkinfer(&["run", "-m", m.to_str().unwrap(), "-f", f.to_str().unwrap()]);
    fails_with(&o, &["not valid UTF-8", "offset 3"]);
}

#[test]
fn run_bad_flags_and_missing_model() {
    let m = smollm2();
    let o = rkinfer(&["run", "-m", "/nonexistent/model.gguf", "-p", "x"]);
    fails_with(&o, &["/nonexistent/model.gguf"]);
    let o = rkinfer(&["run", "-m", m.to_str().unwrap(), "-p", "x", "-ctk", "q5_1"]);
    fails_with(&o, &["-ctk", "q5_1"]);
    let o = rkinfer(&["run", "-m", m.to_str().unwrap(), "-p", "x", "--cpus", "7-4"]);
    fails_with(&o, &["--cpus"]);
    let o = rkinfer(&["run", "-m", m.to_str().unwrap(), "-p", "x", "--top-p", "-1"]);
    fails_with(&o, &["top-p"]);
    let o = rkinfer(&["run", "-m", m.to_str().unwrap()]);
    fails_with(&o, &["no prompt"]);
}

#[test]
fn perplexity_text_too_short_and_bad_base_file() {
    let m = smollm2();
    let f = temp("short.txt", b"Just a few words of text.\n");
    let o = rkinfer(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "-c",
        "128",
    ]);
    fails_with(&o, &["at least 256 tokens"]);
    let junk = temp("junk.kld", b"_logits_\x00\x02\x00\x00junk");
    let o = rkinfer(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "--kl-divergence-base",
        junk.to_str().unwrap(),
        "--kl-divergence",
    ]);
    fails_with(&o, &["not a saved-logits file"]);
    let o = rkinfer(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "-f",
        f.to_str().unwrap(),
        "--kl-divergence",
    ]);
    fails_with(&o, &["--kl-divergence-base"]);
}

#[test]
fn perplexity_prints_llama_cpp_format() {
    let m = smollm2();
    let corpus = common::corpus_path();
    let o = rkinfer(&[
        "perplexity",
        "-m",
        m.to_str().unwrap(),
        "-f",
        corpus.to_str().unwrap(),
        "-c",
        "128",
        "--chunks",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).expect("utf-8");
    let mut lines = out.lines();
    let running = lines.next().expect("running line");
    assert!(
        running.starts_with("[1]") && running.contains(",[3]"),
        "{out}"
    );
    let fin = lines.next().expect("final line");
    assert!(
        fin.starts_with("Final estimate: PPL = ") && fin.contains(" +/- "),
        "{out}"
    );
    assert!(
        stderr(&o).contains("chunk 3/3"),
        "progress lines: {}",
        stderr(&o)
    );
}
