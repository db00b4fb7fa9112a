//! SIMD kernels for rkinfer: a scalar reference for every kernel, x86_64
//! (AVX2+FMA+F16C) and aarch64 NEON (+ `sdot` where the CPU has it)
//! versions, chosen once at run time.
//!
//! No dependencies. It used to hold to Rust 1.63 (Debian's old compiler for
//! the aarch64 cross-build), which is why some 512-bit and dotprod paths are
//! inline asm; that floor is gone (CI cross-builds with rustc-web 1.96).
//!
//! Layout (as memchr): [`scalar`] is the reference with ggml's semantics;
//! `generic` holds one algorithm per kernel written against a small SIMD
//! trait; `x86_64/` and `aarch64/` implement that trait per ISA and
//! instantiate the algorithms inside `#[target_feature]` functions. A table
//! of function pointers ([`Kernels`]) is chosen on first use from the
//! detected CPU features; `RKINFER_FORCE_SCALAR=1` forces the scalar table.
//!
//! Names say what a kernel computes: `vec_dot_<weight>_<activation>` is
//! one dot product in ggml's `vec_dot` order, `gemm_<w>_<a>` the same for
//! many rows at once, and a suffix names a different rounding order (each
//! reproduces a llama.cpp kernel; the CPU backend's `compat` module says
//! when it is used):
//!
//! | suffix | computes |
//! |---|---|
//! | `_block_fma` | one running f32 sum per output, each block's scaled integer dot fused into it (`fma`): llama.cpp's repacked `q4_0_8x8` kernels, its tiled Q6_K matmul |
//! | `_sum64` | Q4_K integer sums per 64 elements (not per 256): llama.cpp's repacked `q4_K_8x8` GEMM |
//! | `_lanes16` | 16 fused-multiply-add lanes reduced as `_mm512_reduce_add_ps`: llamafile's tinyBLAS on AVX-512 |
//! | `_round_even` | activations quantized with scale 127/amax, ties to even: ggml-cpu's x86 `quantize_row_q8_0/1` (the unsuffixed ones are ggml's `_ref` code) |
//! | `q4_0x8` | the layout of eight Q4_0 rows interleaved ([`BlockQ4_0x8`], llama.cpp's `block_q4_0x8`) |
//! | `q4_kx8` | eight Q4_K rows interleaved in 4-byte pieces ([`BlockQ4Kx8`], llama.cpp's `block_q4_Kx8` in its 8x4 form) |
//!
//! The top-level functions call through the chosen table. They panic when
//! slice lengths do not match (a caller bug, checked before any SIMD code
//! touches memory).

// The kernels mirror ggml's index-parallel loops (x[j], y[j + 16], ...);
// iterator rewrites would hide that correspondence.
#![allow(clippy::needless_range_loop)]

pub mod blocks;
mod dispatch;
mod f16ops;
mod gemm;
mod generic;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(test)]
mod tests;

pub use blocks::*;
pub use dispatch::{available, kernels, Kernels};

/// Name of the kernel set chosen for this process: "avx2", "avx2-vnni", "avx512", "neon",
/// "neon-dotprod" or "scalar".
pub fn isa() -> &'static str {
    kernels().name
}

pub use scalar::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

/// Whether the chosen kernels run [`gemm_q4_0x8_q8_0`] faster than the
/// plain Q4_0 layout (their dot products sum byte quads per lane), so that
/// interleaving Q4_0 matrices at load pays.
pub fn interleaved_q4_0_pays() -> bool {
    matches!(isa(), "avx2" | "avx2-vnni" | "avx512" | "neon-dotprod")
}

/// Whether Q4_K matrices are interleaved at load ([`repack_q4_kx8`],
/// [`gemm_q4_kx8_q8_k`]): where the lanes of these kernels are rows and
/// they beat the plain rows' kernels: a CPU with `sdot` (where llama.cpp
/// picks its 8x4 layout too) and the 512-bit table (sixteen rows per
/// `vpdpbusd`). On AVX2 the plain rows stay; they round the same.
pub fn interleaved_q4_k_pays() -> bool {
    matches!(isa(), "neon-dotprod" | "avx512")
}

