//! Matmuls on an [`NpuDevice`]: tiling to the CBUF limits, packing to the
//! native layouts, command buffers, submission, CPU-side K accumulation.
//!
//! Tiling (rk3588-npu.md section 4): K is cut into segments of at most
//! `k_segment` (default 8192, as rk-llama.cpp) whose partial results the CPU
//! adds; the work is split across the requested cores by N (each core a
//! slice of the weights, as rk-llama.cpp) or, for long prompts, by M (each
//! core a slice of the rows; [`CoreSplit`]), and the cores' shares go out in
//! one submit that runs them at the same time; N is cut into tiles of at
//! most 4096 kernels; M is padded to a multiple of 4 (M = 1 stays 1) and cut
//! into chained tasks whose input fits 11 CBUF banks.

use super::arena::{WeightArena, WeightSlice};
use crate::npu::command::layout;
use crate::npu::command::task::{self, MatmulType, TaskDesc, CBUF_BANKS, CBUF_BANK_BYTES};
use crate::npu::driver::device::{
    CoreShare, Job, JobStats, NpuBuffer, NpuDevice, SubmitRecord, TaskRef,
};
use crate::npu::error::NpuError;

/// Matmul operands, row-major: A is M x K, B is N x K (C = A * B^T).
#[derive(Clone, Copy, Debug)]
pub enum Operands<'a> {
    Int8 {
        a: &'a [i8],
        b: &'a [i8],
    },
    /// FP16 bit patterns.
    Fp16 {
        a: &'a [u16],
        b: &'a [u16],
    },
    /// Values in [-8, 7].
    Int4 {
        a: &'a [i8],
        b: &'a [i8],
    },
}

/// Weight operand alone (for weights prepared once).
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    Int8(&'a [i8]),
    Fp16(&'a [u16]),
    Int4(&'a [i8]),
}

/// Activation operand alone.
#[derive(Clone, Copy, Debug)]
pub enum Activations<'a> {
    Int8(&'a [i8]),
    Fp16(&'a [u16]),
    Int4(&'a [i8]),
}

/// Result, row-major M x N.
#[derive(Clone, Debug, PartialEq)]
pub enum MatmulOutput {
    /// int8 (INT32 sums) and int4 (INT16 partial sums added in INT32).
    I32(Vec<i32>),
    /// fp16 with FP32 output.
    F32(Vec<f32>),
    /// fp16-out16: FP16 bit patterns.
    F16(Vec<u16>),
}

/// The shapes one task may take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Envelope {
    /// What public projects ran on hardware (the default): N <= 4096 per
    /// task (the RKNN matmul documentation; mtx512 tested to 4096), M per
    /// task <= 544 for int8 and <= 384 for fp16 (mtx512's largest tested
    /// tasks), K per task <= 8192 (rk-llama.cpp's split).
    #[default]
    Tested,
    /// Up to the register fields and CBUF limits: N <= 8192, M up to the
    /// data banks and the 10-bit FEATURE_GRAINS, K <= 16384. Never run on
    /// a board: for experiments (`rkinfer npu selftest|regs --envelope fields`).
    FieldLimits,
}

/// Largest N per task that public hardware runs tested.
pub const TESTED_MAX_N: usize = 4096;
/// Largest K per task that public hardware runs tested.
pub const TESTED_MAX_K: usize = 8192;

impl Envelope {
    pub fn name(self) -> &'static str {
        match self {
            Envelope::Tested => "tested",
            Envelope::FieldLimits => "fields",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Envelope::Tested, Envelope::FieldLimits]
            .into_iter()
            .find(|e| e.name() == s)
    }

    /// Largest N of one task.
    pub fn max_n(self) -> usize {
        match self {
            Envelope::Tested => TESTED_MAX_N,
            Envelope::FieldLimits => task::MAX_CHANNELS_N as usize,
        }
    }

    /// Largest K of one task.
    pub fn max_k(self) -> usize {
        match self {
            Envelope::Tested => TESTED_MAX_K,
            Envelope::FieldLimits => task::MAX_K as usize,
        }
    }

    /// Largest M of one task, before the CBUF limit of [`max_task_m`].
    pub fn max_m(self, ty: MatmulType) -> usize {
        match (self, ty) {
            (Envelope::FieldLimits, _) => usize::MAX,
            (Envelope::Tested, MatmulType::Fp16 | MatmulType::Fp16Out16) => 384,
            (Envelope::Tested, MatmulType::Int8 | MatmulType::Int4) => 544,
        }
    }
}

/// Most tasks one matmul may plan (larger shapes are refused before any
/// allocation).
pub const MAX_PLAN_TASKS: usize = 1 << 16;

/// How one matmul's work is divided among cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CoreSplit {
    /// By M when that moves fewer bytes (see [`CoreSplit::resolve`]), else by N.
    #[default]
    Auto,
    /// Each core computes a slice of the output columns (a slice of the
    /// weights; every core reads all of A).
    N,
    /// Each core computes a slice of the rows (every core reads all of B).
    M,
}

impl CoreSplit {
    /// The split a shape gets on `cores` cores. Split by N every core
    /// reads all of A and a `1/cores` slice of B; by M all of B and a
    /// slice of A: so M wins when A is clearly the larger operand (M >= 2N,
    /// a long prompt through a narrow matrix; near M = N rk-llama.cpp's N
    /// split is kept) or when N has fewer row groups than there are cores.
    /// Splitting by M needs at least 4 rows per core.
    pub fn resolve(self, m_pad: usize, n: usize, group: usize, cores: usize) -> CoreSplit {
        let m_possible = cores > 1 && m_pad >= 4 * cores;
        match self {
            CoreSplit::N => CoreSplit::N,
            CoreSplit::M if m_possible => CoreSplit::M,
            CoreSplit::M => CoreSplit::N,
            CoreSplit::Auto if m_possible && (m_pad >= 2 * n || n < group * cores) => CoreSplit::M,
            CoreSplit::Auto => CoreSplit::N,
        }
    }
}

/// Tiling and submission options.
#[derive(Clone, Debug)]
pub struct MatmulOptions {
    /// Cores the work is split across; their shares run at the same time
    /// (one submit) where the driver allows it.
    pub cores: Vec<u32>,
    /// Split by N, by M, or chosen per shape.
    pub split: CoreSplit,
    /// Largest K per task; partial sums are added on the CPU.
    pub k_segment: usize,
    pub timeout_ms: u32,
    /// Allow the experimental int4 path on real hardware.
    pub allow_experimental: bool,
    /// At most this many chained tasks per submit.
    pub max_tasks_per_submit: usize,
    /// Task shapes kept to (default: the hardware-tested envelope).
    pub envelope: Envelope,
}

impl Default for MatmulOptions {
    fn default() -> Self {
        MatmulOptions {
            cores: vec![0],
            split: CoreSplit::Auto,
            k_segment: 8192,
            timeout_ms: 6000,
            allow_experimental: false,
            max_tasks_per_submit: 256,
            envelope: Envelope::Tested,
        }
    }
}

/// Largest M of one task: 10-bit FEATURE_GRAINS (M + 1) and the input
/// fitting the data banks (at least one bank stays for weights).
pub fn max_task_m(ty: MatmulType, k: usize) -> usize {
    let row = ty.bytes_for(k as u64).max(1);
    let by_banks = ((CBUF_BANKS as u64 - 1) * CBUF_BANK_BYTES / row) as usize;
    let by_grains = task::MAX_FEATURE_GRAINS as usize - 1;
    by_banks.min(by_grains) / 4 * 4
}

/// M padded to the NPU's row alignment.
pub fn pad_m(m: usize) -> usize {
    if m == 1 {
        1
    } else {
        m.div_ceil(4).saturating_mul(4)
    }
}

/// A tile of the problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// How a matmul is cut into tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub ty: MatmulType,
    pub m: usize,
    pub m_pad: usize,
    pub k: usize,
    pub n: usize,
    pub m_tiles: Vec<Span>,
    pub k_segs: Vec<Span>,
    /// N tiles with the core each runs on (split by N).
    pub n_tiles: Vec<(Span, u32)>,
    /// How the cores share the work ([`CoreSplit::N`] or [`CoreSplit::M`]).
    pub split: CoreSplit,
    /// The core of each M tile (split by M).
    pub m_cores: Vec<u32>,
}

