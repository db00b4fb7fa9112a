//! rkinfer: GGUF language-model inference with matmuls on the RK3588 NPU and
//! a SIMD CPU path for everything else.
//!
//! The crates of the workspace are re-exported here so that an application
//! needs only this one dependency.

pub use gguf;
pub use kernels;
pub use quant;

pub mod backend;
pub mod bench;
pub mod capture;
pub mod chat;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod fuzz_support;
pub mod graph;
pub mod model;
pub mod npu;
pub mod output_file;
pub mod perplexity;
pub mod quantize;
pub mod sampler;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod tokenizer;

pub use error::{Error, Result};
