//! Every choice the CPU backend makes only to round exactly as llama.cpp's
//! x86 CPU backend does (the reference build: AVX512 with AVX512-FP16,
//! GCC with `-ffp-contract=fast`). Anything not listed here is the
//! arithmetic of the type's own `vec_dot` (see `quant::TYPE_TABLE`).
//!
//! | choice | llama.cpp code path it reproduces | applies when | switch |
//! |---|---|---|---|
//! | activations to Q8_0/Q8_1 with scale 127/amax, round half to even | `quantize_row_q8_0` / `quantize_row_q8_1` in `ggml-cpu/arch/x86/quants.c` (not `quantize_row_q8_0_ref`) | every Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 matmul (the table's `cpu_matmul.quantize_act`: `kernels::quantize_row_q8_0_round_even`) | - |
//! | Q4_0 interleaved by 8 rows at load, one running sum per output | `ggml-cpu/repack.cpp`: `repack_q4_0_to_q4_0_8_bl`, `ggml_gemm_q4_0_8x8_q8_0` / `ggml_gemv_q4_0_8x8_q8_0` | rows a multiple of [`Q4_0_REPACK_ROWS`], every batch size: interleaved at load where it pays ([`interleave_q4_0`], `kernels::gemm_q4_0x8_q8_0`), else the rows as stored in the same order ([`Q4_0_REPACKED_ORDER`], `kernels::gemm_q4_0_q8_0_block_fma`) | - |
//! | Q4_K integer sums per 64 elements for groups of 4 tokens, per 256 for the rest | `ggml-cpu/repack.cpp`: `ggml_gemm_q4_K_8x8_q8_K` (groups of [`Q4_K_REPACK_GEMM_TOKENS`]) and `ggml_gemv_q4_K_8x8_q8_K` (the remainder) | batches of [`Q4_K_REPACK_GEMM_MIN_TOKENS`]+ tokens ([`matmul_parts`], `kernels::gemm_q4_k_q8_k_sum64`, then `kernels::gemm_q4_k_q8_k`) | - |
//! | Q6_K per block `fma(f32(isum) * d_w, d_a, sum)` | ggml-cpu's tiled K-quant matmul (`ggml-cpu/tiled`, see docs/accuracy.md) | batches of [`Q6_K_TILED_MIN_TOKENS`] tokens and more (`kernels::gemm_q6_k_q8_k_block_fma`) | - |
//! | F16/F32: 16-lane fused accumulators reduced as `_mm512_reduce_add_ps`; F16 activations rounded to f16 first | llamafile's tinyBLAS, `llamafile_sgemm` in `ggml-cpu/llamafile/sgemm.cpp` | [`TINYBLAS_MIN_TOKENS`]+ tokens, rows a multiple of [`TINYBLAS_ROW_MULTIPLE`], row length a multiple of [`TINYBLAS_K_MULTIPLE`] (`kernels::gemm_f16_lanes16`, `kernels::gemm_f32_lanes16`) | - |
//! | attention: one query at a time, V accumulated in f16 | `ggml_compute_forward_flash_attn_ext_f16` (one-row path) in `ggml-cpu/ops.cpp`, `ggml_vec_mad_f16` / `ggml_vec_scale_f16` in `ggml-cpu/vec.h` | below [`FLASH_ATTN_TILE`] query rows | - |
//! | the f16 V accumulator updated with native f16 arithmetic in 128-element steps (emulated: round to odd in f32, then to f16) | the AVX512-FP16 `GGML_F16_VEC_FMA` / `GGML_F16_VEC_MUL` of `ggml_vec_mad_f16` / `ggml_vec_scale_f16` | F16 V cache, whole [`F16_NATIVE_STEP`]-element steps ([`f16_native_len`]) | `RKINFER_F16_NATIVE=0` rounds as x86 builds without AVX512-FP16 |
//! | attention in f32 over 64-key tiles, q.k as a fused GEMM | the tiled flash-attention path of `ggml-cpu/ops.cpp` (`GGML_FA_TILE_Q`/`GGML_FA_TILE_KV`) | [`FLASH_ATTN_TILE`]+ query rows with an F16 cache | - |
//! | GELU through a table of f16(gelu(f16 x)), the table's `1 + a*x*x` fused | `GGML_GELU_FP16`: `ggml_vec_geglu_f32` and `ggml_table_gelu_f16` (`ggml-cpu/vec.h`, built in `ggml_cpu_init`) | every GEGLU (`kernels::geglu_ggml`) | - |
//! | `exp` in SiLU, softmax and attention as ggml's AVX-512 polynomial | `ggml_v_expf` in `ggml-cpu/vec.h` | every SwiGLU/softmax (`kernels::swiglu`, `kernels::exp_shift`) | - |
//! | rope rotations with the first product of each line fused | `rope_yarn` / `ggml_rope_cache_init` in `ggml-cpu/ops.cpp` as GCC contracts them | every rope (`kernels::rope_pairs`, `kernels::rope_neox`) | - |
//! | RMS norm: sum of squares in f64 | `ggml_compute_forward_rms_norm_f32` (`ggml_float` sum) | every RMS norm (`kernels::rms_norm`) | - |
//! | AVX512-VNNI kernels compiled with AVX-512 code generation | (no rounding effect: same operations, more registers) | compilers 1.89+ (`kernels/build.rs`) | `RKINFER_NO_AVX512=1` at build time compiles what an older compiler would |
//!
//! F16 matmuls that tinyBLAS does not take (decode among them) keep the
//! type's `vec_dot_f16` order, through `kernels::gemm_f16_f32` on the
//! activation rounded to f16 once (the same numbers, fewer conversions).
//!
//! Q4_1/Q5_1 decoding (`q*d + m`) needs no choice: `q*d` is exact in f32
//! (a 4- or 5-bit integer times an f16), so fusing it with `+ m`, as GCC
//! does in llama-quantize's `dequantize_row_q4_1`, rounds the same.
//!
//! Only x86 rounding is reproduced; on aarch64 the same arithmetic runs, so
//! results agree across machines (not with ggml's NEON order).