impl Plan {
    pub fn tasks(&self) -> usize {
        self.m_tiles.len() * self.k_segs.len() * self.n_tiles.len()
    }

    /// The core that runs M tile `mi` of N tile `ni`.
    pub fn core_of(&self, mi: usize, ni: usize) -> u32 {
        match self.split {
            CoreSplit::M => self.m_cores[mi],
            _ => self.n_tiles[ni].1,
        }
    }
}

fn split(total: usize, max: usize, align: usize) -> Vec<Span> {
    let parts = total.div_ceil(max.max(align)).max(1);
    let chunk = total.div_ceil(parts).div_ceil(align) * align;
    let mut out = Vec::new();
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        out.push(Span { start, len });
        start += len;
    }
    out
}

/// Plans a matmul of M x K by N x K.
pub fn plan(
    ty: MatmulType,
    m: usize,
    k: usize,
    n: usize,
    opts: &MatmulOptions,
) -> Result<Plan, NpuError> {
    let bad = |s: String| Err(NpuError::InvalidShape(s));
    if m == 0 || k == 0 || n == 0 {
        return bad(format!("empty matmul M={m} K={k} N={n}"));
    }
    if !k.is_multiple_of(32) {
        return bad(format!("K={k} must be a multiple of 32 (pad the operands)"));
    }
    if !n.is_multiple_of(ty.b_group()) {
        return bad(format!(
            "N={n} must be a multiple of {} for {}",
            ty.b_group(),
            ty.name()
        ));
    }
    if opts.cores.is_empty() {
        return bad("no NPU cores selected".into());
    }
    let env = opts.envelope;
    let k_max = opts
        .k_segment
        .min((CBUF_BANK_BYTES * 8 / ty.input_bits() as u64) as usize)
        .min(env.max_k())
        / 32
        * 32;
    if k_max == 0 {
        return bad(format!("K segment {} is below 32", opts.k_segment));
    }
    // Refuse absurd shapes by arithmetic, before any tile list exists
    // (an upper bound of the task count below).
    let m_per_task = max_task_m(ty, k_max).min(env.max_m(ty)).max(4);
    let task_bound = k
        .div_ceil(k_max)
        .checked_mul(pad_m(m).div_ceil(m_per_task) + opts.cores.len())
        .and_then(|t| t.checked_mul(n.div_ceil(env.max_n()) + opts.cores.len()));
    if task_bound.is_none_or(|t| t > MAX_PLAN_TASKS) {
        return bad(format!(
            "M={m} K={k} N={n} needs more than {MAX_PLAN_TASKS} NPU tasks; split the matmul"
        ));
    }
    let k_segs = split(k, k_max, 32);
    if ty == MatmulType::Fp16Out16 && k_segs.len() > 1 {
        return bad(format!(
            "K={k} needs {} segments; fp16-out16 cannot add rounded partial sums (use fp16 with FP32 output)",
            k_segs.len()
        ));
    }
    let m_pad = pad_m(m);
    let seg_max = k_segs.iter().map(|s| s.len).max().unwrap_or(32);
    let m_max = max_task_m(ty, seg_max).min(env.max_m(ty));
    if m_max == 0 {
        return bad(format!("K segment {seg_max} leaves no room for input rows"));
    }
    let group = ty.b_group();
    let cores = &opts.cores;
    let by = opts.split.resolve(m_pad, n, group, cores.len());
    // Split by M: one contiguous row range per core, each cut to the task
    // limit; by N: the rows as tasks allow, every tile on the N tile's core.
    let (m_tiles, m_cores) = if m_pad == 1 {
        (vec![Span { start: 0, len: 1 }], vec![cores[0]])
    } else if by == CoreSplit::M {
        let mut tiles = Vec::new();
        let mut owners = Vec::new();
        for (i, part) in split(m_pad, m_pad.div_ceil(cores.len()), 4)
            .iter()
            .enumerate()
        {
            for sub in split(part.len, m_max, 4) {
                tiles.push(Span {
                    start: part.start + sub.start,
                    len: sub.len,
                });
                owners.push(cores[i % cores.len()]);
            }
        }
        (tiles, owners)
    } else {
        let tiles = split(m_pad, m_max, 4);
        let owners = vec![cores[0]; tiles.len()];
        (tiles, owners)
    };
    let n_parts = if by == CoreSplit::M { 1 } else { cores.len() };
    let per_core = split(n, n.div_ceil(n_parts), group);
    let mut n_tiles = Vec::new();
    for (i, span) in per_core.iter().enumerate() {
        let core = cores[i % cores.len()];
        for sub in split(span.len, env.max_n(), group) {
            n_tiles.push((
                Span {
                    start: span.start + sub.start,
                    len: sub.len,
                },
                core,
            ));
        }
    }
    Ok(Plan {
        ty,
        m,
        m_pad,
        k,
        n,
        m_tiles,
        k_segs,
        n_tiles,
        split: by,
        m_cores,
    })
}

