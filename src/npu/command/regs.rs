//! The register command stream: one u64 per register write.
//!
//! Bits 63..48 select the target block, 47..16 hold the 32-bit value and
//! 15..0 the register offset (rk3588-npu.md section 3). This module knows the
//! encoding, the block targets and every register name the matmul task uses;
//! it knows nothing about what the values mean (see `task` and `sim`).

/// Target field of PC (program counter / chaining) writes.
pub const TARGET_PC: u16 = 0x0101;
/// Target field of convolution-input (CNA) writes.
pub const TARGET_CNA: u16 = 0x0201;
/// Target field of MAC-array (CORE) writes.
pub const TARGET_CORE: u16 = 0x0801;
/// Target field of data-processing-unit (DPU) writes.
pub const TARGET_DPU: u16 = 0x1001;
/// Target field of DPU read-DMA writes.
pub const TARGET_DPU_RDMA: u16 = 0x2001;
/// Target field of pooling-unit (PPU) writes.
pub const TARGET_PPU: u16 = 0x4001;
/// Target field of PPU read-DMA writes.
pub const TARGET_PPU_RDMA: u16 = 0x8001;
/// Target field of the operation-enable write that starts a task.
pub const TARGET_OP_EN: u16 = 0x0081;
/// Target field of the marker required before the operation-enable write.
pub const TARGET_MARKER: u16 = 0x0041;

/// PC register: device address of the next task's register commands.
pub const PC_BASE_ADDRESS: u16 = 0x0010;
/// PC register: the next task's amount (0 ends the chain).
pub const PC_REGISTER_AMOUNTS: u16 = 0x0014;
/// Register written by the operation-enable entry.
pub const PC_OPERATION_ENABLE: u16 = 0x0008;

/// Operation-enable bits: which blocks a task starts.
pub const OP_EN_PC: u32 = 0x01;
pub const OP_EN_CNA: u32 = 0x04;
pub const OP_EN_DPU: u32 = 0x08;
pub const OP_EN_DPU_RDMA: u32 = 0x10;

/// One decoded register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegWrite {
    pub target: u16,
    pub offset: u16,
    pub value: u32,
}

impl RegWrite {
    pub const fn new(target: u16, offset: u16, value: u32) -> Self {
        RegWrite {
            target,
            offset,
            value,
        }
    }

    /// The u64 entry the NPU's command parser reads.
    pub const fn encode(self) -> u64 {
        ((self.target as u64) << 48) | ((self.value as u64) << 16) | self.offset as u64
    }

    pub const fn decode(word: u64) -> Self {
        RegWrite {
            target: (word >> 48) as u16,
            offset: word as u16,
            value: (word >> 16) as u32,
        }
    }

    /// Block name of the target field ("CNA", "DPU", ...; "-" for padding).
    pub fn block_name(self) -> &'static str {
        block_name(self.target)
    }

    /// Register name, "?" when the offset is not one the matmul task uses.
    pub fn register_name(self) -> &'static str {
        register_name(self.target, self.offset).unwrap_or("?")
    }
}

/// Readable name of a target field.
pub fn block_name(target: u16) -> &'static str {
    match target {
        0 => "-",
        TARGET_PC => "PC",
        TARGET_CNA => "CNA",
        TARGET_CORE => "CORE",
        TARGET_DPU => "DPU",
        TARGET_DPU_RDMA => "DPU_RDMA",
        TARGET_PPU => "PPU",
        TARGET_PPU_RDMA => "PPU_RDMA",
        TARGET_OP_EN => "OP_EN",
        TARGET_MARKER => "MARKER",
        _ => "?",
    }
}