use std::sync::OnceLock;

use gguf::GgmlType;
use kernels::blocks::{
    BlockQ4K, BlockQ4Kx8, BlockQ4_0, BlockQ4_0x8, BlockQ6K, BlockQ8K, BlockQ8_0,
};
use quant::{CpuMatmul, QuantError};

/// Rows per interleaved Q4_0 group (llama.cpp's `block_q4_0x8`).
pub const Q4_0_REPACK_ROWS: usize = 8;

/// Whether a Q4_0 matrix is interleaved at load: llama.cpp repacks whole
/// 8-row groups on x86; rkinfer does so where its kernels gain by it (the
/// rounding is the same either way, see [`Q4_0_REPACKED_ORDER`]).
pub fn interleave_q4_0(rows: usize, cols: usize) -> bool {
    rows.is_multiple_of(Q4_0_REPACK_ROWS)
        && cols.is_multiple_of(kernels::QK4_0)
        && kernels::interleaved_q4_0_pays()
}

/// Q4_0 rows kept as stored, rounded as the repacked kernels round them
/// (for matrices of whole 8-row groups that were not interleaved).
pub const Q4_0_REPACKED_ORDER: CpuMatmul = quant::block_matmul!(
    GgmlType::Q4_0,
    BlockQ4_0,
    BlockQ8_0,
    kernels::quantize_row_q8_0_round_even,
    kernels::gemm_q4_0_q8_0_block_fma
);

/// The product on Q4_0 weights interleaved by [`kernels::repack_q4_0x8`]
/// (the same rounding as [`Q4_0_REPACKED_ORDER`]) for `n_tok` rows, as
/// [`matmul_parts`] gives it (the second part empty).
pub fn q4_0_interleaved(n_tok: usize) -> [MatmulPart; 2] {
    let part = |n_tok| MatmulPart {
        n_tok,
        act_type: GgmlType::Q8_0,
        matmul: quant::block_matmul!(
            GgmlType::Q4_0,
            BlockQ4_0x8,
            BlockQ8_0,
            kernels::quantize_row_q8_0_round_even,
            kernels::gemm_q4_0x8_q8_0
        ),
    };
    [part(n_tok), part(0)]
}