const REGION_ALIGN: usize = 64;

fn align_up(x: usize) -> usize {
    x.div_ceil(REGION_ALIGN) * REGION_ALIGN
}

/// Where each packed block lives inside the A, B and C buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// A block of (m tile, k seg): `a_offsets[m_tile][k_seg]`.
    pub a_offsets: Vec<Vec<usize>>,
    pub a_total: usize,
    /// B block of (n tile, k seg): `b_offsets[n_tile][k_seg]`.
    pub b_offsets: Vec<Vec<usize>>,
    pub b_total: usize,
    /// Where each K segment's whole B (all N rows) starts: B is packed
    /// once per K segment, and any N tile on a row-group boundary is a
    /// contiguous slice of it, so the tiling of N may change per call.
    pub b_segments: Vec<usize>,
}

/// Lays out the packed blocks back to back, 64-byte aligned.
pub fn regions(p: &Plan) -> Regions {
    let bits = p.ty.input_bits();
    let mut a_total = 0;
    let a_offsets = p
        .m_tiles
        .iter()
        .map(|ms| {
            p.k_segs
                .iter()
                .map(|ks| {
                    let off = a_total;
                    a_total += align_up(layout::a_bytes(ms.len, ks.len, bits));
                    off
                })
                .collect()
        })
        .collect();
    let mut b_total = 0;
    let b_segments: Vec<usize> = p
        .k_segs
        .iter()
        .map(|ks| {
            let off = b_total;
            b_total += align_up(layout::a_bytes(p.n, ks.len, bits));
            off
        })
        .collect();
    let b_offsets = p
        .n_tiles
        .iter()
        .map(|(ns, _)| {
            p.k_segs
                .iter()
                .zip(&b_segments)
                .map(|(ks, &base)| base + layout::a_bytes(ns.start, ks.len, bits))
                .collect()
        })
        .collect();
    Regions {
        a_offsets,
        a_total,
        b_offsets,
        b_total,
        b_segments,
    }
}

/// One task of a planned matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedTask {
    pub core: u32,
    pub desc: TaskDesc,
    pub m_tile: Span,
    pub n_tile: Span,
    pub k_seg: Span,
    /// Byte offset of the task's output tile in the C buffer.
    pub c_off: usize,
}

/// Every task of the plan, core by core (in the order of the options'
/// cores) and per core in submission order (N tile, then M tile, then K
/// segment), with A/B/C at the given device addresses; returns the tasks and
/// the C buffer size. Each core's output tiles are one contiguous range of
/// C ([`core_outputs`]).
pub fn plan_tasks(
    p: &Plan,
    r: &Regions,
    a_base: u32,
    b_base: u32,
    c_base: u32,
) -> Result<(Vec<PlannedTask>, usize), NpuError> {
    let addr = |base: u32, off: usize| -> Result<u32, NpuError> {
        let a = base as u64 + off as u64;
        u32::try_from(a).map_err(|_| NpuError::AddressAbove4G {
            what: "matmul operand".into(),
            addr: a,
        })
    };
    let out_bytes = p.ty.output_bytes() as usize;
    let mut c_total = 0;
    let mut tasks = Vec::with_capacity(p.tasks());
    let mut cores: Vec<u32> = Vec::new();
    for mi in 0..p.m_tiles.len() {
        for ni in 0..p.n_tiles.len() {
            let c = p.core_of(mi, ni);
            if !cores.contains(&c) {
                cores.push(c);
            }
        }
    }
    for &core in &cores {
        for (ni, (ns, _)) in p.n_tiles.iter().enumerate() {
            for (mi, ms) in p.m_tiles.iter().enumerate() {
                if p.core_of(mi, ni) != core {
                    continue;
                }
                for (ki, ks) in p.k_segs.iter().enumerate() {
                    let c_off = c_total;
                    c_total += align_up(ms.len * ns.len * out_bytes);
                    tasks.push(PlannedTask {
                        core,
                        desc: TaskDesc {
                            ty: p.ty,
                            m: ms.len as u32,
                            k: ks.len as u32,
                            n: ns.len as u32,
                            a_addr: addr(a_base, r.a_offsets[mi][ki])?,
                            b_addr: addr(b_base, r.b_offsets[ni][ki])?,
                            c_addr: addr(c_base, c_off)?,
                        },
                        m_tile: *ms,
                        n_tile: *ns,
                        k_seg: *ks,
                        c_off,
                    });
                }
            }
        }
    }
    Ok((tasks, c_total))
}

