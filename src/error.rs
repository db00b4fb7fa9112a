//! The crate's error type: one variant per cause, each saying what was wrong
//! and where.

use std::fmt;
use std::path::PathBuf;

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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Gguf(e) => write!(f, "{e}"),
            Error::InvalidArgument(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Gguf(e) => Some(e),
            Error::InvalidArgument(_) => None,
        }
    }
}

impl From<gguf::GgufError> for Error {
    fn from(e: gguf::GgufError) -> Self {
        Error::Gguf(e)
    }
}