/// Whether a Q4_K matrix is interleaved at load ([`kernels::repack_q4_kx8`],
/// llama.cpp's 8x4 layout): where the kernels gain by it (a CPU with `sdot`,
/// where llama.cpp repacks it that way too, and the 512-bit x86 table) and
/// the rows are whole 8-row groups. The rounding is that of the plain rows
/// (see [`matmul_parts`]).
pub fn interleave_q4_k(rows: usize, cols: usize) -> bool {
    rows.is_multiple_of(Q4_K_REPACK_ROWS)
        && cols.is_multiple_of(kernels::QK_K)
        && kernels::interleaved_q4_k_pays()
}

/// Rows per interleaved Q4_K group (llama.cpp's `block_q4_Kx8`).
pub const Q4_K_REPACK_ROWS: usize = 8;

/// [`matmul_parts`] for Q4_K weights interleaved at load: the same split
/// of the tokens, the same rounding, kernels reading [`BlockQ4Kx8`].
pub fn q4_k_interleaved(n_tok: usize) -> [MatmulPart; 2] {
    let grouped = q4_k_grouped_tokens(n_tok);
    let part = |n_tok, matmul| MatmulPart {
        n_tok,
        matmul,
        act_type: GgmlType::Q8_K,
    };
    [
        part(
            grouped,
            quant::block_matmul!(
                GgmlType::Q4_K,
                BlockQ4Kx8,
                BlockQ8K,
                kernels::quantize_row_q8_k,
                kernels::gemm_q4_kx8_q8_k_sum64
            ),
        ),
        part(
            n_tok - grouped,
            quant::block_matmul!(
                GgmlType::Q4_K,
                BlockQ4Kx8,
                BlockQ8K,
                kernels::quantize_row_q8_k,
                kernels::gemm_q4_kx8_q8_k
            ),
        ),
    ]
}

/// The leading tokens of a Q4_K batch that llama.cpp's repacked GEMM takes
/// (whole groups, from [`Q4_K_REPACK_GEMM_MIN_TOKENS`] tokens); its GEMV
/// takes the rest.
fn q4_k_grouped_tokens(n_tok: usize) -> usize {
    if n_tok >= Q4_K_REPACK_GEMM_MIN_TOKENS {
        n_tok - n_tok % Q4_K_REPACK_GEMM_TOKENS
    } else {
        0
    }
}

/// Tokens per group of llama.cpp's repacked Q4_K GEMM.
pub const Q4_K_REPACK_GEMM_TOKENS: usize = 4;

/// Batches from which llama.cpp's repacked Q4_K uses its GEMM at all.
pub const Q4_K_REPACK_GEMM_MIN_TOKENS: usize = 4;

/// From this many tokens llama.cpp hands Q6_K to its tiled matmul.
pub const Q6_K_TILED_MIN_TOKENS: usize = 8;

/// Float matmuls go through tinyBLAS from this many tokens...
pub const TINYBLAS_MIN_TOKENS: usize = 2;
/// ...when the output rows are a multiple of this...
pub const TINYBLAS_ROW_MULTIPLE: usize = 4;
/// ...and the row length a multiple of this (one AVX-512 register).
pub const TINYBLAS_K_MULTIPLE: usize = 16;

/// Query rows from which ggml switches to its tiled flash-attention kernel
/// (GGML_FA_TILE_Q); it also walks the keys in tiles of this many.
pub const FLASH_ATTN_TILE: usize = 64;

fn q4_k_repacked_gemm() -> CpuMatmul {
    quant::block_matmul!(
        GgmlType::Q4_K,
        BlockQ4K,
        BlockQ8K,
        kernels::quantize_row_q8_k,
        kernels::gemm_q4_k_q8_k_sum64
    )
}

fn q6_k_tiled() -> CpuMatmul {
    quant::block_matmul!(
        GgmlType::Q6_K,
        BlockQ6K,
        BlockQ8K,
        kernels::quantize_row_q8_k,
        kernels::gemm_q6_k_q8_k_block_fma
    )
}

/// tinyBLAS for F16 weights: activations rounded to f16, kept as f32.
fn tinyblas_f16() -> CpuMatmul {
    CpuMatmul {
        quantize_act: act_f16_as_f32,
        gemm: |w, a, k, out, ldo| {
            kernels::gemm_f16_lanes16(cast_f16(w)?, cast_f32(a)?, k, out, ldo);
            Ok(())
        },
    }
}

