//! Engine hot ops on the real models (skipped when a model file is absent):
//!
//! - `matmul/<model>/<weight>/<n>`: the CPU matmul (activation quantization,
//!   threads, multi-row kernels, scatter) of one layer's weight against `n`
//!   activation rows: n = 1 is the decode shape, n = 128 a prompt batch.
//! - `decode/<model>/ctx<L>`: one single-token forward after L cached
//!   tokens; the growth with L is the attention's cost.
//!
//! Threads: RKINFER_BENCH_THREADS (default 2, the machine this was tuned
//! on). Models: `models/` (fetched by scripts/fetch-models.sh).
//! `cargo bench --bench engine [-- matmul]`.

use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rkinfer::backend::cpu::{mul_mat, CpuBackend};
use rkinfer::backend::Backend;
use rkinfer::backend::Scratch;
use rkinfer::graph::WeightId;
use rkinfer::model::{LogitsMode, Model, ModelOptions, StateOptions};

const MODELS: [(&str, &str); 2] = [
    ("smollm2-q4_1", "models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3-q4_k_m", "models/gemma-3-270m-q4_k_m.gguf"),
];
const WEIGHTS: [&str; 3] = [
    "blk.0.attn_q.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_down.weight",
];

fn threads() -> usize {
    std::env::var("RKINFER_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn load(path: &str) -> Option<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if !p.exists() {
        eprintln!("engine bench: {} absent, skipped", p.display());
        return None;
    }
    let opts = ModelOptions {
        n_threads: threads(),
        ..ModelOptions::default()
    };
    match Model::load(&p, &opts) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("engine bench: {}: {e}", p.display());
            None
        }
    }
}

fn matmul(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build()
        .expect("thread pool");
    let mut g = c.benchmark_group("matmul");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (label, path) in MODELS {
        let Some(model) = load(path) else { continue };
        let w = model.weights();
        for name in WEIGHTS {
            let Some(id) = w.list.iter().position(|x| x.name == name) else {
                continue;
            };
            let id = WeightId(id as u32);
            let (rows, cols, ty) = (w.get(id).rows, w.get(id).cols, w.get(id).ty);
            // The CPU backend's load-time layout for this weight, if any.
            let mut cpu = CpuBackend::new();
            let _ = cpu.prepare_weight(id, w.get(id), w.bytes(id));
            let packed = cpu.interleaved(id);
            for n in [1usize, 128] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let mut out = vec![0f32; n * rows];
                let mut scratch = Scratch::default();
                g.throughput(Throughput::Elements((n * rows * cols) as u64));
                let short = name
                    .trim_start_matches("blk.0.")
                    .trim_end_matches(".weight");
                g.bench_function(format!("{label}/{short}-{}/{n}", ty.name()), |b| {
                    b.iter(|| {
                        pool.install(|| {
                            mul_mat(w, id, packed, black_box(&x), n, &mut out, &mut scratch)
                                .expect("mul_mat")
                        })
                    })
                });
            }
        }
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    const CTX: [usize; 3] = [16, 128, 384];
    let mut g = c.benchmark_group("decode");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, path) in MODELS {
        let Some(model) = load(path) else { continue };
        let opts = StateOptions {
            n_ctx: 512,
            ..StateOptions::default()
        };
        let mut state = model.new_state(&opts).expect("state");
        // Fill the cache once; each measurement truncates back to L.
        let prompt: Vec<u32> = (0..CTX[CTX.len() - 1] as u32).map(|i| 100 + i).collect();
        model
            .forward(&mut state, &prompt, LogitsMode::Last)
            .expect("prompt");
        for l in CTX {
            g.bench_function(format!("{label}/ctx{l}"), |b| {
                b.iter(|| {
                    state.truncate(l);
                    let logits = model
                        .forward(&mut state, &[42], LogitsMode::Last)
                        .expect("decode");
                    black_box(logits[0])
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, matmul, decode);
criterion_main!(benches);
