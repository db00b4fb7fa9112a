//! A cost model of the RK3588 board: how long a matmul takes on the NPU
//! (from the very task stream the simulator runs) and on the board's four
//! Cortex-A76 cores, and what a whole model's prompt processing and
//! generation would reach. No board was available: the constants are
//! fitted to the published figures listed in docs/benchmarks.md ("NPU cost
//! model"), where the fit is checked configuration by configuration.
//!
//! The NPU side of one matmul is planned exactly as [`crate::npu::ops`]
//! would run it ([`plan`], [`regions`], [`plan_tasks`], [`job_groups`]):
//! every task costs the slower of its MACs at the precision's peak rate
//! (times a fitted efficiency) and its A, B and C bytes at one core's DDR
//! bandwidth, plus a fixed task cost; the cores run at the same time but
//! share the DDR bandwidth of all three; every submit costs a fixed
//! overhead. Around it the CPU rotates, quantizes and packs the
//! activations, and dequantizes and sums the outputs of every K segment.

pub mod published;

use quant::npu::hadamard::RotationPlan;
use quant::npu::{Precision, Scheme};

use super::command::task::MatmulType;
use super::ops::matmul::{job_groups, plan, plan_tasks, regions, MatmulOptions};
use super::NpuError;

/// Constants of the NPU side (see the module comment).
#[derive(Clone, Debug, PartialEq)]
pub struct NpuCostParams {
    /// NPU clock in GHz.
    pub clock_ghz: f64,
    /// Peak MACs per cycle and core: int8, fp16, int4.
    pub macs_int8: f64,
    pub macs_fp16: f64,
    pub macs_int4: f64,
    /// Fraction of the peak MAC rate a task reaches (fitted).
    pub mac_efficiency: f64,
    /// DDR bandwidth one core streams, and all cores together, in GB/s.
    pub core_gbps: f64,
    pub all_cores_gbps: f64,
    /// Fixed cost of one task (register fetch, CBUF fill, DPU drain), µs.
    pub task_us: f64,
    /// Fixed cost of one submit (ioctl, interrupt, wake-up), µs.
    pub submit_us: f64,
    /// Fixed cost of one runtime matmul call on top (0 for rkinfer's own
    /// submits; the vendor librknnrt matmul API costs about 33 µs a call,
    /// which rk-llama.cpp pays per matmul and K segment).
    pub call_us: f64,
    /// CPU: ns per activation element rotated-in, quantized and packed
    /// (four A76 threads).
    pub act_ns: f64,
    /// CPU: ns per element and FWHT stage of the activation rotation.
    pub fwht_ns: f64,
    /// CPU: ns per output element and K segment (scale, add, unpack).
    pub out_ns: f64,
}

impl Default for NpuCostParams {
    /// The fitted constants (docs/benchmarks.md, "NPU cost model").
    fn default() -> Self {
        NpuCostParams {
            clock_ghz: 1.0,
            macs_int8: 1024.0,
            macs_fp16: 512.0,
            macs_int4: 2048.0,
            mac_efficiency: 0.21,
            core_gbps: 11.0,
            all_cores_gbps: 27.0,
            task_us: 3.3,
            submit_us: 17.5,
            call_us: 0.0,
            act_ns: 0.034,
            fwht_ns: 0.013,
            out_ns: 0.048,
        }
    }
}

/// Constants of the board's CPU (four A76 threads, llama.cpp-class kernels).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuCostParams {
    /// Matmul MAC rates in GMAC/s for batches, by weight class.
    pub gmacs_f16: f64,
    pub gmacs_q8: f64,
    pub gmacs_q4: f64,
    /// Other quantized types (K-quants, Q5, Q6, ...).
    pub gmacs_other: f64,
    /// Rate of weight bytes streamed from DDR (decode), GB/s.
    pub gbps: f64,
    /// Attention (QK and PV) MAC rate, GMAC/s.
    pub attn_gmacs: f64,
    /// Fixed cost of one layer's non-matmul ops per forward, µs.
    pub layer_us: f64,
    /// Non-matmul element work per token and layer, ns per embedding
    /// element (norms, rope, residuals, activations).
    pub elem_ns: f64,
}

