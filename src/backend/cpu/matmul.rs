//! The CPU matmul: activations converted once into the weight's vec-dot
//! type, weight rows split across the rayon pool. The kernels come from the
//! type table (`quant::TYPE_TABLE`); [`super::compat`] picks the variants
//! that round as llama.cpp does for some types and batch sizes.

use gguf::GgmlType;
use kernels::blocks::{BlockQ4Kx8, BlockQ4_0x8};
use quant::{MatmulFn, QuantError};
use rayon::prelude::*;

use super::compat::{self, MatmulPart};
use super::Interleaved;
use crate::backend::{BackendError, Scratch, Weights};
use crate::graph::WeightId;

/// Token rows handed to a kernel per call (the activation tile stays in
/// L2): a multiple of every kernel's token tile (4, 6 and 8), so that a
/// prompt of 128 leaves no short tile behind.
const TOKEN_TILE: usize = 64;

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

/// `out[t][r] = dot(w row r, x row t)` for `n_tok` rows of `x`;
/// `interleaved` is the weight as the CPU backend re-laid it out at load
/// (see [`compat::interleave_q4_0`], [`compat::interleave_q4_k`]).
pub fn mul_mat(
    weights: &Weights,
    wid: WeightId,
    interleaved: Option<&Interleaved>,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), BackendError> {
    let rounding = Rounding::AsBatch;
    mul_mat_rounded(weights, wid, interleaved, x, n_tok, rounding, out, scratch)
}

/// Whose kernel choice a matmul reproduces (llama.cpp picks kernels, and so
/// rounding, by the number of activation rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// That of a batch of all the rows (one sequence's tokens).
    AsBatch,
    /// That of a batch of one row, for every row: rows of different
    /// sequences (a batched decode step) multiplied in one pass over the
    /// weight, each getting the numbers it gets decoded by itself.
    EachRowAlone,
}

/// The parts of [`compat::matmul_parts`]-style splits for `n_tok` rows
/// rounded as `rounding` says: a batch of one has exactly one non-empty
/// part, whose kernels then take every row.
fn rounded_parts(
    rounding: Rounding,
    n_tok: usize,
    parts: impl Fn(usize) -> [MatmulPart; 2],
) -> [MatmulPart; 2] {
    match rounding {
        Rounding::AsBatch => parts(n_tok),
        Rounding::EachRowAlone => {
            let [a, b] = parts(1);
            let (mut one, other) = if a.n_tok == 1 { (a, b) } else { (b, a) };
            one.n_tok = n_tok;
            [one, MatmulPart { n_tok: 0, ..other }]
        }
    }
}