/// Per core (in task order) its tasks and the byte range of C they write:
/// `(core, task range, C range)`.
pub fn core_outputs(
    tasks: &[PlannedTask],
    out_bytes: usize,
) -> Vec<(u32, std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut out: Vec<(u32, std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let end = t.c_off + align_up(t.m_tile.len * t.n_tile.len * out_bytes);
        match out.last_mut() {
            Some((core, ts, cs)) if *core == t.core => {
                ts.end = i + 1;
                cs.end = end;
            }
            _ => out.push((t.core, i..i + 1, t.c_off..end)),
        }
    }
    out
}

/// One submit of a matmul: per core the tasks (indices into
/// [`plan_tasks`]' list) it runs; the cores run at the same time.
///
/// This is the plan the cost model reads: [`PlannedSubmit::cores`] is how
/// many cores one submit keeps busy, and the submit takes as long as its
/// slowest share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSubmit {
    pub shares: Vec<(u32, std::ops::Range<usize>)>,
}

impl PlannedSubmit {
    /// Cores this submit runs at once.
    pub fn cores(&self) -> usize {
        self.shares.len()
    }

    /// Tasks of the submit, all cores together.
    pub fn tasks(&self) -> usize {
        self.shares.iter().map(|(_, r)| r.len()).sum()
    }
}

/// Groups the tasks of [`plan_tasks`] into submits: each core's tasks cut
/// by [`job_groups`] (at most `max_tasks` per core and submit, within the
/// job time limit), and, when the cores run `together`, the i-th group of
/// every core in the i-th submit; otherwise one submit per group.
pub fn plan_submits(
    tasks: &[PlannedTask],
    max_tasks: usize,
    limit_ms: u32,
    together: bool,
) -> Vec<PlannedSubmit> {
    let per_core: Vec<(u32, Vec<std::ops::Range<usize>>)> = core_outputs(tasks, 0)
        .into_iter()
        .map(|(core, range, _)| {
            let descs: Vec<TaskDesc> = tasks[range.clone()].iter().map(|t| t.desc).collect();
            let groups = job_groups(&descs, max_tasks, limit_ms)
                .into_iter()
                .map(|g| range.start + g.start..range.start + g.end)
                .collect();
            (core, groups)
        })
        .collect();
    if !together {
        return per_core
            .into_iter()
            .flat_map(|(core, groups)| {
                groups.into_iter().map(move |g| PlannedSubmit {
                    shares: vec![(core, g)],
                })
            })
            .collect();
    }
    let rounds = per_core.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
    (0..rounds)
        .map(|i| PlannedSubmit {
            shares: per_core
                .iter()
                .filter_map(|(core, groups)| groups.get(i).map(|g| (*core, g.clone())))
                .collect(),
        })
        .collect()
}

/// The submits one matmul of M x K by N x K makes on a device where the
/// cores run `together` (`NpuDevice::runs_cores_together`), within the job
/// time limit `limit_ms`: what the cost model needs to know of a shape.
pub fn submit_plan(
    ty: MatmulType,
    m: usize,
    k: usize,
    n: usize,
    opts: &MatmulOptions,
    limit_ms: u32,
    together: bool,
) -> Result<Vec<PlannedSubmit>, NpuError> {
    let p = plan(ty, m, k, n, opts)?;
    let (tasks, _) = plan_tasks(&p, &regions(&p), 0, 0, 0)?;
    Ok(plan_submits(
        &tasks,
        opts.max_tasks_per_submit,
        limit_ms,
        together,
    ))
}

fn bits_of_weights(
    w: &Weights<'_>,
    ty: MatmulType,
    n: usize,
    k: usize,
) -> Result<Vec<u32>, NpuError> {
    let want = n * k;
    let v: Vec<u32> = match (w, ty) {
        (Weights::Int8(b), MatmulType::Int8) if b.len() == want => {
            b.iter().map(|&x| u32::from(x as u8)).collect()
        }
        (Weights::Fp16(b), MatmulType::Fp16 | MatmulType::Fp16Out16) if b.len() == want => {
            b.iter().map(|&x| u32::from(x)).collect()
        }
        (Weights::Int4(b), MatmulType::Int4) if b.len() == want => {
            if let Some(x) = b.iter().find(|x| !(-8..=7).contains(*x)) {
                return Err(NpuError::BadOperands(format!(
                    "int4 weight {x} outside [-8, 7]"
                )));
            }
            b.iter().map(|&x| u32::from(x as u8 & 0xF)).collect()
        }
        _ => {
            return Err(NpuError::BadOperands(format!(
                "{} weights of {n} x {k} expected",
                ty.name()
            )))
        }
    };
    Ok(v)
}

