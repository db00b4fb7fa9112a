//! The `kernels` crate's entry points for each type, seen through bytes so
//! that one table row can hold them (the rows are keyed by
//! [`gguf::GgmlType`], the kernels by block struct).
//!
//! Every SIMD decoder and encoder used here writes exactly what the
//! reference code of [`super::GgmlFormat`] writes (the products are exact in
//! f32 and the kernel tests compare every table bit for bit), so the table
//! may use the fast one and fall back to the reference on unaligned bytes.

use gguf::GgmlType;
use kernels::blocks::{as_blocks, as_blocks_mut, Block};

use super::QuantError;

/// The CPU matmul of one weight type: activations are converted to the
/// type's vec-dot type once per matmul, then multi-row products run.
#[derive(Clone, Copy)]
pub struct CpuMatmul {
    /// Converts activation rows (whole blocks of the vec-dot type) with the
    /// rounding ggml-cpu's x86 SIMD `from_float` uses, which is what
    /// llama.cpp's results come from (see `backend::cpu::compat`).
    pub quantize_act: fn(&[f32], &mut [u8]) -> Result<(), QuantError>,
    /// `out[r * ldo + t]` = dot of weight row r and activation row t, for
    /// rows of `nb` blocks (elements for the float types); the lengths must
    /// be whole rows (the kernels panic otherwise: a caller bug).
    pub gemm: MatmulFn,
}

/// A type-erased multi-row product (see [`CpuMatmul::gemm`]).
pub type MatmulFn = fn(&[u8], &[u8], usize, &mut [f32], usize) -> Result<(), QuantError>;

/// Calls a typed multi-row kernel on bytes; `Misaligned` when either
/// buffer is not aligned for its block type.
pub fn gemm_on_bytes<W: Block, A: Block>(
    ty: GgmlType,
    gemm: fn(&[W], &[A], usize, &mut [f32], usize),
    w: &[u8],
    a: &[u8],
    nb: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), QuantError> {
    let w = as_blocks::<W>(w).ok_or(QuantError::Misaligned { ty })?;
    let a = as_blocks::<A>(a).ok_or(QuantError::Misaligned { ty })?;
    gemm(w, a, nb, out, ldo);
    Ok(())
}

/// Calls a typed activation quantizer on bytes.
pub fn quantize_on_bytes<A: Block>(
    ty: GgmlType,
    quantize: fn(&[f32], &mut [A]),
    x: &[f32],
    y: &mut [u8],
) -> Result<(), QuantError> {
    let y = as_blocks_mut::<A>(y).ok_or(QuantError::Misaligned { ty })?;
    quantize(x, y);
    Ok(())
}

/// `bytes` as little-endian u16 values (the f16/bf16 storage).
pub(crate) fn as_u16(ty: GgmlType, bytes: &[u8]) -> Result<&[u16], QuantError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| QuantError::Misaligned { ty })
}

fn as_u16_mut(ty: GgmlType, bytes: &mut [u8]) -> Result<&mut [u16], QuantError> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| QuantError::Misaligned { ty })
}

fn as_f32(ty: GgmlType, bytes: &[u8]) -> Result<&[f32], QuantError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| QuantError::Misaligned { ty })
}

/// One `dot` per (weight row, activation row): the float types have no
/// tiled kernel, their dot product is the single-row one.
fn by_rows<T>(x: &[T], y: &[T], n: usize, out: &mut [f32], ldo: usize, dot: fn(&[T], &[T]) -> f32) {
    for (r, xr) in x.chunks_exact(n).enumerate() {
        for (t, yt) in y.chunks_exact(n).enumerate() {
            out[r * ldo + t] = dot(xr, yt);
        }
    }
}

pub(super) fn gemm_f32(
    w: &[u8],
    a: &[u8],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), QuantError> {
    let (w, a) = (as_f32(GgmlType::F32, w)?, as_f32(GgmlType::F32, a)?);
    by_rows(w, a, k, out, ldo, kernels::vec_dot_f32);
    Ok(())
}

pub(super) fn gemm_f16(
    w: &[u8],
    a: &[u8],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), QuantError> {
    let (w, a) = (as_u16(GgmlType::F16, w)?, as_u16(GgmlType::F16, a)?);
    by_rows(w, a, k, out, ldo, kernels::vec_dot_f16);
    Ok(())
}

pub(super) fn gemm_bf16(
    w: &[u8],
    a: &[u8],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), QuantError> {
    let (w, a) = (as_u16(GgmlType::BF16, w)?, as_u16(GgmlType::BF16, a)?);
    by_rows(w, a, k, out, ldo, kernels::vec_dot_bf16);
    Ok(())
}

/// f32 activations stay f32 (the bytes are a copy).
pub(super) fn act_f32(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    for (o, v) in y.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

pub(super) fn act_bf16(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    kernels::f32_to_bf16_row(x, as_u16_mut(GgmlType::BF16, y)?);
    Ok(())
}

pub(super) fn from_f16(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    kernels::f16_to_f32_row(as_u16(GgmlType::F16, bytes)?, out);
    Ok(())
}

pub(super) fn from_bf16(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    kernels::bf16_to_f32_row(as_u16(GgmlType::BF16, bytes)?, out);
    Ok(())
}

pub(super) fn to_f16(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    kernels::f32_to_f16_row(x, as_u16_mut(GgmlType::F16, y)?);
    Ok(())
}
