//! `npu-sim`: a software model of the RK3588 NPU running the same register
//! command buffers as the hardware.
//!
//! The simulator reads the u64 command entries from device memory, keeps
//! the per-task register file, and at the operation-enable entry decodes the
//! registers with its own interpretation of each field (it shares no code
//! with the builder's formulas), rejects every value it does not understand
//! with the register's name, and computes the matmul from the native layouts
//! at the programmed addresses:
//!
//! - INT8 x INT8: products summed exactly in INT32 (wrapping; |sum| <= K*2^14
//!   cannot overflow for K <= 32768).
//! - INT4 x INT4 -> INT16: products summed exactly in a wide accumulator and
//!   **saturated** to [-32768, 32767] when the DPU writes the INT16 result.
//!   This models the NVDLA-style output converter; it is an assumption, not
//!   a hardware measurement (no public int4 register sequence exists).
//! - FP16 x FP16: each product is exact in FP32 (11 + 11 mantissa bits) and
//!   the products are summed in FP32 in increasing k; the result is written
//!   as FP32 or rounded to FP16 (round to nearest even).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::device::{
    check_dma_addr, BufferOps, DeviceInfo, Job, JobStats, NpuBuffer, NpuDevice, RawBuffer, SyncDir,
};
use super::error::NpuError;
use super::layout;
use super::mem::{AddressSpace, Mapping};
use super::regs::{self, RegWrite, TARGET_CNA, TARGET_CORE, TARGET_DPU};
use super::sim_kernels;
use super::task::Chaining;

/// Faults the simulator can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The job never signals completion.
    Timeout,
    /// The job fails (e.g. an IOMMU fault).
    Fail,
}

/// Fault injection: the next `count` submits (or all, with `u32::MAX`)
/// produce `fault`.
#[derive(Debug, Default)]
pub struct FaultInjector {
    mode: AtomicU8,
    remaining: AtomicU32,
}

impl FaultInjector {
    pub fn set(&self, fault: Fault, count: u32) {
        let code = match fault {
            Fault::None => 0,
            Fault::Timeout => 1,
            Fault::Fail => 2,
        };
        self.remaining.store(count, Ordering::SeqCst);
        self.mode.store(code, Ordering::SeqCst);
    }

    /// Consumes one pending fault, if any.
    pub fn take(&self) -> Fault {
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == 0 {
            return Fault::None;
        }
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            return Fault::None;
        }
        if left != u32::MAX {
            self.remaining.store(left - 1, Ordering::SeqCst);
        }
        if mode == 1 {
            Fault::Timeout
        } else {
            Fault::Fail
        }
    }
}

/// The NPU model: device memory plus the command-stream interpreter.
pub struct SimCore {
    pub mem: Arc<AddressSpace>,
    pub faults: FaultInjector,
}

/// Where a task's tail points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailLink {
    pub next_addr: u32,
    pub next_amount: u32,
}

/// Input / output precision as the simulator decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimIn {
    Int8,
    Fp16,
    Int4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimOut {
    Int32,
    Fp32,
    Fp16,
    Int16,
}

impl SimIn {
    fn bits(self) -> u32 {
        match self {
            SimIn::Int8 => 8,
            SimIn::Fp16 => 16,
            SimIn::Int4 => 4,
        }
    }
    /// Kernel group size of the weight layout.
    fn group(self) -> usize {
        match self {
            SimIn::Int8 => 32,
            SimIn::Fp16 => 16,
            SimIn::Int4 => 64,
        }
    }
}

impl SimOut {
    fn bytes(self) -> u32 {
        match self {
            SimOut::Int32 | SimOut::Fp32 => 4,
            SimOut::Fp16 | SimOut::Int16 => 2,
        }
    }
}

/// The decoded operation of one task.
#[derive(Clone, Copy, Debug)]
struct Op {
    input: SimIn,
    output: SimOut,
    m: usize,
    k: usize,
    n: usize,
    a: u32,
    b: u32,
    c: u32,
}

