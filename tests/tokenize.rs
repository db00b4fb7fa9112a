//! Tokenization against llama.cpp on the real models: every case of
//! `tokenize.json` (llama-tokenize output) and the corpus token counts of
//! the reference README (llama-perplexity's tokenization).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::reference_dir;

use rkinfer::tokenizer::{StreamDecoder, Tokenizer};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn models_dir() -> PathBuf {
    std::env::var_os("RKINFER_MODELS").map_or_else(|| repo().join("models"), PathBuf::from)
}

fn model_file(name: &str) -> PathBuf {
    let file = match name {
        "smollm2-q4_1" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3-q4_k_m" => "gemma-3-270m-q4_k_m.gguf",
        other => panic!("no file known for model {other}"),
    };
    let path = models_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

fn tokenizer(name: &str) -> Tokenizer {
    let file = gguf::GgufFile::open(model_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Case {
    text: String,
    parse_special: bool,
    ids: Vec<u32>,
}

fn reference_cases(model: &str) -> Vec<Case> {
    let path = reference_dir().join("tokenize.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases = json["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no cases array", path.display()));
    cases
        .iter()
        .filter(|c| c["model"] == model)
        .map(|c| Case {
            text: c["text"].as_str().expect("case text").to_string(),
            parse_special: c["parse_special"].as_bool().expect("case parse_special"),
            ids: c["ids"]
                .as_array()
                .expect("case ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
        })
        .collect()
}

/// Checks every reference case of a model; reports all mismatches at once.
fn check_reference(model: &str, expected_cases: usize) {
    let tok = tokenizer(model);
    let cases = reference_cases(model);
    assert_eq!(
        cases.len(),
        expected_cases,
        "{model}: number of reference cases"
    );
    let mut failures = Vec::new();
    for case in &cases {
        // llama-tokenize adds BOS/EOS as the model says.
        let ids = tok
            .encode(&case.text, true, case.parse_special)
            .expect("encodes");
        if ids != case.ids {
            failures.push(format!(
                "{:?} (parse_special {}):\n  got      {:?}\n  expected {:?}",
                case.text, case.parse_special, ids, case.ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{model}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_tokenize_on_every_reference_case() {
    check_reference("smollm2-q4_1", 32);
}

#[test]
fn gemma3_matches_llama_tokenize_on_every_reference_case() {
    check_reference("gemma3-q4_k_m", 32);
}

fn corpus() -> String {
    let path = models_dir().join("corpus.txt");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// llama-perplexity tokenizes the whole file as is, BOS per the model. The
/// README's counts hold with the file's trailing newline kept.
#[test]
fn corpus_token_counts_match_llama_perplexity() {
    let text = corpus();
    assert!(text.ends_with('\n'));
    let smollm = tokenizer("smollm2-q4_1");
    assert_eq!(
        smollm.encode(&text, true, false).expect("encodes").len(),
        39_123
    );
    let gemma = tokenizer("gemma3-q4_k_m");
    let ids = gemma.encode(&text, true, false).expect("encodes");
    assert_eq!(ids.len(), 37_955);
    assert_eq!(ids[0], 2, "Gemma adds BOS");
}

#[test]
fn pieces_give_back_the_text() {
    let text = corpus();
    for model in ["smollm2-q4_1", "gemma3-q4_k_m"] {
        let tok = tokenizer(model);
        let ids = tok.encode(&text, false, false).expect("encodes");
        assert_eq!(tok.decode(&ids), text, "{model}: decode(encode(corpus))");
        for case in reference_cases(model).iter().filter(|c| !c.parse_special) {
            let ids = tok.encode(&case.text, false, false).expect("encodes");
            assert_eq!(tok.decode(&ids), case.text, "{model}: {:?}", case.text);
        }
    }
}

#[test]
fn stream_decoder_yields_whole_characters_from_byte_tokens() {
    let tok = tokenizer("smollm2-q4_1");
    let text = "emoji 🙂🚀 end 你好";
    let ids = tok.encode(text, false, false).expect("encodes");
    let mut stream = StreamDecoder::new();
    let mut out = String::new();
    let mut held_back = false;
    for &id in &ids {
        let chunk = stream.push(&tok, id);
        held_back |= chunk.is_empty();
        assert!(!chunk.contains('\u{FFFD}'), "chunk {chunk:?}");
        out.push_str(&chunk);
    }
    out.push_str(&stream.finish());
    assert_eq!(out, text);
    assert!(held_back, "some emoji byte tokens split a character");
}

#[test]
fn special_tokens_and_flags_of_the_models() {
    let smollm = tokenizer("smollm2-q4_1");
    assert_eq!(
        (smollm.bos(), smollm.eos(), smollm.add_bos()),
        (Some(1), Some(2), false)
    );
    assert!(smollm.is_eog(2));
    assert_eq!(smollm.n_vocab(), 49_152);
    assert!(smollm.chat_template().is_some());
    let gemma = tokenizer("gemma3-q4_k_m");
    assert_eq!(
        (gemma.bos(), gemma.eos(), gemma.add_bos()),
        (Some(2), Some(1), true)
    );
    assert!(
        gemma.is_eog(1) && gemma.is_eog(106),
        "<eos> and <end_of_turn> end generation"
    );
    assert_eq!(gemma.n_vocab(), 262_144);
    assert_eq!(gemma.token_to_piece(106), b"<end_of_turn>");
    assert_eq!(
        gemma.detokenize(&[2, 9259, 1902], true, false),
        "Hello world"
    );
}

fn rkinfer_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rkinfer"))
}

#[test]
fn cli_prints_ids_like_llama_tokenize() {
    let model = model_file("smollm2-q4_1");
    let out = rkinfer_cmd()
        .args(["tokenize", "-m"])
        .arg(&model)
        .args(["-p", "Hello world", "--ids"])
        .output()
        .expect("runs rkinfer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[19556, 905]\n");

    let out = rkinfer_cmd()
        .args(["tokenize", "-m"])
        .arg(&model)
        .args(["-p", "<|im_start|>hi", "--parse-special"])
        .output()
        .expect("runs rkinfer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("     1 -> '<|im_start|>'\n"), "{stdout}");

    let gemma = model_file("gemma3-q4_k_m");
    let out = rkinfer_cmd()
        .args(["tokenize", "-m"])
        .arg(&gemma)
        .args(["-p", "Hello world", "--ids", "--no-bos"])
        .output()
        .expect("runs rkinfer");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[9259, 1902]\n");
}

#[test]
fn cli_rejects_invalid_utf8_files() {
    let dir = std::env::temp_dir().join(format!("rkinfer-tokenize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"ok \xFF\xFE bad").expect("writes");
    let out = rkinfer_cmd()
        .args(["tokenize", "-m"])
        .arg(model_file("smollm2-q4_1"))
        .arg("-f")
        .arg(&bad)
        .output()
        .expect("runs rkinfer");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not valid UTF-8") && stderr.contains("offset 3"),
        "{stderr}"
    );
}

#[test]
fn cli_reads_the_text_from_a_file() {
    let path: &Path = &common::corpus_path();
    let out = rkinfer_cmd()
        .args(["tokenize", "-m"])
        .arg(model_file("gemma3-q4_k_m"))
        .arg("-f")
        .arg(path)
        .args(["--ids"])
        .output()
        .expect("runs rkinfer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(", ").count() + 1, 37_955);
}
