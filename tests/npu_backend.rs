//! The NPU backend on `npu-sim` against the CPU on SmolLM2: the same greedy
//! tokens in w16a16, the same first token in w8a8, CPU fallback after a
//! failed submit, and `--device npu` without an NPU.

mod common;

use std::process::Command;
use std::sync::Arc;

use rkinfer::backend::npu::{Device, NpuBackend, NpuQuant};
use rkinfer::backend::Backend;
use rkinfer::model::{LogitsMode, Model, ModelOptions, StateOptions};
use rkinfer::npu::{Fault, MatmulOptions, NpuDevice, SimDevice};
use rkinfer::tokenizer::Tokenizer;

const PROMPT: &str = "The capital of France is";

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn prompt_tokens(model: &Model) -> Vec<u32> {
    let tok = Tokenizer::from_gguf(model.gguf()).expect("tokenizer");
    let ids = tok.encode(PROMPT, true, false).expect("encode");
    assert!(ids.len() > 1, "the prompt must be a batch (M > 1)");
    ids
}

/// Greedy ids: the prompt as one batch, then `n - 1` single-token steps.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut state = model
        .new_state(&StateOptions {
            n_ctx: 64,
            ..StateOptions::default()
        })
        .expect("state");
    let mut out = Vec::new();
    let mut next = argmax(
        model
            .forward(&mut state, prompt, LogitsMode::Last)
            .expect("prompt"),
    );
    out.push(next);
    while out.len() < n {
        next = argmax(
            model
                .forward(&mut state, &[next], LogitsMode::Last)
                .expect("decode"),
        );
        out.push(next);
    }
    out
}

fn load(device: Device, quant: &str) -> Model {
    Model::load(
        &common::model_path("smollm2-q4_1"),
        &ModelOptions {
            device,
            npu_quant: NpuQuant::parse(quant).expect("quant"),
            ..ModelOptions::default()
        },
    )
    .expect("model loads")
}

/// Every matmul weight is on the NPU (the graph dump names the backend).
fn assert_matmuls_on_npu(model: &Model) {
    let g = model.describe_graph(1);
    let matmuls: Vec<&str> = g.lines().filter(|l| l.contains("MUL_MAT")).collect();
    assert!(!matmuls.is_empty());
    for l in &matmuls {
        assert!(l.contains(" NPU "), "matmul not on the NPU: {l}");
    }
    assert!(
        g.lines()
            .filter(|l| l.contains("RMS_NORM"))
            .all(|l| l.contains(" CPU ")),
        "non-matmul ops must stay on the CPU"
    );
}

#[test]
fn w8a8_first_token_equals_cpu_on_smollm2() {
    let cpu = load(Device::Cpu, "auto");
    let npu = load(Device::NpuSim, "w8a8");
    assert_matmuls_on_npu(&npu);
    let prompt = prompt_tokens(&cpu);
    let mut s_cpu = cpu.new_state(&StateOptions::default()).expect("state");
    let l_cpu = cpu
        .forward(&mut s_cpu, &prompt, LogitsMode::Last)
        .expect("cpu")
        .to_vec();
    let mut s_npu = npu.new_state(&StateOptions::default()).expect("state");
    let l_npu = npu
        .forward(&mut s_npu, &prompt, LogitsMode::Last)
        .expect("npu")
        .to_vec();
    assert_eq!(argmax(&l_npu), argmax(&l_cpu));
    // Sensible, not merely the same argmax: logits close to the CPU's.
    let max_diff = l_cpu
        .iter()
        .zip(&l_npu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let spread = l_cpu.iter().cloned().fold(f32::MIN, f32::max)
        - l_cpu.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        max_diff < 0.1 * spread,
        "w8a8 logits differ by {max_diff} (CPU range {spread})"
    );
    // And a decode step (M = 1) through the NPU.
    let next = argmax(&l_npu);
    let d = npu
        .forward(&mut s_npu, &[next], LogitsMode::Last)
        .expect("decode");
    assert!(d.iter().all(|v| v.is_finite()));
}

#[test]
fn failed_submits_fall_back_to_the_cpu_and_generation_continues() {
    let path = common::model_path("smollm2-q4_1");
    let cpu = load(Device::Cpu, "auto");
    let prompt = prompt_tokens(&cpu);
    let want = greedy(&cpu, &prompt, 2);

    let sim = Arc::new(SimDevice::new());
    let dev: Arc<dyn NpuDevice> = sim.clone();
    let backend = NpuBackend::new(
        dev,
        NpuQuant::parse("w16a16").expect("quant"),
        MatmulOptions::default(),
    );
    let backends: Vec<Box<dyn Backend>> = vec![Box::new(backend)];
    let npu =
        Model::load_with_backends(&path, &ModelOptions::default(), backends).expect("model loads");
    // The first two submits fail (fewer than the disabling threshold),
    // then one timeout: those ops run on the CPU, the rest on the NPU.
    sim.inject(Fault::Fail, 2);
    let got = greedy(&npu, &prompt, 2);
    assert_eq!(got, want);
    sim.inject(Fault::Timeout, u32::MAX);
    // Every submit fails now: the backend turns itself off and the CPU
    // finishes the generation.
    let got = greedy(&npu, &prompt, 2);
    assert_eq!(got, want);
}

#[test]
fn device_npu_without_an_npu_says_why_in_one_line() {
    if rkinfer::npu::open_hardware().is_ok() {
        return; // a board: nothing to fall back from
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(["run", "-m"])
        .arg(common::model_path("smollm2-q4_1"))
        .args(["-p", "Hi", "-n", "2", "--temp", "0", "--device", "npu"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("npu")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("running on the CPU"), "{}", lines[0]);
    assert!(lines[0].contains("no NPU"), "{}", lines[0]);
}

#[test]
fn bad_npu_quant_and_device_names_are_errors() {
    assert!(NpuQuant::parse("w3a3").is_err());
    assert!(Device::parse("gpu").is_err());
    assert_eq!(NpuQuant::parse("auto").expect("auto"), NpuQuant::Auto);
    assert_eq!(
        NpuQuant::parse("w8a8").expect("w8a8").to_string(),
        "w8a8.had"
    );
}
