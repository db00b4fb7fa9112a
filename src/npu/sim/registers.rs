//! The simulator's own register description: every register a matmul task
//! writes, with its fields, transcribed from the public description of the
//! RK3588 NPU (Mesa's rocket `registers.xml`, as its generated field masks
//! show them; FP32TOFP16_EN of OUT_CVT_SCALE from mtx512/rk3588-npu). It is
//! kept apart from the builder's name table (`command::regs`) on purpose: a
//! wrong offset, name or field width there is not mirrored here.

use crate::npu::command::regs::{
    PC_BASE_ADDRESS, PC_OPERATION_ENABLE, PC_REGISTER_AMOUNTS, TARGET_CNA, TARGET_CORE, TARGET_DPU,
    TARGET_MARKER, TARGET_OP_EN, TARGET_PC,
};

/// A register and its fields (name, mask).
pub(super) struct RegDesc {
    pub target: u16,
    pub offset: u16,
    pub name: &'static str,
    pub fields: &'static [(&'static str, u32)],
}

const C: u16 = TARGET_CNA;
const K: u16 = TARGET_CORE;
const D: u16 = TARGET_DPU;
/// Registers described as one 32-bit value (addresses, byte counts, and
/// the ones the matmul leaves at 0).
const WORD: &[(&str, u32)] = &[("VALUE", 0xFFFF_FFFF)];

const fn r(
    target: u16,
    offset: u16,
    name: &'static str,
    fields: &'static [(&'static str, u32)],
) -> RegDesc {
    RegDesc {
        target,
        offset,
        name,
        fields,
    }
}

