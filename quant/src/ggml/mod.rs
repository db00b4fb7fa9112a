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
use kernels::blocks::{
    as_blocks, as_blocks_mut, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};

pub mod cpu;
pub mod kquants;
pub mod simple;
pub mod util;

pub use cpu::{CpuMatmul, MatmulFn};
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

/// One row of the type table: everything rkinfer knows about a type.
/// Name, block size and bytes per block come from [`gguf::GgmlType`] (the
/// file format needs them to parse); the table repeats the sizes so a row
/// reads on its own, and a test checks they agree.
#[derive(Clone, Copy)]
pub struct TypeTraits {
    pub ty: GgmlType,
    pub block_size: usize,
    pub type_size: usize,
    /// The type activations are converted to for this type's dot product.
    pub vec_dot_type: GgmlType,
    /// Decodes whole blocks (lengths checked by [`dequantize_row`]): the
    /// `kernels` crate's SIMD decoder where one exists (same values as
    /// ggml's `dequantize_row_*`), else the reference code here.
    pub dequantize_row: fn(&[u8], &mut [f32]),
    /// Encodes whole blocks exactly as ggml's `quantize_row_*_ref`
    /// (lengths checked by [`quantize_row_ref`]).
    pub quantize_row_ref: fn(&[f32], &mut [u8]),
    /// Encodes whole blocks with the bytes of `quantize_row_ref` (finite
    /// inputs), through the SIMD kernel where one exists (lengths checked
    /// by [`quantize_row`]).
    pub quantize_row: fn(&[f32], &mut [u8]),
    /// The KV cache may store this type (the `-ctk/-ctv` types rkinfer's
    /// attention reads).
    pub kv_cache: bool,
    /// The CPU backend's matmul for weights of this type (None: not a
    /// weight type of the CPU backend).
    pub cpu_matmul: Option<CpuMatmul>,
}

impl TypeTraits {
    /// The name as llama.cpp prints it ("Q4_K").
    pub fn name(&self) -> &'static str {
        self.ty.name()
    }
}

impl fmt::Debug for TypeTraits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeTraits")
            .field("ty", &self.ty)
            .field("block_size", &self.block_size)
            .field("type_size", &self.type_size)
            .field("vec_dot_type", &self.vec_dot_type)
            .field("kv_cache", &self.kv_cache)
            .field("cpu_matmul", &self.cpu_matmul.is_some())
            .finish()
    }
}

/// A row with the format's reference code only.
const fn traits_of<F: GgmlFormat>() -> TypeTraits {
    TypeTraits {
        ty: F::TYPE,
        block_size: F::BLOCK_SIZE,
        type_size: F::TYPE_SIZE,
        vec_dot_type: F::VEC_DOT_TYPE,
        dequantize_row: F::dequantize_row,
        quantize_row_ref: F::quantize_row_ref,
        quantize_row: F::quantize_row_ref,
        kv_cache: false,
        cpu_matmul: None,
    }
}

/// A decoder of the `kernels` crate on bytes, which `$view` shows as the
/// kernel's elements (block structs, or u16 for f16/bf16); the reference
/// `$format` decodes bytes not aligned for them.
macro_rules! simd_decoder {
    ($format:ty, $view:expr, $kernel:path) => {
        |x: &[u8], y: &mut [f32]| match $view(x) {
            Some(b) => $kernel(b, y),
            None => <$format as GgmlFormat>::dequantize_row(x, y),
        }
    };
}

/// An encoder of the `kernels` crate on bytes (see [`simd_decoder`]).
macro_rules! simd_encoder {
    ($format:ty, $view:expr, $kernel:path) => {
        |x: &[f32], y: &mut [u8]| match $view(y) {
            Some(b) => $kernel(x, b),
            None => <$format as GgmlFormat>::quantize_row_ref(x, y),
        }
    };
}