macro_rules! dispatched {
    ($( $(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)?; )*) => {
        $(
            $(#[$m])*
            #[inline]
            pub fn $name($($arg: $ty),*) $(-> $ret)? {
                (kernels().$name)($($arg),*)
            }
        )*
    };
}

dispatched! {
    fn f16_to_f32_row(x: &[u16], y: &mut [f32]);
    fn f32_to_f16_row(x: &[f32], y: &mut [u16]);
    fn bf16_to_f32_row(x: &[u16], y: &mut [f32]);
    fn f32_to_bf16_row(x: &[f32], y: &mut [u16]);

    fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]);
    fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]);
    fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8K]);

    fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32;
    fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32;
    fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32;
    fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32;
    fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32;
    fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32;
    fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32;
    fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32;
    /// Q4_K with 64-element rounding groups: llama.cpp's multi-token GEMM.
    fn vec_dot_q4_k_q8_k_sum64(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32;
    fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32;
    fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32;
    fn vec_dot_f16(x: &[u16], y: &[u16]) -> f32;
    fn vec_dot_bf16(x: &[u16], y: &[u16]) -> f32;
    fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32;

    /// Multi-row dot products: `x` holds rows of `nb` weight blocks, `y`
    /// rows of `nb` activation blocks; `out[r * ldo + t]` = `vec_dot` of
    /// weight row r and activation row t, bit-identical to the single-row
    /// kernel of the same table. Panics unless nb > 0, both lengths are
    /// whole rows, ldo >= activation rows and out holds every result.
    fn gemm_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q4_k_q8_k_sum64(x: &[BlockQ4K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    fn gemm_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    /// Q6_K rounded as llama.cpp's tiled K-quant matmul (batches of 8
    /// tokens and more): `scalar::vec_dot_q6_k_q8_k_block_fma` per pair.
    fn gemm_q6_k_q8_k_block_fma(x: &[BlockQ6K], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    /// Q4_0 rounded as llama.cpp's repacked `q4_0_8x8` kernels round it
    /// (`scalar::vec_dot_q4_0_q8_0_block_fma` per pair); same layout as above.
    fn gemm_q4_0_q8_0_block_fma(x: &[BlockQ4_0], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize);
    /// [`gemm_q4_0_q8_0_block_fma`] on weights interleaved by [`repack_q4_0x8`]:
    /// `x` holds groups of 8 rows (`nb` blocks each), `out[r * ldo + t]`
    /// for every row r of every group.
    fn gemm_q4_0x8_q8_0(x: &[BlockQ4_0x8], y: &[BlockQ8_0], nb: usize, out: &mut [f32], ldo: usize);
    /// [`gemm_q4_k_q8_k`] on weights interleaved by [`repack_q4_kx8`]
    /// (llama.cpp's 8x4 layout): `x` holds groups of 8 rows (`nb` blocks
    /// each), `out[r * ldo + t]` for every row r of every group.
    fn gemm_q4_kx8_q8_k(x: &[BlockQ4Kx8], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    /// [`gemm_q4_k_q8_k_sum64`] on weights interleaved by [`repack_q4_kx8`].
    fn gemm_q4_kx8_q8_k_sum64(x: &[BlockQ4Kx8], y: &[BlockQ8K], nb: usize, out: &mut [f32], ldo: usize);
    /// F16 weight rows against f32 activation rows of `k` (a multiple of
    /// 16), in llama.cpp's prompt-batch order (tinyBLAS on AVX-512): each
    /// pair accumulates 16 lanes with fused multiply-adds, then reduces
    /// them as `_mm512_reduce_add_ps`. Same layout as the other `gemm_*`.
    fn gemm_f16_lanes16(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize);
    /// [`gemm_f16_lanes16`] for f32 weights.
    fn gemm_f32_lanes16(x: &[f32], y: &[f32], k: usize, out: &mut [f32], ldo: usize);
    /// F16 weight rows against f32 activation rows of any length `k > 0`,
    /// in the `vec_dot_f16` order ([`scalar::dot_ggml_order`]): where the
    /// activations are f16 values kept as f32, each result is bit-identical
    /// to `vec_dot_f16` of the weight row and the activation's f16 row, but
    /// the activation is converted once, not once per weight row (decode).
    /// Same layout as the other `gemm_*`.
    fn gemm_f16_f32(x: &[u16], y: &[f32], k: usize, out: &mut [f32], ldo: usize);

    /// y[i] = f16(fma(x[i], v, y[i])): ggml_vec_mad_f16 (flash-attention V
    /// accumulation in f16).
    fn vec_mad_f16(y: &mut [u16], x: &[u16], v: f32);
    /// y[i] = f16(y[i] * v): ggml_vec_scale_f16.
    fn vec_scale_f16(y: &mut [u16], v: f32);
    /// Q8_0 as ggml's x86 SIMD code quantizes activations: scale 127/amax,
    /// round to nearest even (finite inputs).
    fn quantize_row_q8_0_round_even(x: &[f32], y: &mut [BlockQ8_0]);
    /// Q8_1 counterpart of `quantize_row_q8_0_round_even`; s = f16(d * sum(q)).
    fn quantize_row_q8_1_round_even(x: &[f32], y: &mut [BlockQ8_1]);

    fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]);
    fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]);
    fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]);
    fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]);
    fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]);
    fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]);
    fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]);
    fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]);
    fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]);
    fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]);

    /// y[k] += a[d] * m[d][k] fused, d in order (m has a.len() rows of
    /// y.len()): a chain of `scalar::axpy`s over the rows of `m`.
    fn fma_rows(a: &[f32], m: &[f32], y: &mut [f32]);
    /// x[i] = exp(x[i] - m), rounded as `scalar::expf_ggml`.
    fn exp_shift(x: &mut [f32], m: f32);
    /// x *= s
    fn scale(x: &mut [f32], s: f32);
    /// x *= y (elementwise)
    fn mul(x: &mut [f32], y: &[f32]);
    /// x += y (elementwise)
    fn add(x: &mut [f32], y: &[f32]);
    /// out = x / sqrt(mean(x^2) + eps)
    fn rms_norm(x: &[f32], eps: f32, out: &mut [f32]);
    /// gate = silu(gate) * up, exp as ggml's AVX-512 `ggml_v_expf`
    fn swiglu(gate: &mut [f32], up: &[f32]);
    /// GELU bit-exact with llama.cpp's CPU backend (`GGML_GELU_FP16`): x <=
    /// -10 gives 0, x >= 10 stays, anything else (NaN too) is looked up in
    /// ggml's table of f16(gelu(f16 x)) ([`scalar::gelu_ggml`]).
    fn gelu_ggml(x: &mut [f32]);
    /// gate = gelu_ggml(gate) * up, but 0 where gate <= -10
    /// (ggml_vec_geglu_f32 with `GGML_GELU_FP16`).
    fn geglu_ggml(gate: &mut [f32], up: &[f32]);
    /// rotate adjacent pairs (x[2i], x[2i+1]) by (cos[i], sin[i])
    fn rope_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]);
    /// rotate split halves (x[i], x[i+n]), n = cos.len()
    fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]);
}
