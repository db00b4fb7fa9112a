//! The NPU backend: matmuls on weights requantized for the RK3588 NPU at
//! load, run on a real NPU or on `npu-sim`; every other op stays on the CPU.
//!
//! At load ([`Backend::prepare_weight`]) each 2-D weight is dequantized to
//! f32 and requantized with the scheme of `--npu-quant` (quant::npu:
//! rotation, INT8/INT4 scales or fp16), then each K segment of the scheme is
//! packed once into device memory (`npu::PreparedWeights`, N padded to the
//! precision's row group). Per MUL_MAT the activations are rotated and
//! quantized per row (quant::npu), one NPU matmul runs per K segment with the
//! real M (decode M = 1, batches padded to 4 rows only), and the CPU applies
//! the scales. A failed submit runs that op on the CPU (the weight is still
//! mapped), with one warning; after [`MAX_FAILURES`] failures in a row the
//! backend stops trying for the session.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use quant::npu::{self as nq, Precision, Scheme};

use super::cpu::CpuBackend;
use super::{Backend, ExecCtx, Input, Node, Weight, WeightData, Weights};
use crate::graph::{Op, WeightId};
use crate::npu::ops::cache::{CacheKey, Lookup, WeightCache};
use crate::npu::ops::matmul::{Activations, Weights as NpuWeights};
use crate::npu::{MatmulOptions, MatmulOutput, MatmulType, NpuDevice, NpuError, PreparedWeights};

/// Consecutive failed submits after which the backend disables itself.
pub const MAX_FAILURES: u32 = 3;

/// Where the matmuls run (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Everything on the CPU.
    #[default]
    Cpu,
    /// The RK3588 NPU through its kernel driver (CPU when none is found).
    Npu,
    /// The bit-exact NPU simulator.
    NpuSim,
}

impl Device {
    /// Parses a `--device` value.
    pub fn parse(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "npu" => Ok(Device::Npu),
            "npu-sim" => Ok(Device::NpuSim),
            other => Err(crate::Error::InvalidArgument(format!(
                "--device {other:?}: expected cpu, npu or npu-sim"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Npu => "npu",
            Device::NpuSim => "npu-sim",
        }
    }
}

/// How weights are requantized for the NPU (`--npu-quant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NpuQuant {
    /// The default scheme of each weight's GGML type (quant::npu table).
    #[default]
    Auto,
    /// One scheme for every weight (`w16a16`, `w8a8`, `w8a8.had`, `w4a4`, ...).
    Scheme(Scheme),
}

impl NpuQuant {
    /// Parses `auto` or a quant::npu scheme name. Plain `w8a8` gets the
    /// Hadamard rotation quant::npu recommends (`w8a8.had`).
    pub fn parse(s: &str) -> crate::Result<NpuQuant> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(NpuQuant::Auto);
        }
        let name = match s {
            "w8a8" => "w8a8.had",
            "w4a4" => "w4a4.khad.wmse.amse.r8",
            "w4a8" => "w4a8.r8.zp.seg32",
            other => other,
        };
        name.parse::<Scheme>().map(NpuQuant::Scheme).map_err(|e| {
            crate::Error::InvalidArgument(format!(
                "--npu-quant {s:?}: {e} (expected auto, w16a16, w8a8, w4a4 or w4a8)"
            ))
        })
    }

    /// The scheme for a weight of `ty`.
    pub fn scheme_for(self, ty: gguf::GgmlType) -> Scheme {
        match self {
            NpuQuant::Auto => nq::default_scheme_for(ty),
            NpuQuant::Scheme(s) => s,
        }
    }
}

impl fmt::Display for NpuQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpuQuant::Auto => write!(f, "auto"),
            NpuQuant::Scheme(s) => write!(f, "{s}"),
        }
    }
}

/// One weight as the NPU holds it: the quantization (scales, rotation; the
/// packed bytes are dropped once on the device) and one device matmul per
/// K segment of the scheme.
struct NpuWeight {
    q: nq::PreparedWeight,
    ty: MatmulType,
    segments: Vec<PreparedWeights>,
}

/// The NPU backend (see the module comment).
pub struct NpuBackend {
    dev: Arc<dyn NpuDevice>,
    quant: NpuQuant,
    opts: MatmulOptions,
    weights: HashMap<u32, NpuWeight>,
    cpu: CpuBackend,
    failures: AtomicU32,
    disabled: AtomicBool,
    warned: AtomicBool,
    progress: bool,
    prepared_bytes: usize,
    cache: Option<WeightCache>,
}

impl fmt::Debug for NpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NpuBackend")
            .field("quant", &self.quant)
            .field("weights", &self.weights.len())
            .finish_non_exhaustive()
    }
}