fn bits_of_activations(
    a: &Activations<'_>,
    ty: MatmulType,
    m: usize,
    k: usize,
) -> Result<Vec<u32>, NpuError> {
    let want = m * k;
    let v: Vec<u32> = match (a, ty) {
        (Activations::Int8(x), MatmulType::Int8) if x.len() == want => {
            x.iter().map(|&v| u32::from(v as u8)).collect()
        }
        (Activations::Fp16(x), MatmulType::Fp16 | MatmulType::Fp16Out16) if x.len() == want => {
            x.iter().map(|&v| u32::from(v)).collect()
        }
        (Activations::Int4(x), MatmulType::Int4) if x.len() == want => {
            if let Some(v) = x.iter().find(|v| !(-8..=7).contains(*v)) {
                return Err(NpuError::BadOperands(format!(
                    "int4 activation {v} outside [-8, 7]"
                )));
            }
            x.iter().map(|&v| u32::from(v as u8 & 0xF)).collect()
        }
        _ => {
            return Err(NpuError::BadOperands(format!(
                "{} activations of {m} x {k} expected",
                ty.name()
            )))
        }
    };
    Ok(v)
}

/// Pattern the output buffer is filled with before a submit. As FP32 and
/// as its FP16 halves it contains NaNs, as INT32 one odd value: a whole
/// tile of it is never a real result.
pub const SENTINEL: u32 = 0x7FBA_DBAD;

/// True when every 32-bit word of `raw` is still the [`SENTINEL`].
pub fn is_sentinel(raw: &[u8]) -> bool {
    !raw.is_empty()
        && raw
            .chunks(4)
            .all(|w| w == &SENTINEL.to_le_bytes()[..w.len()])
}

/// Hash of a command stream with its device addresses cleared (the A, B, C
/// and next-task address registers), so that runs with different
/// allocations of the same tasks hash alike.
pub fn words_hash(words: &[u64]) -> u64 {
    use crate::npu::command::regs::{RegWrite, PC_BASE_ADDRESS, TARGET_CNA, TARGET_DPU, TARGET_PC};
    let masked: Vec<u8> = words
        .iter()
        .flat_map(|&w| {
            let r = RegWrite::decode(w);
            let address = matches!(
                (r.target, r.offset),
                (TARGET_CNA, 0x1070)
                    | (TARGET_CNA, 0x1110)
                    | (TARGET_DPU, 0x4020)
                    | (TARGET_PC, PC_BASE_ADDRESS)
            );
            let w = if address {
                RegWrite { value: 0, ..r }.encode()
            } else {
                w
            };
            w.to_le_bytes()
        })
        .collect();
    super::cache::hash64(0, &masked)
}

/// Conservative time of one task: its operands streamed at 1 GB/s plus its
/// MACs at 100 G/s, about a tenth of the rates measured on boards, so that a
/// job sized by it stays well inside a driver's timeout.
pub fn task_time_bound_us(d: &TaskDesc) -> u64 {
    let (m, k, n) = (u64::from(d.m), u64::from(d.k), u64::from(d.n));
    let bytes = d.ty.bytes_for(m * k + n * k) + m * n * u64::from(d.ty.output_bytes());
    bytes / 1000 + (m * k * n) / 100_000 + 1
}

/// Splits one core's tasks into jobs of at most `max_tasks` whose summed
/// [`task_time_bound_us`] stays within half of `limit_ms` (a lone task over
/// it still gets its own job).
pub fn job_groups(
    tasks: &[TaskDesc],
    max_tasks: usize,
    limit_ms: u32,
) -> Vec<std::ops::Range<usize>> {
    let budget = u64::from(limit_ms) * 1000 / 2;
    let mut groups = Vec::new();
    let (mut start, mut spent) = (0, 0u64);
    for (i, t) in tasks.iter().enumerate() {
        let cost = task_time_bound_us(t);
        if i > start && (i - start >= max_tasks.max(1) || spent + cost > budget) {
            groups.push(start..i);
            (start, spent) = (i, 0);
        }
        spent += cost;
    }
    if start < tasks.len() {
        groups.push(start..tasks.len());
    }
    groups
}

/// A device buffer as the self-test reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BufferTrace {
    pub what: &'static str,
    pub bytes: usize,
    pub dma_addr: u32,
    pub handle: u32,
}

impl BufferTrace {
    pub fn of(what: &'static str, b: &NpuBuffer) -> Self {
        BufferTrace {
            what,
            bytes: b.len(),
            dma_addr: b.dma_addr(),
            handle: b.handle(),
        }
    }
}

/// One submitted job.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobTrace {
    /// The first core of the submit.
    pub core: u32,
    /// Every core of the submit (bit per core): they ran at the same time.
    pub core_mask: u32,
    /// (core, tasks) per core.
    pub shares: Vec<(u32, usize)>,
    pub tasks: usize,
    pub regcmd: BufferTrace,
    /// [`words_hash`] of the job's command words.
    pub words_hash: u64,
    /// The first task's words as submitted.
    pub first_words: Vec<u64>,
    pub stats: Option<JobStats>,
    pub wall_us: u64,
    pub error: Option<String>,
    /// The kernel structures as the driver left them.
    pub submit: Option<SubmitRecord>,
}

/// One task's output tile after the run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TileTrace {
    pub task: usize,
    pub core: u32,
    pub m_start: usize,
    pub m_len: usize,
    pub n_start: usize,
    pub n_len: usize,
    pub k_start: usize,
    /// Still all [`SENTINEL`]: the NPU never wrote it.
    pub untouched: bool,
}

/// What one matmul did on the device.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RunTrace {
    pub buffers: Vec<BufferTrace>,
    pub jobs: Vec<JobTrace>,
    pub tiles: Vec<TileTrace>,
}