pub(super) const REGISTERS: &[RegDesc] = &[
    r(
        C,
        0x100C,
        "CONV_CON1",
        &[
            ("NONALIGN_DMA", 0x4000_0000),
            ("GROUP_LINE_OFF", 0x2000_0000),
            ("ARGB_IN", 0x0000_F000),
            ("PROC_PRECISION", 0x0000_0380),
            ("IN_PRECISION", 0x0000_0070),
            ("CONV_MODE", 0x0000_000F),
        ],
    ),
    r(C, 0x1010, "CONV_CON2", &[("FEATURE_GRAINS", 0x0000_3FF0)]),
    r(
        C,
        0x1014,
        "CONV_CON3",
        &[("CONV_Y_STRIDE", 0x38), ("CONV_X_STRIDE", 0x7)],
    ),
    r(
        C,
        0x1020,
        "DATA_SIZE0",
        &[("DATAIN_WIDTH", 0x07FF_0000), ("DATAIN_HEIGHT", 0x07FF)],
    ),
    r(
        C,
        0x1024,
        "DATA_SIZE1",
        &[
            ("DATAIN_CHANNEL_REAL", 0x3FFF_0000),
            ("DATAIN_CHANNEL", 0xFFFF),
        ],
    ),
    r(C, 0x1028, "DATA_SIZE2", &[("DATAOUT_WIDTH", 0x07FF)]),
    r(C, 0x102C, "DATA_SIZE3", &[("DATAOUT_ATOMICS", 0x003F_FFFF)]),
    r(C, 0x1030, "WEIGHT_SIZE0", &[("WEIGHT_BYTES", 0xFFFF_FFFF)]),
    r(
        C,
        0x1034,
        "WEIGHT_SIZE1",
        &[("WEIGHT_BYTES_PER_KERNEL", 0x0007_FFFF)],
    ),
    r(
        C,
        0x1038,
        "WEIGHT_SIZE2",
        &[
            ("WEIGHT_WIDTH", 0x1F00_0000),
            ("WEIGHT_HEIGHT", 0x001F_0000),
            ("WEIGHT_KERNELS", 0x0000_3FFF),
        ],
    ),
    r(
        C,
        0x1040,
        "CBUF_CON0",
        &[
            ("WEIGHT_REUSE", 0x2000),
            ("WEIGHT_BANK", 0xF0),
            ("DATA_BANK", 0xF),
        ],
    ),
    r(C, 0x1044, "CBUF_CON1", &[("DATA_ENTRIES", 0x3FFF)]),
    r(
        C,
        0x104C,
        "CVT_CON0",
        &[
            ("CVT_TRUNCATE_3", 0x0FC0_0000),
            ("CVT_TRUNCATE_2", 0x003F_0000),
            ("CVT_TRUNCATE_1", 0x0000_FC00),
            ("CVT_TRUNCATE_0", 0x0000_03F0),
            ("DATA_SIGN", 0x8),
            ("CVT_TYPE", 0x2),
            ("CVT_BYPASS", 0x1),
        ],
    ),
    r(
        C,
        0x1050,
        "CVT_CON1",
        &[("CVT_SCALE0", 0xFFFF_0000), ("CVT_OFFSET0", 0xFFFF)],
    ),
    r(
        C,
        0x1054,
        "CVT_CON2",
        &[("CVT_SCALE1", 0xFFFF_0000), ("CVT_OFFSET1", 0xFFFF)],
    ),
    r(
        C,
        0x1058,
        "CVT_CON3",
        &[("CVT_SCALE2", 0xFFFF_0000), ("CVT_OFFSET2", 0xFFFF)],
    ),
    r(
        C,
        0x105C,
        "CVT_CON4",
        &[("CVT_SCALE3", 0xFFFF_0000), ("CVT_OFFSET3", 0xFFFF)],
    ),
    r(C, 0x1060, "FC_CON0", WORD),
    r(C, 0x1064, "FC_CON1", WORD),
    r(
        C,
        0x1068,
        "PAD_CON0",
        &[("PAD_LEFT", 0xF0), ("PAD_TOP", 0xF)],
    ),
    r(C, 0x1070, "FEATURE_DATA_ADDR", WORD),
    r(C, 0x1074, "FC_CON2", WORD),
    r(
        C,
        0x1078,
        "DMA_CON0",
        &[("WEIGHT_BURST_LEN", 0x000F_0000), ("DATA_BURST_LEN", 0xF)],
    ),
    r(C, 0x107C, "DMA_CON1", &[("LINE_STRIDE", 0x0FFF_FFFF)]),
    r(C, 0x1080, "DMA_CON2", &[("SURF_STRIDE", 0x0FFF_FFFF)]),
    r(
        C,
        0x1084,
        "FC_DATA_SIZE0",
        &[("DMA_WIDTH", 0x3FFF_0000), ("DMA_HEIGHT", 0x07FF)],
    ),
    r(C, 0x1088, "FC_DATA_SIZE1", &[("DMA_CHANNEL", 0xFFFF)]),
    r(C, 0x1100, "DCOMP_CTRL", WORD),
    r(C, 0x1104, "DCOMP_REGNUM", WORD),
    r(C, 0x1110, "DCOMP_ADDR0", WORD),
    r(C, 0x1140, "DCOMP_AMOUNT0", WORD),
    r(C, 0x1144, "DCOMP_AMOUNT1", WORD),
    r(C, 0x1148, "DCOMP_AMOUNT2", WORD),
    r(C, 0x114C, "DCOMP_AMOUNT3", WORD),
    r(C, 0x1150, "DCOMP_AMOUNT4", WORD),
    r(C, 0x1154, "DCOMP_AMOUNT5", WORD),
    r(C, 0x1158, "DCOMP_AMOUNT6", WORD),
    r(C, 0x115C, "DCOMP_AMOUNT7", WORD),
    r(C, 0x1160, "DCOMP_AMOUNT8", WORD),
    r(C, 0x1164, "DCOMP_AMOUNT9", WORD),
    r(C, 0x1168, "DCOMP_AMOUNT10", WORD),
    r(C, 0x116C, "DCOMP_AMOUNT11", WORD),
    r(C, 0x1170, "DCOMP_AMOUNT12", WORD),
    r(C, 0x1174, "DCOMP_AMOUNT13", WORD),
    r(C, 0x1178, "DCOMP_AMOUNT14", WORD),
    r(C, 0x117C, "DCOMP_AMOUNT15", WORD),
    r(C, 0x1180, "CVT_CON5", WORD),
    r(C, 0x1184, "PAD_CON1", WORD),
    r(
        K,
        0x3010,
        "MISC_CFG",
        &[("PROC_PRECISION", 0x0700), ("DW_EN", 0x2), ("QD_EN", 0x1)],
    ),
    r(
        K,
        0x3014,
        "DATAOUT_SIZE_0",
        &[("DATAOUT_HEIGHT", 0xFFFF_0000), ("DATAOUT_WIDTH", 0xFFFF)],
    ),
    r(K, 0x3018, "DATAOUT_SIZE_1", &[("DATAOUT_CHANNEL", 0xFFFF)]),
    r(K, 0x301C, "CLIP_TRUNCATE", &[("CLIP_TRUNCATE", 0x1F)]),
    r(K, 0x3030, "CORE_3030", WORD),
    r(
        D,
        0x4004,
        "S_POINTER",
        &[
            ("POINTER_PP_MODE", 0x8),
            ("EXECUTER_PP_EN", 0x4),
            ("POINTER_PP_EN", 0x2),
        ],
    ),
    r(
        D,
        0x400C,
        "FEATURE_MODE_CFG",
        &[
            ("BURST_LEN", 0x1E0),
            ("CONV_MODE", 0x18),
            ("OUTPUT_MODE", 0x6),
        ],
    ),
    r(
        D,
        0x4010,
        "DATA_FORMAT",
        &[
            ("OUT_PRECISION", 0xE000_0000),
            ("IN_PRECISION", 0x1C00_0000),
            ("PROC_PRECISION", 0x7),
        ],
    ),
    r(D, 0x4014, "OFFSET_PEND", WORD),
    r(D, 0x4020, "DST_BASE_ADDR", WORD),
    r(
        D,
        0x4024,
        "DST_SURF_STRIDE",
        &[("DST_SURF_STRIDE", 0xFFFF_FFF0)],
    ),
    r(D, 0x4030, "DATA_CUBE_WIDTH", &[("WIDTH", 0x1FFF)]),
    r(D, 0x4034, "DATA_CUBE_HEIGHT", &[("HEIGHT", 0x1FFF)]),
    r(D, 0x4038, "DATA_CUBE_NOTCH_ADDR", WORD),
    r(
        D,
        0x403C,
        "DATA_CUBE_CHANNEL",
        &[("ORIG_CHANNEL", 0x1FFF_0000), ("CHANNEL", 0x1FFF)],
    ),
    r(
        D,
        0x4040,
        "BS_CFG",
        &[
            ("BS_ALU_ALGO", 0x000F_0000),
            ("BS_ALU_SRC", 0x100),
            ("BS_RELU_BYPASS", 0x40),
            ("BS_MUL_BYPASS", 0x10),
            ("BS_ALU_BYPASS", 0x2),
            ("BS_BYPASS", 0x1),
        ],
    ),
    r(D, 0x4044, "BS_ALU_CFG", WORD),
    r(D, 0x4048, "BS_MUL_CFG", WORD),
    r(D, 0x404C, "BS_RELUX_CMP_VALUE", WORD),
    r(
        D,
        0x4050,
        "BS_OW_CFG",
        &[
            ("SIZE_E_2", 0x700),
            ("SIZE_E_1", 0xE0),
            ("SIZE_E_0", 0x1C),
            ("OD_BYPASS", 0x2),
        ],
    ),
    r(D, 0x4054, "BS_OW_OP", &[("OW_OP", 0xFFFF)]),
    r(D, 0x4058, "WDMA_SIZE_0", &[("CHANNEL_WDMA", 0x1FFF)]),
    r(
        D,
        0x405C,
        "WDMA_SIZE_1",
        &[("HEIGHT_WDMA", 0x1FFF_0000), ("WIDTH_WDMA", 0x1FFF)],
    ),
    r(
        D,
        0x4060,
        "BN_CFG",
        &[
            ("BN_RELU_BYPASS", 0x40),
            ("BN_MUL_BYPASS", 0x10),
            ("BN_ALU_BYPASS", 0x2),
            ("BN_BYPASS", 0x1),
        ],
    ),
    r(D, 0x4064, "BN_ALU_CFG", WORD),
    r(D, 0x4068, "BN_MUL_CFG", WORD),
    r(D, 0x406C, "BN_RELUX_CMP_VALUE", WORD),
    r(
        D,
        0x4070,
        "EW_CFG",
        &[
            ("EW_OP_SRC", 0x0010_0000),
            ("EW_ALU_ALGO", 0x000F_0000),
            ("EDATA_SIZE", 0x1000),
            ("EW_DATA_MODE", 0x800),
            ("EW_CVT_TYPE", 0x400),
            ("EW_RELU_BYPASS", 0x200),
            ("EW_OP_CVT_BYPASS", 0x100),
            ("EW_LUT_BYPASS", 0x80),
            ("EW_OP_BYPASS", 0x2),
            ("EW_BYPASS", 0x1),
        ],
    ),
    r(D, 0x4074, "EW_CVT_OFFSET_VALUE", WORD),
    r(
        D,
        0x4078,
        "EW_CVT_SCALE_VALUE",
        &[
            ("EW_OP_CVT_SHIFT", 0x003F_0000),
            ("EW_OP_CVT_SCALE", 0xFFFF),
        ],
    ),
    r(D, 0x407C, "EW_RELUX_CMP_VALUE", WORD),
    r(D, 0x4080, "OUT_CVT_OFFSET", WORD),
    r(
        D,
        0x4084,
        "OUT_CVT_SCALE",
        &[("FP32TOFP16_EN", 0x0001_0000), ("OUT_CVT_SCALE", 0xFFFF)],
    ),
    r(D, 0x4088, "OUT_CVT_SHIFT", &[("OUT_CVT_SHIFT", 0x0FFF)]),
    r(D, 0x4090, "EW_OP_VALUE_0", WORD),
    r(D, 0x4094, "EW_OP_VALUE_1", WORD),
    r(D, 0x4098, "EW_OP_VALUE_2", WORD),
    r(D, 0x409C, "EW_OP_VALUE_3", WORD),
    r(D, 0x40A0, "EW_OP_VALUE_4", WORD),
    r(D, 0x40A4, "EW_OP_VALUE_5", WORD),
    r(D, 0x40A8, "EW_OP_VALUE_6", WORD),
    r(D, 0x40AC, "EW_OP_VALUE_7", WORD),
    r(D, 0x40C0, "SURFACE_ADD", &[("SURF_ADD", 0xFFFF_FFF0)]),
    r(D, 0x40C4, "DPU_40C4", WORD),
    r(D, 0x4100, "LUT_ACCESS_CFG", WORD),
    r(D, 0x4104, "LUT_ACCESS_DATA", WORD),
    r(D, 0x4108, "LUT_CFG", WORD),
    r(D, 0x410C, "LUT_INFO", WORD),
    r(D, 0x4110, "LUT_LE_START", WORD),
    r(D, 0x4114, "LUT_LE_END", WORD),
    r(D, 0x4118, "LUT_LO_START", WORD),
    r(D, 0x411C, "LUT_LO_END", WORD),
    r(D, 0x4120, "LUT_LE_SLOPE_SCALE", WORD),
    r(D, 0x4124, "LUT_LE_SLOPE_SHIFT", WORD),
    r(D, 0x4128, "LUT_LO_SLOPE_SCALE", WORD),
    r(D, 0x412C, "LUT_LO_SLOPE_SHIFT", WORD),
];

