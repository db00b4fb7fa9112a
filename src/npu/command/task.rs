//! Register command builder for one matmul task.
//!
//! C[M x N] = A[M x K] * B^T runs as a 1x1 convolution (width 1, height M,
//! K channels, N kernels). Every register value below is computed by the
//! formulas of rk3588-npu.md section 3, each written once in
//! [`TaskRegisters::compute`]; [`task_body`] only orders them like the
//! known-good sequence (104 body entries) and [`task_tail`] appends the
//! 4-entry tail that chains tasks.

use super::regs::{self, RegWrite, TARGET_CNA, TARGET_CORE, TARGET_DPU};
use crate::npu::error::NpuError;

/// Precision combination of a matmul task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulType {
    /// INT8 x INT8 -> INT32.
    Int8,
    /// FP16 x FP16 -> FP32.
    Fp16,
    /// FP16 x FP16 -> FP16 (FP32 accumulation, rounded at the output).
    Fp16Out16,
    /// INT4 x INT4 -> INT16. Experimental: no public register sequence is
    /// known, the values follow the precision codes of the other types.
    Int4,
}

/// CNA/CORE input precision codes.
const PREC_INT8: u32 = 0;
const PREC_FP16: u32 = 2;
const PREC_INT4: u32 = 6;
/// DPU output precision codes.
const OUT_INT16: u32 = 1;
const OUT_FP16: u32 = 2;
const OUT_INT32: u32 = 4;
const OUT_FP32: u32 = 5;

/// CBUF geometry: 12 banks of 32 KB per core.
pub const CBUF_BANKS: u32 = 12;
pub const CBUF_BANK_BYTES: u64 = 32 * 1024;
/// Register field limits.
pub const MAX_FEATURE_GRAINS: u32 = (1 << 10) - 1;
pub const MAX_DATAIN_HEIGHT: u32 = (1 << 11) - 1;
/// DPU channel fields hold N - 1 in 13 bits.
pub const MAX_CHANNELS_N: u32 = 1 << 13;
/// CNA DATA_SIZE1 holds K - 1 (DATAIN_CHANNEL_REAL) in 14 bits.
pub const MAX_K: u32 = 1 << 14;

impl MatmulType {
    pub const ALL: [MatmulType; 4] = [
        MatmulType::Int8,
        MatmulType::Fp16,
        MatmulType::Fp16Out16,
        MatmulType::Int4,
    ];

    /// Name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MatmulType::Int8 => "int8",
            MatmulType::Fp16 => "fp16",
            MatmulType::Fp16Out16 => "fp16-out16",
            MatmulType::Int4 => "int4",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        MatmulType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Bits per input element (A and B).
    pub fn input_bits(self) -> u32 {
        match self {
            MatmulType::Int8 => 8,
            MatmulType::Fp16 | MatmulType::Fp16Out16 => 16,
            MatmulType::Int4 => 4,
        }
    }

    /// Bytes per output element.
    pub fn output_bytes(self) -> u32 {
        match self {
            MatmulType::Int8 | MatmulType::Fp16 => 4,
            MatmulType::Fp16Out16 | MatmulType::Int4 => 2,
        }
    }

    /// Elements per 16-byte atom of the A layout [K/C2][M][C2].
    pub fn a_atom(self) -> usize {
        (128 / self.input_bits()) as usize
    }

    /// Kernels per group of the B layout [N/G][K/32][G][32]; also the N
    /// alignment.
    pub fn b_group(self) -> usize {
        match self {
            MatmulType::Int8 => 32,
            MatmulType::Fp16 | MatmulType::Fp16Out16 => 16,
            MatmulType::Int4 => 64,
        }
    }

    /// Elements per atom of the C layout [N/C2][M][C2].
    pub fn c_atom(self) -> usize {
        (16 / self.output_bytes()) as usize
    }

    /// True when no hardware-verified register sequence exists.
    pub fn experimental(self) -> bool {
        self == MatmulType::Int4
    }

    fn input_code(self) -> u32 {
        match self {
            MatmulType::Int8 => PREC_INT8,
            MatmulType::Fp16 | MatmulType::Fp16Out16 => PREC_FP16,
            MatmulType::Int4 => PREC_INT4,
        }
    }

    fn output_code(self) -> u32 {
        match self {
            MatmulType::Int8 => OUT_INT32,
            MatmulType::Fp16 => OUT_FP32,
            MatmulType::Fp16Out16 => OUT_FP16,
            MatmulType::Int4 => OUT_INT16,
        }
    }

