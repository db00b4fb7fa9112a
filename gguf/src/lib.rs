//! GGUF: mmap-backed reader, writer, typed metadata and the ggml type table.
//!
//! ```no_run
//! let f = gguf::GgufFile::open("model.gguf")?;
//! let n_layers = f.arch_u32("block_count")?;
//! let t = f.tensor("token_embd.weight").unwrap();
//! let bytes: &[u8] = f.tensor_data(t);
//! # let _ = (n_layers, bytes);
//! # Ok::<(), gguf::GgufError>(())
//! ```
//!
//! Every malformed input yields a [`GgufError`] naming what was wrong and at
//! which byte offset; the parser never panics. Limits follow llama.cpp's
//! gguf.cpp: at most [`MAX_DIMS`] dimensions, tensor names up to
//! [`MAX_TENSOR_NAME_LEN`] bytes, overflow-checked sizes, aligned, in-bounds,
//! non-overlapping tensor data, known type ids only, versions 2 and 3.

mod error;
mod reader;
mod types;
mod value;
mod writer;

pub use error::{quote, GgufError, QUOTE_MAX_CHARS};
pub use reader::{
    validate, GgufFile, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH,
    MAX_ARRAY_LEN, MAX_DIMS, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufStream, GgufWriter, TensorData, WRITE_VERSION};

/// Result alias of this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
