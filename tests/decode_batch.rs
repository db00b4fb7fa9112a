//! Batched decode steps ([`Model::decode_batch`]): several sequences, each
//! with its own cache and position, decoded in one graph give every
//! sequence the logits it gets decoded alone, bit for bit, while sequences
//! join and leave the batch. On the fetched SmolLM2 (Q4_1; F16 and Q8_0
//! caches) and gemma3 (Q4_K_M: its Q4_K and Q6_K matmuls switch kernels
//! at 4 and 8 rows), and on the tiny fixtures of every architecture (F16:
//! float matmuls switch kernels at 2 rows; GQA; gemma3's sliding window;
//! qwen3moe's experts).

mod common;
#[path = "support/tiny_models.rs"]
mod tiny_models;

use std::path::Path;

use gguf::GgmlType;
use rkinfer::model::{DecodeBatch, LogitsMode, Model, State, StateOptions};
use rkinfer::sampler::Sampler;

/// One sequence of the test: its prompt, when it joins the batch (a global
/// step number) and how many tokens it decodes before leaving.
struct Plan {
    prompt: Vec<u32>,
    join: usize,
    steps: usize,
}

/// The greedy sampler's choice.
fn argmax(logits: &[f32]) -> u32 {
    Sampler::greedy().sample(logits).expect("greedy sample")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Prompts of different lengths (ids spread over the vocabulary).
fn plans(n_vocab: usize, lengths: &[usize]) -> Vec<Plan> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| Plan {
            prompt: (0..len)
                .map(|j| ((i * 7919 + j * 104_729 + 11) % n_vocab) as u32)
                .collect(),
            // Joining at steps 0, 0, 2, 3, ...; leaving at different steps.
            join: i.saturating_sub(1) + usize::from(i >= 2),
            steps: 6 + 3 * (i % 3),
        })
        .collect()
}

/// The tokens each sequence decodes alone (greedy) and the logits before
/// each: `steps + 1` rows (the prompt's, then one per decoded token).
fn alone(model: &Model, opts: &StateOptions, plan: &Plan) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut state = model.new_state(opts).expect("state");
    let mut logits = vec![model
        .forward(&mut state, &plan.prompt, LogitsMode::Last)
        .expect("prompt")
        .to_vec()];
    let mut tokens = Vec::new();
    for _ in 0..plan.steps {
        let t = argmax(logits.last().expect("logits"));
        tokens.push(t);
        let l = model
            .forward(&mut state, &[t], LogitsMode::Last)
            .expect("decode");
        logits.push(l.to_vec());
    }
    (tokens, logits)
}

/// Runs the plans together, batched, and compares every row with the
/// sequence decoded alone. Returns the largest batch used.
fn check(what: &str, model: &Model, opts: &StateOptions, plans: &[Plan]) -> usize {
    // Recurrent layers carry a state from row to row: such a model runs the
    // sequences of a batch one after the other, with the same results.
    let recurrent = !model.new_state(opts).expect("state").can_rewind();
    assert_eq!(
        model.supports_decode_batch(),
        !recurrent,
        "{what}: batches sequences"
    );
    let expected: Vec<_> = plans.iter().map(|p| alone(model, opts, p)).collect();
    let mut states: Vec<Option<State>> = plans.iter().map(|_| None).collect();
    let mut done = vec![0usize; plans.len()];
    let mut batch = DecodeBatch::new();
    let mut widest = 0;
    let mut step = 0;
    while done.iter().zip(plans).any(|(&d, p)| d < p.steps) {
        // Sequences joining now evaluate their prompt by themselves.
        for (i, p) in plans.iter().enumerate() {
            if p.join == step {
                let mut s = model.new_state(opts).expect("state");
                let l = model
                    .forward(&mut s, &p.prompt, LogitsMode::Last)
                    .expect("prompt");
                assert_eq!(bits(l), bits(&expected[i].1[0]), "{what}: prompt {i}");
                states[i] = Some(s);
            }
        }
        let active: Vec<usize> = (0..plans.len())
            .filter(|&i| states[i].is_some() && done[i] < plans[i].steps)
            .collect();
        let tokens: Vec<u32> = active.iter().map(|&i| expected[i].0[done[i]]).collect();
        let mut seqs: Vec<&mut State> = states
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| active.contains(i))
            .filter_map(|(_, s)| s.as_mut())
            .collect();
        if !seqs.is_empty() {
            let logits = model
                .decode_batch(&mut batch, &mut seqs, &tokens)
                .expect("decode_batch");
            let n_vocab = model.n_vocab();
            assert_eq!(logits.len(), active.len() * n_vocab, "{what}");
            for (row, &i) in logits.chunks_exact(n_vocab).zip(&active) {
                done[i] += 1;
                let want = &expected[i].1[done[i]];
                assert!(
                    bits(row) == bits(want),
                    "{what}: sequence {i}, token {} in a batch of {}: logits differ from the \
                     sequence decoded alone",
                    done[i],
                    active.len()
                );
            }
            widest = widest.max(active.len());
        }
        for (i, s) in states.iter().enumerate() {
            if let Some(s) = s {
                assert_eq!(s.n_past(), plans[i].prompt.len() + done[i], "{what}");
            }
        }
        step += 1;
    }
    widest
}