/// F16 weights in their own `vec_dot_f16` order (the other F16 matmuls,
/// decode among them): the same numbers as the type's table entry, but the
/// activation is rounded to f16 once, kept as f32, so the kernel converts
/// only the weights instead of both operands for every weight row.
fn f16_vec_dot_order() -> CpuMatmul {
    CpuMatmul {
        quantize_act: act_f16_as_f32,
        gemm: |w, a, k, out, ldo| {
            kernels::gemm_f16_f32(cast_f16(w)?, cast_f32(a)?, k, out, ldo);
            Ok(())
        },
    }
}

/// An activation row as f16 values kept as f32 (act type F32).
fn act_f16_as_f32(x: &[f32], y: &mut [u8]) -> Result<(), QuantError> {
    round_to_f16(x, cast_f32_mut(y)?);
    Ok(())
}

fn tinyblas_f32() -> CpuMatmul {
    CpuMatmul {
        quantize_act: |x, y| {
            cast_f32_mut(y)?.copy_from_slice(x);
            Ok(())
        },
        gemm: |w, a, k, out, ldo| {
            kernels::gemm_f32_lanes16(cast_f32(w)?, cast_f32(a)?, k, out, ldo);
            Ok(())
        },
    }
}

fn misaligned(ty: GgmlType) -> QuantError {
    QuantError::Misaligned { ty }
}

fn cast_f16(b: &[u8]) -> Result<&[u16], QuantError> {
    bytemuck::try_cast_slice(b).map_err(|_| misaligned(GgmlType::F16))
}

fn cast_f32(b: &[u8]) -> Result<&[f32], QuantError> {
    bytemuck::try_cast_slice(b).map_err(|_| misaligned(GgmlType::F32))
}

fn cast_f32_mut(b: &mut [u8]) -> Result<&mut [f32], QuantError> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| misaligned(GgmlType::F32))
}

/// f32 -> f16 -> f32: the values of an activation row converted to f16.
fn round_to_f16(x: &[f32], y: &mut [f32]) {
    let mut half = [0u16; 256];
    for (xc, yc) in x.chunks(256).zip(y.chunks_mut(256)) {
        let h = &mut half[..xc.len()];
        kernels::f32_to_f16_row(xc, h);
        kernels::f16_to_f32_row(h, yc);
    }
}

/// Consecutive activation rows of a matmul and the kernels that round
/// them; `act_type` is what `matmul.quantize_act` writes.
#[derive(Clone, Copy)]
pub struct MatmulPart {
    pub n_tok: usize,
    pub matmul: CpuMatmul,
    pub act_type: GgmlType,
}

/// How a matmul of `n_tok` activation rows against `n_out` weight rows of
/// `k` elements of type `ty` is rounded as llama.cpp rounds it: the
/// activation rows in order, in at most two parts, each with the kernels
/// that reproduce llama.cpp's for it. `own` / `own_act` are the type's
/// table entry (the `vec_dot` order). Parts of 0 rows are to be skipped.
pub fn matmul_parts(
    ty: GgmlType,
    n_out: usize,
    k: usize,
    n_tok: usize,
    own: CpuMatmul,
    own_act: GgmlType,
) -> [MatmulPart; 2] {
    let part = |n_tok, matmul, act_type| MatmulPart {
        n_tok,
        matmul,
        act_type,
    };
    let whole = |matmul, act_type| [part(n_tok, matmul, act_type), part(0, own, own_act)];
    match ty {
        GgmlType::Q4_0 if n_out.is_multiple_of(Q4_0_REPACK_ROWS) => {
            whole(Q4_0_REPACKED_ORDER, GgmlType::Q8_0)
        }
        GgmlType::Q4_K if n_tok >= Q4_K_REPACK_GEMM_MIN_TOKENS => {
            let grouped = q4_k_grouped_tokens(n_tok);
            [
                part(grouped, q4_k_repacked_gemm(), GgmlType::Q8_K),
                part(n_tok - grouped, own, own_act),
            ]
        }
        GgmlType::Q6_K if n_tok >= Q6_K_TILED_MIN_TOKENS => whole(q6_k_tiled(), GgmlType::Q8_K),
        GgmlType::F16 | GgmlType::F32
            if n_tok >= TINYBLAS_MIN_TOKENS
                && n_out.is_multiple_of(TINYBLAS_ROW_MULTIPLE)
                && k.is_multiple_of(TINYBLAS_K_MULTIPLE) =>
        {
            // tinyBLAS reads f32 activations (F16 ones rounded to f16 first).
            let m = if ty == GgmlType::F16 {
                tinyblas_f16()
            } else {
                tinyblas_f32()
            };
            whole(m, GgmlType::F32)
        }
        GgmlType::F16 => whole(f16_vec_dot_order(), GgmlType::F32),
        _ => whole(own, own_act),
    }
}

