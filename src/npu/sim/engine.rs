//! The command-stream interpreter: reads a task's u64 entries from device
//! memory, keeps its register file, and at the operation enable decodes
//! and computes the matmul from the native layouts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::decode::{decode, Op, RegFile, SimIn, SimOut};
use super::device::FaultInjector;
use super::kernels;
use super::registers;
use crate::npu::command::layout;
use crate::npu::command::regs::{
    self, RegWrite, TARGET_CNA as CNA, TARGET_CORE as CORE, TARGET_DPU as DPU,
};
use crate::npu::driver::mem::AddressSpace;
use crate::npu::error::NpuError;

/// The NPU model: device memory plus the command-stream interpreter.
pub struct SimCore {
    pub mem: Arc<AddressSpace>,
    pub faults: FaultInjector,
}

/// One core's part of a multi-core submit: `tasks` chained tasks from
/// `first_addr` (numbered from `first_task` in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreChain {
    pub core: u32,
    pub first_task: usize,
    pub first_addr: u32,
    pub amount: u32,
    pub tasks: u32,
}

/// A core's tasks, loaded: (core, [(task index, operation)]).
pub(super) type LoadedCore = (u32, Vec<(usize, Op)>);

/// Device memory a task touches: A, B (read) and C (written), as
/// (address, bytes).
fn footprints(op: &Op) -> [(u64, u64); 3] {
    let bits = op.input.bits();
    [
        (op.a as u64, layout::a_bytes(op.m, op.k, bits) as u64),
        (op.b as u64, layout::a_bytes(op.n, op.k, bits) as u64),
        (
            op.c as u64,
            (op.m * op.n) as u64 * u64::from(op.output.bytes()),
        ),
    ]
}

