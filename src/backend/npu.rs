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

use quant::npu::{self as nq, Precision};

use super::device::NpuPlacement;
use super::{Backend, BackendError, ExecCtx, Input, Node, NpuQuant, Weight, WeightData, Weights};
use crate::graph::{Op, WeightId};
use crate::npu::cost::{BoardModel, CpuWeight, MatmulWeight, Policy, PLACEMENT_MARGIN};
use crate::npu::ops::arena::WeightArena;
use crate::npu::ops::cache::{CacheKey, Lookup, WeightCache};
use crate::npu::ops::matmul::{Activations, Weights as NpuWeights};
use crate::npu::{MatmulOptions, MatmulOutput, MatmulType, NpuDevice, NpuError, PreparedWeights};

/// The block of a GGUF tensor name `blk.N.…`.
fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Consecutive failed submits after which the backend disables itself.
pub const MAX_FAILURES: u32 = 3;

/// One weight as the NPU holds it: the quantization (scales, rotation; the
/// packed bytes are dropped once on the device) and one device matmul per
/// K segment of the scheme.
struct NpuWeight {
    q: nq::PreparedWeight,
    ty: MatmulType,
    segments: Vec<PreparedWeights>,
    /// The weight as the board cost model sees it.
    cost: MatmulWeight,
    /// Fewest input rows that go to the NPU (placement).
    min_rows: usize,
}