/// Weights packed once into device memory, per (N tile, K segment).
pub struct PreparedWeights {
    pub ty: MatmulType,
    pub k: usize,
    pub n: usize,
    opts: MatmulOptions,
    /// B in device memory: a buffer of its own or a slice of an arena's.
    store: WeightSlice,
    /// The K segments the weights were packed for (M and the N tiles are
    /// planned per call).
    k_segs: Vec<Span>,
}

impl PreparedWeights {
    /// Packs B (N x K) to the native weight layout on `dev`, in a buffer
    /// of its own.
    pub fn new(
        dev: &dyn NpuDevice,
        ty: MatmulType,
        k: usize,
        n: usize,
        weights: Weights<'_>,
        opts: &MatmulOptions,
    ) -> Result<Self, NpuError> {
        Self::new_in(dev, None, ty, k, n, weights, opts)
    }

    /// [`new`](Self::new), in `arena`'s buffers when given (many weights
    /// per driver buffer, over several IOMMU domains).
    pub fn new_in(
        dev: &dyn NpuDevice,
        arena: Option<&WeightArena>,
        ty: MatmulType,
        k: usize,
        n: usize,
        weights: Weights<'_>,
        opts: &MatmulOptions,
    ) -> Result<Self, NpuError> {
        if ty.experimental() && !dev.is_simulated() && !opts.allow_experimental {
            return Err(NpuError::Unsupported(format!(
                "{} is experimental (no hardware-verified register sequence) and off on real hardware",
                ty.name()
            )));
        }
        let p = plan(ty, 1, k, n, opts)?;
        let r = regions(&p);
        let vals = bits_of_weights(&weights, ty, n, k)?;
        let bits = ty.input_bits();
        let buf = match arena {
            Some(arena) => arena.alloc(dev, r.b_total)?,
            None => WeightSlice::whole(dev.alloc(r.b_total)?),
        };
        // Per K segment all N rows, packed in slices of whole row groups
        // (each slice lands where the full packing would put it).
        let rows_per_pack = opts.envelope.max_n().max(ty.b_group());
        for (ks, &base) in p.k_segs.iter().zip(&r.b_segments) {
            for rows in split(n, rows_per_pack, ty.b_group()) {
                let mut sub = Vec::with_capacity(rows.len * ks.len);
                for row in rows.start..rows.start + rows.len {
                    sub.extend_from_slice(&vals[row * k + ks.start..row * k + ks.start + ks.len]);
                }
                let packed = layout::pack_b(&sub, rows.len, ks.len, bits, ty.b_group());
                buf.write(base + layout::a_bytes(rows.start, ks.len, bits), &packed)?;
            }
        }
        buf.sync_to_device()?;
        Ok(PreparedWeights {
            ty,
            k,
            n,
            opts: opts.clone(),
            store: buf,
            k_segs: p.k_segs,
        })
    }

    /// Device bytes held.
    pub fn device_bytes(&self) -> usize {
        self.store.len()
    }

    /// IOMMU domain of the weights: every buffer of their submits is
    /// allocated there.
    pub fn domain(&self) -> u32 {
        self.store.domain()
    }

    /// C = A * B^T for A of M x K.
    pub fn matmul(
        &self,
        dev: &dyn NpuDevice,
        a: Activations<'_>,
        m: usize,
    ) -> Result<MatmulOutput, NpuError> {
        self.matmul_traced(dev, a, m, &mut RunTrace::default())
    }