fn npu_type(p: Precision) -> MatmulType {
    match p {
        Precision::Fp16 => MatmulType::Fp16,
        Precision::Int8 => MatmulType::Int8,
        Precision::Int4 => MatmulType::Int4,
    }
}

fn quant_err(e: nq::NpuQuantError) -> crate::Error {
    crate::Error::Npu(NpuError::BadOperands(e.to_string()))
}

impl NpuBackend {
    /// A backend on `dev` requantizing with `quant`.
    pub fn new(dev: Arc<dyn NpuDevice>, quant: NpuQuant, opts: MatmulOptions) -> NpuBackend {
        NpuBackend {
            dev,
            quant,
            opts,
            weights: HashMap::new(),
            cpu: CpuBackend::new(),
            failures: AtomicU32::new(0),
            disabled: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            progress: false,
            prepared_bytes: 0,
            cache: None,
        }
    }

    /// Reuses weights requantized by an earlier load from `cache`, and
    /// saves the ones it prepares there.
    pub fn with_weight_cache(mut self, cache: WeightCache) -> NpuBackend {
        self.cache = Some(cache);
        self
    }

    /// Prints one line per prepared weight on stderr.
    pub fn with_progress(mut self, on: bool) -> NpuBackend {
        self.progress = on;
        self
    }

    /// Weights held on the NPU.
    pub fn n_weights(&self) -> usize {
        self.weights.len()
    }

    /// Device bytes of the prepared weights.
    pub fn device_bytes(&self) -> usize {
        self.prepared_bytes
    }

    /// Whether repeated failures turned the backend off.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// `y = x W^T` for `m` rows of `x` on the NPU.
    fn npu_matmul(&self, w: &NpuWeight, x: &[f32], m: usize, y: &mut [f32]) -> crate::Result<()> {
        let q = &w.q;
        let p = q.precision();
        let a = nq::quantize_activations(x, m, q).map_err(quant_err)?;
        let (n, seg_count) = (q.n, q.segments.len());
        let mut acc = vec![0f64; m * n];
        for (si, (seg, dev_w)) in q.segments.iter().zip(&w.segments).enumerate() {
            let kl = seg.k_len;
            let packed = &a.segments[si];
            let out = match p {
                Precision::Fp16 => {
                    let codes = nq::layout::unpack_a_f16(packed, m, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Fp16(&codes), m)?
                }
                Precision::Int8 => {
                    let codes = nq::layout::unpack_a_int(p, packed, m, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Int8(&codes), m)?
                }
                Precision::Int4 => {
                    let codes = nq::layout::unpack_a_int(p, packed, m, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Int4(&codes), m)?
                }
            };
            let n_dev = dev_w.n;
            let offsets = !q.offsets.is_empty();
            for r in 0..m {
                let sa = f64::from(a.scales[si * m + r]);
                let sum = if offsets {
                    f64::from(a.sums[si * m + r])
                } else {
                    0.0
                };
                let row = &mut acc[r * n..(r + 1) * n];
                for (c, dst) in row.iter_mut().enumerate() {
                    let v = match &out {
                        MatmulOutput::I32(v) => f64::from(v[r * n_dev + c]),
                        MatmulOutput::F32(v) => f64::from(v[r * n_dev + c]),
                        MatmulOutput::F16(v) => {
                            f64::from(half::f16::from_bits(v[r * n_dev + c]).to_f32())
                        }
                    };
                    *dst += v * sa * f64::from(q.scales[si * n + c]);
                    if offsets {
                        *dst += f64::from(q.offsets[si * n + c]) * sum;
                    }
                }
            }
        }
        debug_assert!(seg_count == w.segments.len());
        let factor = f64::from(q.rotation.output_factor());
        for (d, s) in y.iter_mut().zip(&acc) {
            *d = (s * factor) as f32;
        }
        Ok(())
    }
}