impl Default for CpuCostParams {
    /// Fitted to the published Gemma3 1B CPU figures (docs/benchmarks.md).
    fn default() -> Self {
        CpuCostParams {
            gmacs_f16: 50.0,
            gmacs_q8: 54.0,
            gmacs_q4: 128.0,
            gmacs_other: 54.0,
            gbps: 24.5,
            attn_gmacs: 15.0,
            layer_us: 182.0,
            elem_ns: 5.8,
        }
    }
}

/// Weight classes the CPU model tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuWeight {
    F16,
    Q8,
    Q4,
    Other,
}

impl CpuWeight {
    /// The class of a GGML type.
    pub fn of(ty: gguf::GgmlType) -> CpuWeight {
        match ty.name() {
            "F16" | "BF16" | "F32" => CpuWeight::F16,
            "Q8_0" => CpuWeight::Q8,
            "Q4_0" | "Q4_1" => CpuWeight::Q4,
            _ => CpuWeight::Other,
        }
    }
}

/// The estimate of one NPU matmul.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NpuMatmulCost {
    /// Tasks and submits of the whole matmul (every K segment).
    pub tasks: usize,
    pub submits: usize,
    /// MACs the NPU performs (padded shapes, every digit row).
    pub macs: u64,
    /// Bytes of A, B and C the tasks move over DDR.
    pub bytes: u64,
    /// NPU time (tasks and submits), µs.
    pub npu_us: f64,
    /// CPU time around it (rotation, quantization, packing, outputs), µs.
    pub host_us: f64,
}

impl NpuMatmulCost {
    /// Board time of the matmul, µs.
    pub fn total_us(&self) -> f64 {
        self.npu_us + self.host_us
    }
}

/// The NPU's type for a scheme's precision.
pub fn matmul_type(p: Precision) -> MatmulType {
    match p {
        Precision::Fp16 => MatmulType::Fp16,
        Precision::Int8 => MatmulType::Int8,
        Precision::Int4 => MatmulType::Int4,
    }
}

/// The K lengths of a scheme's segments for a weight of `k` columns, and
/// the rotated length and FWHT block.
pub fn scheme_segments(scheme: &Scheme, k: usize) -> (Vec<usize>, usize, usize) {
    let plan = RotationPlan::with_segment(scheme.effective_rotation(), k, 32, 0, scheme.k_segment);
    let seg = scheme.k_segment.max(32);
    let mut lens = Vec::new();
    let mut start = 0;
    while start < plan.k_rot {
        let len = seg.min(plan.k_rot - start);
        lens.push(len);
        start += len;
    }
    (lens, plan.k_rot, plan.block)
}

impl NpuCostParams {
    fn peak_macs_per_us(&self, ty: MatmulType) -> f64 {
        let per_cycle = match ty {
            MatmulType::Int8 => self.macs_int8,
            MatmulType::Fp16 | MatmulType::Fp16Out16 => self.macs_fp16,
            MatmulType::Int4 => self.macs_int4,
        };
        per_cycle * self.clock_ghz * 1e3 * self.mac_efficiency
    }

