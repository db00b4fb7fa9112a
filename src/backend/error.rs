//! The backend layer's error: one variant per cause, each saying what was
//! wrong and where.

use std::fmt;

use crate::npu::NpuError;

/// Everything that can go wrong preparing weights or running an op.
#[derive(Debug)]
pub enum BackendError {
    /// The backend does not run this node after all; the executor hands it
    /// to the fallback backend. Not a failure.
    Declined,
    /// A tensor's type has no kernel here.
    UnsupportedType { tensor: String, ty: String },
    /// A KV cache type without kernels (or unfit for the head size).
    UnsupportedCacheType { ty: String },
    /// The batch does not fit in the KV cache.
    ContextFull { n_ctx: usize, needed: usize },
    /// The KV cache cannot be sized as asked.
    ContextTooLarge { n_ctx: usize },
    /// The KV cache needs more memory than the machine has available.
    CacheTooLarge {
        n_ctx: usize,
        bytes: u64,
        available: u64,
    },
    /// A token id is not a row of the embedding table.
    TokenOutOfRange { token: u32, n_vocab: usize },
    /// Tensor data is not aligned for its block type.
    Misaligned(&'static str),
    /// An internal inconsistency of a graph (a bug, reported not panicked).
    Graph(String),
    /// A device setting (device name, NPU scheme, cores) is invalid.
    InvalidSetting(String),
    /// The NPU (driver, simulator, command builder) failed.
    Npu(NpuError),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Declined => write!(f, "op declined by its backend"),
            BackendError::UnsupportedType { tensor, ty } => {
                write!(f, "tensor '{tensor}' has type {ty}, which has no CPU kernel yet")
            }
            BackendError::UnsupportedCacheType { ty } => {
                write!(f, "unsupported KV cache type {ty} (supported: f16, q8_0, q4_0)")
            }
            BackendError::ContextFull { n_ctx, needed } => {
                write!(f, "context full: {needed} tokens needed, context size is {n_ctx}")
            }
            BackendError::ContextTooLarge { n_ctx } => write!(f, "invalid context size {n_ctx}"),
            BackendError::CacheTooLarge {
                n_ctx,
                bytes,
                available,
            } => write!(
                f,
                "a context of {n_ctx} tokens needs a KV cache of {:.1} MiB, more than the {:.1} MiB \
                 of memory available: use a smaller context or a q8_0/q4_0 cache type",
                *bytes as f64 / MIB,
                *available as f64 / MIB
            ),
            BackendError::TokenOutOfRange { token, n_vocab } => {
                write!(f, "token id {token} is out of range (vocabulary size {n_vocab})")
            }
            BackendError::Misaligned(what) => write!(f, "{what} data is misaligned"),
            BackendError::Graph(e) => write!(f, "graph error: {e}"),
            BackendError::InvalidSetting(e) => write!(f, "{e}"),
            BackendError::Npu(e) => write!(f, "{e}"),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Npu(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NpuError> for BackendError {
    fn from(e: NpuError) -> Self {
        BackendError::Npu(e)
    }
}