impl Backend for NpuBackend {
    fn name(&self) -> &'static str {
        "NPU"
    }

    fn supports(&self, op: &Op, _weights: &Weights) -> bool {
        match op {
            Op::MulMat { w, .. } => !self.is_disabled() && self.weights.contains_key(&w.0),
            _ => false,
        }
    }

    fn prepare_weight(
        &mut self,
        id: WeightId,
        weight: &Weight,
        bytes: &[u8],
    ) -> crate::Result<bool> {
        // Only matrices kept in the mmap; vectors (norms, biases) stay on the CPU.
        if weight.rows < 2 || !matches!(weight.data, WeightData::Mapped { .. }) {
            return Ok(false);
        }
        let (k, n) = (weight.cols, weight.rows);
        if !k.is_multiple_of(32) {
            return Ok(false);
        }
        let scheme = self.quant.scheme_for(weight.ty);
        let Some(row_bytes) = weight.ty.row_bytes(k as u64) else {
            return Ok(false);
        };
        let row_bytes = row_bytes as usize;
        if bytes.len() < row_bytes * n {
            return Ok(false);
        }
        let bytes = &bytes[..row_bytes * n];
        let key = self
            .cache
            .as_ref()
            .map(|_| CacheKey::new(&weight.name, weight.ty, n, k, bytes, scheme));
        let cached = match (&self.cache, &key) {
            (Some(cache), Some(key)) => match cache.load(key) {
                Lookup::Hit(q) => Some(*q),
                Lookup::Miss | Lookup::Stale => None,
                Lookup::Invalid(why) => {
                    eprintln!("npu: weight cache entry {why}; rebuilding it");
                    None
                }
            },
            _ => None,
        };
        let from_cache = cached.is_some();
        let mut q = match cached {
            Some(q) => q,
            None => {
                let mut rows = vec![0f32; n * k];
                for (r, dst) in rows.chunks_exact_mut(k).enumerate() {
                    if nq::eval::dequantize_row(
                        weight.ty,
                        &bytes[r * row_bytes..(r + 1) * row_bytes],
                        dst,
                    )
                    .is_err()
                    {
                        return Ok(false);
                    }
                }
                let q = nq::prepare_weight(&rows, n, k, scheme, &weight.name).map_err(quant_err)?;
                if let (Some(cache), Some(key)) = (&self.cache, &key) {
                    cache.store(key, &q);
                }
                q
            }
        };
        let p = q.precision();
        let ty = npu_type(p);
        let n_dev = n.div_ceil(ty.b_group()) * ty.b_group();
        let mut segments = Vec::with_capacity(q.segments.len());
        for seg in &mut q.segments {
            let kl = seg.k_len;
            let prepared = match p {
                Precision::Fp16 => {
                    let mut codes = nq::layout::unpack_b_f16(&seg.packed, n, kl, kl);
                    codes.resize(n_dev * kl, 0);
                    PreparedWeights::new(
                        &*self.dev,
                        ty,
                        kl,
                        n_dev,
                        NpuWeights::Fp16(&codes),
                        &self.opts,
                    )
                }
                _ => {
                    let mut codes = nq::layout::unpack_b_int(p, &seg.packed, n, kl, kl);
                    codes.resize(n_dev * kl, 0);
                    let w = if p == Precision::Int4 {
                        NpuWeights::Int4(&codes)
                    } else {
                        NpuWeights::Int8(&codes)
                    };
                    PreparedWeights::new(&*self.dev, ty, kl, n_dev, w, &self.opts)
                }
            };
            match prepared {
                Ok(pw) => segments.push(pw),
                // Out of device memory or an unsupported shape: this weight
                // stays on the CPU.
                Err(e) => {
                    eprintln!("npu: {} stays on the CPU: {e}", weight.name);
                    return Ok(false);
                }
            }
            seg.packed = Vec::new();
        }
        let bytes_held: usize = segments.iter().map(|s| s.device_bytes()).sum();
        self.prepared_bytes += bytes_held;
        if self.progress {
            eprintln!(
                "npu: {:<28} {:>6} x {:<6} {:<5} -> {} ({:.1} MiB{})",
                weight.name,
                k,
                n,
                weight.ty.name(),
                scheme,
                bytes_held as f64 / (1024.0 * 1024.0),
                if from_cache { ", cached" } else { "" }
            );
        }
        self.weights.insert(id.0, NpuWeight { q, ty, segments });
        Ok(true)
    }

    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        out: &mut [f32],
        ctx: &mut ExecCtx<'_>,
    ) -> crate::Result<()> {
        let (Op::MulMat { w, .. }, Some(x)) = (&node.op, inputs[0]) else {
            return self.cpu.compute(node, inputs, out, ctx);
        };
        let Some(nw) = self.weights.get(&w.0) else {
            return self.cpu.compute(node, inputs, out, ctx);
        };
        if self.is_disabled() {
            return self.cpu.compute(node, inputs, out, ctx);
        }
        let m = x.desc.rows;
        let r = if x.desc.cols != nw.q.k || out.len() != m * nw.q.n {
            Err(crate::Error::Npu(NpuError::InvalidShape(format!(
                "{}: input {} x {} for a weight of K={} N={}",
                node.name, x.desc.rows, x.desc.cols, nw.q.k, nw.q.n
            ))))
        } else {
            self.npu_matmul(nw, x.data, m, out)
        };
        match r {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.warned.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "warning: NPU {} failed for {} ({e}); running it on the CPU",
                        nw.ty.name(),
                        node.name
                    );
                }
                if n >= MAX_FAILURES && !self.disabled.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "warning: {n} NPU failures in a row; the CPU runs every matmul from now on"
                    );
                }
                self.cpu.compute(node, inputs, out, ctx)
            }
        }
    }
}

