//! Greedy generation against llama.cpp's reference (greedy.json): same ids up
//! to the first near-tie of the reference, first-step top-5 logits within 0.05.

mod common;

use std::path::PathBuf;

use rkinfer::model::{LogitsMode, Model, ModelOptions, StateOptions};

fn models_dir() -> PathBuf {
    match std::env::var_os("RKINFER_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
    }
}

fn model_file(name: &str) -> PathBuf {
    let file = match name {
        "smollm2-q4_1" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3-q4_k_m" => "gemma-3-270m-q4_k_m.gguf",
        other => panic!("no file known for {other}"),
    };
    let p = models_dir().join(file);
    assert!(
        p.exists(),
        "model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

fn reference() -> serde_json::Value {
    common::reference("greedy")
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn check_model(name: &str) {
    let model = Model::load(&model_file(name), &ModelOptions::default()).expect("model loads");
    let reference = reference();
    let cases: Vec<&serde_json::Value> = reference["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["model"] == name)
        .collect();
    assert!(!cases.is_empty(), "no reference cases for {name}");
    let mut failures = Vec::new();
    for case in cases {
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["generated_ids"]);
        let top5 = case["top5_per_step"].as_array().expect("top5");
        // Steps before the first near-tie of the reference must match.
        let mut n_check = want.len();
        for (step, t) in top5.iter().enumerate() {
            let l0 = t[0][1].as_f64().expect("logit");
            let l1 = t[1][1].as_f64().expect("logit");
            if l0 - l1 < 0.05 {
                n_check = step;
                break;
            }
        }

        let opts = StateOptions {
            n_ctx: 256,
            ..Default::default()
        };
        let mut state = model.new_state(&opts).expect("state");
        let logits = model
            .forward(&mut state, &prompt, LogitsMode::Last)
            .expect("prompt");
        // First-step top-5 logits.
        let mut worst = 0f32;
        for entry in top5[0].as_array().expect("top5[0]") {
            let tok = entry[0].as_u64().expect("token") as usize;
            let want_logit = entry[1].as_f64().expect("logit") as f32;
            worst = worst.max((logits[tok] - want_logit).abs());
        }
        let mut got = vec![argmax(logits)];
        while got.len() < want.len() {
            let last = *got.last().expect("one token");
            let logits = model
                .forward(&mut state, &[last], LogitsMode::Last)
                .expect("decode");
            got.push(argmax(logits));
        }
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        eprintln!(
            "{name} {}: first {same} of {} ids equal (required: {n_check}); first-step top-5 logits max diff {worst:.4}",
            case["prompt"],
            want.len()
        );
        if same < n_check {
            failures.push(format!(
                "{}: ids differ at step {same}: got {got:?}, llama.cpp {want:?}",
                case["prompt"]
            ));
        }
        if worst >= 0.05 {
            failures.push(format!(
                "{}: first-step top-5 logits differ by up to {worst} (>= 0.05)",
                case["prompt"]
            ));
        }
    }
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

#[test]
fn smollm2_q4_1_greedy_matches_llamacpp() {
    check_model("smollm2-q4_1");
}

#[test]
fn gemma3_q4_k_m_greedy_matches_llamacpp() {
    check_model("gemma3-q4_k_m");
}