    /// [`matmul`](Self::matmul), recording every job and every output
    /// tile's verdict in `trace` (the self-test's report), also on failure.
    pub fn matmul_traced(
        &self,
        dev: &dyn NpuDevice,
        a: Activations<'_>,
        m: usize,
        trace: &mut RunTrace,
    ) -> Result<MatmulOutput, NpuError> {
        let ty = self.ty;
        let (k, n) = (self.k, self.n);
        let p = plan(ty, m, k, n, &self.opts)?;
        if p.k_segs != self.k_segs {
            return Err(NpuError::InvalidShape(
                "tiling changed since the weights were prepared".into(),
            ));
        }
        let r = regions(&p);
        let vals = bits_of_activations(&a, ty, m, k)?;
        let bits = ty.input_bits();

        // A: one block per (m tile, k seg); padded rows stay zero.
        let domain = self.store.domain();
        let mut a_buf = dev.alloc_in(r.a_total, domain)?;
        trace.buffers.push(BufferTrace::of("A", &a_buf));
        for (mi, ms) in p.m_tiles.iter().enumerate() {
            for (ki, ks) in p.k_segs.iter().enumerate() {
                let mut sub = vec![0u32; ms.len * ks.len];
                for rr in 0..ms.len {
                    let row = ms.start + rr;
                    if row < m {
                        sub[rr * ks.len..(rr + 1) * ks.len].copy_from_slice(
                            &vals[row * k + ks.start..row * k + ks.start + ks.len],
                        );
                    }
                }
                a_buf.write(
                    r.a_offsets[mi][ki],
                    &layout::pack_a(&sub, ms.len, ks.len, bits),
                )?;
            }
        }
        a_buf.sync_to_device()?;

        // Output tiles, one buffer per core (rocket orders jobs that write
        // one buffer; separate ones let the cores run together); the C
        // addresses are only known after allocating. The sentinel shows
        // afterwards which tiles the NPU never wrote (rocket's SUBMIT
        // returns 0 even for a job it rejects).
        let (mut tasks, _) = plan_tasks(&p, &r, a_buf.dma_addr(), self.store.dma_addr(), 0)?;
        let out_bytes = ty.output_bytes();
        let per_core = core_outputs(&tasks, out_bytes as usize);
        let mut c_bufs: Vec<NpuBuffer> = Vec::with_capacity(per_core.len());
        for (_, task_range, c_range) in &per_core {
            let mut c_buf = dev.alloc_in(c_range.len(), domain)?;
            trace.buffers.push(BufferTrace::of("C", &c_buf));
            c_buf.write(
                0,
                &SENTINEL.to_le_bytes().repeat(c_range.len().div_ceil(4))[..c_range.len()],
            )?;
            c_buf.sync_to_device()?;
            for t in &mut tasks[task_range.clone()] {
                t.c_off -= c_range.start;
                let addr = c_buf.dma_addr() as u64 + t.c_off as u64;
                t.desc.c_addr = u32::try_from(addr).map_err(|_| NpuError::AddressAbove4G {
                    what: "matmul output".into(),
                    addr,
                })?;
            }
            c_bufs.push(c_buf);
        }
        let c_of_task: Vec<usize> = per_core
            .iter()
            .enumerate()
            .flat_map(|(ci, (_, range, _))| range.clone().map(move |_| ci))
            .collect();

        // Submit: each core's tasks in jobs sized to the driver's job
        // timeout; the i-th job of every core in one submit (the cores run
        // together), or one core per submit where the driver cannot.
        let chaining = dev.chaining();
        let limit_ms = dev
            .job_time_limit_ms()
            .map_or(self.opts.timeout_ms, |l| l.min(self.opts.timeout_ms));
        let cores: Vec<u32> = per_core.iter().map(|(c, ..)| *c).collect();
        let together = dev.runs_cores_together(&cores);
        let submits = plan_submits(&tasks, self.opts.max_tasks_per_submit, limit_ms, together);
        for submit in &submits {
            let n_tasks = submit.tasks();
            let mut regcmd = dev.alloc_in(n_tasks * ty.task_entries() * 8, domain)?;
            let mut words = Vec::with_capacity(n_tasks * ty.task_entries());
            let mut refs = Vec::with_capacity(n_tasks);
            let mut first = 0;
            let mut ranges = Vec::with_capacity(submit.shares.len());
            // Each core's tasks are one chain of their own.
            for (core, range) in &submit.shares {
                let descs: Vec<TaskDesc> = tasks[range.clone()].iter().map(|t| t.desc).collect();
                let base = regcmd.dma_addr() as u64 + (words.len() * 8) as u64;
                let base = u32::try_from(base).map_err(|_| NpuError::AddressAbove4G {
                    what: "register commands".into(),
                    addr: base,
                })?;
                let at = words.len() * 8;
                let (w, offsets) = task::build_command_buffer(&descs, base, chaining)?;
                words.extend(w);
                refs.extend(offsets.iter().map(|&o| TaskRef {
                    offset: at + o,
                    body_entries: ty.body_entries() as u32,
                }));
                ranges.push((*core, first, range.len(), c_of_task[range.start]));
                first += range.len();
            }
            regcmd.write_words(0, &words)?;
            regcmd.sync_to_device()?;
            let outputs: Vec<[&NpuBuffer; 1]> =
                ranges.iter().map(|&(.., ci)| [&c_bufs[ci]]).collect();
            let shares: Vec<CoreShare<'_>> = ranges
                .iter()
                .zip(&outputs)
                .map(|(&(core, first, count, _), out)| CoreShare {
                    core,
                    first,
                    count,
                    outputs: out,
                })
                .collect();
            // Held for the submit only: other weights share the buffer.
            let weights = self.store.chunk().buffer();
            let job = Job {
                regcmd: &regcmd,
                tasks: &refs,
                shares: &shares,
                inputs: &[&a_buf, &weights],
                timeout_ms: self.opts.timeout_ms,
            };
            let started = std::time::Instant::now();
            let result = dev.submit(&job);
            trace.jobs.push(JobTrace {
                core: shares[0].core,
                core_mask: job.core_mask(),
                shares: shares.iter().map(|s| (s.core, s.count)).collect(),
                tasks: n_tasks,
                regcmd: BufferTrace::of("regcmd", &regcmd),
                words_hash: words_hash(&words),
                first_words: words.iter().take(ty.task_entries()).copied().collect(),
                stats: result.as_ref().ok().copied(),
                wall_us: started.elapsed().as_micros() as u64,
                error: result.as_ref().err().map(|e| e.to_string()),
                submit: dev.last_submit(),
            });
            drop(weights);
            result?;
        }
        for c_buf in &c_bufs {
            c_buf.sync_from_device()?;
        }

        // Verdicts: a tile still holding only the sentinel was never written.
        let mut raws = Vec::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            let mut raw = vec![0u8; t.m_tile.len * t.n_tile.len * out_bytes as usize];
            c_bufs[c_of_task[i]].read(t.c_off, &mut raw)?;
            trace.tiles.push(TileTrace {
                task: i,
                core: t.core,
                m_start: t.m_tile.start,
                m_len: t.m_tile.len,
                n_start: t.n_tile.start,
                n_len: t.n_tile.len,
                k_start: t.k_seg.start,
                untouched: is_sentinel(&raw),
            });
            raws.push(raw);
        }
        let untouched: Vec<usize> = trace
            .tiles
            .iter()
            .filter(|t| t.untouched)
            .map(|t| t.task)
            .collect();
        if !untouched.is_empty() {
            return Err(NpuError::OutputNotWritten {
                tasks: untouched,
                total: tasks.len(),
            });
        }