    /// NPU time of one device matmul of `rows` x `k` by `n` x `k` on
    /// `cores` cores, from its planned tasks.
    fn device_matmul(
        &self,
        ty: MatmulType,
        rows: usize,
        k: usize,
        n: usize,
        cores: usize,
    ) -> Result<NpuMatmulCost, NpuError> {
        let opts = MatmulOptions {
            cores: (0..cores.clamp(1, 3) as u32).collect(),
            ..MatmulOptions::default()
        };
        let p = plan(ty, rows, k, n, &opts)?;
        let r = regions(&p);
        let (tasks, _) = plan_tasks(&p, &r, 0, 0, 0)?;
        let core_us_per_byte = 1e-3 / self.core_gbps;
        let mac_rate = self.peak_macs_per_us(ty);
        let mut out = NpuMatmulCost {
            tasks: tasks.len(),
            ..NpuMatmulCost::default()
        };
        let mut per_core = [0f64; 3];
        let mut jobs = [0usize; 3];
        for core in 0..3u32 {
            let descs: Vec<_> = tasks
                .iter()
                .filter(|t| t.core == core)
                .map(|t| t.desc)
                .collect();
            if descs.is_empty() {
                continue;
            }
            jobs[core as usize] =
                job_groups(&descs, opts.max_tasks_per_submit, opts.timeout_ms).len();
            for d in &descs {
                let (m, k, n) = (u64::from(d.m), u64::from(d.k), u64::from(d.n));
                let macs = m * k * n;
                let bytes = ty.bytes_for(m * k + n * k) + m * n * u64::from(ty.output_bytes());
                out.macs += macs;
                out.bytes += bytes;
                let t = (macs as f64 / mac_rate).max(bytes as f64 * core_us_per_byte);
                per_core[core as usize] += t + self.task_us;
            }
        }
        let shared_bw = out.bytes as f64 * 1e-3 / self.all_cores_gbps;
        let busiest = per_core.iter().cloned().fold(0.0, f64::max);
        out.submits = jobs.iter().sum();
        // Cores run at once: one submit round per job of the busiest core.
        let rounds = jobs.iter().copied().max().unwrap_or(0);
        out.npu_us = busiest.max(shared_bw) + rounds as f64 * self.submit_us;
        Ok(out)
    }

    /// The whole NPU matmul of `m` activation rows by a weight of `n` x `k`
    /// under `scheme`: one device matmul per K segment (2m rows for two-digit
    /// activations), with the CPU's work around them.
    pub fn matmul(
        &self,
        scheme: &Scheme,
        m: usize,
        k: usize,
        n: usize,
        cores: usize,
    ) -> Result<NpuMatmulCost, NpuError> {
        let ty = matmul_type(scheme.precision());
        let rows = m * scheme.act_digits();
        let n_dev = n.div_ceil(ty.b_group()) * ty.b_group();
        let (segs, k_rot, block) = scheme_segments(scheme, k);
        let mut total = NpuMatmulCost::default();
        let mut cache: Vec<(usize, NpuMatmulCost)> = Vec::new();
        for &kl in &segs {
            let c = match cache.iter().find(|(l, _)| *l == kl) {
                Some((_, c)) => *c,
                None => {
                    let c = self.device_matmul(ty, rows, kl, n_dev, cores)?;
                    cache.push((kl, c));
                    c
                }
            };
            total.tasks += c.tasks;
            total.submits += c.submits;
            total.macs += c.macs;
            total.bytes += c.bytes;
            total.npu_us += c.npu_us + self.call_us;
        }
        let stages = if block > 1 {
            block.trailing_zeros() as f64
        } else {
            0.0
        };
        // One quantize-and-pack pass per digit row; activation offsets (zp)
        // need one more pass for the segment sums.
        let passes = scheme.act_digits() as f64 + if scheme.weight_offset { 1.0 } else { 0.0 };
        let act = (m * k_rot) as f64 * (passes * self.act_ns + stages * self.fwht_ns);
        let outs = (rows * n * segs.len()) as f64 * self.out_ns;
        total.host_us = (act + outs) * 1e-3;
        Ok(total)
    }
}