/// Elements per native AVX512-FP16 step of ggml's f16 vector loops.
pub const F16_NATIVE_STEP: usize = 128;

/// Environment switch: `0` rounds the f16 accumulator as x86 builds without
/// AVX512-FP16 do (through f32 for every element).
pub const F16_NATIVE_ENV: &str = "RKINFER_F16_NATIVE";

/// Elements of the f16 accumulator that llama.cpp's reference build (x86
/// with AVX512-FP16) updates with native f16 arithmetic: whole 128-element
/// steps; the rest goes through f32 as on any other x86 CPU.
pub fn f16_native_len(n: usize) -> usize {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var_os(F16_NATIVE_ENV).is_none_or(|v| v != "0"));
    if on {
        n - n % F16_NATIVE_STEP
    } else {
        0
    }
}

/// ggml_vec_scale_f16: y *= v.
pub fn scale_f16_acc(y: &mut [u16], v: f32) {
    let n = f16_native_len(y.len());
    let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
    let mut wide = [0f32; F16_NATIVE_STEP];
    for a in y[..n].chunks_exact_mut(F16_NATIVE_STEP) {
        // f16 x f16 is exact in f32, so this rounds once, as vmulph does.
        kernels::f16_to_f32_row(a, &mut wide);
        kernels::scale(&mut wide, v16);
        kernels::f32_to_f16_row(&wide, a);
    }
    kernels::vec_scale_f16(&mut y[n..], v);
}

/// x * v + y rounded to odd in f32, for f16 values x, v, y: the product is
/// exact in f32 (11 x 11 significant bits) and TwoSum gives the sum's exact
/// error; rounding this to f16 equals rounding the exact sum once, as
/// AVX512-FP16's `vfmadd*ph` does. Branch-free so that loops vectorize.
#[inline(always)]
fn fma_odd_f32(x: f32, v: f32, y: f32) -> f32 {
    let p = x * v;
    let s = p + y;
    let p_part = s - y;
    let y_part = s - p_part;
    let err = (p - p_part) + (y - y_part);
    let bits = s.to_bits();
    // |s| overshooting the exact sum steps back toward zero, then the
    // sticky bit marks the result inexact.
    let overshoot = ((err < 0.0) != (s < 0.0)) as u32;
    let odd = (bits - overshoot) | 1;
    f32::from_bits(if err == 0.0 { bits } else { odd })
}