/// Cores of the RK3588 NPU.
pub const NPU_CORES: u32 = 3;

/// Parses `--npu-cores`: a count `N` (cores `0..N`) or a comma list of
/// core numbers (`0,1,2`; one core alone as `2,`).
pub fn parse_npu_cores(s: &str) -> crate::Result<Vec<u32>> {
    let bad = |why: String| {
        crate::Error::InvalidArgument(format!(
            "--npu-cores {s:?}: {why} (a count 1-{NPU_CORES}, or a list such as 0,1,2)"
        ))
    };
    let s = s.trim();
    if !s.contains(',') {
        let n: u32 = s.parse().map_err(|_| bad("not a number".into()))?;
        if n == 0 || n > NPU_CORES {
            return Err(bad(format!("{n} cores")));
        }
        return Ok((0..n).collect());
    }
    let mut cores = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c: u32 = part
            .parse()
            .map_err(|_| bad(format!("{part:?} is not a core number")))?;
        if c >= NPU_CORES {
            return Err(bad(format!("core {c} does not exist")));
        }
        if cores.contains(&c) {
            return Err(bad(format!("core {c} given twice")));
        }
        cores.push(c);
    }
    if cores.is_empty() {
        return Err(bad("no cores".into()));
    }
    Ok(cores)
}

/// Where prepared NPU weights are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WeightCacheMode {
    /// No cache.
    #[default]
    Off,
    /// `MODEL.gguf.rknpu/` beside the model.
    BesideModel,
    /// This directory.
    Dir(std::path::PathBuf),
}

impl WeightCacheMode {
    /// `--npu-cache`: absent = off, `model` = beside the model, else a directory.
    pub fn from_arg(arg: Option<&str>) -> WeightCacheMode {
        match arg {
            None => WeightCacheMode::Off,
            Some("model") => WeightCacheMode::BesideModel,
            Some(dir) => WeightCacheMode::Dir(dir.into()),
        }
    }
}

/// NPU settings of a model load (`--npu-quant`, `--npu-cores`, the cache).
#[derive(Clone, Debug, Default)]
pub struct NpuSettings {
    pub quant: NpuQuant,
    /// Cores N is split across (empty: core 0).
    pub cores: Vec<u32>,
    pub cache: WeightCacheMode,
    /// One line per prepared weight on stderr.
    pub progress: bool,
}

/// [`backends_for`] with every NPU setting, for the model at `model`.
pub fn backends_for_model(
    device: Device,
    settings: &NpuSettings,
    model: &std::path::Path,
) -> crate::Result<Vec<Box<dyn Backend>>> {
    let mut opts = MatmulOptions::default();
    if !settings.cores.is_empty() {
        opts.cores = settings.cores.clone();
    }
    let dev: Arc<dyn NpuDevice> = match device {
        Device::Cpu => return Ok(Vec::new()),
        Device::NpuSim => Arc::new(crate::npu::SimDevice::new()),
        Device::Npu => match crate::npu::open_hardware() {
            Ok(d) => Arc::from(d),
            Err(e) => {
                eprintln!("note: --device npu: {e}; running on the CPU");
                return Ok(Vec::new());
            }
        },
    };
    let cores = dev.info().cores;
    if let Some(c) = opts.cores.iter().find(|&&c| c >= cores) {
        return Err(crate::Error::InvalidArgument(format!(
            "--npu-cores: core {c} does not exist on {} ({cores} cores)",
            dev.info().driver
        )));
    }
    let mut b = NpuBackend::new(dev, settings.quant, opts).with_progress(settings.progress);
    match &settings.cache {
        WeightCacheMode::Off => {}
        WeightCacheMode::BesideModel => b = b.with_weight_cache(WeightCache::beside_model(model)),
        WeightCacheMode::Dir(d) => b = b.with_weight_cache(WeightCache::new(d.clone())),
    }
    Ok(vec![Box::new(b)])
}

/// The backends to put before the CPU for `device`: none for the CPU; the
/// NPU backend on the simulator or the hardware. Without an NPU `--device
/// npu` says why in one line and runs on the CPU.
pub fn backends_for(
    device: Device,
    quant: NpuQuant,
    opts: &MatmulOptions,
) -> crate::Result<Vec<Box<dyn Backend>>> {
    let dev: Arc<dyn NpuDevice> = match device {
        Device::Cpu => return Ok(Vec::new()),
        Device::NpuSim => Arc::new(crate::npu::SimDevice::new()),
        Device::Npu => match crate::npu::open_hardware() {
            Ok(d) => Arc::from(d),
            Err(e) => {
                eprintln!("note: --device npu: {e}; running on the CPU");
                return Ok(Vec::new());
            }
        },
    };
    Ok(vec![Box::new(NpuBackend::new(dev, quant, opts.clone()))])
}