/// The CPU matmul of a float type stored as `$elem`: activations through
/// `$act`, one `$dot` per pair of rows.
macro_rules! float_matmul {
    ($ty:ident, $elem:ty, $act:path, $dot:path) => {
        Some(CpuMatmul {
            quantize_act: |x, y| cpu::encode_on_bytes::<$elem>(GgmlType::$ty, $act, x, y),
            gemm: |w, a, k, out, ldo| cpu::float_gemm(GgmlType::$ty, $dot, w, a, k, out, ldo),
        })
    };
}

/// The CPU matmul of a block type (a [`CpuMatmul`]): activations of the
/// weight type `$ty` through `$act` into `$act_block`, products through
/// the multi-row kernel `$gemm`, both on bytes.
#[macro_export]
macro_rules! block_matmul {
    ($ty:expr, $block:ty, $act_block:ty, $act:path, $gemm:path) => {
        $crate::CpuMatmul {
            quantize_act: |x, y| {
                $crate::ggml::cpu::quantize_on_bytes::<$act_block>($ty, $act, x, y)
            },
            gemm: |w, a, nb, out, ldo| {
                $crate::ggml::cpu::gemm_on_bytes::<$block, $act_block>(
                    $ty, $gemm, w, a, nb, out, ldo,
                )
            },
        }
    };
}

/// Every supported type, once. To add a type: its
/// [`GgmlFormat`] (layout, reference decode and encode) and a row here;
/// for the CPU backend also its block struct and kernels in the `kernels`
/// crate, named in `dequantize_row` and `cpu_matmul`.
pub const TYPES: [TypeTraits; 15] = [
    TypeTraits {
        cpu_matmul: Some(CpuMatmul {
            quantize_act: cpu::act_f32,
            gemm: |w, a, k, out, ldo| {
                cpu::float_gemm(GgmlType::F32, kernels::vec_dot_f32, w, a, k, out, ldo)
            },
        }),
        ..traits_of::<simple::F32>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(simple::F16, cpu::u16s, kernels::f16_to_f32_row),
        quantize_row: simd_encoder!(simple::F16, cpu::u16s_mut, kernels::f32_to_f16_row),
        kv_cache: true,
        cpu_matmul: float_matmul!(F16, u16, kernels::f32_to_f16_row, kernels::vec_dot_f16),
        ..traits_of::<simple::F16>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(simple::BF16, cpu::u16s, kernels::bf16_to_f32_row),
        cpu_matmul: float_matmul!(BF16, u16, kernels::f32_to_bf16_row, kernels::vec_dot_bf16),
        ..traits_of::<simple::BF16>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            simple::Q4_0,
            as_blocks::<BlockQ4_0>,
            kernels::dequantize_row_q4_0
        ),
        kv_cache: true,
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q4_0,
            BlockQ4_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_round_even,
            kernels::gemm_q4_0_q8_0
        )),
        ..traits_of::<simple::Q4_0>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            simple::Q4_1,
            as_blocks::<BlockQ4_1>,
            kernels::dequantize_row_q4_1
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q4_1,
            BlockQ4_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1_round_even,
            kernels::gemm_q4_1_q8_1
        )),
        ..traits_of::<simple::Q4_1>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            simple::Q5_0,
            as_blocks::<BlockQ5_0>,
            kernels::dequantize_row_q5_0
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q5_0,
            BlockQ5_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_round_even,
            kernels::gemm_q5_0_q8_0
        )),
        ..traits_of::<simple::Q5_0>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            simple::Q5_1,
            as_blocks::<BlockQ5_1>,
            kernels::dequantize_row_q5_1
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q5_1,
            BlockQ5_1,
            BlockQ8_1,
            kernels::quantize_row_q8_1_round_even,
            kernels::gemm_q5_1_q8_1
        )),
        ..traits_of::<simple::Q5_1>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            simple::Q8_0,
            as_blocks::<BlockQ8_0>,
            kernels::dequantize_row_q8_0
        ),
        quantize_row: simd_encoder!(
            simple::Q8_0,
            as_blocks_mut::<BlockQ8_0>,
            kernels::quantize_row_q8_0
        ),
        kv_cache: true,
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q8_0,
            BlockQ8_0,
            BlockQ8_0,
            kernels::quantize_row_q8_0_round_even,
            kernels::gemm_q8_0_q8_0
        )),
        ..traits_of::<simple::Q8_0>()
    },
    TypeTraits {
        quantize_row: simd_encoder!(
            simple::Q8_1,
            as_blocks_mut::<BlockQ8_1>,
            kernels::quantize_row_q8_1
        ),
        ..traits_of::<simple::Q8_1>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            kquants::Q2K,
            as_blocks::<BlockQ2K>,
            kernels::dequantize_row_q2_k
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q2_K,
            BlockQ2K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q2_k_q8_k
        )),
        ..traits_of::<kquants::Q2K>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            kquants::Q3K,
            as_blocks::<BlockQ3K>,
            kernels::dequantize_row_q3_k
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q3_K,
            BlockQ3K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q3_k_q8_k
        )),
        ..traits_of::<kquants::Q3K>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            kquants::Q4K,
            as_blocks::<BlockQ4K>,
            kernels::dequantize_row_q4_k
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q4_K,
            BlockQ4K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q4_k_q8_k
        )),
        ..traits_of::<kquants::Q4K>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            kquants::Q5K,
            as_blocks::<BlockQ5K>,
            kernels::dequantize_row_q5_k
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q5_K,
            BlockQ5K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q5_k_q8_k
        )),
        ..traits_of::<kquants::Q5K>()
    },
    TypeTraits {
        dequantize_row: simd_decoder!(
            kquants::Q6K,
            as_blocks::<BlockQ6K>,
            kernels::dequantize_row_q6_k
        ),
        cpu_matmul: Some(crate::block_matmul!(
            GgmlType::Q6_K,
            BlockQ6K,
            BlockQ8K,
            kernels::quantize_row_q8_k,
            kernels::gemm_q6_k_q8_k
        )),
        ..traits_of::<kquants::Q6K>()
    },
    TypeTraits {
        quantize_row: simd_encoder!(
            kquants::Q8K,
            as_blocks_mut::<BlockQ8K>,
            kernels::quantize_row_q8_k
        ),
        ..traits_of::<kquants::Q8K>()
    },
];

