//! The ggml tensor type table: ids as in ggml.h, names as llama.cpp prints
//! them (upper case), elements per block and bytes per block.

use std::fmt;

/// A ggml tensor element type. Discriminants are the ids of ggml.h's
/// `enum ggml_type`; gaps are ids upstream removed (4, 5, 31-33, 36-38).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// One row of the table: (type, name, elements per block, bytes per block).
/// Block byte sizes follow the block structs of ggml-common.h.
const TABLE: &[(GgmlType, &str, usize, usize)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 2 + 16),
    (GgmlType::Q4_1, "Q4_1", 32, 2 + 2 + 16),
    (GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16),
    (GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16),
    (GgmlType::Q8_0, "Q8_0", 32, 2 + 32),
    (GgmlType::Q8_1, "Q8_1", 32, 2 + 2 + 32),
    (GgmlType::Q2_K, "Q2_K", 256, 16 + 64 + 2 + 2),
    (GgmlType::Q3_K, "Q3_K", 256, 32 + 64 + 12 + 2),
    (GgmlType::Q4_K, "Q4_K", 256, 2 + 2 + 12 + 128),
    (GgmlType::Q5_K, "Q5_K", 256, 2 + 2 + 12 + 32 + 128),
    (GgmlType::Q6_K, "Q6_K", 256, 128 + 64 + 16 + 2),
    (GgmlType::Q8_K, "Q8_K", 256, 4 + 256 + 32),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 2 + 64),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 2 + 64 + 8),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 2 + 96),
    (GgmlType::IQ1_S, "IQ1_S", 256, 2 + 32 + 16),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16),
    (GgmlType::IQ3_S, "IQ3_S", 256, 2 + 64 + 8 + 32 + 4),
    (GgmlType::IQ2_S, "IQ2_S", 256, 2 + 64 + 8 + 8),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 2 + 2 + 4 + 128),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 32 + 16 + 8),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 48 + 4 + 2),
    (GgmlType::TQ2_0, "TQ2_0", 256, 64 + 2),
    (GgmlType::MXFP4, "MXFP4", 32, 1 + 16),
    (GgmlType::NVFP4, "NVFP4", 64, 4 + 32),
    (GgmlType::Q1_0, "Q1_0", 128, 2 + 16),
    (GgmlType::Q2_0, "Q2_0", 64, 2 + 16),
];

impl GgmlType {
    /// Every type ggml defines, in id order.
    pub const ALL: [GgmlType; 35] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::NVFP4,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ];

    fn row(self) -> &'static (GgmlType, &'static str, usize, usize) {
        // TABLE is in the same order as ALL; the search cannot fail because
        // every variant has a row (checked by a unit test).
        let mut i = 0;
        while i < TABLE.len() {
            if TABLE[i].0 == self {
                return &TABLE[i];
            }
            i += 1;
        }
        &TABLE[0]
    }

    /// The type with ggml id `id`, or None for ids ggml does not define
    /// (including removed ones).
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|r| r.0 as u32 == id).map(|r| r.0)
    }

    /// The ggml.h id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name as llama.cpp prints it: "F32", "Q4_K", "IQ2_XXS", "MXFP4".
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Parses a name, case-insensitively ("q4_k" and "Q4_K" both work).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE
            .iter()
            .find(|r| r.1.eq_ignore_ascii_case(name))
            .map(|r| r.0)
    }

    /// Elements per block (1 for plain number types).
    pub fn block_size(self) -> usize {
        self.row().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().3
    }

    /// True for block-quantized formats (block size above 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n_elements` elements, or None if `n_elements` is not a
    /// whole number of blocks or the size overflows u64.
    pub fn row_bytes(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_consistent() {
        assert_eq!(TABLE.len(), GgmlType::ALL.len());
        for (row, &t) in TABLE.iter().zip(GgmlType::ALL.iter()) {
            assert_eq!(row.0, t);
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn sizes_match_ggml() {
        let expect = [
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q8_1, 32, 36),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q8_K, 256, 292),
            (GgmlType::IQ2_XXS, 256, 66),
            (GgmlType::IQ2_XS, 256, 74),
            (GgmlType::IQ3_XXS, 256, 98),
            (GgmlType::IQ1_S, 256, 50),
            (GgmlType::IQ4_NL, 32, 18),
            (GgmlType::IQ3_S, 256, 110),
            (GgmlType::IQ2_S, 256, 82),
            (GgmlType::IQ4_XS, 256, 136),
            (GgmlType::IQ1_M, 256, 56),
            (GgmlType::TQ1_0, 256, 54),
            (GgmlType::TQ2_0, 256, 66),
            (GgmlType::MXFP4, 32, 17),
            (GgmlType::NVFP4, 64, 36),
            (GgmlType::Q1_0, 128, 18),
            (GgmlType::Q2_0, 64, 18),
            (GgmlType::BF16, 1, 2),
            (GgmlType::F64, 1, 8),
        ];
        for (t, bs, ts) in expect {
            assert_eq!((t.block_size(), t.type_size()), (bs, ts), "{t}");
        }
    }

    #[test]
    fn row_bytes_checks_divisibility_and_overflow() {
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(100), None);
        assert_eq!(GgmlType::F32.row_bytes(u64::MAX), None);
        assert_eq!(GgmlType::F32.row_bytes(0), Some(0));
    }
}
