//! The published RK3588 measurements the cost model is fitted to and
//! checked against, with the shapes of their models (hyperparameters from
//! the models' public configs). Estimating needs only the shapes: no
//! weights are read or run.

use quant::npu::Scheme;

use super::{BoardModel, CpuWeight, Estimate, LayerShape, MatmulWeight, Policy};

/// Shape of a dense transformer (llama-like: q, k, v, o, gate, up, down per
/// layer and an output head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    pub name: &'static str,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
}

/// google/gemma-3-1b-it.
pub const GEMMA3_1B: ModelShape = ModelShape {
    name: "Gemma3 1B",
    n_embd: 1152,
    n_layer: 26,
    n_head: 4,
    n_head_kv: 1,
    head_dim: 256,
    n_ff: 6912,
    n_vocab: 262_144,
};

/// ibm-granite/granite-4.0-350m (dense, llama-like).
pub const GRANITE4_350M: ModelShape = ModelShape {
    name: "Granite 4.0 350M",
    n_embd: 1024,
    n_layer: 28,
    n_head: 16,
    n_head_kv: 4,
    head_dim: 64,
    n_ff: 2048,
    n_vocab: 100_352,
};

/// Qwen/Qwen3-1.7B.
pub const QWEN3_1_7B: ModelShape = ModelShape {
    name: "Qwen3-1.7B",
    n_embd: 2048,
    n_layer: 28,
    n_head: 16,
    n_head_kv: 8,
    head_dim: 128,
    n_ff: 6144,
    n_vocab: 151_936,
};

/// Qwen/Qwen2.5-1.5B-Instruct.
pub const QWEN2_5_1_5B: ModelShape = ModelShape {
    name: "Qwen2.5-1.5B",
    n_embd: 1536,
    n_layer: 28,
    n_head: 12,
    n_head_kv: 2,
    head_dim: 128,
    n_ff: 8960,
    n_vocab: 151_936,
};

/// Qwen/Qwen2-0.5B-Instruct.
pub const QWEN2_0_5B: ModelShape = ModelShape {
    name: "Qwen2-0.5B",
    n_embd: 896,
    n_layer: 24,
    n_head: 14,
    n_head_kv: 2,
    head_dim: 64,
    n_ff: 4864,
    n_vocab: 151_936,
};

/// Weight storage of a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F16,
    Q8_0,
    /// Q4_0 layers with llama.cpp's Q6_K output head.
    Q4_0,
}

impl Storage {
    fn class(self) -> CpuWeight {
        match self {
            Storage::F16 => CpuWeight::F16,
            Storage::Q8_0 => CpuWeight::Q8,
            Storage::Q4_0 => CpuWeight::Q4,
        }
    }
    /// Bytes of `elems` weights (the head of a Q4_0 file is Q6_K).
    fn bytes(self, elems: usize, head: bool) -> u64 {
        let e = elems as u64;
        match (self, head) {
            (Storage::F16, _) => e * 2,
            (Storage::Q8_0, _) => e / 32 * 34,
            (Storage::Q4_0, false) => e / 32 * 18,
            (Storage::Q4_0, true) => e / 256 * 210,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Storage::F16 => "F16",
            Storage::Q8_0 => "Q8_0",
            Storage::Q4_0 => "Q4_0",
        }
    }
}

impl ModelShape {
    /// The attention / other-op shape.
    pub fn layers(&self) -> LayerShape {
        LayerShape {
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_head: self.n_head,
            head_dim: self.head_dim,
        }
    }

    /// Every matmul weight of one forward, stored as `storage` and run on
    /// the NPU under `scheme`.
    pub fn matmuls(&self, storage: Storage, scheme: Scheme) -> Vec<MatmulWeight> {
        let (e, q, kv) = (
            self.n_embd,
            self.n_head * self.head_dim,
            self.n_head_kv * self.head_dim,
        );
        let per_layer = [
            ("attn_q", e, q),
            ("attn_k", e, kv),
            ("attn_v", e, kv),
            ("attn_output", q, e),
            ("ffn_gate", e, self.n_ff),
            ("ffn_up", e, self.n_ff),
            ("ffn_down", self.n_ff, e),
        ];
        let mut out = Vec::new();
        for il in 0..self.n_layer {
            for (name, k, n) in per_layer {
                out.push(MatmulWeight {
                    name: format!("blk.{il}.{name}.weight"),
                    k,
                    n,
                    class: storage.class(),
                    bytes: storage.bytes(k * n, false),
                    scheme,
                    head: false,
                });
            }
        }
        out.push(MatmulWeight {
            name: "output.weight".into(),
            k: e,
            n: self.n_vocab,
            class: storage.class(),
            bytes: storage.bytes(e * self.n_vocab, true),
            scheme,
            head: true,
        });
        out
    }
}

