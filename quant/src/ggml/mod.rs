//! GGML block formats, bit-exact with ggml.
//!
//! Each format is a zero-sized type implementing [`GgmlFormat`] (in the
//! spirit of candle's `GgmlType`): block geometry, the activation type its
//! dot product pairs with, and block-level decode / reference encode working
//! on little-endian bytes (so any byte slice works, aligned or not). The one
//! [`TYPE_TABLE`] turns those into function pointers keyed by
//! [`gguf::GgmlType`], which is what the rest of rkinfer calls:
//! [`dequantize_row`], [`quantize_row_ref`], [`vec_dot_type`].
//!
//! The reference quantizers write exactly the bytes of ggml's
//! `quantize_row_*_ref`, which is what `llama-quantize` uses when no
//! importance matrix is given.

use std::fmt;

use gguf::GgmlType;

pub mod kquants;
pub mod simple;
pub mod util;

pub use util::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

/// A ggml number format: one block of `BLOCK_SIZE` elements stored in
/// `TYPE_SIZE` bytes.
pub trait GgmlFormat {
    /// The ggml type id this format implements.
    const TYPE: GgmlType;
    /// Elements per block.
    const BLOCK_SIZE: usize;
    /// Bytes per block.
    const TYPE_SIZE: usize;
    /// The format activations are quantized to for this type's dot product.
    const VEC_DOT_TYPE: GgmlType;
    /// Decodes one block: `block` has at least `TYPE_SIZE` bytes, `out`
    /// at least `BLOCK_SIZE` elements.
    fn dequantize_block(block: &[u8], out: &mut [f32]);
    /// Encodes `BLOCK_SIZE` floats into one block, as ggml's reference
    /// quantizer does.
    fn quantize_block_ref(src: &[f32], block: &mut [u8]);

    /// Decodes whole blocks; lengths must already agree.
    fn dequantize_row(bytes: &[u8], out: &mut [f32]) {
        for (b, y) in bytes
            .chunks_exact(Self::TYPE_SIZE)
            .zip(out.chunks_exact_mut(Self::BLOCK_SIZE))
        {
            Self::dequantize_block(b, y);
        }
    }

    /// Encodes whole blocks; lengths must already agree.
    fn quantize_row_ref(src: &[f32], out: &mut [u8]) {
        for (x, b) in src
            .chunks_exact(Self::BLOCK_SIZE)
            .zip(out.chunks_exact_mut(Self::TYPE_SIZE))
        {
            Self::quantize_block_ref(x, b);
        }
    }
}

/// One row of the type table.
#[derive(Clone, Copy)]
pub struct TypeTraits {
    pub ty: GgmlType,
    pub block_size: usize,
    pub type_size: usize,
    pub vec_dot_type: GgmlType,
    /// Decodes whole blocks (lengths checked by [`dequantize_row`]).
    pub dequantize_row: fn(&[u8], &mut [f32]),
    /// Encodes whole blocks (lengths checked by [`quantize_row_ref`]).
    pub quantize_row_ref: fn(&[f32], &mut [u8]),
}

impl fmt::Debug for TypeTraits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeTraits")
            .field("ty", &self.ty)
            .field("block_size", &self.block_size)
            .field("type_size", &self.type_size)
            .field("vec_dot_type", &self.vec_dot_type)
            .finish()
    }
}

const fn traits_of<F: GgmlFormat>() -> TypeTraits {
    TypeTraits {
        ty: F::TYPE,
        block_size: F::BLOCK_SIZE,
        type_size: F::TYPE_SIZE,
        vec_dot_type: F::VEC_DOT_TYPE,
        dequantize_row: F::dequantize_row,
        quantize_row_ref: F::quantize_row_ref,
    }
}

/// Every supported format, once.
pub static TYPE_TABLE: [TypeTraits; 15] = [
    traits_of::<simple::F32>(),
    traits_of::<simple::F16>(),
    traits_of::<simple::BF16>(),
    traits_of::<simple::Q4_0>(),
    traits_of::<simple::Q4_1>(),
    traits_of::<simple::Q5_0>(),
    traits_of::<simple::Q5_1>(),
    traits_of::<simple::Q8_0>(),
    traits_of::<simple::Q8_1>(),
    traits_of::<kquants::Q2K>(),
    traits_of::<kquants::Q3K>(),
    traits_of::<kquants::Q4K>(),
    traits_of::<kquants::Q5K>(),
    traits_of::<kquants::Q6K>(),
    traits_of::<kquants::Q8K>(),
];

