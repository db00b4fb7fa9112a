//! llama.cpp's own tokenizer test suite (`tests/test-tokenizer-0.cpp`) run
//! through rkinfer's tokenizer: every `ggml-vocab-*.gguf` of the llama.cpp
//! source in the `llama-cpp-python==0.3.36` source package, with the cases
//! of its `.gguf.inp`/`.gguf.out` files.
//!
//! The vocabularies (75 MB) are fetched by `scripts/fetch-models.sh` into
//! `models/vocab/`; the cases (small) are committed in
//! `tests/data/llamacpp/vocab/`. As in llama.cpp's test, each case is
//! tokenized with `add_special = false` and `parse_special = false` and the
//! ids must be equal. Missing data fails the test (never skips).

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use rkinfer::tokenizer::Tokenizer;

/// Every vocabulary of the source package's `models/` folder.
const VOCABS: [&str; 19] = [
    "aquila",
    "baichuan",
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "gpt-neox",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "nomic-bert-moe",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// Vocabularies llama.cpp ships without cases: they must load and
/// tokenize every input of the suite without error.
const WITHOUT_CASES: [&str; 4] = ["aquila", "baichuan", "gpt-neox", "nomic-bert-moe"];

/// Vocabularies whose tokenizer model rkinfer does not have, with the model
/// named in the refusal: nomic-bert-moe is Unigram ("t5", llama.cpp's UGM).
const UNSUPPORTED: [(&str, &str); 1] = [("nomic-bert-moe", "\"t5\" is not supported")];

fn vocab_path(name: &str) -> PathBuf {
    let path = common::models_dir().join(format!("vocab/ggml-vocab-{name}.gguf"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh (or set RKINFER_MODELS)",
        path.display()
    );
    path
}

fn cases_path(name: &str, ext: &str) -> PathBuf {
    common::repo_dir().join(format!(
        "tests/data/llamacpp/vocab/ggml-vocab-{name}.gguf.{ext}"
    ))
}

struct Case {
    text: String,
    ids: Vec<u32>,
}

/// Reads a vocabulary's cases as test-tokenizer-0.cpp does: inputs are
/// separated by "\n__ggml_vocab_test__\n", outputs are one line of
/// space-separated ids per input.
fn read_cases(name: &str) -> Vec<Case> {
    let (inp, out) = (cases_path(name, "inp"), cases_path(name, "out"));
    let inp_text =
        std::fs::read_to_string(&inp).unwrap_or_else(|e| panic!("{}: {e}", inp.display()));
    let out_text =
        std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp_text.as_str();
    while !rest.is_empty() {
        match rest.find(SEP) {
            Some(at) => {
                inputs.push(rest[..at].to_string());
                rest = &rest[at + SEP.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                rest = "";
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out_text
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|id| {
                    id.parse()
                        .unwrap_or_else(|e| panic!("{}: id {id:?}: {e}", out.display()))
                })
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: {} inputs but {} outputs",
        inputs.len(),
        outputs.len()
    );
    assert!(!inputs.is_empty(), "{name}: no cases");
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(text, ids)| Case { text, ids })
        .collect()
}

fn load(name: &str) -> Result<Tokenizer, String> {
    let file = gguf::GgufFile::open(vocab_path(name)).map_err(|e| e.to_string())?;
    Tokenizer::from_gguf(&file).map_err(|e| e.to_string())
}

/// Runs one vocabulary's cases; returns (passed, total, failure report).
fn run(name: &str) -> (usize, usize, String) {
    let cases = read_cases(name);
    let tok = match load(name) {
        Ok(tok) => tok,
        Err(e) => return (0, cases.len(), format!("  {name}: not loaded: {e}\n")),
    };
    let mut passed = 0;
    let mut report = String::new();
    for case in &cases {
        match tok.encode(&case.text, false, false) {
            Ok(ids) if ids == case.ids => passed += 1,
            got => {
                let _ = writeln!(
                    report,
                    "  {name}: {:?}\n    expected {:?}\n    got      {got:?}",
                    case.text, case.ids
                );
            }
        }
    }
    (passed, cases.len(), report)
}

#[test]
fn llama_cpp_vocab_cases() {
    let mut summary = String::new();
    let mut failures = String::new();
    let (mut all_passed, mut all_total) = (0, 0);
    for name in VOCABS.iter().filter(|n| !WITHOUT_CASES.contains(n)) {
        let (passed, total, report) = run(name);
        let _ = writeln!(summary, "{name:16} {passed:3}/{total:3}");
        all_passed += passed;
        all_total += total;
        failures.push_str(&report);
    }
    eprintln!("llama.cpp tokenizer suite:\n{summary}total {all_passed}/{all_total}");
    assert!(failures.is_empty(), "cases differ:\n{failures}");
}

/// The vocabularies without cases load, and tokenize every input of the
/// suite (with and without special tokens) without an error; an
/// unsupported tokenizer model is refused with an error that names it.
#[test]
fn vocabularies_without_cases_tokenize() {
    let texts: Vec<String> = read_cases("llama-bpe")
        .into_iter()
        .chain(read_cases("qwen35"))
        .map(|c| c.text)
        .collect();
    let mut failures = String::new();
    for name in WITHOUT_CASES {
        let refusal = UNSUPPORTED.iter().find(|u| u.0 == name).map(|u| u.1);
        let tok = match (load(name), refusal) {
            (Ok(tok), None) => tok,
            (Err(e), Some(expected)) if e.contains(expected) => continue,
            (Ok(_), Some(expected)) => {
                let _ = writeln!(failures, "  {name}: loaded, but expected {expected:?}");
                continue;
            }
            (Err(e), _) => {
                let _ = writeln!(failures, "  {name}: not loaded: {e}");
                continue;
            }
        };
        for text in &texts {
            for special in [false, true] {
                if let Err(e) = tok.encode(text, special, special) {
                    let _ = writeln!(failures, "  {name}: {text:?}: {e}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "vocabularies failed:\n{failures}");
}

/// Every vocabulary file is where the fetch script puts it.
#[test]
fn every_vocabulary_is_fetched() {
    for name in VOCABS {
        vocab_path(name);
    }
}