/// [`mul_mat`] with the rounding of `rounding`.
#[allow(clippy::too_many_arguments)]
pub fn mul_mat_rounded(
    weights: &Weights,
    wid: WeightId,
    interleaved: Option<&Interleaved>,
    x: &[f32],
    n_tok: usize,
    rounding: Rounding,
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
    // Groups of eight rows, `nb` interleaved blocks of `size` bytes each.
    let grouped = |bytes, size: usize| GroupedRows {
        bytes,
        group: 8,
        unit: nb * size,
        nb,
    };
    let (weight, parts) = match (w.ty, interleaved) {
        (GgmlType::Q4_0, Some(Interleaved::Q4_0x8(packed))) => {
            let bytes = kernels::block_bytes::<BlockQ4_0x8>(packed);
            (
                grouped(bytes, size_of::<BlockQ4_0x8>()),
                rounded_parts(rounding, n_tok, compat::q4_0_interleaved),
            )
        }
        (GgmlType::Q4_K, Some(Interleaved::Q4Kx8(packed))) => {
            let bytes = kernels::block_bytes::<BlockQ4Kx8>(packed);
            (
                grouped(bytes, size_of::<BlockQ4Kx8>()),
                rounded_parts(rounding, n_tok, compat::q4_k_interleaved),
            )
        }
        _ => {
            let plain = GroupedRows {
                bytes: weights.bytes(wid),
                group: 1,
                unit: nb * traits.type_size,
                nb,
            };
            let parts = rounded_parts(rounding, n_tok, |n| {
                compat::matmul_parts(w.ty, w.rows, k, n, own, traits.vec_dot_type)
            });
            (plain, parts)
        }
    };
    let mut t0 = 0;
    for part in parts {
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
    // multiple of the kernels' 4-row tiles and of 16 rows (pairs of 8-row
    // groups, which the 512-bit kernels take together).
    let chunk = (n_out / (n_threads * 8))
        .clamp(16, 256)
        .next_multiple_of(16);
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
    // Back to one row per token, in blocks of 16 outputs x 16 tokens read
    // and written a cache line at a time.
    const BLOCK: usize = 16;
    out[..n_out * n_tok]
        .par_chunks_mut(n_out * BLOCK)
        .enumerate()
        .for_each(|(b, o)| {
            let t0 = b * BLOCK;
            let tokens = o.len() / n_out;
            let mut block = [[0f32; BLOCK]; BLOCK];
            for r0 in (0..n_out).step_by(BLOCK) {
                let rows = BLOCK.min(n_out - r0);
                for (j, line) in block[..rows].iter_mut().enumerate() {
                    let from = &tmp[(r0 + j) * n_tok + t0..][..tokens];
                    line[..tokens].copy_from_slice(from);
                }
                for (i, row) in o.chunks_exact_mut(n_out).enumerate() {
                    for (d, line) in row[r0..r0 + rows].iter_mut().zip(&block) {
                        *d = line[i];
                    }
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Weight, WeightData};
    use gguf::{GgufFile, GgufWriter};
    use kernels::blocks::{as_blocks, BlockQ4K, BlockQ4_0};
    use std::sync::Arc;

    /// One random `rows x cols` matrix of `ty` as the only weight.
    fn weights(ty: GgmlType, rows: usize, cols: usize) -> Weights {
        let bytes = quant::row_size(ty, cols).expect("row size") * rows;
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut data: Vec<u8> = (0..bytes)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        // Sane f16 scales (random bits could be infinities or NaNs).
        let (block, scales) = match ty {
            GgmlType::Q4_0 => (18, 1),
            _ => (144, 2),
        };
        for (i, b) in data.chunks_exact_mut(block).enumerate() {
            for h in 0..scales {
                let v = kernels::f32_to_f16(0.001 + (i % 97) as f32 * 1e-4 * (h + 1) as f32);
                b[2 * h..2 * h + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        single_weight(ty, rows, cols, data)
    }

    /// A weight table of one `rows x cols` matrix of `ty` with these bytes.
    fn single_weight(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Weights {
        let bytes = data.len();
        let mut w = GgufWriter::new();
        w.add_tensor("w", &[cols as u64, rows as u64], ty, data)
            .expect("tensor");
        let file = GgufFile::from_bytes(w.to_bytes().expect("bytes")).expect("gguf");
        Weights {
            file: Arc::new(file),
            list: vec![Weight {
                name: "w".into(),
                ty,
                cols,
                rows,
                data: WeightData::Mapped {
                    tensor: 0,
                    range: 0..bytes,
                },
                backend: 0,
            }],
        }
    }

    fn product(w: &Weights, packed: Option<&Interleaved>, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * w.list[0].rows];
        let mut scratch = Scratch::default();
        mul_mat(w, WeightId(0), packed, x, n, &mut out, &mut scratch).expect("mul_mat");
        out
    }

    /// Interleaving at load changes the layout, never the result: for every
    /// batch size around llama.cpp's GEMM/GEMV split, the interleaved
    /// matrices give the plain rows' products bit for bit.
    #[test]
    fn interleaved_weights_give_the_plain_results() {
        let (rows, cols) = (24, 512);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
            let w = weights(ty, rows, cols);
            let bytes = w.bytes(WeightId(0));
            let packed = match ty {
                GgmlType::Q4_0 => {
                    let src = as_blocks::<BlockQ4_0>(bytes).expect("blocks");
                    let mut p = vec![BlockQ4_0x8::default(); src.len() / 8];
                    kernels::repack_q4_0x8(src, cols / 32, &mut p);
                    Interleaved::Q4_0x8(p)
                }
                _ => {
                    let src = as_blocks::<BlockQ4K>(bytes).expect("blocks");
                    let mut p = vec![BlockQ4Kx8::default(); src.len() / 8];
                    kernels::repack_q4_kx8(src, cols / 256, &mut p);
                    Interleaved::Q4Kx8(p)
                }
            };
            for n in 1..=9 {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let plain = product(&w, None, &x, n);
                let inter = product(&w, Some(&packed), &x, n);
                let same = plain
                    .iter()
                    .zip(&inter)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} n_tok={n}: interleaved differs", ty.name());
            }
        }
    }

    /// A `rows x cols` matrix of `ty` quantized from smooth random values,
    /// with its interleaved form where the CPU backend makes one.
    fn quantized(ty: GgmlType, rows: usize, cols: usize) -> (Weights, Option<Interleaved>) {
        let row_bytes = quant::row_size(ty, cols).expect("row size");
        let mut bytes = vec![0u8; row_bytes * rows];
        for (r, dst) in bytes.chunks_exact_mut(row_bytes).enumerate() {
            let x: Vec<f32> = (0..cols)
                .map(|c| (((r * 131 + c * 71) % 257) as f32 / 128.0 - 1.0) * 0.05)
                .collect();
            quant::quantize_row(ty, &x, dst).expect("quantize");
        }
        let weights = single_weight(ty, rows, cols, bytes);
        let mut cpu = super::super::CpuBackend::new();
        use crate::backend::Backend;
        let src = weights.bytes(WeightId(0)).to_vec();
        cpu.prepare_weight(WeightId(0), &weights.list[0], &src)
            .expect("prepare");
        let packed = cpu.interleaved.pop().flatten();
        (weights, packed)
    }

    /// F16 products that tinyBLAS does not take (one token, or shapes it
    /// refuses) are `vec_dot_f16` of the weight row and the f16 activation
    /// row, bit for bit, though the activation is converted only once.
    #[test]
    fn f16_products_outside_tinyblas_are_vec_dot_f16() {
        for (rows, cols, n_tok) in [(8, 640, 1), (6, 100, 1), (6, 100, 3), (5, 48, 2), (9, 7, 2)] {
            let (w, _) = quantized(GgmlType::F16, rows, cols);
            let weight: &[u16] = bytemuck::cast_slice(w.bytes(WeightId(0)));
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let got = product(&w, None, &x, n_tok);
            for t in 0..n_tok {
                let mut act = vec![0u16; cols];
                kernels::f32_to_f16_row(&x[t * cols..(t + 1) * cols], &mut act);
                for r in 0..rows {
                    let want = kernels::vec_dot_f16(&weight[r * cols..(r + 1) * cols], &act);
                    assert_eq!(
                        got[t * rows + r].to_bits(),
                        want.to_bits(),
                        "{rows}x{cols} n_tok={n_tok} ({r}, {t})"
                    );
                }
            }
        }
    }

    /// Rows of different sequences multiplied in one pass give each row
    /// exactly what a one-row product gives it, for every CPU matmul type
    /// and batch sizes on both sides of llama.cpp's kernel switches (where
    /// a plain batch product rounds differently).
    #[test]
    fn separate_rows_round_as_rows_alone() {
        let (rows, cols) = (32, 512);
        for ty in crate::backend::cpu::MATMUL_TYPES {
            let (w, packed) = quantized(ty, rows, cols);
            for n in [2usize, 3, 4, 5, 8, 9, 33] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let mut together = vec![0f32; n * rows];
                let mut scratch = Scratch::default();
                let packed_ref = packed.as_ref();
                let each = Rounding::EachRowAlone;
                mul_mat_rounded(
                    &w,
                    WeightId(0),
                    packed_ref,
                    &x,
                    n,
                    each,
                    &mut together,
                    &mut scratch,
                )
                .expect("mul_mat_rounded");
                for t in 0..n {
                    let alone = product(&w, packed.as_ref(), &x[t * cols..(t + 1) * cols], 1);
                    let row = &together[t * rows..(t + 1) * rows];
                    let same = row
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{} n={n} row {t}: differs from the row alone",
                        ty.name()
                    );
                }
            }
        }
    }
}
