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

/// `bytes` as values of a plain number type (f32, or u16 for f16/bf16).
fn cast<T: bytemuck::Pod>(ty: GgmlType, bytes: &[u8]) -> Result<&[T], QuantError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| QuantError::Misaligned { ty })
}

fn cast_mut<T: bytemuck::Pod>(ty: GgmlType, bytes: &mut [u8]) -> Result<&mut [T], QuantError> {
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| QuantError::Misaligned { ty })
}

/// The multi-row product of a float type: one `dot` per (weight row,
/// activation row) of `k` values (the float types have no tiled kernel).
pub fn float_gemm<T: bytemuck::Pod>(
    ty: GgmlType,
    dot: fn(&[T], &[T]) -> f32,
    w: &[u8],
    a: &[u8],
    k: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), QuantError> {
    let (w, a) = (cast::<T>(ty, w)?, cast::<T>(ty, a)?);
    for (r, wr) in w.chunks_exact(k).enumerate() {
        for (t, at) in a.chunks_exact(k).enumerate() {
            out[r * ldo + t] = dot(wr, at);
        }
    }
    Ok(())
}

/// A row conversion of the `kernels` crate to values of `T` on bytes.
pub fn encode_on_bytes<T: bytemuck::Pod>(
    ty: GgmlType,
    convert: fn(&[f32], &mut [T]),
    x: &[f32],
    bytes: &mut [u8],
) -> Result<(), QuantError> {
    convert(x, cast_mut(ty, bytes)?);
    Ok(())
}

/// f32 activations stay f32 (the bytes are a copy).
pub(super) fn act_f32(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    cast_mut::<f32>(GgmlType::F32, y)?.copy_from_slice(x);
    Ok(())
}

/// `bytes` as u16 values (the f16/bf16 storage), if aligned.
pub(super) fn u16s(bytes: &[u8]) -> Option<&[u16]> {
    bytemuck::try_cast_slice(bytes).ok()
}

pub(super) fn u16s_mut(bytes: &mut [u8]) -> Option<&mut [u16]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}
