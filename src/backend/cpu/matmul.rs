//! The CPU matmul: activations converted once into the weight's vec-dot
//! type, weight rows split across the rayon pool. The kernels come from the
//! type table (`quant::TYPE_TABLE`); [`super::compat`] picks the variants
//! that round as llama.cpp does for some types and batch sizes.

use gguf::GgmlType;
use kernels::blocks::BlockQ4_0x8;
use quant::{MatmulFn, QuantError};
use rayon::prelude::*;

use super::compat::{self, MatmulPart};
use crate::backend::{BackendError, Scratch, Weights};
use crate::graph::WeightId;

/// Token rows processed against one weight row before moving on (keeps the
/// weight row in L1 and the activation tile in L2).
const TOKEN_TILE: usize = 32;

/// Activations of a matmul converted to the weight's vec-dot type.
fn act_bytes(scratch: &mut Vec<u64>, bytes: usize) -> &mut [u8] {
    let words = bytes.div_ceil(8);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    &mut bytemuck::cast_slice_mut(&mut scratch[..words])[..bytes]
}

/// The kernels only fail on data not aligned for their block structs.
fn misaligned(what: &'static str) -> impl Fn(QuantError) -> BackendError {
    move |_| BackendError::Misaligned(what)
}

/// `out[t][r] = dot(w row r, x row t)` for `n_tok` rows of `x`; `q4_0x8`
/// is the weight interleaved at load (see [`compat::interleave_q4_0`]).
pub fn mul_mat(
    weights: &Weights,
    wid: WeightId,
    q4_0x8: Option<&[BlockQ4_0x8]>,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), BackendError> {
    let w = weights.get(wid);
    let k = w.cols;
    let unsupported = || BackendError::UnsupportedType {
        tensor: w.name.clone(),
        ty: w.ty.name().to_string(),
    };
    let traits = quant::traits(w.ty).ok_or_else(unsupported)?;
    let own = traits.cpu_matmul.ok_or_else(unsupported)?;
    let nb = k / traits.block_size;
    if let (GgmlType::Q4_0, Some(packed)) = (w.ty, q4_0x8) {
        let part = compat::q4_0_interleaved(n_tok);
        let unit = nb * std::mem::size_of::<BlockQ4_0x8>();
        let weight = GroupedRows {
            bytes: kernels::block_bytes(packed),
            group: compat::Q4_0_REPACK_ROWS,
            unit,
            nb,
        };
        return run_part(weight, &part, x, k, w.rows, out, scratch);
    }
    let weight = GroupedRows {
        bytes: weights.bytes(wid),
        group: 1,
        unit: nb * traits.type_size,
        nb,
    };
    let mut t0 = 0;
    for part in compat::matmul_parts(w.ty, w.rows, k, n_tok, own, traits.vec_dot_type) {
        if part.n_tok == 0 {
            continue;
        }
        let t1 = t0 + part.n_tok;
        run_part(
            weight,
            &part,
            &x[t0 * k..t1 * k],
            k,
            w.rows,
            &mut out[t0 * w.rows..t1 * w.rows],
            scratch,
        )?;
        t0 = t1;
    }
    Ok(())
}

/// Weight bytes stored `group` rows per unit of `unit` bytes (1 row per
/// unit unless interleaved), `nb` blocks per row.
#[derive(Clone, Copy)]
struct GroupedRows<'a> {
    bytes: &'a [u8],
    group: usize,
    unit: usize,
    nb: usize,
}

/// Converts the part's activation rows once, then runs its products.
fn run_part(
    w: GroupedRows<'_>,
    part: &MatmulPart,
    x: &[f32],
    k: usize,
    n_out: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), BackendError> {
    let a_row =
        quant::row_size(part.act_type, k).map_err(|_| BackendError::Misaligned("activation"))?;
    let act = act_bytes(&mut scratch.act, part.n_tok * a_row);
    quantize_rows(x, k, act, a_row, part.matmul.quantize_act).map_err(misaligned("activation"))?;
    run_rows(
        w,
        act,
        a_row,
        part.n_tok,
        n_out,
        out,
        &mut scratch.tmp,
        part.matmul.gemm,
    )
    .map_err(misaligned("weight"))
}

/// Converts each activation row (in parallel for batches).
fn quantize_rows(
    x: &[f32],
    k: usize,
    act: &mut [u8],
    a_row: usize,
    f: fn(&[f32], &mut [u8]) -> Result<(), QuantError>,
) -> Result<(), QuantError> {
    if x.len() / k <= 1 {
        f(&x[..k], &mut act[..a_row])
    } else {
        act.par_chunks_mut(a_row)
            .zip(x.par_chunks(k))
            .try_for_each(|(a, xr)| f(xr, a))
    }
}

/// The matmul driver: weight rows split across threads in chunks; each
/// chunk meets the activations a tile of token rows at a time (weight
/// rows in L1, the activation tile in L2), through a multi-row kernel
/// writing `tile[r * ldo + t]`.
#[allow(clippy::too_many_arguments)]
fn run_rows(
    w: GroupedRows<'_>,
    act: &[u8],
    a_row: usize,
    n_tok: usize,
    n_out: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    gemm: MatmulFn,
) -> Result<(), QuantError> {
    let n_threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance, large enough to amortise the dispatch; a
    // multiple of the kernels' 4-row tiles and of 8-row groups.
    let chunk = (n_out / (n_threads * 8)).clamp(16, 256).next_multiple_of(8);
    let chunk = chunk.min(n_out.max(1));
    let wrows =
        |r0: usize, rows: usize| &w.bytes[r0 / w.group * w.unit..(r0 + rows) / w.group * w.unit];
    if n_tok == 1 {
        return out[..n_out]
            .par_chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(c, o)| gemm(wrows(c * chunk, o.len()), &act[..a_row], w.nb, o, 1));
    }
    // Transposed tile per chunk of weight rows, then scattered.
    if tmp.len() < n_out * n_tok {
        tmp.resize(n_out * n_tok, 0.0);
    }
    let tmp = &mut tmp[..n_out * n_tok];
    tmp.par_chunks_mut(chunk * n_tok)
        .enumerate()
        .try_for_each(|(c, o)| {
            let wr = wrows(c * chunk, o.len() / n_tok);
            let mut t0 = 0;
            while t0 < n_tok {
                let t1 = (t0 + TOKEN_TILE).min(n_tok);
                let a = &act[t0 * a_row..t1 * a_row];
                gemm(wr, a, w.nb, &mut o[t0..], n_tok)?;
                t0 = t1;
            }
            Ok(())
        })?;
    out[..n_out * n_tok]
        .par_chunks_mut(n_out)
        .enumerate()
        .for_each(|(t, o)| {
            for (r, v) in o.iter_mut().enumerate() {
                *v = tmp[r * n_tok + t];
            }
        });
    Ok(())
}