/// Fixed cost of one librknnrt matmul call (rk3588-npu.md, section 1),
/// which rk-llama.cpp pays per matmul; RKLLM runs its own graph.
pub const VENDOR_MATMUL_CALL_US: f64 = 33.0;

/// Who measured a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    RkLlamaCpp,
    Orkllm,
    Rkllm,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::RkLlamaCpp => "rk-llama.cpp",
            Source::Orkllm => "oRKLLM",
            Source::Rkllm => "RKLLM",
        }
    }
}

/// One published measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Published {
    pub model: ModelShape,
    pub storage: Storage,
    /// The NPU scheme the runtime used (None: the CPU run).
    pub scheme: Option<&'static str>,
    pub source: Source,
    pub pp_ts: f64,
    pub tg_ts: f64,
    /// Why the estimate may miss this figure by more than 25%, if it does.
    pub caveat: Option<&'static str>,
}

/// rk-llama.cpp's W4A4 path: see docs/benchmarks.md.
const W4A4_CAVEAT: &str = "rk-llama.cpp's W4A4 runs int4 with row-major activations \
(the vendor matmul is ~80x slower so) and its decode is no faster than W8A8 with half \
the bytes: a property of that implementation, not of the hardware the model describes";

/// The figures of issue 18 (RK3588, pinned clocks; llama-bench -t 4,
/// pp512 / tg128).
pub const PUBLISHED: &[Published] = &[
    Published {
        model: GEMMA3_1B,
        storage: Storage::F16,
        scheme: None,
        source: Source::RkLlamaCpp,
        pp_ts: 68.5,
        tg_ts: 11.1,
        caveat: None,
    },
    Published {
        model: GEMMA3_1B,
        storage: Storage::F16,
        scheme: Some("w16a16"),
        source: Source::RkLlamaCpp,
        pp_ts: 249.6,
        tg_ts: 10.8,
        caveat: None,
    },
    Published {
        model: GEMMA3_1B,
        storage: Storage::Q8_0,
        scheme: None,
        source: Source::RkLlamaCpp,
        pp_ts: 73.3,
        tg_ts: 19.5,
        caveat: None,
    },
    Published {
        model: GEMMA3_1B,
        storage: Storage::Q8_0,
        scheme: Some("w8a8.had"),
        source: Source::RkLlamaCpp,
        pp_ts: 378.6,
        tg_ts: 16.5,
        caveat: None,
    },
    Published {
        model: GEMMA3_1B,
        storage: Storage::Q4_0,
        scheme: None,
        source: Source::RkLlamaCpp,
        pp_ts: 164.7,
        tg_ts: 28.3,
        caveat: None,
    },
    Published {
        model: GEMMA3_1B,
        storage: Storage::Q4_0,
        scheme: Some("w4a4.had"),
        source: Source::RkLlamaCpp,
        pp_ts: 51.4,
        tg_ts: 16.7,
        caveat: Some(W4A4_CAVEAT),
    },
    Published {
        model: GRANITE4_350M,
        storage: Storage::F16,
        scheme: Some("w16a16"),
        source: Source::RkLlamaCpp,
        pp_ts: 432.3,
        tg_ts: 20.2,
        caveat: None,
    },
    Published {
        model: QWEN3_1_7B,
        storage: Storage::Q8_0,
        scheme: Some("w8a8"),
        source: Source::Orkllm,
        pp_ts: 178.0,
        tg_ts: 12.8,
        caveat: None,
    },
    Published {
        model: QWEN3_1_7B,
        storage: Storage::Q8_0,
        scheme: Some("w8a8"),
        source: Source::Rkllm,
        pp_ts: 184.0,
        tg_ts: 11.7,
        caveat: None,
    },
    Published {
        model: QWEN2_5_1_5B,
        storage: Storage::Q8_0,
        scheme: Some("w8a8"),
        source: Source::Rkllm,
        pp_ts: 338.0,
        tg_ts: 16.7,
        caveat: None,
    },
    Published {
        model: QWEN2_0_5B,
        storage: Storage::Q8_0,
        scheme: Some("w8a8"),
        source: Source::Rkllm,
        pp_ts: 877.0,
        tg_ts: 41.6,
        caveat: None,
    },
];