impl CpuCostParams {
    /// Board CPU time of `m` rows by a weight of `n` x `k` of `class`
    /// holding `weight_bytes`, µs: compute-bound batches, bandwidth-bound
    /// decode.
    pub fn matmul_us(
        &self,
        class: CpuWeight,
        m: usize,
        k: usize,
        n: usize,
        weight_bytes: u64,
    ) -> f64 {
        let rate = match class {
            CpuWeight::F16 => self.gmacs_f16,
            CpuWeight::Q8 => self.gmacs_q8,
            CpuWeight::Q4 => self.gmacs_q4,
            CpuWeight::Other => self.gmacs_other,
        };
        let compute = (m * k * n) as f64 / (rate * 1e3);
        let stream = weight_bytes as f64 * 1e-3 / self.gbps;
        compute.max(stream)
    }
}

/// The NPU must win by more than the model's stated accuracy (±25% on the
/// published figures) before a matmul moves to it: a wrong move costs the
/// CPU's idle wait, and decode estimates sit within that band.
pub const PLACEMENT_MARGIN: f64 = 0.25;

/// Where the cost model puts a matmul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub on_npu: bool,
    pub npu_us: f64,
    pub cpu_us: f64,
}

/// One matmul weight of a model, as the estimate needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulWeight {
    pub name: String,
    pub k: usize,
    pub n: usize,
    pub class: CpuWeight,
    /// Bytes of the weight in the model file.
    pub bytes: u64,
    pub scheme: Scheme,
    /// The output head: one row per forward (the last token's logits).
    pub head: bool,
}

/// What attention and the other ops cost: the model's layer shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

/// How matmuls are placed in an estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every matmul on the CPU.
    Cpu,
    /// Every matmul on the NPU (as rk-llama.cpp and RKLLM run them).
    AllNpu,
    /// Each matmul where the model says the NPU is faster by more than
    /// [`PLACEMENT_MARGIN`] (`--device npu`).
    Fastest,
    /// On the NPU from this many rows on (`--npu-min-batch`).
    MinBatch(usize),
}

/// A forward's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ForwardCost {
    pub npu_us: f64,
    pub host_us: f64,
    pub cpu_matmul_us: f64,
    pub other_us: f64,
    /// MACs of matmuls placed on the NPU and on the CPU.
    pub npu_macs: u64,
    pub cpu_macs: u64,
}

impl ForwardCost {
    pub fn total_us(&self) -> f64 {
        self.npu_us + self.host_us + self.cpu_matmul_us + self.other_us
    }
    /// Fraction of the matmul MACs placed on the NPU.
    pub fn npu_share(&self) -> f64 {
        let all = self.npu_macs + self.cpu_macs;
        if all == 0 {
            0.0
        } else {
            self.npu_macs as f64 / all as f64
        }
    }
}

/// The board's NPU and CPU, for estimates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardModel {
    pub npu: NpuCostParams,
    pub cpu: CpuCostParams,
    /// NPU cores used (1-3).
    pub cores: usize,
}

impl BoardModel {
    /// The fitted board with `cores` NPU cores.
    pub fn with_cores(cores: usize) -> BoardModel {
        BoardModel {
            cores: cores.clamp(1, 3),
            ..BoardModel::default()
        }
    }

    /// Where `w` should run for `m` rows under `policy`, with both times.
    pub fn place(&self, w: &MatmulWeight, m: usize, policy: Policy) -> Placement {
        let cpu_us = self.cpu.matmul_us(w.class, m, w.k, w.n, w.bytes);
        let npu_us = self
            .npu
            .matmul(&w.scheme, m, w.k, w.n, self.cores.max(1))
            .map_or(f64::INFINITY, |c| c.total_us());
        let on_npu = npu_us.is_finite()
            && match policy {
                Policy::Cpu => false,
                Policy::AllNpu => true,
                Policy::Fastest => npu_us * (1.0 + PLACEMENT_MARGIN) < cpu_us,
                Policy::MinBatch(n) => m >= n,
            };
        Placement {
            on_npu,
            npu_us,
            cpu_us,
        }
    }

