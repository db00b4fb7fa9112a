//! Every architecture against llama.cpp on a tiny random-weight fixture
//! (tests/support/tiny_models.rs, made here at test time from the fetched
//! SmolLM2 tokenizer; F16 and Q5_0). The reference, recorded by
//! scripts/record-arch-references.py into tests/data/arch/references.json,
//! gives each file's sha256 (so a generator change is caught), the running
//! perplexity after each of 3 chunks of 128 tokens of tests/data/arch/text.txt
//! (must print the same, 4 decimals) and greedy generations with the top-5
//! log-probabilities before each token (same ids; log-probabilities within
//! 5e-4).

mod common;
#[path = "support/tiny_models.rs"]
mod tiny_models;

use std::path::PathBuf;

use rkinfer::model::StateOptions;
use rkinfer::perplexity::{evaluate, KlMode, PerplexityOptions};
use rkinfer::session::{Llm, ModelContext};
use serde_json::Value;

/// llama.cpp prints running PPL with 4 decimals: every fixture, F16 and
/// quantized, must print the same.
const PRINTED: f64 = 0.5e-4;
/// Greedy top-5 log-probabilities (llama-server takes them from an f32
/// softmax; the JSON keeps 6 decimals). F16 fixtures are held to the same
/// bounds as the quantized ones since the references come from a llama.cpp
/// build without AMX (tests/data/arch/README.md).
const LOGPROB_TOLERANCE: f64 = 5e-4;

/// Known gaps, (fixture, type, prompt index, log-probability tolerance,
/// steps checked): on smollm3's F16 fixture and long prompt, llama-server
/// parts at decode step 6 from rkinfer and from llama.cpp's own
/// `llama-simple`, which agree (checked by the last test of this file).
const KNOWN_GAPS: [(&str, &str, usize, f64, usize); 1] = [("smollm3", "f16", 1, 0.05, 6)];
/// The logits of a useful fixture are spread: a model whose logits are
/// nearly flat would hide most bugs.
const MIN_LOGIT_STD: f64 = 1.0;

fn arch_data(file: &str) -> PathBuf {
    common::repo_dir().join("tests/data/arch").join(file)
}

