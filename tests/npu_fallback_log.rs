//! `--device npu` on a driver that fails every job, each way it can: the
//! user reads one clear line (a warning through the log facade, which the
//! CLI prints), and the tokens are the CPU's.

mod common;

use std::sync::{Arc, Mutex};

use rkinfer::backend::device::NpuQuant;
use rkinfer::backend::npu::NpuBackend;
use rkinfer::backend::Backend;
use rkinfer::model::{LogitsMode, Model, ModelOptions, StateOptions};
use rkinfer::npu::driver::rknpu::RknpuDevice;
use rkinfer::npu::driver::rocket::RocketDevice;
use rkinfer::npu::sim::fake::{FakeConfig, FakeRknpu, FakeRocket};
use rkinfer::npu::{Fault, MatmulOptions, NpuDevice};
use rkinfer::tokenizer::Tokenizer;

/// Every warning logged, as text.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            if let Ok(mut v) = self.0.lock() {
                v.push(r.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *RECORDER.0.lock().expect("log lock"))
}

/// Greedy ids: the prompt's next token, then `n - 1` decode steps.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let argmax = |x: &[f32]| (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as u32;
    let mut state = model.new_state(&StateOptions::default()).expect("state");
    let mut next = argmax(
        model
            .forward(&mut state, prompt, LogitsMode::Last)
            .expect("prompt"),
    );
    let mut out = vec![next];
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

#[test]
fn a_failing_npu_says_so_once_and_the_cpu_answers() {
    log::set_logger(&RECORDER).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Warn);
    let path = common::model_path("smollm2-q4_1");
    let cpu = Model::load(&path, &ModelOptions::default()).expect("cpu model");
    let tok = Tokenizer::from_gguf(cpu.gguf()).expect("tokenizer");
    let prompt = tok
        .encode("The capital of France is", true, false)
        .expect("prompt");
    let want = greedy(&cpu, &prompt, 4);
    assert!(take_warnings().is_empty());

    let quant = NpuQuant::parse("w16a16").expect("quant");
    let rknpu = |fault| -> Arc<dyn NpuDevice> {
        let fake = FakeRknpu::new(FakeConfig::default());
        fake.inject(fault, u32::MAX);
        Arc::new(RknpuDevice::open(Box::new(fake)).expect("fake rknpu opens"))
    };
    let rocket = |fault| -> Arc<dyn NpuDevice> {
        let fake = FakeRocket::new(FakeConfig::default());
        fake.inject(fault, u32::MAX);
        Arc::new(RocketDevice::open(Box::new(fake), "1.0.0".into()))
    };
    for (what, dev) in [
        ("rknpu EIO", rknpu(Fault::Fail)),
        ("rknpu timeout", rknpu(Fault::Timeout)),
        ("rocket timeout", rocket(Fault::Timeout)),
        ("rocket silent rejection", rocket(Fault::SilentReject)),
    ] {
        let backends: Vec<Box<dyn Backend>> = vec![Box::new(NpuBackend::new(
            dev,
            quant,
            MatmulOptions::default(),
        ))];
        let npu = Model::load_with_backends(&path, &ModelOptions::default(), backends)
            .expect("model loads");
        assert_eq!(greedy(&npu, &prompt, 4), want, "{what}");
        let warnings = take_warnings();
        assert_eq!(warnings.len(), 1, "{what}: {warnings:#?}");
        assert!(
            warnings[0].contains("NPU") && warnings[0].contains("on the CPU"),
            "{what}: {}",
            warnings[0]
        );
    }
}