/// Batch sizes the cost-model placement tries, smallest first.
const PLACEMENT_ROWS: [usize; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// The NPU backend (see the module comment).
pub struct NpuBackend {
    dev: Arc<dyn NpuDevice>,
    quant: NpuQuant,
    opts: MatmulOptions,
    weights: HashMap<u32, NpuWeight>,
    failures: AtomicU32,
    disabled: AtomicBool,
    warned: AtomicBool,
    progress: bool,
    prepared_bytes: usize,
    cache: Option<WeightCache>,
    /// `-ngl N`: only blocks `0..N` go to the NPU (None: every layer).
    max_layers: Option<usize>,
    /// Device buffers of the weights: many weights per buffer, over the
    /// IOMMU domains the driver has.
    arena: WeightArena,
    /// The address space filled up (said once).
    space_full: bool,
    /// Which matmuls go to the NPU (resolved: `CostModel` or `MinBatch`).
    placement: NpuPlacement,
    /// The board the placement estimates for.
    board: BoardModel,
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

fn quant_err(e: nq::NpuQuantError) -> BackendError {
    BackendError::Npu(NpuError::BadOperands(e.to_string()))
}

impl NpuBackend {
    /// A backend on `dev` requantizing with `quant`.
    pub fn new(dev: Arc<dyn NpuDevice>, quant: NpuQuant, opts: MatmulOptions) -> NpuBackend {
        NpuBackend {
            dev,
            quant,
            weights: HashMap::new(),
            failures: AtomicU32::new(0),
            disabled: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            progress: false,
            prepared_bytes: 0,
            cache: None,
            max_layers: None,
            arena: WeightArena::default(),
            space_full: false,
            placement: NpuPlacement::MinBatch(1),
            board: BoardModel::with_cores(opts.cores.len()),
            opts,
        }
    }

    /// Places matmuls by `placement` (every one by default).
    /// `DeviceDefault` means every matmul here: the device is resolved by
    /// the caller.
    pub fn with_placement(mut self, placement: NpuPlacement) -> NpuBackend {
        self.placement = match placement {
            NpuPlacement::DeviceDefault => NpuPlacement::MinBatch(1),
            p => p,
        };
        self
    }

    /// Fewest rows of `w` the NPU takes under the placement.
    fn min_rows(&self, w: &MatmulWeight) -> usize {
        match self.placement {
            NpuPlacement::MinBatch(n) => n,
            NpuPlacement::CostModel | NpuPlacement::DeviceDefault => PLACEMENT_ROWS
                .iter()
                .copied()
                .find(|&m| self.board.place(w, m, Policy::Fastest).on_npu)
                .unwrap_or(usize::MAX),
        }
    }

    /// Packs the weights into driver buffers of at most `cap` bytes.
    pub fn with_chunk_cap(mut self, cap: usize) -> NpuBackend {
        self.arena = WeightArena::new(cap);
        self
    }

    /// The weights' device buffers (one per group of weights, not per
    /// tensor) and the IOMMU domains they fill.
    pub fn weight_buffers(&self) -> (usize, u32) {
        (self.arena.chunks(), self.arena.domains_used())
    }

    /// Offloads only the matmuls of blocks `0..n` (llama.cpp's `-ngl`);
    /// matrices outside the blocks (the output projection) go to the NPU
    /// when `n > 0`.
    pub fn with_max_layers(mut self, n: Option<usize>) -> NpuBackend {
        self.max_layers = n;
        self
    }

    /// Whether `-ngl` lets the weight `name` onto the NPU.
    fn layer_offloaded(&self, name: &str) -> bool {
        let Some(n) = self.max_layers else {
            return true;
        };
        match block_index(name) {
            Some(i) => i < n,
            None => n > 0,
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

    /// Packs every K segment of `q` into device memory (N padded to the
    /// precision's row group), dropping the host copies.
    fn upload(
        &self,
        q: &mut nq::PreparedWeight,
    ) -> Result<(MatmulType, Vec<PreparedWeights>), NpuError> {
        let (p, n) = (q.precision(), q.n);
        let ty = npu_type(p);
        let n_dev = n.div_ceil(ty.b_group()) * ty.b_group();
        let mut segments = Vec::with_capacity(q.segments.len());
        for seg in &mut q.segments {
            let kl = seg.k_len;
            // The codes live here while the weights borrow them.
            let (codes16, codes8): (Vec<u16>, Vec<i8>);
            let w = match p {
                Precision::Fp16 => {
                    let mut codes = nq::layout::unpack_b_f16(&seg.packed, n, kl, kl);
                    codes.resize(n_dev * kl, 0);
                    codes16 = codes;
                    NpuWeights::Fp16(&codes16)
                }
                _ => {
                    let mut codes = nq::layout::unpack_b_int(p, &seg.packed, n, kl, kl);
                    codes.resize(n_dev * kl, 0);
                    codes8 = codes;
                    if p == Precision::Int4 {
                        NpuWeights::Int4(&codes8)
                    } else {
                        NpuWeights::Int8(&codes8)
                    }
                }
            };
            let arena = Some(&self.arena);
            let prepared = PreparedWeights::new_in(&*self.dev, arena, ty, kl, n_dev, w, &self.opts);
            segments.push(prepared?);
            seg.packed = Vec::new();
        }
        Ok((ty, segments))
    }

    /// `y = x W^T` for `m` rows of `x` on the NPU.
    fn npu_matmul(&self, w: &NpuWeight, x: &[f32], m: usize, y: &mut [f32]) -> super::Result<()> {
        let q = &w.q;
        let p = q.precision();
        let a = nq::quantize_activations(x, m, q).map_err(quant_err)?;
        let (n, seg_count) = (q.n, q.segments.len());
        // Two-digit (`hilo`) activations: the high digits of every row,
        // then the low ones, multiplied as one A of 2m rows.
        let rows = a.digits * m;
        let base = f64::from(q.scheme.act_digit_base());
        let mut acc = vec![0f64; m * n];
        for (si, (seg, dev_w)) in q.segments.iter().zip(&w.segments).enumerate() {
            let kl = seg.k_len;
            let packed = &a.segments[si];
            let out = match p {
                Precision::Fp16 => {
                    let codes = nq::layout::unpack_a_f16(packed, rows, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Fp16(&codes), rows)?
                }
                Precision::Int8 => {
                    let codes = nq::layout::unpack_a_int(p, packed, rows, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Int8(&codes), rows)?
                }
                Precision::Int4 => {
                    let codes = nq::layout::unpack_a_int(p, packed, rows, kl, kl);
                    dev_w.matmul(&*self.dev, Activations::Int4(&codes), rows)?
                }
            };
            let n_dev = dev_w.n;
            let at = |r: usize, c: usize| match &out {
                MatmulOutput::I32(v) => f64::from(v[r * n_dev + c]),
                MatmulOutput::F32(v) => f64::from(v[r * n_dev + c]),
                MatmulOutput::F16(v) => f64::from(half::f16::from_bits(v[r * n_dev + c]).to_f32()),
            };
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
                    let v = if a.digits == 2 {
                        base * at(r, c) + at(m + r, c)
                    } else {
                        at(r, c)
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

    fn supports_rows(&self, op: &Op, rows: usize, weights: &Weights) -> bool {
        let Op::MulMat { w, .. } = op else {
            return false;
        };
        self.supports(op, weights) && self.weights.get(&w.0).is_some_and(|nw| rows >= nw.min_rows)
    }

    fn placement_note(&self, op: &Op, rows: usize, _weights: &Weights) -> Option<String> {
        let Op::MulMat { w, .. } = op else {
            return None;
        };
        let nw = self.weights.get(&w.0)?;
        let p = self.board.place(&nw.cost, rows, Policy::Fastest);
        let estimate = format!(
            "board estimate {:.0} us NPU vs {:.0} us CPU, {} NPU cores",
            p.npu_us, p.cpu_us, self.board.cores
        );
        let why = if self.is_disabled() {
            "the NPU turned off after failures".to_string()
        } else {
            match self.placement {
                NpuPlacement::MinBatch(1) => "every matmul on the NPU".to_string(),
                NpuPlacement::MinBatch(n) if rows >= n => format!("--npu-min-batch {n}"),
                NpuPlacement::MinBatch(n) => format!("below --npu-min-batch {n}"),
                _ if p.on_npu => {
                    format!("the NPU wins by more than {:.0}%", 100.0 * PLACEMENT_MARGIN)
                }
                _ => format!("the NPU does not win by {:.0}%", 100.0 * PLACEMENT_MARGIN),
            }
        };
        Some(format!("{why}; {estimate}"))
    }

    fn prepare_weight(
        &mut self,
        id: WeightId,
        weight: &Weight,
        bytes: &[u8],
    ) -> super::Result<bool> {
        if !self.layer_offloaded(&weight.name) {
            return Ok(false);
        }
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
                    log::warn!("npu: weight cache entry {why}; rebuilding it");
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
        let (ty, segments) = match self.upload(&mut q) {
            Ok(u) => u,
            // The address space (every IOMMU domain) is full: said once for
            // all the weights that stay on the CPU.
            Err(NpuError::OutOfDeviceMemory { .. }) => {
                if !self.space_full {
                    let info = self.dev.info();
                    log::warn!(
                        "npu: the NPU address space is full ({} MiB of weights in {} IOMMU domain(s) of {} MiB); {} and every later weight that does not fit stay on the CPU",
                        self.prepared_bytes >> 20,
                        self.arena.domains_used(),
                        info.address_space >> 20,
                        weight.name
                    );
                    self.space_full = true;
                }
                return Ok(false);
            }
            // An unsupported shape: this weight stays on the CPU.
            Err(e) => {
                log::warn!("npu: {} stays on the CPU: {e}", weight.name);
                return Ok(false);
            }
        };
        let bytes_held: usize = segments.iter().map(|s| s.device_bytes()).sum();
        self.prepared_bytes += bytes_held;
        if self.progress {
            log::info!(
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
        let cost = MatmulWeight {
            name: weight.name.clone(),
            k,
            n,
            class: CpuWeight::of(weight.ty),
            bytes: bytes.len() as u64,
            scheme,
            head: false,
        };
        let min_rows = self.min_rows(&cost);
        self.weights.insert(
            id.0,
            NpuWeight {
                q,
                ty,
                segments,
                cost,
                min_rows,
            },
        );
        Ok(true)
    }

    fn compute(
        &self,
        node: &Node,
        inputs: [Option<Input<'_>>; 2],
        out: &mut [f32],
        _ctx: &mut ExecCtx<'_>,
    ) -> super::Result<()> {
        // Anything but a matmul on a weight held here goes to the fallback.
        let (Op::MulMat { w, .. }, Some(x)) = (&node.op, inputs[0]) else {
            return Err(BackendError::Declined);
        };
        let Some(nw) = self.weights.get(&w.0) else {
            return Err(BackendError::Declined);
        };
        if self.is_disabled() {
            return Err(BackendError::Declined);
        }
        let m = x.desc.rows;
        let r = if x.desc.cols != nw.q.k || out.len() != m * nw.q.n {
            Err(BackendError::Npu(NpuError::InvalidShape(format!(
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
                    log::warn!(
                        "NPU {} failed for {} ({e}); running it on the CPU",
                        nw.ty.name(),
                        node.name
                    );
                }
                // One warning per run is the user's line; turning off is detail.
                if n >= MAX_FAILURES && !self.disabled.swap(true, Ordering::Relaxed) {
                    log::info!("{n} NPU failures in a row; the CPU runs every matmul from now on");
                }
                // The executor runs the op on the CPU.
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight under `scheme` through the backend on npu-sim gives the
    /// bits of quant::npu's scalar reference (quantize, plain-loop integer
    /// matmul, dequantize).
    fn backend_equals_reference(scheme: &str, m: usize) {
        let (k, n) = (96, 40);
        let rows: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 11.0 + if i % 29 == 0 { 9.0 } else { 0.0 })
            .collect();
        let scheme: nq::Scheme = scheme.parse().expect("scheme");
        let q = nq::prepare_weight(&rows, n, k, scheme, "blk.0.test.weight").expect("prepare");
        let (want, _) = nq::matmul_reference(&q, &x, m).expect("reference");
        let backend = NpuBackend::new(
            Arc::new(crate::npu::SimDevice::new()),
            NpuQuant::Scheme(scheme),
            MatmulOptions::default(),
        );
        let mut q_dev = q.clone();
        let (ty, segments) = backend.upload(&mut q_dev).expect("upload");
        let w = NpuWeight {
            cost: MatmulWeight {
                name: q.name.clone(),
                k,
                n,
                class: CpuWeight::F16,
                bytes: 0,
                scheme,
                head: false,
            },
            q: q_dev,
            ty,
            segments,
            min_rows: 1,
        };
        let mut got = vec![0f32; m * n];
        backend.npu_matmul(&w, &x, m, &mut got).expect("npu matmul");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{scheme} m={m}");
    }

    #[test]
    fn two_digit_activations_are_bit_exact_against_the_reference() {
        for m in [1, 3, 8] {
            backend_equals_reference("w8a8.had.hilo", m);
            backend_equals_reference("w4a4.r8.hilo.zp.seg32", m);
            backend_equals_reference("w8a8.had", m);
        }
    }
}