/// Register file of the task being parsed: (target, offset) -> value.
struct RegFile {
    task: usize,
    vals: HashMap<(u16, u16), u32>,
}

impl RegFile {
    fn get(&self, target: u16, offset: u16) -> Result<u32, NpuError> {
        self.vals
            .get(&(target, offset))
            .copied()
            .ok_or_else(|| NpuError::BadRegister {
                task: self.task,
                block: regs::block_name(target),
                name: regs::register_name(target, offset).unwrap_or("?"),
                offset,
                value: 0,
                reason: "not programmed in this task".into(),
            })
    }

    fn bad(&self, target: u16, offset: u16, reason: impl Into<String>) -> NpuError {
        NpuError::BadRegister {
            task: self.task,
            block: regs::block_name(target),
            name: regs::register_name(target, offset).unwrap_or("?"),
            offset,
            value: self.vals.get(&(target, offset)).copied().unwrap_or(0),
            reason: reason.into(),
        }
    }

    /// Requires `target`/`offset` to hold exactly `want`.
    fn expect(&self, target: u16, offset: u16, want: u32, meaning: &str) -> Result<(), NpuError> {
        let v = self.get(target, offset)?;
        if v == want {
            Ok(())
        } else {
            Err(self.bad(target, offset, format!("expected {want:#x} ({meaning})")))
        }
    }
}

const CNA: u16 = TARGET_CNA;
const CORE: u16 = TARGET_CORE;
const DPU: u16 = TARGET_DPU;

/// Registers the simulator requires to be zero (features it does not model).
const ZERO_REGS: &[(u16, u16, &str)] = &[
    (CNA, 0x1060, "no FC mode"),
    (CNA, 0x1064, "no FC mode"),
    (CNA, 0x1068, "no padding"),
    (CNA, 0x1074, "no FC mode"),
    (CNA, 0x1100, "no weight decompression"),
    (CNA, 0x1104, "no weight decompression"),
    (CNA, 0x1180, "no input conversion"),
    (CNA, 0x1184, "no padding"),
    (CORE, 0x301C, "no clipping"),
    (CORE, 0x3030, "unmodelled"),
    (DPU, 0x4014, "no offset"),
    (DPU, 0x4030, "output width 1"),
    (DPU, 0x4038, "no notch"),
    (DPU, 0x4044, "BS bypassed"),
    (DPU, 0x4048, "BS bypassed"),
    (DPU, 0x404C, "BS bypassed"),
    (DPU, 0x4054, "BS bypassed"),
    (DPU, 0x4064, "BN bypassed"),
    (DPU, 0x4068, "BN bypassed"),
    (DPU, 0x406C, "BN bypassed"),
    (DPU, 0x4074, "no EW offset"),
    (DPU, 0x407C, "no EW relu"),
    (DPU, 0x4080, "no output offset"),
    (DPU, 0x4088, "no output shift"),
    (DPU, 0x40C4, "unmodelled"),
];

impl SimCore {
    pub fn new(mem: Arc<AddressSpace>) -> Self {
        SimCore {
            mem,
            faults: FaultInjector::default(),
        }
    }

    /// Vendor PC mode: runs `task_number` tasks starting at `first_addr`
    /// with `amount`, following the tails. Returns the tasks completed.
    pub fn run_pc_chain(
        &self,
        first_addr: u32,
        amount: u32,
        task_number: u32,
    ) -> Result<u32, NpuError> {
        let (mut addr, mut amount) = (first_addr, amount);
        for i in 0..task_number as usize {
            let link = self.run_task(i, addr, regs::entries_for_amount(amount))?;
            if i + 1 < task_number as usize {
                if link.next_addr == 0 || link.next_amount == 0 {
                    return Err(NpuError::BadCommandStream {
                        task: i,
                        reason: format!(
                            "the chain ends after task {i} but the submit asked for {task_number} tasks"
                        ),
                    });
                }
                addr = link.next_addr;
                amount = link.next_amount;
            }
        }
        Ok(task_number)
    }

