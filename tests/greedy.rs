//! Greedy generation through the public session API (tokenizer → session →
//! greedy sampler) against llama.cpp's reference (greedy.json): same prompt
//! ids, same generated ids up to the first near-tie of the reference (top two
//! logits within 0.05; there either of the two is accepted), and the
//! first-step top-5 logits within 0.05.

mod common;

use rkinfer::model::StateOptions;
use rkinfer::sampler::Sampler;
use rkinfer::session::{Llm, StopReason};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check(name: &str) {
    let path = common::model_path(name);
    let llm = Llm::load(&path, &Default::default()).expect("model loads");
    let reference = common::reference("greedy");
    let cases: Vec<&serde_json::Value> = reference["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["model"] == name)
        .collect();
    assert_eq!(cases.len(), 3, "reference cases for {name}");
    let mut failures = Vec::new();
    for case in cases {
        let prompt = case["prompt"].as_str().expect("prompt");
        let want = ids(&case["generated_ids"]);
        let top5 = case["top5_per_step"].as_array().expect("top5");
        let mut session = llm
            .session(&StateOptions {
                n_ctx: 256,
                ..Default::default()
            })
            .expect("session");
        let fed = session
            .feed_text(llm.tokenizer(), prompt, true)
            .expect("prompt fits");
        assert_eq!(
            fed,
            ids(&case["prompt_ids"]),
            "{name}: prompt ids of {prompt:?}"
        );

        // Step 1: the reference's top-5 logits.
        let logits = session.logits().expect("logits after the prompt").to_vec();
        for entry in top5[0].as_array().expect("step 0") {
            let tok = entry[0].as_u64().expect("token") as usize;
            let want_logit = entry[1].as_f64().expect("logit");
            let got = logits[tok] as f64;
            if (got - want_logit).abs() > 0.05 {
                failures.push(format!(
                    "{name} {prompt:?}: step-1 logit of token {tok} is {got:.4}, llama.cpp {want_logit:.4}"
                ));
            }
        }

        // Steps before the first near-tie must agree exactly.
        let near_tie = top5
            .iter()
            .position(|s| {
                let s = s.as_array().expect("step");
                s[0][1].as_f64().expect("l0") - s[1][1].as_f64().expect("l1") < 0.05
            })
            .unwrap_or(want.len());
        let mut sampler = Sampler::greedy();
        let mut got = Vec::new();
        let mut stream = session.generate(&mut sampler, want.len());
        for t in stream.by_ref() {
            got.push(t.expect("generation step"));
        }
        if let Some(StopReason::EndOfGeneration(t)) = stream.stop_reason() {
            got.push(*t);
        }
        let n = near_tie.min(want.len());
        if got.len() < n || got[..n] != want[..n] {
            failures.push(format!(
                "{name} {prompt:?}: greedy ids before the first near-tie (step {near_tie}) differ:\n  got  {got:?}\n  want {want:?}"
            ));
            continue;
        }
        if near_tie < want.len() && got.len() > near_tie {
            let s = top5[near_tie].as_array().expect("step");
            let two = [
                s[0][0].as_u64().unwrap_or(0) as u32,
                s[1][0].as_u64().unwrap_or(0) as u32,
            ];
            if !two.contains(&got[near_tie]) {
                failures.push(format!(
                    "{name} {prompt:?}: at the near-tie step {near_tie} got {}, expected one of {two:?}",
                    got[near_tie]
                ));
            }
        }
        eprintln!(
            "{name} {prompt:?}: {} ids checked ({} generated)",
            n,
            got.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn greedy_smollm2_q4_1() {
    check("smollm2-q4_1");
}

#[test]
fn greedy_smollm2_q8_0() {
    check("smollm2-q8_0");
}

#[test]
fn greedy_gemma3_q8_0() {
    check("gemma3-q8_0");
}

#[test]
fn greedy_gemma3_q4_k_m() {
    check("gemma3-q4_k_m");
}