impl Published {
    /// "CPU" or the scheme on the NPU.
    pub fn backend(&self) -> String {
        match self.scheme {
            None => "CPU".into(),
            Some(s) => format!("NPU {s}"),
        }
    }

    /// The model's estimate of this configuration on `board`: every matmul
    /// on the NPU for NPU runs (as those runtimes do), on the CPU otherwise.
    pub fn estimate(&self, board: &BoardModel) -> Estimate {
        let (scheme, policy) = match self.scheme.and_then(|s| s.parse::<Scheme>().ok()) {
            Some(s) => (s, Policy::AllNpu),
            None => (
                Scheme::plain(quant::npu::Levels::Int8, quant::npu::Levels::Int8),
                Policy::Cpu,
            ),
        };
        let weights = self.model.matmuls(self.storage, scheme);
        let mut board = board.clone();
        if self.source == Source::RkLlamaCpp {
            board.npu.call_us = VENDOR_MATMUL_CALL_US;
        }
        board.rates(&weights, self.model.layers(), 512, 128, policy)
    }
}

/// Relative deviation of an estimate from a published figure.
pub fn deviation(estimate: f64, published: f64) -> f64 {
    estimate / published - 1.0
}

/// The table of docs/benchmarks.md: one markdown row per configuration.
pub fn markdown_table(board: &BoardModel) -> String {
    let mut s = String::from(
        "| model | weights | backend | measured by | pp512 published | pp512 estimated | Δ | tg128 published | tg128 estimated | Δ |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in PUBLISHED {
        let e = p.estimate(board);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:+.0}% | {:.1} | {:.1} | {:+.0}% |\n",
            p.model.name,
            p.storage.name(),
            p.backend(),
            p.source.name(),
            p.pp_ts,
            e.pp_ts,
            100.0 * deviation(e.pp_ts, p.pp_ts),
            p.tg_ts,
            e.tg_ts,
            100.0 * deviation(e.tg_ts, p.tg_ts),
        ));
    }
    s
}

/// Sum of squared log deviations of `board` over the published figures
/// without a caveat (the fit's objective).
pub fn fit_error(board: &BoardModel) -> f64 {
    // Where both were measured, decode was slower on the NPU than on the
    // CPU: the estimates must keep that order (placement depends on it).
    let order: f64 = PUBLISHED
        .iter()
        .filter(|p| p.scheme.is_none())
        .filter_map(|cpu| {
            let npu = PUBLISHED.iter().find(|p| {
                p.scheme.is_some()
                    && p.caveat.is_none()
                    && p.model == cpu.model
                    && p.storage == cpu.storage
            })?;
            let slower = npu.tg_ts < cpu.tg_ts;
            let r = npu.estimate(board).tg_ts / cpu.estimate(board).tg_ts;
            Some(if slower && r > 0.97 {
                100.0 * (r / 0.97).ln().powi(2)
            } else {
                0.0
            })
        })
        .sum();
    order
        + PUBLISHED
            .iter()
            .filter(|p| p.caveat.is_none())
            .map(|p| {
                let e = p.estimate(board);
                [e.pp_ts / p.pp_ts, e.tg_ts / p.tg_ts]
                    .iter()
                    .map(|r| {
                        // Squared log error, and a steep penalty beyond +-15%.
                        let l = r.ln().abs();
                        l * l + 100.0 * (l - 1.15f64.ln()).max(0.0).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
}

/// Coordinate descent of the fitted constants (multiplicative steps) from
/// `start`, `rounds` passes: how the defaults were found.
pub fn fit(start: &BoardModel, rounds: usize) -> BoardModel {
    type Knob = fn(&mut BoardModel) -> &mut f64;
    let knobs: [Knob; 10] = [
        |b| &mut b.npu.mac_efficiency,
        |b| &mut b.npu.task_us,
        |b| &mut b.npu.submit_us,
        |b| &mut b.npu.act_ns,
        |b| &mut b.npu.fwht_ns,
        |b| &mut b.npu.out_ns,
        |b| &mut b.cpu.attn_gmacs,
        |b| &mut b.cpu.layer_us,
        |b| &mut b.cpu.elem_ns,
        |b| &mut b.cpu.gbps,
    ];
    let mut best = start.clone();
    let mut best_err = fit_error(&best);
    let mut step = 1.5f64;
    for _ in 0..rounds {
        for knob in knobs {
            for f in [step, 1.0 / step] {
                let mut b = best.clone();
                *knob(&mut b) *= f;
                let e = fit_error(&b);
                if e < best_err {
                    (best, best_err) = (b, e);
                }
            }
        }
        step = step.sqrt().max(1.02);
    }
    best
}
