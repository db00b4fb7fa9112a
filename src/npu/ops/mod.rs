//! Operations on an [`NpuDevice`](crate::npu::NpuDevice): tiled matmuls
//! ([`matmul`]) and the on-disk cache of weights prepared for the NPU
//! ([`cache`]), and the device memory weights live in ([`arena`]).

pub mod arena;
pub mod cache;
pub mod matmul;