    /// Bytes of `k` input elements.
    pub fn bytes_for(self, k: u64) -> u64 {
        k * self.input_bits() as u64 / 8
    }
}

/// Shape and buffers of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDesc {
    pub ty: MatmulType,
    pub m: u32,
    pub k: u32,
    pub n: u32,
    /// Device addresses of A (native input layout), B (native weight
    /// layout) and C (native output layout).
    pub a_addr: u32,
    pub b_addr: u32,
    pub c_addr: u32,
}

/// Device address alignment the builder requires of A, B and C.
pub const ADDR_ALIGN: u32 = 16;

impl TaskDesc {
    /// Number of CBUF banks holding the input (all of A).
    pub fn data_banks(&self) -> u64 {
        let bytes = self.m as u64 * self.ty.bytes_for(self.k as u64);
        bytes.div_ceil(CBUF_BANK_BYTES)
    }

    /// Checks the alignments and one-task limits; errors say which.
    pub fn validate(&self) -> Result<(), NpuError> {
        let bad = |why: String| Err(NpuError::InvalidShape(why));
        let (m, k, n, ty) = (self.m, self.k, self.n, self.ty);
        if m == 0 || k == 0 || n == 0 {
            return bad(format!("empty matmul M={m} K={k} N={n}"));
        }
        if m != 1 && m % 4 != 0 {
            return bad(format!("M={m} must be 1 or a multiple of 4"));
        }
        if k % 32 != 0 {
            return bad(format!("K={k} must be a multiple of 32"));
        }
        if !(n as usize).is_multiple_of(ty.b_group()) {
            return bad(format!(
                "N={n} must be a multiple of {} for {}",
                ty.b_group(),
                ty.name()
            ));
        }
        if k > MAX_K {
            return bad(format!(
                "K={k} exceeds the 14-bit DATAIN_CHANNEL_REAL field of DATA_SIZE1 (K <= {MAX_K})"
            ));
        }
        if ty.bytes_for(k as u64) > CBUF_BANK_BYTES {
            return bad(format!(
                "K={k} {}: one kernel row ({} bytes) exceeds a 32 KB CBUF bank",
                ty.name(),
                ty.bytes_for(k as u64)
            ));
        }
        if self.data_banks() > (CBUF_BANKS - 1) as u64 {
            return bad(format!(
                "M={m} K={k} {}: the input needs {} CBUF banks, at most {} fit one task",
                ty.name(),
                self.data_banks(),
                CBUF_BANKS - 1
            ));
        }
        if m + 1 > MAX_FEATURE_GRAINS || m > MAX_DATAIN_HEIGHT {
            return bad(format!("M={m} exceeds the 10-bit FEATURE_GRAINS field"));
        }
        if n > MAX_CHANNELS_N {
            return bad(format!("N={n} exceeds the 13-bit DPU channel field"));
        }
        for (what, a) in [("A", self.a_addr), ("B", self.b_addr), ("C", self.c_addr)] {
            if a % ADDR_ALIGN != 0 {
                return bad(format!(
                    "{what} address {a:#x} is not {ADDR_ALIGN}-byte aligned"
                ));
            }
        }
        Ok(())
    }
}

/// The computed value of every register the task programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRegisters {
    pub dpu_s_pointer: u32,
    pub conv_con1: u32,
    pub conv_con2: u32,
    pub conv_con3: u32,
    pub data_size0: u32,
    pub data_size1: u32,
    pub data_size2: u32,
    pub data_size3: u32,
    pub weight_size0: u32,
    pub weight_size1: u32,
    pub weight_size2: u32,
    pub cbuf_con0: u32,
    pub cbuf_con1: u32,
    pub cvt_con0: u32,
    pub cvt_scale: u32,
    pub feature_data_addr: u32,
    pub dma_con0: u32,
    pub dma_con1: u32,
    pub dma_con2: u32,
    pub fc_data_size0: u32,
    pub fc_data_size1: u32,
    pub dcomp_addr0: u32,
    pub core_misc_cfg: u32,
    pub dataout_size_0: u32,
    pub dataout_size_1: u32,
    pub feature_mode_cfg: u32,
    pub data_format: u32,
    pub dst_base_addr: u32,
    pub dst_surf_stride: u32,
    pub cube_height: u32,
    pub cube_channel: u32,
    pub bs_cfg: u32,
    pub bs_ow_cfg: u32,
    pub wdma_size_0: u32,
    pub wdma_size_1: u32,
    pub bn_cfg: u32,
    pub ew_cfg: u32,
    pub ew_cvt_scale: u32,
    pub out_cvt_scale: u32,
    pub surface_add: u32,
}