        // Gather: unpack each task's C tile and add the K segments.
        let is_int = matches!(ty, MatmulType::Int8 | MatmulType::Int4);
        let mut acc_i = vec![0i32; if is_int { m * n } else { 0 }];
        let mut acc_f = vec![0f32; if ty == MatmulType::Fp16 { m * n } else { 0 }];
        let mut out_h = vec![
            0u16;
            if ty == MatmulType::Fp16Out16 {
                m * n
            } else {
                0
            }
        ];
        for (t, raw) in tasks.iter().zip(&raws) {
            let (mt, nt) = (t.m_tile, t.n_tile);
            let tile = layout::unpack_c(raw, mt.len, nt.len, out_bytes);
            for rr in 0..mt.len.min(m.saturating_sub(mt.start)) {
                let row = mt.start + rr;
                for c in 0..nt.len {
                    let v = tile[rr * nt.len + c];
                    let dst = row * n + nt.start + c;
                    match ty {
                        MatmulType::Int8 => acc_i[dst] = acc_i[dst].wrapping_add(v as i32),
                        MatmulType::Int4 => {
                            acc_i[dst] = acc_i[dst].wrapping_add(i32::from(v as u16 as i16))
                        }
                        MatmulType::Fp16 => acc_f[dst] += f32::from_bits(v),
                        MatmulType::Fp16Out16 => out_h[dst] = v as u16,
                    }
                }
            }
        }
        Ok(match ty {
            MatmulType::Int8 | MatmulType::Int4 => MatmulOutput::I32(acc_i),
            MatmulType::Fp16 => MatmulOutput::F32(acc_f),
            MatmulType::Fp16Out16 => MatmulOutput::F16(out_h),
        })
    }
}

/// One-shot matmul: prepares B and runs A through it.
pub fn matmul(
    dev: &dyn NpuDevice,
    ty: MatmulType,
    m: usize,
    k: usize,
    n: usize,
    ops: Operands<'_>,
    opts: &MatmulOptions,
) -> Result<MatmulOutput, NpuError> {
    let (w, a) = match ops {
        Operands::Int8 { a, b } => (Weights::Int8(b), Activations::Int8(a)),
        Operands::Fp16 { a, b } => (Weights::Fp16(b), Activations::Fp16(a)),
        Operands::Int4 { a, b } => (Weights::Int4(b), Activations::Int4(a)),
    };
    let prepared = PreparedWeights::new(dev, ty, k, n, w, opts)?;
    prepared.matmul(dev, a, m)
}

/// CPU reference for int8: exact INT32 sums (wrapping like the NPU's adder).
pub fn reference_int8(a: &[i8], b: &[i8], m: usize, k: usize, n: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).fold(0i32, |s, t| {
                s.wrapping_add(i32::from(a[i * k + t]) * i32::from(b[j * k + t]))
            });
        }
    }
    c
}

/// CPU reference for int4: per K segment the INT16 result saturates (the
/// simulator's documented behaviour); segments are added in INT32.
pub fn reference_int4(
    a: &[i8],
    b: &[i8],
    m: usize,
    k: usize,
    n: usize,
    k_segs: &[Span],
) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut total = 0i32;
            for s in k_segs {
                let part: i64 = (s.start..s.start + s.len)
                    .map(|t| i64::from(a[i * k + t]) * i64::from(b[j * k + t]))
                    .sum();
                total += part.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i32;
            }
            c[i * n + j] = total;
        }
    }
    c
}

/// CPU reference for fp16 inputs: exact sums in f64, plus the sum of
/// |products| (for error bounds).
pub fn reference_fp16(a: &[u16], b: &[u16], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let af: Vec<f64> = a
        .iter()
        .map(|&h| f64::from(half::f16::from_bits(h).to_f32()))
        .collect();
    let bf: Vec<f64> = b
        .iter()
        .map(|&h| f64::from(half::f16::from_bits(h).to_f32()))
        .collect();
    let mut c = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut g) = (0f64, 0f64);
            for t in 0..k {
                let p = af[i * k + t] * bf[j * k + t];
                s += p;
                g += p.abs();
            }
            c[i * n + j] = s;
            mag[i * n + j] = g;
        }
    }
    (c, mag)
}

/// Error bound of an FP32-accumulated dot product of `k` exact products:
/// k * 2^-24 * sum |products| (sequential summation), plus an FP16 output
/// rounding of half an ulp when `out16`.
pub fn fp16_error_bound(k: usize, magnitude: f64, exact: f64, out16: bool) -> f64 {
    let acc = (k as f64) * f64::powi(2.0, -24) * magnitude;
    let round = if out16 {
        exact.abs() * f64::powi(2.0, -11) + f64::powi(2.0, -25)
    } else {
        0.0
    };
    acc * (1.0 + if out16 { f64::powi(2.0, -10) } else { 0.0 }) + round + f64::MIN_POSITIVE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_k_m_and_n() {
        let opts = MatmulOptions {
            cores: vec![0, 1, 2],
            ..Default::default()
        };
        let p = plan(MatmulType::Fp16, 100, 9216, 96, &opts).unwrap();
        assert_eq!(p.k_segs.len(), 2);
        assert!(p.k_segs.iter().all(|s| s.len % 32 == 0 && s.len <= 8192));
        assert_eq!(p.m_pad, 100);
        let mmax = max_task_m(MatmulType::Fp16, p.k_segs[0].len);
        assert!(p.m_tiles.iter().all(|t| t.len <= mmax && t.len % 4 == 0));
        assert_eq!(p.m_tiles.iter().map(|t| t.len).sum::<usize>(), 100);
        assert_eq!(p.n_tiles.len(), 3);
        assert_eq!(
            p.n_tiles.iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn fp16_out16_refuses_k_split() {
        assert!(plan(
            MatmulType::Fp16Out16,
            4,
            16384,
            16,
            &MatmulOptions::default()
        )
        .is_err());
    }
}
