//! The command-stream interpreter: reads a task's u64 entries from device
//! memory, keeps its register file, and at the operation enable decodes
//! and computes the matmul from the native layouts.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::decode::{decode, Op, RegFile, SimIn, SimOut};
use super::device::FaultInjector;
use super::kernels;
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
