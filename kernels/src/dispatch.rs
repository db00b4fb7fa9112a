//! The kernel table: one set of function pointers per ISA, chosen once.
//!
//! Rust 1.63 has no `OnceLock`, so the choice lives in an `AtomicPtr` to a
//! `'static` table: the first caller detects the CPU and stores the pointer;
//! racing first callers compute and store the same pointer, which is
//! harmless.

use crate::blocks::*;
use core::sync::atomic::{AtomicPtr, Ordering};

macro_rules! table {
    ($( $name:ident : fn($($ty:ty),*) $(-> $ret:ty)?, )*) => {
        /// Function pointers of one kernel implementation. Every entry has
        /// the signature and semantics of the `kernels::` function of the
        /// same name.
        pub struct Kernels {
            /// "scalar", "avx2", "avx2-vnni", "avx512", "neon" or "neon-dotprod".
            pub name: &'static str,
            $( pub $name: fn($($ty),*) $(-> $ret)?, )*
        }

        /// Builds a table from a module that defines every kernel by name.
        macro_rules! kernels_from {
            ($label:expr, $m:path) => {{
                use $m as m;
                $crate::dispatch::Kernels { name: $label, $( $name: m::$name, )* }
            }};
        }
    };
}

table! {
    f16_to_f32_row: fn(&[u16], &mut [f32]),
    f32_to_f16_row: fn(&[f32], &mut [u16]),
    bf16_to_f32_row: fn(&[u16], &mut [f32]),
    f32_to_bf16_row: fn(&[f32], &mut [u16]),
    quantize_row_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    quantize_row_q8_1: fn(&[f32], &mut [BlockQ8_1]),
    quantize_row_q8_k: fn(&[f32], &mut [BlockQ8K]),
    vec_dot_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    vec_dot_q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    vec_dot_q5_0_q8_0: fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    vec_dot_q5_1_q8_1: fn(&[BlockQ5_1], &[BlockQ8_1]) -> f32,
    vec_dot_q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    vec_dot_q2_k_q8_k: fn(&[BlockQ2K], &[BlockQ8K]) -> f32,
    vec_dot_q3_k_q8_k: fn(&[BlockQ3K], &[BlockQ8K]) -> f32,
    vec_dot_q4_k_q8_k: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    vec_dot_q4_k_q8_k_sum64: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    vec_dot_q5_k_q8_k: fn(&[BlockQ5K], &[BlockQ8K]) -> f32,
    vec_dot_q6_k_q8_k: fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
    vec_dot_f16: fn(&[u16], &[u16]) -> f32,
    vec_dot_bf16: fn(&[u16], &[u16]) -> f32,
    vec_dot_f32: fn(&[f32], &[f32]) -> f32,
    gemm_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0], usize, &mut [f32], usize),
    gemm_q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1], usize, &mut [f32], usize),
    gemm_q5_0_q8_0: fn(&[BlockQ5_0], &[BlockQ8_0], usize, &mut [f32], usize),
    gemm_q5_1_q8_1: fn(&[BlockQ5_1], &[BlockQ8_1], usize, &mut [f32], usize),
    gemm_q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0], usize, &mut [f32], usize),
    gemm_q2_k_q8_k: fn(&[BlockQ2K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q3_k_q8_k: fn(&[BlockQ3K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q4_k_q8_k: fn(&[BlockQ4K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q4_k_q8_k_sum64: fn(&[BlockQ4K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q5_k_q8_k: fn(&[BlockQ5K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q6_k_q8_k: fn(&[BlockQ6K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q6_k_q8_k_block_fma: fn(&[BlockQ6K], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q4_0_q8_0_block_fma: fn(&[BlockQ4_0], &[BlockQ8_0], usize, &mut [f32], usize),
    gemm_q4_0x8_q8_0: fn(&[BlockQ4_0x8], &[BlockQ8_0], usize, &mut [f32], usize),
    gemm_q4_kx8_q8_k: fn(&[BlockQ4Kx8], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_q4_kx8_q8_k_sum64: fn(&[BlockQ4Kx8], &[BlockQ8K], usize, &mut [f32], usize),
    gemm_f16_lanes16: fn(&[u16], &[f32], usize, &mut [f32], usize),
    gemm_f32_lanes16: fn(&[f32], &[f32], usize, &mut [f32], usize),
    gemm_f16_f32: fn(&[u16], &[f32], usize, &mut [f32], usize),
    vec_mad_f16: fn(&mut [u16], &[u16], f32),
    vec_scale_f16: fn(&mut [u16], f32),
    quantize_row_q8_0_round_even: fn(&[f32], &mut [BlockQ8_0]),
    quantize_row_q8_1_round_even: fn(&[f32], &mut [BlockQ8_1]),
    dequantize_row_q4_0: fn(&[BlockQ4_0], &mut [f32]),
    dequantize_row_q4_1: fn(&[BlockQ4_1], &mut [f32]),
    dequantize_row_q5_0: fn(&[BlockQ5_0], &mut [f32]),
    dequantize_row_q5_1: fn(&[BlockQ5_1], &mut [f32]),
    dequantize_row_q8_0: fn(&[BlockQ8_0], &mut [f32]),
    dequantize_row_q2_k: fn(&[BlockQ2K], &mut [f32]),
    dequantize_row_q3_k: fn(&[BlockQ3K], &mut [f32]),
    dequantize_row_q4_k: fn(&[BlockQ4K], &mut [f32]),
    dequantize_row_q5_k: fn(&[BlockQ5K], &mut [f32]),
    dequantize_row_q6_k: fn(&[BlockQ6K], &mut [f32]),
    fma_rows: fn(&[f32], &[f32], &mut [f32]),
    exp_shift: fn(&mut [f32], f32),
    scale: fn(&mut [f32], f32),
    mul: fn(&mut [f32], &[f32]),
    add: fn(&mut [f32], &[f32]),
    rms_norm: fn(&[f32], f32, &mut [f32]),
    swiglu: fn(&mut [f32], &[f32]),
    gelu_ggml: fn(&mut [f32]),
    geglu_ggml: fn(&mut [f32], &[f32]),
    rope_pairs: fn(&mut [f32], &[f32], &[f32]),
    rope_neox: fn(&mut [f32], &[f32], &[f32]),
}

/// The scalar reference table.
pub static SCALAR: Kernels = kernels_from!("scalar", crate::scalar);

#[cfg(target_arch = "x86_64")]
pub static AVX2: Kernels = kernels_from!("avx2", crate::x86_64::avx2);
#[cfg(target_arch = "x86_64")]
pub static AVX2_VNNI: Kernels = kernels_from!("avx2-vnni", crate::x86_64::avx2_vnni);
#[cfg(all(target_arch = "x86_64", rkinfer_avx512))]
pub static AVX512: Kernels = kernels_from!("avx512", crate::x86_64::avx512);

#[cfg(target_arch = "aarch64")]
pub static NEON: Kernels = kernels_from!("neon", crate::aarch64::neon);
#[cfg(target_arch = "aarch64")]
pub static NEON_DOTPROD: Kernels = kernels_from!("neon-dotprod", crate::aarch64::neon_dotprod);

/// Every table this CPU can run, scalar first, fastest last.
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v: Vec<&'static Kernels> = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::x86_64::avx2_detected() {
            v.push(&AVX2);
            if crate::x86_64::vnni_detected() {
                v.push(&AVX2_VNNI);
                #[cfg(rkinfer_avx512)]
                if crate::x86_64::avx512::detected() {
                    v.push(&AVX512);
                }
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if crate::aarch64::neon_detected() {
            v.push(&NEON);
            if crate::aarch64::dotprod_detected() {
                v.push(&NEON_DOTPROD);
            }
        }
    }
    v
}

fn force_scalar() -> bool {
    match std::env::var_os("RKINFER_FORCE_SCALAR") {
        Some(v) => !v.is_empty() && v != "0",
        None => false,
    }
}

fn choose() -> &'static Kernels {
    if force_scalar() {
        return &SCALAR;
    }
    let all = available();
    all[all.len() - 1]
}

static CHOSEN: AtomicPtr<Kernels> = AtomicPtr::new(core::ptr::null_mut());

/// The table chosen for this process (detected on first call).
#[inline]
pub fn kernels() -> &'static Kernels {
    let p = CHOSEN.load(Ordering::Acquire);
    if p.is_null() {
        return init();
    }
    // SAFETY: `CHOSEN` only ever holds null or a pointer made from a
    // `&'static Kernels` in `init`, never written through.
    unsafe { &*p }
}

#[cold]
fn init() -> &'static Kernels {
    let k = choose();
    CHOSEN.store(k as *const Kernels as *mut Kernels, Ordering::Release);
    k
}