    /// One forward of `m` new tokens after `past` cached ones (the head
    /// sees one row: the last token's logits).
    pub fn forward(
        &self,
        weights: &[MatmulWeight],
        layers: LayerShape,
        m: usize,
        past: usize,
        policy: Policy,
    ) -> ForwardCost {
        let rows: Vec<(&MatmulWeight, usize)> = weights
            .iter()
            .map(|w| (w, if w.head { 1 } else { m }))
            .collect();
        self.forward_rows(&rows, layers, m, past, policy)
    }

    /// One forward of `m` new tokens after `past` cached ones whose
    /// matmuls see the given rows (as a model's graph has them).
    pub fn forward_rows(
        &self,
        matmuls: &[(&MatmulWeight, usize)],
        layers: LayerShape,
        m: usize,
        past: usize,
        policy: Policy,
    ) -> ForwardCost {
        let mut f = ForwardCost::default();
        for &(w, rows) in matmuls {
            let macs = (rows * w.k * w.n) as u64;
            let p = self.place(w, rows, policy);
            if p.on_npu {
                // Infallible here: `place` only says NPU for a planned shape.
                if let Ok(c) = self
                    .npu
                    .matmul(&w.scheme, rows, w.k, w.n, self.cores.max(1))
                {
                    f.npu_us += c.npu_us;
                    f.host_us += c.host_us;
                }
                f.npu_macs += macs;
            } else {
                f.cpu_matmul_us += p.cpu_us;
                f.cpu_macs += macs;
            }
        }
        // Causal attention: token t sees past + t + 1 keys, QK and PV.
        let keys: f64 = (0..m).map(|t| (past + t + 1) as f64).sum();
        let attn_macs = 2.0 * (layers.n_head * layers.head_dim) as f64 * keys;
        let per_layer = attn_macs / (self.cpu.attn_gmacs * 1e3)
            + self.cpu.layer_us
            + (m * layers.n_embd) as f64 * self.cpu.elem_ns * 1e-3;
        f.other_us = per_layer * layers.n_layer as f64;
        f
    }

    /// Estimated llama-bench rates: pp`n_prompt` and tg`n_gen` in t/s.
    pub fn rates(
        &self,
        weights: &[MatmulWeight],
        layers: LayerShape,
        n_prompt: usize,
        n_gen: usize,
        policy: Policy,
    ) -> Estimate {
        let pp = self.forward(weights, layers, n_prompt.max(1), 0, policy);
        let decode: Vec<(&MatmulWeight, usize)> = weights.iter().map(|w| (w, 1)).collect();
        let (tg_ts, tg_npu_share) = self.decode_rate(&decode, layers, n_gen, policy);
        Estimate {
            pp_ts: n_prompt as f64 / (pp.total_us() * 1e-6),
            tg_ts,
            pp_npu_share: pp.npu_share(),
            tg_npu_share,
        }
    }

    /// Tokens per second of `n_gen` single-token forwards from an empty
    /// cache, and the NPU's share of their matmul MACs. Steps differ only
    /// in their attention length: the first, middle and last are costed
    /// and integrated (Simpson).
    pub fn decode_rate(
        &self,
        matmuls: &[(&MatmulWeight, usize)],
        layers: LayerShape,
        n_gen: usize,
        policy: Policy,
    ) -> (f64, f64) {
        if n_gen == 0 {
            return (0.0, 0.0);
        }
        let step = |past: usize| self.forward_rows(matmuls, layers, 1, past, policy);
        let (a, b, c) = (step(0), step((n_gen - 1) / 2), step(n_gen - 1));
        let us = (a.total_us() + 4.0 * b.total_us() + c.total_us()) / 6.0 * n_gen as f64;
        (n_gen as f64 / (us * 1e-6), b.npu_share())
    }
}

/// Estimated board rates of a model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    pub pp_ts: f64,
    pub tg_ts: f64,
    /// Fraction of matmul MACs on the NPU in prompt processing and decode.
    pub pp_npu_share: f64,
    pub tg_npu_share: f64,
}