/// What went wrong converting a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// The type has no implementation here (IQ*, TQ*, integer types, ...).
    UnsupportedType(GgmlType),
    /// The element count is not a whole number of blocks.
    NotBlockMultiple {
        ty: GgmlType,
        n_elements: usize,
        block_size: usize,
    },
    /// The byte buffer does not hold exactly the row's blocks.
    ByteLength {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantError::UnsupportedType(t) => write!(f, "type {t} is not supported"),
            QuantError::NotBlockMultiple {
                ty,
                n_elements,
                block_size,
            } => write!(
                f,
                "{n_elements} elements do not divide into {ty} blocks of {block_size}"
            ),
            QuantError::ByteLength {
                ty,
                n_elements,
                expected,
                got,
            } => write!(
                f,
                "{n_elements} elements of {ty} take {expected} bytes, the buffer has {got}"
            ),
        }
    }
}

impl std::error::Error for QuantError {}

/// The table row of `ty`, or `None` if rkinfer cannot convert that type.
pub fn traits(ty: GgmlType) -> Option<&'static TypeTraits> {
    TYPE_TABLE.iter().find(|t| t.ty == ty)
}

fn traits_or_err(ty: GgmlType) -> Result<&'static TypeTraits, QuantError> {
    traits(ty).ok_or(QuantError::UnsupportedType(ty))
}

/// True if `ty` can be converted to and from f32 here.
pub fn is_supported(ty: GgmlType) -> bool {
    traits(ty).is_some()
}

/// The activation type ggml pairs with `ty` in dot products (Q8_0 for
/// Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, itself for
/// the float types); `None` for unsupported types.
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    traits(ty).map(|t| t.vec_dot_type)
}

/// Bytes taken by a row of `n_elements` of type `ty`.
pub fn row_size(ty: GgmlType, n_elements: usize) -> Result<usize, QuantError> {
    let t = traits_or_err(ty)?;
    if !n_elements.is_multiple_of(t.block_size) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            n_elements,
            block_size: t.block_size,
        });
    }
    Ok(n_elements / t.block_size * t.type_size)
}

fn check_lengths(
    ty: GgmlType,
    n_elements: usize,
    n_bytes: usize,
) -> Result<&'static TypeTraits, QuantError> {
    let t = traits_or_err(ty)?;
    let expected = row_size(ty, n_elements)?;
    if expected != n_bytes {
        return Err(QuantError::ByteLength {
            ty,
            n_elements,
            expected,
            got: n_bytes,
        });
    }
    Ok(t)
}

/// Decodes `bytes` of type `ty` into `out` (whose length is the element
/// count), exactly as ggml's `dequantize_row_*` / `ggml_*_to_fp32_row`.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let t = check_lengths(ty, out.len(), bytes.len())?;
    (t.dequantize_row)(bytes, out);
    Ok(())
}

/// Encodes `src` as type `ty` into `out`, writing exactly the bytes of
/// ggml's reference quantizer (`quantize_row_*_ref`).
pub fn quantize_row_ref(ty: GgmlType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let t = check_lengths(ty, src.len(), out.len())?;
    (t.quantize_row_ref)(src, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_geometry_matches_gguf_type_table() {
        for t in TYPE_TABLE.iter() {
            assert_eq!(t.block_size, t.ty.block_size(), "{}", t.ty);
            assert_eq!(t.type_size, t.ty.type_size(), "{}", t.ty);
        }
    }

    #[test]
    fn vec_dot_pairs_are_ggmls() {
        use GgmlType::*;
        let pairs = [
            (F32, F32),
            (F16, F16),
            (BF16, BF16),
            (Q4_0, Q8_0),
            (Q5_0, Q8_0),
            (Q8_0, Q8_0),
            (Q4_1, Q8_1),
            (Q5_1, Q8_1),
            (Q2_K, Q8_K),
            (Q3_K, Q8_K),
            (Q4_K, Q8_K),
            (Q5_K, Q8_K),
            (Q6_K, Q8_K),
        ];
        for (w, a) in pairs {
            assert_eq!(vec_dot_type(w), Some(a), "{w}");
        }
        assert_eq!(vec_dot_type(IQ2_XXS), None);
    }

    #[test]
    fn length_errors_are_reported() {
        let mut out = vec![0f32; 33];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0; 18], &mut out),
            Err(QuantError::NotBlockMultiple { .. })
        ));
        let mut out = vec![0f32; 32];
        assert!(matches!(
            dequantize_row(GgmlType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::ByteLength {
                expected: 18,
                got: 17,
                ..
            })
        ));
        assert_eq!(
            quantize_row_ref(GgmlType::IQ4_NL, &[0.0; 32], &mut [0; 18]),
            Err(QuantError::UnsupportedType(GgmlType::IQ4_NL))
        );
    }
}

#[cfg(test)]
mod tests_ggml;
