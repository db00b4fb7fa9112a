//! Models with recurrent layers (lfm2's short convolutions) on their tiny
//! fixtures: going back in a sequence starts over and the kept tokens are
//! evaluated again, giving the logits of a fresh evaluation; and their
//! matmuls, expert matmuls included, are offered to the NPU (`npu-sim`).

mod common;
#[path = "support/tiny_models.rs"]
mod tiny_models;

use std::path::PathBuf;

use rkinfer::backend::device::{Device, NpuQuant, NpuSettings};
use rkinfer::backend::DeviceOptions;
use rkinfer::model::{LogitsMode, Model, StateOptions};
use rkinfer::session::{LoadOptions, SessionOptions};

/// Writes fixture `name` of type `ty` into a fresh temporary directory.
fn fixture(name: &str, ty: &str) -> (PathBuf, PathBuf) {
    let spec = tiny_models::tiny_spec(name).expect("fixture exists");
    let tok = gguf::GgufFile::open(common::model_path("smollm2-q4_1")).expect("tokenizer source");
    let dir = common::temp_path(&format!("hybrid-{name}-{ty}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = tiny_models::make_tiny_model(&spec, ty, &tok, &dir).expect("fixture written");
    (dir, path)
}

fn load(path: &std::path::Path, device: Device) -> Model {
    rkinfer::session::load_model(
        path,
        &LoadOptions {
            device: DeviceOptions {
                device,
                npu: NpuSettings {
                    quant: NpuQuant::parse("w16a16").expect("quant"),
                    ..NpuSettings::default()
                },
            },
            ..LoadOptions::default()
        },
    )
    .expect("model loads")
}

/// Some ids of the fixture's vocabulary.
fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 1 + i * 997 % 40000).collect()
}

fn state(model: &Model) -> rkinfer::model::State {
    model
        .new_state(&StateOptions {
            n_ctx: 64,
            n_batch: 8,
            ..Default::default()
        })
        .expect("state")
}

#[test]
fn truncating_a_recurrent_state_starts_over_and_replay_matches_a_fresh_run() {
    let (dir, path) = fixture("lfm2", "q5_0");
    let model = load(&path, Device::Cpu);
    let ids = tokens(20);
    // Fresh: the first 12 tokens (two batches of 8 and 4) and their logits.
    let mut fresh = state(&model);
    let want = model
        .forward(&mut fresh, &ids[..12], LogitsMode::Last)
        .expect("fresh")
        .to_vec();

    let mut s = state(&model);
    assert!(!s.can_rewind());
    assert!(s.recurrent_bytes() > 0);
    model
        .forward(&mut s, &ids, LogitsMode::Last)
        .expect("all tokens");
    // Keeping everything keeps the state.
    assert_eq!(s.truncate(20), 20);
    // Going back cannot keep a prefix: the state starts over.
    assert_eq!(s.truncate(12), 0);
    assert_eq!(s.n_past(), 0);
    let got = model
        .forward(&mut s, &ids[..12], LogitsMode::Last)
        .expect("replay")
        .to_vec();
    assert_eq!(got, want, "replayed logits differ from a fresh run");

    // The session replays by itself: rewind, then continue.
    let llm = rkinfer::session::Llm::load(&path, &LoadOptions::default()).expect("llm");
    let mut session = llm
        .session_with(
            &StateOptions {
                n_ctx: 64,
                ..Default::default()
            },
            SessionOptions { n_batch: 8 },
        )
        .expect("session");
    session.feed_tokens(&ids).expect("feed");
    session.truncate(11);
    session
        .feed_tokens(&ids[11..12])
        .expect("feed after rewind");
    assert_eq!(session.logits().expect("logits"), &want[..]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lfm2moe_matmuls_run_on_npu_sim() {
    let (dir, path) = fixture("lfm2moe", "f16");
    let cpu = load(&path, Device::Cpu);
    let npu = load(&path, Device::NpuSim);
    let g = npu.describe_graph(1);
    let on = |kind: &str, be: &str| {
        g.lines()
            .filter(|l| l.contains(kind) && l.contains(&format!(" {be} ")))
            .count()
    };
    // Projections of the convolution and attention layers, dense
    // feed-forwards, routers and the output head go to the NPU; the expert
    // weights are prepared there too (MUL_MAT_ID itself runs on the CPU).
    assert!(on("conv_in_proj", "NPU") > 0, "{g}");
    assert!(on("attn_out", "NPU") > 0, "{g}");
    assert_eq!(on("MUL_MAT ", "CPU"), 0, "a matmul stayed on the CPU:\n{g}");
    assert!(npu
        .weights()
        .list
        .iter()
        .any(|w| w.name.contains("ffn_up_exps") && w.backend == 0));
    // w16a16 against the CPU's F16 path: the same next token and close logits.
    let ids = tokens(6);
    let (mut sc, mut sn) = (state(&cpu), state(&npu));
    let a = cpu
        .forward(&mut sc, &ids, LogitsMode::Last)
        .expect("cpu")
        .to_vec();
    let b = npu
        .forward(&mut sn, &ids, LogitsMode::Last)
        .expect("npu")
        .to_vec();
    let argmax = |v: &[f32]| {
        (0..v.len())
            .max_by(|&i, &j| v[i].total_cmp(&v[j]))
            .unwrap_or(0)
    };
    assert_eq!(argmax(&a), argmax(&b));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 0.05, "largest logit difference {worst}");
    let _ = std::fs::remove_dir_all(dir);
}