fn opts(n_ctx: usize, ty: GgmlType) -> StateOptions {
    StateOptions {
        n_ctx,
        type_k: ty,
        type_v: ty,
        ..Default::default()
    }
}

fn load(path: &Path) -> Model {
    Model::load(path, &Default::default()).expect("model loads")
}

#[test]
fn smollm2_sequences_decoded_together_match_each_alone() {
    let model = load(&common::model_path("smollm2-q4_1"));
    let plans = plans(model.n_vocab(), &[5, 23, 9, 14, 3]);
    for ty in [GgmlType::F16, GgmlType::Q8_0] {
        let widest = check(
            &format!("smollm2 {}", ty.name()),
            &model,
            &opts(64, ty),
            &plans,
        );
        assert!(widest >= 4, "batches of {widest} at most");
    }
}

#[test]
fn gemma3_sequences_decoded_together_match_each_alone() {
    // Nine sequences: batches of 8 and more reach every kernel switch.
    let model = load(&common::model_path("gemma3-q4_k_m"));
    let plans: Vec<Plan> = plans(model.n_vocab(), &[4, 11, 6, 9, 3, 7, 5, 8, 10])
        .into_iter()
        .map(|p| Plan {
            join: 0,
            steps: 2 + p.steps / 3,
            ..p
        })
        .collect();
    let widest = check("gemma3", &model, &opts(32, GgmlType::F16), &plans);
    assert!(widest >= 9, "batches of {widest} at most");
}

#[test]
fn tiny_fixtures_decoded_together_match_each_alone() {
    let tok = gguf::GgufFile::open(common::model_path("smollm2-q4_1")).expect("tokenizer source");
    let dir = common::temp_path("decode-batch");
    std::fs::create_dir_all(&dir).expect("temp dir");
    for spec in tiny_models::TINY_SPECS {
        for ty in tiny_models::TINY_TYPES {
            let path = tiny_models::make_tiny_model(&spec, ty, &tok, &dir).expect("fixture");
            let model = load(&path);
            // gemma3's window is 32: the long prompt decodes past it.
            let plans = plans(model.n_vocab(), &[3, 40, 12, 7]);
            let what = format!("{} {ty}", spec.name);
            let widest = check(&what, &model, &opts(64, GgmlType::F16), &plans);
            assert!(widest >= 3, "{what}: batches of {widest} at most");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_is_checked_before_it_runs() {
    let model = load(&common::model_path("smollm2-q4_1"));
    let mut batch = DecodeBatch::new();
    let mut a = model.new_state(&opts(4, GgmlType::F16)).expect("state");
    let mut b = model.new_state(&opts(4, GgmlType::F16)).expect("state");
    model
        .forward(&mut b, &[1, 2, 3, 4], LogitsMode::Last)
        .expect("fills b");
    let e = model
        .decode_batch(&mut batch, &mut [&mut a], &[1, 2])
        .expect_err("two tokens for one sequence");
    assert!(e.to_string().contains("one token per sequence"), "{e}");
    let e = model
        .decode_batch(&mut batch, &mut [&mut a, &mut b], &[1, 2])
        .expect_err("b is full");
    assert!(e.to_string().contains("context full"), "{e}");
    let e = model
        .decode_batch(&mut batch, &mut [&mut a], &[u32::MAX])
        .expect_err("token out of range");
    assert!(e.to_string().contains("out of range"), "{e}");
    // Nothing moved.
    assert_eq!((a.n_past(), b.n_past()), (0, 4));
}