/// Where a task's tail points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailLink {
    pub next_addr: u32,
    pub next_amount: u32,
}

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
        let chain = CoreChain {
            core: 0,
            first_task: 0,
            first_addr,
            amount,
            tasks: task_number,
        };
        self.run_cores(&[chain], None).map(|done| done[0])
    }

    /// Loads one core's PC chain: every task's operation, following the
    /// tails, without running anything.
    pub(super) fn load_chain(&self, chain: &CoreChain) -> Result<Vec<(usize, Op)>, NpuError> {
        let (mut addr, mut amount) = (chain.first_addr, chain.amount);
        let mut ops = Vec::with_capacity(chain.tasks as usize);
        for i in 0..chain.tasks as usize {
            let task = chain.first_task + i;
            let (link, op) = self.load_task(task, addr, regs::entries_for_amount(amount))?;
            ops.push((task, op));
            if i + 1 < chain.tasks as usize {
                if link.next_addr == 0 || link.next_amount == 0 {
                    return Err(NpuError::BadCommandStream {
                        task,
                        reason: format!(
                            "the chain ends after task {task} but core {} was given {} tasks",
                            chain.core, chain.tasks
                        ),
                    });
                }
                addr = link.next_addr;
                amount = link.next_amount;
            }
        }
        Ok(ops)
    }

    /// Several cores at once, as one multi-core submit runs them: loads
    /// every core's chain, checks that no core writes memory another core
    /// reads or writes (and, with `windows`, that core i writes only
    /// inside `windows[i]`: the output buffers its share declared), then
    /// runs the tasks interleaved across cores (task 0 of every core, then
    /// task 1, ...), so a hidden dependency between cores changes results.
    /// Returns the tasks completed per core.
    pub fn run_cores(
        &self,
        chains: &[CoreChain],
        windows: Option<&[Vec<(u64, u64)>]>,
    ) -> Result<Vec<u32>, NpuError> {
        let loaded: Vec<LoadedCore> = chains
            .iter()
            .map(|c| Ok((c.core, self.load_chain(c)?)))
            .collect::<Result<_, NpuError>>()?;
        self.run_loaded(&loaded, windows)
    }

    /// [`run_cores`](Self::run_cores) on tasks already loaded per core.
    pub(super) fn run_loaded(
        &self,
        loaded: &[LoadedCore],
        windows: Option<&[Vec<(u64, u64)>]>,
    ) -> Result<Vec<u32>, NpuError> {
        let fault = |task: usize, reason: String| NpuError::BadCommandStream { task, reason };
        for (ci, (core, ops)) in loaded.iter().enumerate() {
            for (task, op) in ops {
                let (c_start, c_len) = footprints(op)[2];
                if let Some(w) = windows.and_then(|w| w.get(ci)) {
                    if !w
                        .iter()
                        .any(|&(s, l)| c_start >= s && c_start + c_len <= s + l)
                    {
                        return Err(fault(
                            *task,
                            format!(
                                "core {core} writes {c_start:#x}+{c_len} outside the output buffers of its share"
                            ),
                        ));
                    }
                }
                for (_, (other_core, others)) in
                    loaded.iter().enumerate().filter(|&(cj, _)| cj != ci)
                {
                    for (other, oop) in others {
                        if let Some(&(s, l)) = footprints(oop)
                            .iter()
                            .find(|&&(s, l)| s < c_start + c_len && c_start < s + l)
                        {
                            return Err(fault(
                                *task,
                                format!(
                                    "core {core} writes {c_start:#x}+{c_len}, which task {other} on core {other_core} also uses ({s:#x}+{l}): cores running together must not share memory they write"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let longest = loaded.iter().map(|(_, ops)| ops.len()).max().unwrap_or(0);
        for step in 0..longest {
            for (_, ops) in loaded {
                if let Some((task, op)) = ops.get(step) {
                    self.execute(*task, op)?;
                }
            }
        }
        Ok(loaded.iter().map(|(_, ops)| ops.len() as u32).collect())
    }

    /// Runs the task whose `entries` u64 command words start at `addr`.
    pub fn run_task(&self, task: usize, addr: u32, entries: usize) -> Result<TailLink, NpuError> {
        let (link, op) = self.load_task(task, addr, entries)?;
        self.execute(task, &op)?;
        Ok(link)
    }

    /// Reads and checks one task's command words: its tail link and the
    /// operation its registers describe.
    pub(super) fn load_task(
        &self,
        task: usize,
        addr: u32,
        entries: usize,
    ) -> Result<(TailLink, Op), NpuError> {
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
        let mut done: Option<Op> = None;
        let mut tail_started = false;
        let mut dpu_pointer_set = false;
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
                name: registers::name(w.target, w.offset),
                offset: w.offset,
                value: w.value,
                reason,
            };
            if done.is_some() {
                return Err(bad(format!("entry {i} follows the operation enable")));
            }
            match w.target {
                regs::TARGET_PC => {
                    if marker {
                        return Err(bad("PC entry after the 0x0041 marker".into()));
                    }
                    tail_started = true;
                    match w.offset {
                        regs::PC_BASE_ADDRESS => link.next_addr = w.value,
                        regs::PC_REGISTER_AMOUNTS => link.next_amount = w.value,
                        _ => return Err(bad("PC register not used by matmul tasks".into())),
                    }
                }
                regs::TARGET_MARKER => {
                    if w.offset != 0 || w.value != 0 {
                        return Err(bad("the marker entry must be 0x0041000000000000".into()));
                    }
                    marker = true;
                    tail_started = true;
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
                    done = Some(decode(&file)?);
                }
                CNA | CORE | DPU => {
                    if registers::describe(w.target, w.offset).is_none() {
                        return Err(bad("unknown register for this block".into()));
                    }
                    // Write order the hardware depends on: the tail's PC
                    // entries end the register writes, and DPU S_POINTER
                    // (which picks the DPU's register group) comes before
                    // any other DPU register, as in the hardware-tested
                    // stream and the int4 capture.
                    if tail_started {
                        return Err(bad(format!("entry {i} follows the tail's PC entries")));
                    }
                    if w.target == DPU && w.offset != 0x4004 && !dpu_pointer_set {
                        return Err(bad("DPU register written before DPU S_POINTER".into()));
                    }
                    dpu_pointer_set |= w.target == DPU && w.offset == 0x4004;
                    file.vals.insert((w.target, w.offset), w.value);
                }
                _ => return Err(bad("block not modelled by the simulator".into())),
            }
        }
        match done {
            Some(op) => Ok((link, op)),
            None => Err(NpuError::BadCommandStream {
                task,
                reason: format!("no operation-enable entry in the {entries} entries fetched"),
            }),
        }
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
        // Decoded operands (kernels: same sums as the plain loops of
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
                let av = kernels::decode_a(&a, m, k, bits, val);
                let bv = kernels::decode_b_panels(&b, n, k, bits, group, val);
                drop((a, b));
                // |a*b| <= 2^14 (int8) or 2^6 (int4) and K <= 2^15 (int8)
                // or 2^16 (int4, one CBUF bank row): INT32 sums are exact
                // for int4; int8 wraps like the hardware's adder.
                let mut sums = vec![0i32; m * n];
                kernels::matmul(&av, &bv, m, k, n, &mut sums);
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
                let av = kernels::decode_a(&a, m, k, bits, conv);
                let bv = kernels::decode_b_panels(&b, n, k, bits, group, conv);
                drop((a, b));
                let mut sums = vec![0f32; m * n];
                kernels::matmul(&av, &bv, m, k, n, &mut sums);
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

/// Every fp16 bit pattern as f32 (built once).
fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| half::f16::from_bits(h).to_f32())
            .collect()
    })
}