/// The description of register `offset` written through `target`.
pub(super) fn describe(target: u16, offset: u16) -> Option<&'static RegDesc> {
    REGISTERS
        .iter()
        .find(|d| d.target == target && d.offset == offset)
}

/// Register name for messages ("?" when undescribed), the tail's PC
/// entries included.
pub(super) fn name(target: u16, offset: u16) -> &'static str {
    match (target, offset) {
        (TARGET_PC, PC_BASE_ADDRESS) => "BASE_ADDRESS",
        (TARGET_PC, PC_REGISTER_AMOUNTS) => "REGISTER_AMOUNTS",
        (TARGET_OP_EN, PC_OPERATION_ENABLE) => "OPERATION_ENABLE",
        (TARGET_MARKER, 0) => "MARKER",
        _ => describe(target, offset).map_or("?", |d| d.name),
    }
}

/// Bits of `value` outside every field of the register.
pub(super) fn stray_bits(d: &RegDesc, value: u32) -> u32 {
    value & !d.fields.iter().fold(0, |m, f| m | f.1)
}

/// Field `field` of `value`, shifted down.
pub(super) fn field(d: &RegDesc, field: &str, value: u32) -> Option<u32> {
    let mask = d.fields.iter().find(|f| f.0 == field)?.1;
    Some((value & mask) >> mask.trailing_zeros())
}