impl TaskRegisters {
    /// Every formula of rk3588-npu.md section 3, in one place.
    pub fn compute(t: &TaskDesc) -> Result<Self, NpuError> {
        t.validate()?;
        let ty = t.ty;
        let (m, k, n) = (t.m, t.k, t.n);
        let in_code = ty.input_code();
        let out_code = ty.output_code();
        let is_fp16 = in_code == PREC_FP16;
        let row_bytes = ty.bytes_for(k as u64) as u32;
        let data_banks = t.data_banks() as u32;
        // Output element size code of BS_OW_CFG: 3 fp32, 1 fp16, 7 int32;
        // int16 (int4 path, experimental) assumed like fp16.
        let size_e = match out_code {
            OUT_FP32 => 3,
            OUT_INT32 => 7,
            _ => 1,
        };
        // SURFACE_ADD multiplier of M: 4 fp32, 2 fp16, 8 int32; int16 like fp16.
        let surface_mult = match out_code {
            OUT_FP32 => 4,
            OUT_INT32 => 8,
            _ => 2,
        };
        // DMA_CON2 = 4*(M/4 - 1); a negative value (M=1) is incremented by
        // one and masked to 28 bits.
        let surf = 4 * ((m / 4) as i64 - 1);
        let dma_con2 = if surf < 0 {
            ((surf + 1) as u32) & 0x0FFF_FFFF
        } else {
            surf as u32
        };
        let proc_code = in_code;
        Ok(TaskRegisters {
            dpu_s_pointer: 0xE,
            conv_con1: (proc_code << 7) | (in_code << 4),
            // kernel_groups (0) << 16 | FEATURE_GRAINS << 4
            conv_con2: (m + 1) << 4,
            // conv stride y 1 << 3 | stride x 1
            conv_con3: (1 << 3) | 1,
            // width 1 << 16 | height M
            data_size0: (1 << 16) | m,
            // real channels - 1 << 16 | channels
            data_size1: ((k - 1) << 16) | k,
            data_size2: 1,
            data_size3: m,
            weight_size0: n * row_bytes,
            weight_size1: row_bytes,
            // kernel width 1 << 24 | kernel height 1 << 16 | kernels
            weight_size2: (1 << 24) | (1 << 16) | n,
            cbuf_con0: ((CBUF_BANKS - data_banks) << 4) | data_banks,
            // CBUF entries (64 bytes) per input row
            cbuf_con1: row_bytes.div_ceil(64),
            cvt_con0: 0xB,
            cvt_scale: 1 << 16,
            feature_data_addr: t.a_addr,
            dma_con0: 0x000F_000F,
            dma_con1: 4,
            dma_con2,
            fc_data_size0: (1 << 16) | m,
            fc_data_size1: k,
            dcomp_addr0: t.b_addr,
            core_misc_cfg: (proc_code << 8) | u32::from(is_fp16),
            dataout_size_0: (m - 1) << 16,
            dataout_size_1: n - 1,
            // burst 0xF << 5 | output mode 2 << 1
            feature_mode_cfg: (0xF << 5) | (2 << 1),
            data_format: (out_code << 29) | (in_code << 26) | proc_code,
            dst_base_addr: t.c_addr,
            dst_surf_stride: m << 4,
            cube_height: m - 1,
            cube_channel: ((n - 1) << 16) | (n - 1),
            bs_cfg: 0x53,
            bs_ow_cfg: (size_e << 8) | (size_e << 5) | (size_e << 2) | 2,
            wdma_size_0: n - 1,
            wdma_size_1: (m - 1) << 16,
            bn_cfg: 0x53,
            ew_cfg: 0x383,
            ew_cvt_scale: 1,
            out_cvt_scale: (u32::from(out_code == OUT_FP16) << 16) | 1,
            surface_add: (m * surface_mult) << 4,
        })
    }
}

/// Number of body entries of a matmul task.
pub const BODY_ENTRIES: usize = 104;
/// Entries of the tail that ends every task.
pub const TAIL_ENTRIES: usize = 4;
/// Entries of one whole task in the command buffer.
pub const TASK_ENTRIES: usize = BODY_ENTRIES + TAIL_ENTRIES;