/// ggml_vec_mad_f16: y += x * v.
pub fn mad_f16_acc(y: &mut [u16], x: &[u16], v: f32) {
    let n = f16_native_len(y.len());
    let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
    let (mut xs, mut ys) = ([0f32; F16_NATIVE_STEP], [0f32; F16_NATIVE_STEP]);
    for (a, b) in y[..n]
        .chunks_exact_mut(F16_NATIVE_STEP)
        .zip(x[..n].chunks_exact(F16_NATIVE_STEP))
    {
        kernels::f16_to_f32_row(b, &mut xs);
        kernels::f16_to_f32_row(a, &mut ys);
        for (yv, &xv) in ys.iter_mut().zip(&xs) {
            *yv = fma_odd_f32(xv, v16, *yv);
        }
        kernels::f32_to_f16_row(&ys, a);
    }
    kernels::vec_mad_f16(&mut y[n..], &x[n..], v);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds to the nearest f16, ties to even, in one step (going through f32
    /// would round twice).
    fn f64_to_f16(v: f64) -> u16 {
        let sign = if v.is_sign_negative() { 0x8000u16 } else { 0 };
        let a = v.abs();
        if a.is_nan() {
            return 0x7e00;
        }
        let round_even = |r: f64| {
            let f = r.floor();
            let d = r - f;
            if d > 0.5 || (d == 0.5 && f % 2.0 != 0.0) {
                f + 1.0
            } else {
                f
            }
        };
        const MIN_NORMAL: f64 = 1.0 / 16384.0; // 2^-14
        let bits = if a < MIN_NORMAL {
            // Subnormal: multiples of 2^-24 (1024 carries into the normals).
            round_even(a * 16_777_216.0) as u16
        } else {
            let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
            let mant = a / 2f64.powi(e);
            let mut q = round_even((mant - 1.0) * 1024.0) as u32;
            let mut e = e;
            if q == 1024 {
                q = 0;
                e += 1;
            }
            if e + 15 >= 31 {
                0x7c00
            } else {
                (((e + 15) as u32) << 10 | q) as u16
            }
        };
        sign | bits
    }

    /// f16(x * v + y) with a single rounding, as `vfmadd*ph` computes it, for
    /// f16 values x, v, y: the product is exact in f32 (11 x 11 significant
    /// bits); the sum is rounded to odd in f32, using its exact error (TwoSum),
    /// and rounding that to f16 then equals rounding the exact sum once.
    fn fma_f16_once(x: f32, v: f32, y: f32) -> u16 {
        kernels::f32_to_f16(fma_odd_f32(x, v, y))
    }

    /// The f16 accumulator update on 128-element steps is the scalar single
    /// rounding, element by element.
    #[test]
    fn mad_f16_acc_rounds_each_element_once() {
        let n = 256;
        let x: Vec<u16> = (0..n)
            .map(|i| kernels::f32_to_f16((i as f32 * 0.731).sin() * 3.0))
            .collect();
        let mut y: Vec<u16> = (0..n)
            .map(|i| kernels::f32_to_f16((i as f32 * 0.219).cos() * 0.01))
            .collect();
        let v = 0.123_456_7f32;
        let v16 = kernels::f16_to_f32(kernels::f32_to_f16(v));
        let want: Vec<u16> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| fma_f16_once(kernels::f16_to_f32(a), v16, kernels::f16_to_f32(b)))
            .collect();
        if f16_native_len(n) == n {
            mad_f16_acc(&mut y, &x, v);
            assert_eq!(y, want);
        }
    }

    /// The fast single rounding against the f64 one on f16 triples of
    /// every magnitude, ties included.
    #[test]
    fn fma_f16_once_rounds_like_f64() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let finite = |h: u16| h & 0x7c00 != 0x7c00;
        let mut checked = 0;
        while checked < 200_000 {
            let r = next();
            let (x, v, y) = (r as u16, (r >> 16) as u16, (r >> 32) as u16);
            if !(finite(x) && finite(v) && finite(y)) {
                continue;
            }
            let (xf, vf, yf) = (
                kernels::f16_to_f32(x),
                kernels::f16_to_f32(v),
                kernels::f16_to_f32(y),
            );
            let exact = xf as f64 * vf as f64 + yf as f64;
            let want = f64_to_f16(exact);
            let got = fma_f16_once(xf, vf, yf);
            // -0 and +0 both stand for an exact zero sum.
            if want & 0x7fff != 0 || got & 0x7fff != 0 {
                assert_eq!(got, want, "{x:#x} * {v:#x} + {y:#x}");
            }
            checked += 1;
        }
        // A tie in f16 reached only through the low product bits.
        let (xf, vf) = (kernels::f16_to_f32(0x3c01), kernels::f16_to_f32(0x3c01));
        let exact = xf as f64 * vf as f64;
        assert_eq!(fma_f16_once(xf, vf, 0.0), f64_to_f16(exact));
    }

    #[test]
    fn f64_to_f16_rounds_once_to_nearest_even() {
        for h in (0u16..0x7c00).step_by(7) {
            let x = kernels::f16_to_f32(h) as f64;
            assert_eq!(f64_to_f16(x), h);
            assert_eq!(f64_to_f16(-x), h | 0x8000);
            let next = kernels::f16_to_f32(h + 1) as f64;
            let mid = (x + next) / 2.0;
            let even = if h % 2 == 0 { h } else { h + 1 };
            assert_eq!(f64_to_f16(mid), even, "tie above {h:#x}");
            assert_eq!(f64_to_f16(mid - (next - x) * 1e-6), h);
            assert_eq!(f64_to_f16(mid + (next - x) * 1e-6), h + 1);
        }
        assert_eq!(f64_to_f16(65520.0), 0x7c00);
        assert_eq!(f64_to_f16(65519.0), 0x7bff);
    }
}
