//! Gemma3 beyond its 512-token sliding window: a prompt of 530+ tokens that
//! repeats a sentence must be continued with that sentence (the model copies
//! the pattern), which needs both local and global layers to work past the
//! window.

use std::path::PathBuf;

use rkinfer::model::{LogitsMode, Model, ModelOptions, StateOptions};

fn model_path() -> PathBuf {
    let dir = match std::env::var_os("RKINFER_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
    };
    let p = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.exists(),
        "model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
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

#[test]
fn gemma3_continues_a_pattern_beyond_the_sliding_window() {
    let model = Model::load(&model_path(), &ModelOptions::default()).expect("model loads");
    assert_eq!(model.hparams().sliding_window, Some(512));
    // "The capital of France is Paris." and what follows in llama.cpp's
    // greedy reference (ids from greedy.json), as one cycle.
    let cycle: [u32; 16] = [
        818, 5279, 529, 7001, 563, 9079, 236761, 107, 108, 818, 5279, 529, 7001, 563, 9079, 236761,
    ];
    let mut prompt = vec![2u32]; // BOS
    while prompt.len() < 530 {
        prompt.extend_from_slice(&cycle);
    }
    let n_prompt = prompt.len();
    assert!(n_prompt > 512);
    let mut state = model
        .new_state(&StateOptions {
            n_ctx: 600,
            ..Default::default()
        })
        .expect("state");
    let mut next = argmax(
        model
            .forward(&mut state, &prompt, LogitsMode::Last)
            .expect("prompt"),
    );
    let mut got = Vec::new();
    for _ in 0..12 {
        got.push(next);
        next = argmax(
            model
                .forward(&mut state, &[next], LogitsMode::Last)
                .expect("decode"),
        );
    }
    assert_eq!(state.n_past(), n_prompt + 12);
    // The cycle continues where the prompt stopped.
    let start = (n_prompt - 1) % cycle.len();
    let want: Vec<u32> = (0..12).map(|i| cycle[(start + i) % cycle.len()]).collect();
    let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    assert!(same >= 8, "got {got:?}, expected the cycle {want:?}");
}