/// [`TYPES`] as a static: the one table every reader uses.
pub static TYPE_TABLE: [TypeTraits; 15] = TYPES;

/// Which rows a derived type list keeps.
#[derive(Clone, Copy)]
enum Column {
    CpuMatmul,
    KvCache,
}

const fn keeps(t: &TypeTraits, c: Column) -> bool {
    match c {
        Column::CpuMatmul => t.cpu_matmul.is_some(),
        Column::KvCache => t.kv_cache,
    }
}

const fn count_rows(c: Column) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < TYPES.len() {
        if keeps(&TYPES[i], c) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn collect_rows<const N: usize>(c: Column) -> [GgmlType; N] {
    let mut out = [GgmlType::F32; N];
    let (mut i, mut n) = (0, 0);
    while i < TYPES.len() {
        if keeps(&TYPES[i], c) {
            out[n] = TYPES[i].ty;
            n += 1;
        }
        i += 1;
    }
    out
}

/// The weight types the CPU backend multiplies (rows with `cpu_matmul`).
pub const CPU_MATMUL_TYPES: [GgmlType; count_rows(Column::CpuMatmul)] =
    collect_rows(Column::CpuMatmul);

/// The types a KV cache may hold (rows with `kv_cache`).
pub const KV_CACHE_TYPES: [GgmlType; count_rows(Column::KvCache)] = collect_rows(Column::KvCache);

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
    /// A kernel needs the bytes aligned for the type's block struct.
    Misaligned { ty: GgmlType },
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
            QuantError::Misaligned { ty } => {
                write!(f, "{ty} data is not aligned for its kernels")
            }
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

/// [`quantize_row_ref`] through the SIMD encoder where the `kernels` crate
/// has one (same bytes for finite inputs): the KV cache's encoder.
pub fn quantize_row(ty: GgmlType, src: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let t = check_lengths(ty, src.len(), out.len())?;
    (t.quantize_row)(src, out);
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

    /// Every row is consistent with itself and with the rest of the table:
    /// sizes agree with gguf's, each type round-trips through its
    /// quantizers and decoder (the fast encoder writing the reference
    /// bytes, aligned or not), and every CPU matmul type has a vec-dot type
    /// in the table whose activation quantizer and multi-row kernel run and
    /// agree with a product of the decoded values.
    #[test]
    fn every_row_is_consistent() {
        let k = 512;
        let x: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.37).sin() * 2.0).collect();
        let y: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.11).cos()).collect();
        // u64 storage: aligned for every block struct; +1 views it unaligned.
        let mut store = vec![0u64; k * 4 / 8 + 2];
        for t in TYPE_TABLE.iter() {
            let ty = t.ty;
            assert_eq!(
                (t.block_size, t.type_size),
                (ty.block_size(), ty.type_size()),
                "{ty}"
            );
            assert_eq!(t.name(), ty.name());
            assert!(
                traits(t.vec_dot_type).is_some(),
                "{ty}: vec-dot type not in the table"
            );
            let n = row_size(ty, k).unwrap();
            let mut q = vec![0u8; n];
            quantize_row_ref(ty, &x, &mut q).unwrap();
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut store);
            // Offset 0 runs the SIMD decoder and encoder, offset 1 (not
            // aligned for any block struct) the reference ones: same values.
            let mut decoded: Vec<Vec<f32>> = Vec::new();
            for offset in [0, 1] {
                let fast = &mut bytes[offset..offset + n];
                quantize_row(ty, &x, fast).unwrap();
                assert_eq!(fast, &q[..], "{ty}: fast encoder (offset {offset})");
                let mut back = vec![0f32; k];
                dequantize_row(ty, fast, &mut back).unwrap();
                let err = x
                    .iter()
                    .zip(&back)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // Inputs span 4: about 4 / 2^bits per weight, bf16 precision at best.
                let bits = (8 * t.type_size) as f32 / t.block_size as f32;
                let tol = (8.0 / bits.exp2()).max(8e-3);
                assert!(err < tol, "{ty}: round trip error {err} (offset {offset})");
                decoded.push(back);
            }
            let same = decoded[0]
                .iter()
                .zip(&decoded[1])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ty}: SIMD and reference decoders differ");
            let Some(mm) = t.cpu_matmul else { continue };
            let at = traits(t.vec_dot_type).unwrap();
            let mut act = vec![0u64; (row_size(at.ty, k).unwrap()).div_ceil(8)];
            let act_bytes =
                &mut bytemuck::cast_slice_mut::<u64, u8>(&mut act)[..row_size(at.ty, k).unwrap()];
            (mm.quantize_act)(&y, act_bytes).unwrap();
            let mut yq = vec![0f32; k];
            dequantize_row(at.ty, act_bytes, &mut yq).unwrap();
            let mut xq = vec![0f32; k];
            dequantize_row(ty, &q, &mut xq).unwrap();
            let want: f32 = xq.iter().zip(&yq).map(|(a, b)| a * b).sum();
            // The `_1` activation types carry d * sum(q) rounded to f16.
            let scale: f32 = xq.iter().zip(&yq).map(|(a, b)| (a * b).abs()).sum();
            let mut w = vec![0u64; n.div_ceil(8)];
            let w_bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..n];
            w_bytes.copy_from_slice(&q);
            let mut out = [0f32; 1];
            (mm.gemm)(w_bytes, act_bytes, k / t.block_size, &mut out, 1).unwrap();
            assert!(
                (out[0] - want).abs() <= 1e-3 * (1.0 + scale),
                "{ty}: gemm {} vs decoded dot {want}",
                out[0]
            );
        }
        for ty in KV_CACHE_TYPES {
            assert!(traits(ty).is_some_and(|t| t.kv_cache));
        }
        assert_eq!(
            CPU_MATMUL_TYPES.len(),
            TYPE_TABLE.iter().filter(|t| t.cpu_matmul.is_some()).count()
        );
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