    /// Runs the task whose `entries` u64 command words start at `addr`.
    pub fn run_task(&self, task: usize, addr: u32, entries: usize) -> Result<TailLink, NpuError> {
        if !addr.is_multiple_of(16) {
            return Err(NpuError::BadCommandStream {
                task,
                reason: format!("register commands at {addr:#x} are not 16-byte aligned"),
            });
        }
        let mut bytes = vec![0u8; entries * 8];
        self.mem
            .read(addr as u64, &mut bytes, "register commands")?;
        let mut file = RegFile {
            task,
            vals: HashMap::new(),
        };
        let mut link = TailLink {
            next_addr: 0,
            next_amount: 0,
        };
        let mut marker = false;
        let mut done = false;
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            let word = u64::from_le_bytes(le);
            if word == 0 {
                continue; // padding / "no next task"
            }
            let w = RegWrite::decode(word);
            let bad = |reason: String| NpuError::BadRegister {
                task,
                block: regs::block_name(w.target),
                name: regs::register_name(w.target, w.offset).unwrap_or("?"),
                offset: w.offset,
                value: w.value,
                reason,
            };
            if done {
                return Err(bad(format!("entry {i} follows the operation enable")));
            }
            match w.target {
                regs::TARGET_PC => match w.offset {
                    regs::PC_BASE_ADDRESS => link.next_addr = w.value,
                    regs::PC_REGISTER_AMOUNTS => link.next_amount = w.value,
                    _ => return Err(bad("PC register not used by matmul tasks".into())),
                },
                regs::TARGET_MARKER => {
                    if w.offset != 0 || w.value != 0 {
                        return Err(bad("the marker entry must be 0x0041000000000000".into()));
                    }
                    marker = true;
                }
                regs::TARGET_OP_EN => {
                    if w.offset != regs::PC_OPERATION_ENABLE {
                        return Err(bad("operation enable must write offset 0x0008".into()));
                    }
                    if !marker {
                        return Err(bad(
                            "operation enable without the preceding 0x0041 marker".into()
                        ));
                    }
                    let want = regs::OP_EN_PC | regs::OP_EN_CNA | regs::OP_EN_DPU;
                    if w.value != want {
                        return Err(bad(format!(
                            "the simulator models CNA|CORE|DPU tasks only (value {want:#x})"
                        )));
                    }
                    let op = decode(&file)?;
                    self.execute(task, &op)?;
                    done = true;
                }
                CNA | CORE | DPU => {
                    if !regs::offset_matches_target(w.target, w.offset)
                        || regs::register_name(w.target, w.offset).is_none()
                    {
                        return Err(bad("unknown register for this block".into()));
                    }
                    file.vals.insert((w.target, w.offset), w.value);
                }
                _ => return Err(bad("block not modelled by the simulator".into())),
            }
        }
        if !done {
            return Err(NpuError::BadCommandStream {
                task,
                reason: format!("no operation-enable entry in the {entries} entries fetched"),
            });
        }
        Ok(link)
    }

    fn execute(&self, task: usize, op: &Op) -> Result<(), NpuError> {
        let (m, k, n) = (op.m, op.k, op.n);
        let bits = op.input.bits();
        let mut a = vec![0u8; layout::a_bytes(m, k, bits)];
        let mut b = vec![0u8; layout::a_bytes(n, k, bits)];
        self.mem
            .read(op.a as u64, &mut a, &format!("task {task} input (A)"))?;
        self.mem
            .read(op.b as u64, &mut b, &format!("task {task} weights (B)"))?;
        let group = op.input.group();
        let out_bytes = op.output.bytes();
        let c_atom = (16 / out_bytes) as usize;
        let mut c = vec![0u8; m * n * out_bytes as usize];
        // Decoded operands (sim_kernels: same sums as the plain loops of
        // the module comment, in vector lanes).
        match op.input {
            SimIn::Int8 | SimIn::Int4 => {
                let val = |v: u32| -> i32 {
                    if bits == 4 {
                        i32::from(layout::nibble_to_i8(v))
                    } else {
                        i32::from(v as u8 as i8)
                    }
                };
                let av = sim_kernels::decode_a(&a, m, k, bits, val);
                let bv = sim_kernels::decode_b_panels(&b, n, k, bits, group, val);
                drop((a, b));
                // |a*b| <= 2^14 (int8) or 2^6 (int4) and K <= 2^15 (int8)
                // or 2^16 (int4, one CBUF bank row): INT32 sums are exact
                // for int4; int8 wraps like the hardware's adder.
                let mut sums = vec![0i32; m * n];
                sim_kernels::matmul(&av, &bv, m, k, n, &mut sums);
                for mi in 0..m {
                    for ni in 0..n {
                        let s = sums[mi * n + ni];
                        let idx = layout::c_index(mi, ni, m, c_atom);
                        match op.output {
                            SimOut::Int32 => layout::set_bits(&mut c, idx, 32, s as u32),
                            _ => {
                                let sat = s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                                layout::set_bits(&mut c, idx, 16, u32::from(sat as u16));
                            }
                        }
                    }
                }
            }
            SimIn::Fp16 => {
                let lut = f16_table();
                let conv = |v: u32| lut[v as usize & 0xFFFF];
                let av = sim_kernels::decode_a(&a, m, k, bits, conv);
                let bv = sim_kernels::decode_b_panels(&b, n, k, bits, group, conv);
                drop((a, b));
                let mut sums = vec![0f32; m * n];
                sim_kernels::matmul(&av, &bv, m, k, n, &mut sums);
                for mi in 0..m {
                    for ni in 0..n {
                        let s = sums[mi * n + ni];
                        let idx = layout::c_index(mi, ni, m, c_atom);
                        if op.output == SimOut::Fp16 {
                            layout::set_bits(
                                &mut c,
                                idx,
                                16,
                                u32::from(half::f16::from_f32(s).to_bits()),
                            );
                        } else {
                            layout::set_bits(&mut c, idx, 32, s.to_bits());
                        }
                    }
                }
            }
        }
        self.mem
            .write(op.c as u64, &c, &format!("task {task} output (C)"))
    }
}

