//! x86_64 kernels. AVX2+FMA+F16C is the base; CPUs with AVX512-VNNI get
//! its byte dot product on 256-bit registers (`avx2_vnni`), and, with a
//! compiler that has the AVX-512 intrinsics (1.89+, see build.rs), 512-bit
//! prompt-batch and F16 decode kernels on top of that (`avx512`).

pub mod avx2;
pub mod avx2_vnni;
#[cfg(rkinfer_avx512)]
pub mod avx512;
mod gelu;

/// True when the CPU (and OS) support everything the AVX2 table uses.
pub fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// True when the CPU also has AVX512-VNNI with AVX512VL (`vpdpbusd` on ymm)
/// and AVX512BW (which newer compilers may use in that table).
pub fn vnni_detected() -> bool {
    avx2_detected()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}
