//! GGUF: mmap-backed reader, writer, typed metadata and the ggml type table.

use std::fmt;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug)]
pub enum GgufError {
    Io(std::io::Error),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GgufError {}