/// Register offsets of the matmul task, named as in the public register
/// headers (mtx512/rk3588-npu, Mesa rocket).
pub const REGISTER_NAMES: &[(u16, u16, &str)] = &[
    (TARGET_PC, PC_OPERATION_ENABLE, "OPERATION_ENABLE"),
    (TARGET_PC, PC_BASE_ADDRESS, "BASE_ADDRESS"),
    (TARGET_PC, PC_REGISTER_AMOUNTS, "REGISTER_AMOUNTS"),
    (TARGET_OP_EN, PC_OPERATION_ENABLE, "OPERATION_ENABLE"),
    (TARGET_MARKER, 0x0000, "MARKER"),
    (TARGET_CNA, 0x1004, "S_POINTER"),
    (TARGET_CNA, 0x100C, "CONV_CON1"),
    (TARGET_CNA, 0x1010, "CONV_CON2"),
    (TARGET_CNA, 0x1014, "CONV_CON3"),
    (TARGET_CNA, 0x1020, "DATA_SIZE0"),
    (TARGET_CNA, 0x1024, "DATA_SIZE1"),
    (TARGET_CNA, 0x1028, "DATA_SIZE2"),
    (TARGET_CNA, 0x102C, "DATA_SIZE3"),
    (TARGET_CNA, 0x1030, "WEIGHT_SIZE0"),
    (TARGET_CNA, 0x1034, "WEIGHT_SIZE1"),
    (TARGET_CNA, 0x1038, "WEIGHT_SIZE2"),
    (TARGET_CNA, 0x1040, "CBUF_CON0"),
    (TARGET_CNA, 0x1044, "CBUF_CON1"),
    (TARGET_CNA, 0x104C, "CVT_CON0"),
    (TARGET_CNA, 0x1050, "CVT_CON1"),
    (TARGET_CNA, 0x1054, "CVT_CON2"),
    (TARGET_CNA, 0x1058, "CVT_CON3"),
    (TARGET_CNA, 0x105C, "CVT_CON4"),
    (TARGET_CNA, 0x1060, "FC_CON0"),
    (TARGET_CNA, 0x1064, "FC_CON1"),
    (TARGET_CNA, 0x1068, "PAD_CON0"),
    (TARGET_CNA, 0x1070, "FEATURE_DATA_ADDR"),
    (TARGET_CNA, 0x1074, "FC_CON2"),
    (TARGET_CNA, 0x1078, "DMA_CON0"),
    (TARGET_CNA, 0x107C, "DMA_CON1"),
    (TARGET_CNA, 0x1080, "DMA_CON2"),
    (TARGET_CNA, 0x1084, "FC_DATA_SIZE0"),
    (TARGET_CNA, 0x1088, "FC_DATA_SIZE1"),
    (TARGET_CNA, 0x1100, "DCOMP_CTRL"),
    (TARGET_CNA, 0x1104, "DCOMP_REGNUM"),
    (TARGET_CNA, 0x1110, "DCOMP_ADDR0"),
    (TARGET_CNA, 0x1140, "DCOMP_AMOUNT0"),
    (TARGET_CNA, 0x1144, "DCOMP_AMOUNT1"),
    (TARGET_CNA, 0x1148, "DCOMP_AMOUNT2"),
    (TARGET_CNA, 0x114C, "DCOMP_AMOUNT3"),
    (TARGET_CNA, 0x1150, "DCOMP_AMOUNT4"),
    (TARGET_CNA, 0x1154, "DCOMP_AMOUNT5"),
    (TARGET_CNA, 0x1158, "DCOMP_AMOUNT6"),
    (TARGET_CNA, 0x115C, "DCOMP_AMOUNT7"),
    (TARGET_CNA, 0x1160, "DCOMP_AMOUNT8"),
    (TARGET_CNA, 0x1164, "DCOMP_AMOUNT9"),
    (TARGET_CNA, 0x1168, "DCOMP_AMOUNT10"),
    (TARGET_CNA, 0x116C, "DCOMP_AMOUNT11"),
    (TARGET_CNA, 0x1170, "DCOMP_AMOUNT12"),
    (TARGET_CNA, 0x1174, "DCOMP_AMOUNT13"),
    (TARGET_CNA, 0x1178, "DCOMP_AMOUNT14"),
    (TARGET_CNA, 0x117C, "DCOMP_AMOUNT15"),
    (TARGET_CNA, 0x1180, "CVT_CON5"),
    (TARGET_CNA, 0x1184, "PAD_CON1"),
    (TARGET_CORE, 0x3010, "MISC_CFG"),
    (TARGET_CORE, 0x3014, "DATAOUT_SIZE_0"),
    (TARGET_CORE, 0x3018, "DATAOUT_SIZE_1"),
    (TARGET_CORE, 0x301C, "CLIP_TRUNCATE"),
    (TARGET_CORE, 0x3030, "CORE_3030"),
    (TARGET_DPU, 0x4004, "S_POINTER"),
    (TARGET_DPU, 0x400C, "FEATURE_MODE_CFG"),
    (TARGET_DPU, 0x4010, "DATA_FORMAT"),
    (TARGET_DPU, 0x4014, "OFFSET_PEND"),
    (TARGET_DPU, 0x4020, "DST_BASE_ADDR"),
    (TARGET_DPU, 0x4024, "DST_SURF_STRIDE"),
    (TARGET_DPU, 0x4030, "DATA_CUBE_WIDTH"),
    (TARGET_DPU, 0x4034, "DATA_CUBE_HEIGHT"),
    (TARGET_DPU, 0x4038, "DATA_CUBE_NOTCH_ADDR"),
    (TARGET_DPU, 0x403C, "DATA_CUBE_CHANNEL"),
    (TARGET_DPU, 0x4040, "BS_CFG"),
    (TARGET_DPU, 0x4044, "BS_ALU_CFG"),
    (TARGET_DPU, 0x4048, "BS_MUL_CFG"),
    (TARGET_DPU, 0x404C, "BS_RELUX_CMP_VALUE"),
    (TARGET_DPU, 0x4050, "BS_OW_CFG"),
    (TARGET_DPU, 0x4054, "BS_OW_OP"),
    (TARGET_DPU, 0x4058, "WDMA_SIZE_0"),
    (TARGET_DPU, 0x405C, "WDMA_SIZE_1"),
    (TARGET_DPU, 0x4060, "BN_CFG"),
    (TARGET_DPU, 0x4064, "BN_ALU_CFG"),
    (TARGET_DPU, 0x4068, "BN_MUL_CFG"),
    (TARGET_DPU, 0x406C, "BN_RELUX_CMP_VALUE"),
    (TARGET_DPU, 0x4070, "EW_CFG"),
    (TARGET_DPU, 0x4074, "EW_CVT_OFFSET_VALUE"),
    (TARGET_DPU, 0x4078, "EW_CVT_SCALE_VALUE"),
    (TARGET_DPU, 0x407C, "EW_RELUX_CMP_VALUE"),
    (TARGET_DPU, 0x4080, "OUT_CVT_OFFSET"),
    (TARGET_DPU, 0x4084, "OUT_CVT_SCALE"),
    (TARGET_DPU, 0x4088, "OUT_CVT_SHIFT"),
    (TARGET_DPU, 0x4090, "EW_OP_VALUE_0"),
    (TARGET_DPU, 0x4094, "EW_OP_VALUE_1"),
    (TARGET_DPU, 0x4098, "EW_OP_VALUE_2"),
    (TARGET_DPU, 0x409C, "EW_OP_VALUE_3"),
    (TARGET_DPU, 0x40A0, "EW_OP_VALUE_4"),
    (TARGET_DPU, 0x40A4, "EW_OP_VALUE_5"),
    (TARGET_DPU, 0x40A8, "EW_OP_VALUE_6"),
    (TARGET_DPU, 0x40AC, "EW_OP_VALUE_7"),
    (TARGET_DPU, 0x40C0, "SURFACE_ADD"),
    (TARGET_DPU, 0x40C4, "DPU_40C4"),
    (TARGET_DPU, 0x4100, "LUT_ACCESS_CFG"),
    (TARGET_DPU, 0x4104, "LUT_ACCESS_DATA"),
    (TARGET_DPU, 0x4108, "LUT_CFG"),
    (TARGET_DPU, 0x410C, "LUT_INFO"),
    (TARGET_DPU, 0x4110, "LUT_LE_START"),
    (TARGET_DPU, 0x4114, "LUT_LE_END"),
    (TARGET_DPU, 0x4118, "LUT_LO_START"),
    (TARGET_DPU, 0x411C, "LUT_LO_END"),
    (TARGET_DPU, 0x4120, "LUT_LE_SLOPE_SCALE"),
    (TARGET_DPU, 0x4124, "LUT_LE_SLOPE_SHIFT"),
    (TARGET_DPU, 0x4128, "LUT_LO_SLOPE_SCALE"),
    (TARGET_DPU, 0x412C, "LUT_LO_SLOPE_SHIFT"),
];

