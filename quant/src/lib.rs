//! Number formats: GGML blocks bit-exact with ggml, and NPU requantization.
//!
//! ```
//! use gguf::GgmlType;
//! let x: Vec<f32> = (0..32).map(|i| i as f32 / 8.0 - 2.0).collect();
//! let mut q = vec![0u8; quant::row_size(GgmlType::Q8_0, 32).unwrap()];
//! quant::quantize_row_ref(GgmlType::Q8_0, &x, &mut q).unwrap();
//! let mut y = vec![0f32; 32];
//! quant::dequantize_row(GgmlType::Q8_0, &q, &mut y).unwrap();
//! assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.01));
//! assert_eq!(quant::vec_dot_type(GgmlType::Q4_K), Some(GgmlType::Q8_K));
//! ```

pub mod ggml;
pub use ggml::{
    dequantize_row, is_supported, quantize_row, quantize_row_ref, row_size, traits, vec_dot_type,
    CpuMatmul, GgmlFormat, MatmulFn, QuantError, TypeTraits, CPU_MATMUL_TYPES, KV_CACHE_TYPES,
    TYPES, TYPE_TABLE,
};
pub mod npu;