/// Decodes the register file into an operation, checking every register.
fn decode(f: &RegFile) -> Result<Op, NpuError> {
    // Every register the matmul task uses must be programmed.
    for (t, o, _) in regs::REGISTER_NAMES {
        if matches!(*t, CNA | CORE | DPU) && *o != 0x1004 {
            f.get(*t, *o)?;
        }
    }
    f.expect(DPU, 0x4004, 0xE, "DPU pointer mode")?;

    // Precision: CNA CONV_CON1 (proc bits 9..7, input bits 6..4).
    let con1 = f.get(CNA, 0x100C)?;
    let (proc_, inp) = ((con1 >> 7) & 7, (con1 >> 4) & 7);
    if con1 & !0x3F0 != 0 || proc_ != inp {
        return Err(f.bad(
            CNA,
            0x100C,
            "only equal processing and input precision fields are modelled",
        ));
    }
    let input = match inp {
        0 => SimIn::Int8,
        2 => SimIn::Fp16,
        6 => SimIn::Int4,
        _ => {
            return Err(f.bad(
                CNA,
                0x100C,
                format!("input precision code {inp} not modelled"),
            ))
        }
    };
    let misc = f.get(CORE, 0x3010)?;
    let want_misc = (inp << 8) | u32::from(input == SimIn::Fp16);
    if misc != want_misc {
        return Err(f.bad(
            CORE,
            0x3010,
            format!("expected precision {inp} and qd_en for fp16 ({want_misc:#x})"),
        ));
    }
    let fmt = f.get(DPU, 0x4010)?;
    let (out_code, fin, fproc) = (fmt >> 29, (fmt >> 26) & 7, fmt & 0x3FF_FFFF);
    if fin != inp || fproc != inp {
        return Err(f.bad(
            DPU,
            0x4010,
            "input/processing precision differ from CNA CONV_CON1",
        ));
    }
    let output = match (input, out_code) {
        (SimIn::Int8, 4) => SimOut::Int32,
        (SimIn::Fp16, 5) => SimOut::Fp32,
        (SimIn::Fp16, 2) => SimOut::Fp16,
        (SimIn::Int4, 1) => SimOut::Int16,
        _ => {
            return Err(f.bad(
                DPU,
                0x4010,
                format!("output precision {out_code} for input {inp} not modelled"),
            ))
        }
    };

    // Geometry.
    let ds0 = f.get(CNA, 0x1020)?;
    if ds0 >> 16 != 1 || ds0 & 0xF800 != 0 {
        return Err(f.bad(CNA, 0x1020, "input width must be 1 and height fit 11 bits"));
    }
    let m = (ds0 & 0x7FF) as usize;
    if m == 0 || (m != 1 && !m.is_multiple_of(4)) {
        return Err(f.bad(
            CNA,
            0x1020,
            format!("height M={m} must be 1 or a multiple of 4"),
        ));
    }
    let ds1 = f.get(CNA, 0x1024)?;
    let k = (ds1 & 0xFFFF) as usize;
    if k == 0 || !k.is_multiple_of(32) || (ds1 >> 16) as usize != k - 1 {
        return Err(f.bad(
            CNA,
            0x1024,
            "channels must be a multiple of 32 with real channels - 1 above",
        ));
    }
    let ws2 = f.get(CNA, 0x1038)?;
    let n = (ws2 & 0x3FFF) as usize;
    if ws2 & !0x3FFF != (1 << 24) | (1 << 16) || n == 0 || !n.is_multiple_of(input.group()) {
        return Err(f.bad(
            CNA,
            0x1038,
            format!("1x1 kernels, kernel count a multiple of {}", input.group()),
        ));
    }
    let (mu, ku, nu) = (m as u32, k as u32, n as u32);
    let row_bytes = ku * input.bits() / 8;
    f.expect(
        CNA,
        0x1010,
        (mu + 1) << 4,
        "feature grains M+1, one kernel group",
    )?;
    f.expect(CNA, 0x1014, 0x9, "stride 1x1")?;
    f.expect(CNA, 0x1028, 1, "output width 1")?;
    f.expect(CNA, 0x102C, mu, "output atomics = M")?;
    f.expect(CNA, 0x1030, nu * row_bytes, "total weight bytes")?;
    f.expect(CNA, 0x1034, row_bytes, "bytes per kernel")?;
    let cbuf = f.get(CNA, 0x1040)?;
    let (data_banks, weight_banks) = (cbuf & 0xF, (cbuf >> 4) & 0xF);
    if cbuf >> 8 != 0 || data_banks + weight_banks != 12 || weight_banks == 0 {
        return Err(f.bad(CNA, 0x1040, "data + weight banks must be the 12 CBUF banks"));
    }
    if (data_banks as u64) * 32768 < (mu * row_bytes) as u64 {
        return Err(f.bad(
            CNA,
            0x1040,
            format!(
                "{} input bytes do not fit {data_banks} banks",
                mu * row_bytes
            ),
        ));
    }
    if row_bytes > 32768 {
        return Err(f.bad(CNA, 0x1034, "a kernel row must fit one 32 KB bank"));
    }
    f.expect(
        CNA,
        0x1044,
        row_bytes.div_ceil(64),
        "64-byte CBUF entries per row",
    )?;
    f.expect(CNA, 0x104C, 0xB, "input conversion bypassed")?;
    for o in [0x1050, 0x1054, 0x1058, 0x105C] {
        f.expect(CNA, o, 1 << 16, "conversion scale 1")?;
    }
    f.expect(CNA, 0x1078, 0x000F_000F, "DMA burst lengths")?;
    f.expect(CNA, 0x107C, 4, "line stride")?;
    let surf = if m >= 4 {
        4 * (mu / 4 - 1)
    } else {
        0x0FFF_FFFD
    };
    f.expect(CNA, 0x1080, surf, "surface stride for M")?;
    f.expect(CNA, 0x1084, (1 << 16) | mu, "FC data width 1, height M")?;
    f.expect(CNA, 0x1088, ku, "FC channels K")?;
    for o in (0..16u16).map(|i| 0x1140 + 4 * i) {
        f.expect(CNA, o, 0, "no weight decompression")?;
    }
    for (t, o, why) in ZERO_REGS {
        f.expect(*t, *o, 0, why)?;
    }
    f.expect(CORE, 0x3014, (mu - 1) << 16, "output height M-1, width 0")?;
    f.expect(CORE, 0x3018, nu - 1, "output channels N-1")?;
    f.expect(DPU, 0x400C, 0x1E4, "burst 16, output mode 2")?;
    f.expect(DPU, 0x4024, mu << 4, "M rows of 16-byte atoms per surface")?;
    f.expect(DPU, 0x4034, mu - 1, "cube height M-1")?;
    f.expect(
        DPU,
        0x403C,
        ((nu - 1) << 16) | (nu - 1),
        "cube channels N-1",
    )?;
    f.expect(DPU, 0x4040, 0x53, "BS bypassed")?;
    let (size_e, surf_mult) = match output {
        SimOut::Fp32 => (3, 4),
        SimOut::Int32 => (7, 8),
        SimOut::Fp16 | SimOut::Int16 => (1, 2),
    };
    f.expect(
        DPU,
        0x4050,
        (size_e << 8) | (size_e << 5) | (size_e << 2) | 2,
        "output element size",
    )?;
    f.expect(DPU, 0x4058, nu - 1, "WDMA channels N-1")?;
    f.expect(DPU, 0x405C, (mu - 1) << 16, "WDMA height M-1")?;
    f.expect(DPU, 0x4060, 0x53, "BN bypassed")?;
    f.expect(DPU, 0x4070, 0x383, "EW bypassed")?;
    f.expect(DPU, 0x4078, 1, "EW scale 1")?;
    let cvt = (u32::from(output == SimOut::Fp16) << 16) | 1;
    f.expect(
        DPU,
        0x4084,
        cvt,
        "output scale 1, fp32->fp16 only for fp16 output",
    )?;
    for o in (0..8u16).map(|i| 0x4090 + 4 * i) {
        f.expect(DPU, o, 0, "no EW operands")?;
    }
    f.expect(
        DPU,
        0x40C0,
        (mu * surf_mult) << 4,
        "surface add for the output type",
    )?;
    for o in (0..12u16).map(|i| 0x4100 + 4 * i) {
        f.expect(DPU, o, 0, "no LUT")?;
    }
    let a = f.get(CNA, 0x1070)?;
    let b = f.get(CNA, 0x1110)?;
    let c = f.get(DPU, 0x4020)?;
    for (t, o, v) in [(CNA, 0x1070, a), (CNA, 0x1110, b), (DPU, 0x4020, c)] {
        if v % 16 != 0 {
            return Err(f.bad(t, o, "address not 16-byte aligned"));
        }
    }
    Ok(Op {
        input,
        output,
        m,
        k,
        n,
        a,
        b,
        c,
    })
}