/// The 104 body entries in the known-good order.
pub fn task_body(t: &TaskDesc) -> Result<Vec<RegWrite>, NpuError> {
    let r = TaskRegisters::compute(t)?;
    let cna = |o, v| RegWrite::new(TARGET_CNA, o, v);
    let core = |o, v| RegWrite::new(TARGET_CORE, o, v);
    let dpu = |o, v| RegWrite::new(TARGET_DPU, o, v);
    let mut w = Vec::with_capacity(BODY_ENTRIES);
    w.push(dpu(0x4004, r.dpu_s_pointer));
    w.extend([
        cna(0x100C, r.conv_con1),
        cna(0x1010, r.conv_con2),
        cna(0x1014, r.conv_con3),
        cna(0x1020, r.data_size0),
        cna(0x1024, r.data_size1),
        cna(0x1028, r.data_size2),
        cna(0x102C, r.data_size3),
        cna(0x1030, r.weight_size0),
        cna(0x1034, r.weight_size1),
        cna(0x1038, r.weight_size2),
        cna(0x1040, r.cbuf_con0),
        cna(0x1044, r.cbuf_con1),
        cna(0x104C, r.cvt_con0),
        cna(0x1050, r.cvt_scale),
        cna(0x1054, r.cvt_scale),
        cna(0x1058, r.cvt_scale),
        cna(0x105C, r.cvt_scale),
        cna(0x1060, 0),
        cna(0x1064, 0),
        cna(0x1068, 0),
        cna(0x1070, r.feature_data_addr),
        cna(0x1074, 0),
        cna(0x1078, r.dma_con0),
        cna(0x107C, r.dma_con1),
        cna(0x1080, r.dma_con2),
        cna(0x1084, r.fc_data_size0),
        cna(0x1088, r.fc_data_size1),
        cna(0x1100, 0),
        cna(0x1104, 0),
        cna(0x1110, r.dcomp_addr0),
    ]);
    // DCOMP_AMOUNT0..15, CVT_CON5, PAD_CON1
    w.extend((0..18u16).map(|i| cna(0x1140 + 4 * i, 0)));
    w.extend([
        core(0x3010, r.core_misc_cfg),
        core(0x3014, r.dataout_size_0),
        core(0x3018, r.dataout_size_1),
        core(0x301C, 0),
        core(0x3030, 0),
    ]);
    w.extend([
        dpu(0x400C, r.feature_mode_cfg),
        dpu(0x4010, r.data_format),
        dpu(0x4014, 0),
        dpu(0x4020, r.dst_base_addr),
        dpu(0x4024, r.dst_surf_stride),
        dpu(0x4030, 0),
        dpu(0x4034, r.cube_height),
        dpu(0x4038, 0),
        dpu(0x403C, r.cube_channel),
        dpu(0x4040, r.bs_cfg),
        dpu(0x4044, 0),
        dpu(0x4048, 0),
        dpu(0x404C, 0),
        dpu(0x4050, r.bs_ow_cfg),
        dpu(0x4054, 0),
        dpu(0x4058, r.wdma_size_0),
        dpu(0x405C, r.wdma_size_1),
        dpu(0x4060, r.bn_cfg),
        dpu(0x4064, 0),
        dpu(0x4068, 0),
        dpu(0x406C, 0),
        dpu(0x4070, r.ew_cfg),
        dpu(0x4074, 0),
        dpu(0x4078, r.ew_cvt_scale),
        dpu(0x407C, 0),
        dpu(0x4080, 0),
        dpu(0x4084, r.out_cvt_scale),
        dpu(0x4088, 0),
    ]);
    // EW_OP_VALUE_0..7
    w.extend((0..8u16).map(|i| dpu(0x4090 + 4 * i, 0)));
    w.push(dpu(0x40C0, r.surface_add));
    w.push(dpu(0x40C4, 0));
    // LUT registers 0x4100..0x412C
    w.extend((0..12u16).map(|i| dpu(0x4100 + 4 * i, 0)));
    debug_assert_eq!(w.len(), BODY_ENTRIES);
    Ok(w)
}

/// The next task in a PC chain: its command address and body length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextTask {
    pub regcmd_addr: u32,
    pub body_entries: usize,
}

