//! Register decoding: turns the register file of one task into the matmul
//! it describes, checking every register the matmul task programs.

use std::collections::HashMap;

use crate::npu::command::regs::{self, TARGET_CNA, TARGET_CORE, TARGET_DPU};
use crate::npu::error::NpuError;

/// Input / output precision as the simulator decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SimIn {
    Int8,
    Fp16,
    Int4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SimOut {
    Int32,
    Fp32,
    Fp16,
    Int16,
}

impl SimIn {
    pub(super) fn bits(self) -> u32 {
        match self {
            SimIn::Int8 => 8,
            SimIn::Fp16 => 16,
            SimIn::Int4 => 4,
        }
    }
    /// Kernel group size of the weight layout.
    pub(super) fn group(self) -> usize {
        match self {
            SimIn::Int8 => 32,
            SimIn::Fp16 => 16,
            SimIn::Int4 => 64,
        }
    }
}

impl SimOut {
    pub(super) fn bytes(self) -> u32 {
        match self {
            SimOut::Int32 | SimOut::Fp32 => 4,
            SimOut::Fp16 | SimOut::Int16 => 2,
        }
    }
}

/// The decoded operation of one task.
#[derive(Clone, Copy, Debug)]
pub(super) struct Op {
    pub(super) input: SimIn,
    pub(super) output: SimOut,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) a: u32,
    pub(super) b: u32,
    pub(super) c: u32,
}

/// Register file of the task being parsed: (target, offset) -> value.
pub(super) struct RegFile {
    pub(super) task: usize,
    pub(super) vals: HashMap<(u16, u16), u32>,
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

/// Decodes the register file into an operation, checking every register.
pub(super) fn decode(f: &RegFile) -> Result<Op, NpuError> {
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