fn references() -> Value {
    let path = arch_data("references.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes the fixture and checks it is the file llama.cpp was run on.
fn fixture(name: &str, ty: &str, reference: &Value) -> (PathBuf, PathBuf) {
    let spec = tiny_models::tiny_spec(name).unwrap_or_else(|| panic!("no fixture {name}"));
    let tok_src = common::model_path("smollm2-q4_1");
    let tok = gguf::GgufFile::open(&tok_src).expect("tokenizer source opens");
    let dir = common::temp_path(&format!("arch-{name}-{ty}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = tiny_models::make_tiny_model(&spec, ty, &tok, &dir).expect("fixture written");
    let sha = tiny_models::sha256_hex(&path).expect("sha256");
    assert_eq!(
        reference["sha256"].as_str(),
        Some(sha.as_str()),
        "{name} {ty}: the fixture is not the file the reference was recorded on \
         (re-run scripts/record-arch-references.py after changing the generator)"
    );
    (dir, path)
}

fn text() -> String {
    let p = arch_data("text.txt");
    let mut s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // llama.cpp's -f drops one trailing newline.
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check_perplexity(label: &str, llm: &Llm, doc: &Value, reference: &Value) -> Vec<String> {
    let n_ctx = doc["n_ctx"].as_u64().expect("n_ctx") as usize;
    let chunks = doc["chunks"].as_u64().expect("chunks") as usize;
    let tok = llm.tokenizer();
    let tokens = tok.encode(&text(), true, false).expect("tokenize");
    let opts = PerplexityOptions {
        n_ctx,
        max_chunks: Some(chunks),
        bos: if tok.add_bos() { tok.bos() } else { None },
        ..Default::default()
    };
    let mut ctx = ModelContext::new(
        llm.model(),
        &StateOptions {
            n_ctx,
            n_batch: n_ctx,
            ..Default::default()
        },
    )
    .expect("state");
    let r = evaluate(&mut ctx, &tokens, &opts, KlMode::None, |_| {}).expect("perplexity");
    let want: Vec<f64> = reference["per_chunk_running_ppl"]
        .as_array()
        .expect("running ppl")
        .iter()
        .map(|v| v.as_f64().expect("ppl"))
        .collect();
    assert_eq!(r.running_ppl.len(), want.len(), "{label}: chunks");
    let mut failures = Vec::new();
    for (i, (&got, &w)) in r.running_ppl.iter().zip(&want).enumerate() {
        eprintln!("{label} PPL [{}] rkinfer {got:.4} llama.cpp {w:.4}", i + 1);
        if (got - w).abs() > PRINTED + 1e-12 * w {
            failures.push(format!(
                "{label}: running PPL after chunk {} is {got:.4}, llama.cpp {w:.4}",
                i + 1
            ));
        }
    }
    failures
}

/// Log-softmax of one logit (f64 throughout).
fn log_probs(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_sum = sum.ln() + max;
    logits.iter().map(|&l| l as f64 - log_sum).collect()
}

fn std_dev(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Prompt tokens llama-server evaluates separately at the end of a prompt
/// when the model has sliding-window layers (its `checkpoint_offsets`).
const SERVER_CHECKPOINT_TAIL: usize = 4;

fn has_sliding_window(name: &str) -> bool {
    tiny_models::tiny_spec(name).is_some_and(|s| {
        matches!(
            s.extra,
            tiny_models::Extra::Gemma3 { .. } | tiny_models::Extra::Gemma4 { .. }
        )
    })
}

fn check_greedy(name: &str, ty: &str, llm: &Llm, cases: &Value) -> Vec<String> {
    let label = format!("{name} {ty}");
    let mut failures = Vec::new();
    for (ci, case) in cases.as_array().expect("greedy cases").iter().enumerate() {
        let base = LOGPROB_TOLERANCE;
        let (tolerance, max_steps) = KNOWN_GAPS
            .iter()
            .find(|g| g.0 == name && g.1 == ty && g.2 == ci)
            .map_or((base, usize::MAX), |g| (g.3, g.4));
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["generated_ids"]);
        let top5 = case["top5_per_step"].as_array().expect("top5");
        let mut session = llm
            .session(&StateOptions {
                n_ctx: 256,
                ..Default::default()
            })
            .expect("session");
        // llama-server evaluates the last 4 prompt tokens of a
        // sliding-window model in a batch of their own (to checkpoint the
        // cache before them); the batch size picks the attention kernel.
        let split = if has_sliding_window(name) {
            prompt.len().saturating_sub(SERVER_CHECKPOINT_TAIL)
        } else {
            0
        };
        for part in [&prompt[..split], &prompt[split..]] {
            if !part.is_empty() {
                session.feed_tokens(part).expect("prompt fits");
            }
        }
        let mut checked = 0;
        let mut worst = 0f64;
        for (step, (&want_id, top)) in want.iter().zip(top5).enumerate().take(max_steps) {
            let logits = session.logits().expect("logits").to_vec();
            if step == 0 {
                let sd = std_dev(&logits);
                assert!(
                    sd >= MIN_LOGIT_STD,
                    "{label}: logits too flat (std {sd:.3}) for a useful fixture"
                );
            }
            let lp = log_probs(&logits);
            let top = top.as_array().expect("step");
            for entry in top {
                let tok = entry[0].as_u64().expect("token") as usize;
                let want_lp = entry[1].as_f64().expect("logprob");
                worst = worst.max((lp[tok] - want_lp).abs());
                if (lp[tok] - want_lp).abs() > tolerance {
                    failures.push(format!(
                        "{label} prompt {:?}: step {step}: log-probability of {tok} is {:.6}, llama.cpp {want_lp:.6}",
                        &prompt[..prompt.len().min(4)],
                        lp[tok]
                    ));
                }
            }
            let argmax = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
                .unwrap_or(0) as u32;
            let gap = top[0][1].as_f64().unwrap_or(0.0) - top[1][1].as_f64().unwrap_or(0.0);
            if argmax != want_id {
                if gap < tolerance {
                    // A near-tie: either is right, and the runs part here.
                    break;
                }
                failures.push(format!(
                    "{label}: step {step}: greedy id {argmax}, llama.cpp {want_id}"
                ));
                break;
            }
            checked += 1;
            session.feed_tokens(&[want_id]).expect("fits");
        }
        eprintln!(
            "{label}: {checked}/{} greedy ids match, largest log-probability difference {worst:.6}",
            want.len()
        );
    }
    failures
}

fn check(name: &str) {
    let doc = references();
    let entry = &doc["fixtures"][name];
    assert!(entry.is_object(), "no reference for {name}");
    let mut failures = Vec::new();
    for ty in tiny_models::TINY_TYPES {
        let reference = &entry[ty];
        let (dir, path) = fixture(name, ty, reference);
        let label = format!("{name} {ty}");
        let llm = Llm::load(&path, &Default::default()).expect("fixture loads");
        failures.extend(check_perplexity(
            &label,
            &llm,
            &doc,
            &reference["perplexity"],
        ));
        failures.extend(check_greedy(name, ty, &llm, &reference["greedy"]));
        drop(llm);
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn llama() {
    check("llama");
}

#[test]
fn qwen3() {
    check("qwen3");
}

#[test]
fn gemma3() {
    check("gemma3");
}

#[test]
fn llama3_rope_scaling() {
    check("llama3-rope");
}

#[test]
fn granite() {
    check("granite");
}

#[test]
fn smollm3() {
    check("smollm3");
}

#[test]
fn phi3() {
    check("phi3");
}

#[test]
fn every_fixture_has_a_reference() {
    let doc = references();
    for spec in &tiny_models::TINY_SPECS {
        for ty in tiny_models::TINY_TYPES {
            assert!(
                doc["fixtures"][spec.name][ty]["sha256"].is_string(),
                "{} {ty}: no reference",
                spec.name
            );
        }
    }
}

#[test]
fn qwen3moe() {
    check("qwen3moe");
}

#[test]
fn qwen35() {
    check("qwen35");
}

/// qwen35's recurrent layers cannot rewind: truncating to a shorter prefix
/// starts over, and evaluating the kept tokens again gives bit for bit what
/// a fresh state gives (prompt batches and single decoded tokens).
#[test]
fn qwen35_truncate_replays_from_the_start() {
    use rkinfer::model::LogitsMode;
    let doc = references();
    let (dir, path) = fixture("qwen35", "q5_0", &doc["fixtures"]["qwen35"]["q5_0"]);
    let llm = Llm::load(&path, &Default::default()).expect("fixture loads");
    let model = llm.model();
    let opts = StateOptions {
        n_ctx: 64,
        ..Default::default()
    };
    let tokens: Vec<u32> = (0..12).map(|i| 100 + 37 * i).collect();
    let run = |state: &mut rkinfer::model::State| -> Vec<f32> {
        model
            .forward(state, &tokens[..8], LogitsMode::Last)
            .expect("prompt");
        let mut last = Vec::new();
        for &t in &tokens[8..] {
            last = model
                .forward(state, &[t], LogitsMode::Last)
                .expect("decode")
                .to_vec();
        }
        last
    };
    let mut fresh = model.new_state(&opts).expect("state");
    let want = run(&mut fresh);
    let mut state = model.new_state(&opts).expect("state");
    model
        .forward(&mut state, &tokens[..5], LogitsMode::Last)
        .expect("first pass");
    assert!(!state.can_rewind());
    assert_eq!(
        state.truncate(3),
        0,
        "a recurrent state cannot keep a prefix"
    );
    assert_eq!(run(&mut state), want);
    // Truncating at or past the end keeps everything.
    assert_eq!(state.truncate(100), tokens.len());
    drop(llm);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lfm2() {
    check("lfm2");
}

#[test]
fn lfm2moe() {
    check("lfm2moe");
}

#[test]
fn gemma4() {
    check("gemma4");
}

/// The one known gap above, smollm3 F16 on the long prompt, is
/// llama-server's: llama.cpp's own `llama-simple` (the same build that
/// recorded the references, `-n 16`, greedy) generates these 16 tokens'
/// bytes from that prompt, and so must rkinfer (the server's run parts
/// from both at step 6).
const SMOLLM3_F16_LLAMA_SIMPLE: &str = "464c414753464c414753464c414753464c414753464c414753206e6f746f72696f7573d3d3d3d3d370747074204772616e646d6120594f55636f6d6265";

#[test]
fn smollm3_f16_long_prompt_generates_what_llama_simple_does() {
    let doc = references();
    let reference = &doc["fixtures"]["smollm3"]["f16"];
    let (dir, path) = fixture("smollm3", "f16", reference);
    let llm = Llm::load(&path, &Default::default()).expect("fixture loads");
    let prompt = ids(&reference["greedy"][1]["prompt_ids"]);
    let mut session = llm
        .session(&StateOptions {
            n_ctx: 256,
            ..Default::default()
        })
        .expect("session");
    session.feed_tokens(&prompt).expect("prompt fits");
    let mut bytes = Vec::new();
    for _ in 0..16 {
        let logits = session.logits().expect("logits");
        let next = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .expect("a vocabulary") as u32;
        bytes.extend_from_slice(llm.tokenizer().token_to_piece(next));
        session.feed_tokens(&[next]).expect("fits");
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, SMOLLM3_F16_LLAMA_SIMPLE);
    drop(llm);
    let _ = std::fs::remove_dir_all(dir);
}