/// The 4-entry tail: [next task address or 0], [next task's amount or 0],
/// the marker, and the operation enable (CNA | CORE | DPU).
pub fn task_tail(next: Option<NextTask>) -> [RegWrite; TAIL_ENTRIES] {
    let (addr_entry, amount) = match next {
        Some(nt) => (
            RegWrite::new(regs::TARGET_PC, regs::PC_BASE_ADDRESS, nt.regcmd_addr),
            regs::pc_amount(nt.body_entries + TAIL_ENTRIES),
        ),
        None => (RegWrite::new(0, 0, 0), 0),
    };
    [
        addr_entry,
        RegWrite::new(regs::TARGET_PC, regs::PC_REGISTER_AMOUNTS, amount),
        RegWrite::new(regs::TARGET_MARKER, 0, 0),
        RegWrite::new(
            regs::TARGET_OP_EN,
            regs::PC_OPERATION_ENABLE,
            regs::OP_EN_PC | regs::OP_EN_CNA | regs::OP_EN_DPU,
        ),
    ]
}

/// One whole task (body + tail) as u64 words.
pub fn task_words(t: &TaskDesc, next: Option<NextTask>) -> Result<Vec<u64>, NpuError> {
    let mut words: Vec<u64> = task_body(t)?.iter().map(|w| w.encode()).collect();
    words.extend(task_tail(next).iter().map(|w| w.encode()));
    Ok(words)
}

/// How tasks of one submission are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chaining {
    /// The PC follows the tails (vendor driver: one submit, task_number N).
    PcChain,
    /// Every tail ends the chain; the kernel starts each task (rocket).
    KernelStartsEachTask,
}

/// Builds the command words of `tasks` laid out back to back at device
/// address `regcmd_addr` (16-byte aligned), chained or not. Returns the words
/// and each task's byte offset.
pub fn build_command_buffer(
    tasks: &[TaskDesc],
    regcmd_addr: u32,
    chaining: Chaining,
) -> Result<(Vec<u64>, Vec<usize>), NpuError> {
    if !regcmd_addr.is_multiple_of(ADDR_ALIGN) {
        return Err(NpuError::InvalidShape(format!(
            "register command address {regcmd_addr:#x} is not 16-byte aligned"
        )));
    }
    let task_bytes = TASK_ENTRIES * 8;
    let mut words = Vec::with_capacity(tasks.len() * TASK_ENTRIES);
    let mut offsets = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        offsets.push(words.len() * 8);
        let next = match chaining {
            Chaining::PcChain if i + 1 < tasks.len() => {
                let addr = regcmd_addr as u64 + ((i + 1) * task_bytes) as u64;
                let addr = u32::try_from(addr).map_err(|_| NpuError::AddressAbove4G {
                    what: "register commands".into(),
                    addr,
                })?;
                Some(NextTask {
                    regcmd_addr: addr,
                    body_entries: BODY_ENTRIES,
                })
            }
            _ => None,
        };
        words.extend(task_words(t, next)?);
    }
    Ok((words, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(ty: MatmulType, m: u32, k: u32, n: u32) -> TaskDesc {
        TaskDesc {
            ty,
            m,
            k,
            n,
            a_addr: 0x1000_0000,
            b_addr: 0x2000_0000,
            c_addr: 0x3000_0000,
        }
    }

    #[test]
    fn m1_dma_con2_wraps_to_28_bits() {
        let r = TaskRegisters::compute(&desc(MatmulType::Int8, 1, 64, 32)).unwrap();
        assert_eq!(r.dma_con2, 0xFFF_FFFD);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(desc(MatmulType::Int8, 6, 64, 32).validate().is_err());
        assert!(desc(MatmulType::Int8, 4, 48, 32).validate().is_err());
        assert!(desc(MatmulType::Int8, 4, 64, 16).validate().is_err());
        assert!(desc(MatmulType::Fp16, 4, 32768, 16).validate().is_err());
        assert!(desc(MatmulType::Fp16, 512, 1024, 16).validate().is_err());
    }

    #[test]
    fn chain_tail_points_at_next_task() {
        let t = desc(MatmulType::Fp16, 4, 32, 16);
        let (w, off) = build_command_buffer(&[t, t], 0x4000_0000, Chaining::PcChain).unwrap();
        assert_eq!(off, vec![0, TASK_ENTRIES * 8]);
        let first_tail = RegWrite::decode(w[BODY_ENTRIES]);
        assert_eq!(first_tail.offset, regs::PC_BASE_ADDRESS);
        assert_eq!(first_tail.value, 0x4000_0000 + (TASK_ENTRIES * 8) as u32);
        assert_eq!(RegWrite::decode(w[BODY_ENTRIES + 1]).value, 53);
        assert_eq!(w[TASK_ENTRIES + BODY_ENTRIES], 0);
    }
}