/// Name of register `offset` written through `target`, if known.
pub fn register_name(target: u16, offset: u16) -> Option<&'static str> {
    REGISTER_NAMES
        .iter()
        .find(|(t, o, _)| *t == target && *o == offset)
        .map(|(_, _, n)| *n)
}

/// The block base a register offset belongs to must match the write's target
/// (CNA registers live at 0x1000.., CORE at 0x3000.., DPU at 0x4000..).
pub fn offset_matches_target(target: u16, offset: u16) -> bool {
    let base = offset & 0xF000;
    match target {
        TARGET_PC | TARGET_OP_EN | TARGET_MARKER => base == 0x0000,
        TARGET_CNA => base == 0x1000,
        TARGET_CORE => base == 0x3000,
        TARGET_DPU => base == 0x4000,
        TARGET_DPU_RDMA => base == 0x5000,
        TARGET_PPU => base == 0x6000,
        TARGET_PPU_RDMA => base == 0x7000,
        _ => false,
    }
}

/// PC amount for a task of `entries` u64 entries in total (body + 4-entry
/// tail + padding): the PC fetches 128-bit pairs, and the field holds the
/// number of pairs minus one (the vendor driver's ceil((body + 4) / 2) - 1).
pub fn pc_amount(entries: usize) -> u32 {
    (entries.div_ceil(2) as u32).saturating_sub(1)
}

/// Number of u64 entries the PC fetches for an amount (inverse of
/// [`pc_amount`] for even entry counts).
pub fn entries_for_amount(amount: u32) -> usize {
    (amount as usize + 1) * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let w = RegWrite::new(TARGET_DPU, 0x4004, 0xE);
        assert_eq!(w.encode(), 0x1001_0000_000E_4004);
        assert_eq!(RegWrite::decode(w.encode()), w);
        assert_eq!(w.register_name(), "S_POINTER");
        assert_eq!(w.block_name(), "DPU");
    }

    #[test]
    fn amount_formula() {
        assert_eq!(pc_amount(108), 53);
        assert_eq!(pc_amount(109), 54);
        assert_eq!(entries_for_amount(53), 108);
    }

    #[test]
    fn names_are_in_their_block() {
        for (t, o, n) in REGISTER_NAMES {
            assert!(offset_matches_target(*t, *o), "{n} at {o:#x}");
        }
    }
}