/// Every fp16 bit pattern as f32 (built once).
fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| half::f16::from_bits(h).to_f32())
            .collect()
    })
}

/// Default device address window of the simulator: [256 MiB, 3.75 GiB).
pub const SIM_ADDR_BASE: u64 = 0x1000_0000;
pub const SIM_ADDR_LIMIT: u64 = 0xF000_0000;

/// The simulator as an [`NpuDevice`].
pub struct SimDevice {
    core: Arc<SimCore>,
    submit_lock: Mutex<()>,
    cores: u32,
}

struct SimBufferOps {
    mem: Arc<AddressSpace>,
}

impl BufferOps for SimBufferOps {
    fn sync(
        &self,
        _raw: &RawBuffer,
        _dir: SyncDir,
        _offset: u64,
        _len: u64,
    ) -> Result<(), NpuError> {
        Ok(()) // simulated memory is coherent
    }
    fn release(&self, raw: &RawBuffer) {
        self.mem.free(raw.dma_addr as u64);
    }
}

impl SimDevice {
    pub fn new() -> Self {
        Self::with_address_window(SIM_ADDR_BASE, SIM_ADDR_LIMIT)
    }

    /// A simulator whose buffers lie in [base, limit) (tests use small or
    /// above-4-GiB windows).
    pub fn with_address_window(base: u64, limit: u64) -> Self {
        SimDevice {
            core: Arc::new(SimCore::new(Arc::new(AddressSpace::new(base, limit)))),
            submit_lock: Mutex::new(()),
            cores: 3,
        }
    }

