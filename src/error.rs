//! The crate's error type: one variant per cause, each saying what was wrong
//! and where.

use std::fmt;
use std::path::PathBuf;

use gguf::GgmlType;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rkinfer's library code.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The GGUF file is malformed or lacks what was asked of it.
    Gguf(gguf::GgufError),
    /// A command-line or API argument is invalid.
    InvalidArgument(String),
    /// The vocabulary cannot be used, or a text or token cannot be handled.
    Tokenizer(crate::tokenizer::TokenizerError),
    /// A model cannot be loaded or evaluated.
    Model(crate::model::ModelError),
    /// A backend or device cannot be used as asked.
    Backend(crate::backend::BackendError),
    /// A sampling parameter or logits row is unusable.
    Sampler(crate::sampler::SamplerError),
    /// Tokens do not fit in the context.
    ContextFull { needed: usize, n_ctx: usize },
    /// A text file is not valid UTF-8 (byte offset of the first bad byte).
    InvalidUtf8 { path: PathBuf, offset: usize },
    /// A saved-logits file (KL divergence) is unreadable or does not match.
    LogitsFile { path: PathBuf, reason: String },
    /// The NPU (driver, simulator, command builder) failed.
    Npu(crate::npu::NpuError),
    /// A model cannot be quantized as asked.
    Quantize(QuantizeError),
    /// A computation gave NaN or infinity (corrupt weights or input).
    NonFinite(String),
    /// SIGINT or SIGTERM stopped the work (see [`crate::output_file`]).
    Interrupted(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Gguf(e) => write!(f, "{e}"),
            Error::InvalidArgument(msg) => write!(f, "{msg}"),
            Error::Tokenizer(e) => write!(f, "tokenizer: {e}"),
            Error::Model(e) => write!(f, "{e}"),
            Error::Backend(e) => write!(f, "{e}"),
            Error::Sampler(e) => write!(f, "{e}"),
            Error::ContextFull { needed, n_ctx } => write!(
                f,
                "{needed} tokens do not fit in the context of {n_ctx} (use a larger context, or shorten the input)"
            ),
            Error::InvalidUtf8 { path, offset } => write!(
                f,
                "{}: not valid UTF-8 (first bad byte at offset {offset})",
                path.display()
            ),
            Error::LogitsFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            Error::Npu(e) => write!(f, "{e}"),
            Error::Quantize(e) => write!(f, "{e}"),
            Error::NonFinite(msg) => write!(f, "{msg}"),
            Error::Interrupted(what) => write!(f, "interrupted: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Gguf(e) => Some(e),
            Error::InvalidArgument(_) => None,
            Error::Tokenizer(e) => Some(e),
            Error::Model(e) => Some(e),
            Error::Backend(e) => Some(e),
            Error::Sampler(e) => Some(e),
            Error::ContextFull { .. }
            | Error::InvalidUtf8 { .. }
            | Error::LogitsFile { .. }
            | Error::NonFinite(_)
            | Error::Interrupted(_) => None,
            Error::Npu(e) => Some(e),
            Error::Quantize(e) => Some(e),
        }
    }
}

impl From<gguf::GgufError> for Error {
    fn from(e: gguf::GgufError) -> Self {
        Error::Gguf(e)
    }
}

impl From<crate::tokenizer::TokenizerError> for Error {
    fn from(e: crate::tokenizer::TokenizerError) -> Self {
        Error::Tokenizer(e)
    }
}

impl From<crate::model::ModelError> for Error {
    fn from(e: crate::model::ModelError) -> Self {
        Error::Model(e)
    }
}

impl From<crate::backend::BackendError> for Error {
    fn from(e: crate::backend::BackendError) -> Self {
        Error::Backend(e)
    }
}

impl From<crate::sampler::SamplerError> for Error {
    fn from(e: crate::sampler::SamplerError) -> Self {
        Error::Sampler(e)
    }
}

impl From<crate::npu::NpuError> for Error {
    fn from(e: crate::npu::NpuError) -> Self {
        Error::Npu(e)
    }
}

/// Why a model could not be quantized.
#[derive(Debug)]
pub enum QuantizeError {
    /// The TYPE argument names no known file type (`valid` lists them).
    UnknownFileType { name: String, valid: String },
    /// The output exists and overwriting was not asked for.
    OutputExists { path: PathBuf },
    /// Input and output are the same file.
    SameFile { path: PathBuf },
    /// A tensor is already quantized and `allow_requantize` is off.
    RequantizeNotAllowed { tensor: String, ty: GgmlType },
    /// A tensor's rows do not divide into blocks of the type asked for it.
    RowNotDivisible {
        tensor: String,
        row_len: u64,
        ty: GgmlType,
        block_size: usize,
    },
    /// A tensor's type cannot be converted (no dequantizer or quantizer).
    UnsupportedType { tensor: String, ty: GgmlType },
    /// A hyperparameter the type rules need is missing or malformed.
    MissingMetadata { key: String, reason: String },
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantizeError::UnknownFileType { name, valid } => {
                write!(f, "unknown quantization type {name:?}; valid types: {valid}")
            }
            QuantizeError::OutputExists { path } => write!(
                f,
                "{}: output file exists and overwriting was not asked for",
                path.display()
            ),
            QuantizeError::SameFile { path } => {
                write!(f, "{}: input and output are the same file", path.display())
            }
            QuantizeError::RequantizeNotAllowed { tensor, ty } => write!(
                f,
                "tensor {tensor} is already quantized ({ty}); requantizing loses accuracy \
                 and was not asked for"
            ),
            QuantizeError::RowNotDivisible {
                tensor,
                row_len,
                ty,
                block_size,
            } => write!(
                f,
                "tensor {tensor}: row length {row_len} does not divide into {ty} blocks of {block_size}"
            ),
            QuantizeError::UnsupportedType { tensor, ty } => {
                write!(f, "tensor {tensor}: type {ty} cannot be converted")
            }
            QuantizeError::MissingMetadata { key, reason } => {
                write!(f, "metadata {key}: {reason}")
            }
        }
    }
}

impl std::error::Error for QuantizeError {}

impl From<QuantizeError> for Error {
    fn from(e: QuantizeError) -> Self {
        Error::Quantize(e)
    }
}
