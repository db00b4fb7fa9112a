//! Operations on an [`NpuDevice`](crate::npu::NpuDevice): tiled matmuls
//! ([`matmul`]) and the on-disk cache of weights prepared for the NPU
//! ([`cache`]).

pub mod cache;
pub mod matmul;