    /// Fault injection: the next `count` submits produce `fault`.
    pub fn inject(&self, fault: Fault, count: u32) {
        self.core.faults.set(fault, count);
    }

    pub fn core(&self) -> &Arc<SimCore> {
        &self.core
    }
}

impl Default for SimDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl NpuDevice for SimDevice {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            driver: "npu-sim".into(),
            node: "in-process".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hw_version: None,
            cores: self.cores,
            iommu: Some(true),
            freq_hz: None,
            sram_total: None,
            sram_free: None,
            address_space: SIM_ADDR_LIMIT - SIM_ADDR_BASE,
        }
    }

    fn chaining(&self) -> Chaining {
        Chaining::PcChain
    }

    fn alloc(&self, size: usize) -> Result<NpuBuffer, NpuError> {
        let (addr, mem) = self.core.mem.alloc(size)?;
        let dma = match check_dma_addr("npu-sim buffer", addr, size as u64) {
            Ok(d) => d,
            Err(e) => {
                self.core.mem.free(addr);
                return Err(e);
            }
        };
        let raw = RawBuffer {
            handle: dma,
            dma_addr: dma,
            size: size as u64,
            obj_addr: 0,
        };
        let ops = Arc::new(SimBufferOps {
            mem: self.core.mem.clone(),
        });
        Ok(NpuBuffer::new(raw, Mapping::shared(mem), ops))
    }

    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError> {
        let _guard = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        if job.core >= self.cores {
            return Err(NpuError::SubmitFailed {
                reason: format!("core {} does not exist ({} cores)", job.core, self.cores),
            });
        }
        let first = job.tasks.first().ok_or_else(|| NpuError::SubmitFailed {
            reason: "job without tasks".into(),
        })?;
        match self.core.faults.take() {
            Fault::Timeout => {
                return Err(NpuError::SubmitTimeout {
                    timeout_ms: job.timeout_ms,
                })
            }
            Fault::Fail => {
                return Err(NpuError::SubmitFailed {
                    reason: "injected fault".into(),
                })
            }
            Fault::None => {}
        }
        let addr = job.regcmd.dma_addr() as u64 + first.offset as u64;
        let addr = check_dma_addr("register commands", addr, 8)?;
        let amount = regs::pc_amount(first.body_entries as usize + super::task::TAIL_ENTRIES);
        let done = self
            .core
            .run_pc_chain(addr, amount, job.tasks.len() as u32)?;
        Ok(JobStats {
            tasks_done: done,
            hw_time_us: None,
        })
    }

    fn is_simulated(&self) -> bool {
        true
    }
}
