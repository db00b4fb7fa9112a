//! The gguf error type: one variant per cause, each naming what was wrong and
//! where (byte offset, key or tensor name).

use std::fmt;
use std::path::PathBuf;

/// Most characters of a string from a file that a message quotes.
pub const QUOTE_MAX_CHARS: usize = 64;

/// `s` quoted and escaped as `{:?}` does, cut after [`QUOTE_MAX_CHARS`]
/// characters with its length in bytes: one corrupted length field can make
/// a key or a name megabytes long, and a message must stay one short line.
pub fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Parse errors carry the byte offset (from the start of the file) of the
/// field that was wrong. Errors from [`crate::GgufFile::open`] that happen
/// while parsing are wrapped in [`GgufError::InFile`] so the message names
/// the file; [`GgufError::root`] gives the underlying cause.
#[derive(Debug)]
pub enum GgufError {
    /// The file does not exist.
    NotFound { path: PathBuf },
    /// The path names a directory, not a file.
    IsDirectory { path: PathBuf },
    /// The path exists but is not a regular file (socket, device, ...).
    NotARegularFile { path: PathBuf },
    /// Opening, mapping, reading or writing failed.
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// A parse error in a named file.
    InFile {
        path: PathBuf,
        source: Box<GgufError>,
    },
    /// The file has zero bytes.
    Empty,
    /// The first four bytes are not "GGUF".
    BadMagic { found: Vec<u8> },
    /// The version field holds a version this reader does not read.
    UnsupportedVersion { version: u32 },
    /// A field runs past the end of the file.
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        file_size: u64,
    },
    /// A string is longer than [`crate::MAX_STRING_LEN`].
    StringTooLong { what: String, offset: u64, len: u64 },
    /// A string is not valid UTF-8.
    InvalidUtf8 { what: String, offset: u64 },
    /// A metadata value type id is not one GGUF defines.
    UnknownValueType { key: String, offset: u64, id: u32 },
    /// An array has more elements than [`crate::MAX_ARRAY_LEN`] or than the
    /// file could possibly hold.
    ArrayTooLong {
        key: String,
        offset: u64,
        len: u64,
        remaining: u64,
    },
    /// Arrays nest deeper than [`crate::MAX_ARRAY_DEPTH`].
    ArrayTooDeep { key: String, offset: u64 },
    /// More metadata entries or tensors than the file could possibly hold.
    TooManyEntries {
        what: &'static str,
        offset: u64,
        count: u64,
        min_size: u64,
        remaining: u64,
    },
    /// A metadata key appears twice.
    DuplicateKey { key: String, offset: u64 },
    /// A metadata key is empty.
    EmptyKey { offset: u64 },
    /// `general.alignment` is not a u32 power of two and multiple of 8.
    BadAlignment { value: String, offset: u64 },
    /// A tensor name is empty or longer than [`crate::MAX_TENSOR_NAME_LEN`].
    BadTensorName { name: String, offset: u64 },
    /// A tensor name appears twice.
    DuplicateTensor { name: String, offset: u64 },
    /// A tensor has zero or more than 4 dimensions.
    BadDimCount {
        tensor: String,
        offset: u64,
        n_dims: u32,
    },
    /// A dimension is negative when read as i64 (as ggml stores it).
    BadDim {
        tensor: String,
        offset: u64,
        dim: usize,
        value: u64,
    },
    /// The element count or byte size of a tensor overflows.
    TensorTooLarge { tensor: String, offset: u64 },
    /// A tensor's ggml type id is unknown.
    UnknownTensorType {
        tensor: String,
        offset: u64,
        id: u32,
    },
    /// The row length is not a multiple of the type's block size.
    BadRowLength {
        tensor: String,
        offset: u64,
        row_len: u64,
        ggml_type: &'static str,
        block_size: usize,
    },
    /// A tensor's data offset is not a multiple of the alignment.
    MisalignedTensor {
        tensor: String,
        offset: u64,
        data_offset: u64,
        alignment: u64,
    },
    /// A tensor's data lies (partly) past the end of the file.
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_size: u64,
    },
    /// Two tensors' data ranges overlap.
    TensorOverlap {
        first: String,
        second: String,
        offset: u64,
    },
    /// A metadata key that was asked for is absent.
    MissingKey { key: String },
    /// A metadata value has a type other than the one asked for.
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    /// An integer metadata value does not fit the type asked for.
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },
    /// Writer: tensor data length differs from what its shape and type need.
    TensorSizeMismatch {
        tensor: String,
        expected: u64,
        got: u64,
    },
    /// Writer: streamed tensor data does not match the declared tensors.
    StreamOrder { message: String },
    /// Writer: a value cannot be encoded (e.g. an array mixing element types
    /// is impossible by construction, but nesting too deep is not).
    Unencodable { key: String, reason: String },
}

impl GgufError {
    /// The innermost cause (strips [`GgufError::InFile`]).
    pub fn root(&self) -> &GgufError {
        match self {
            GgufError::InFile { source, .. } => source.root(),
            other => other,
        }
    }

    /// The byte offset the error refers to, if it has one.
    pub fn offset(&self) -> Option<u64> {
        use GgufError::*;
        match self.root() {
            BadMagic { .. } => Some(0),
            UnsupportedVersion { .. } => Some(4),
            Truncated { offset, .. }
            | StringTooLong { offset, .. }
            | InvalidUtf8 { offset, .. }
            | UnknownValueType { offset, .. }
            | ArrayTooLong { offset, .. }
            | ArrayTooDeep { offset, .. }
            | TooManyEntries { offset, .. }
            | DuplicateKey { offset, .. }
            | EmptyKey { offset }
            | BadAlignment { offset, .. }
            | BadTensorName { offset, .. }
            | DuplicateTensor { offset, .. }
            | BadDimCount { offset, .. }
            | BadDim { offset, .. }
            | TensorTooLarge { offset, .. }
            | UnknownTensorType { offset, .. }
            | BadRowLength { offset, .. }
            | MisalignedTensor { offset, .. }
            | TensorOverlap { offset, .. } => Some(*offset),
            TensorOutOfBounds { start, .. } => Some(*start),
            _ => None,
        }
    }

    pub(crate) fn wrong_type(key: &str, expected: &'static str, found: &crate::Value) -> Self {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.type_description(),
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufError::*;
        match self {
            NotFound { path } => write!(f, "{}: no such file", path.display()),
            IsDirectory { path } => {
                write!(f, "{}: is a directory, not a GGUF file", path.display())
            }
            NotARegularFile { path } => write!(f, "{}: not a regular file", path.display()),
            Io { path, op, source } => write!(f, "{}: {op} failed: {source}", path.display()),
            InFile { path, source } => write!(f, "{}: {source}", path.display()),
            Empty => write!(f, "empty file (0 bytes), not a GGUF file"),
            BadMagic { found } => write!(
                f,
                "not a GGUF file: magic at offset 0 is {} ({:?}), expected \"GGUF\"",
                hex(found),
                String::from_utf8_lossy(found)
            ),
            UnsupportedVersion { version } => {
                if *version == 1 {
                    write!(
                        f,
                        "unsupported GGUF version 1 at offset 4 (the pre-release \
                         format; only versions 2 and 3 are read; re-convert the model)"
                    )
                } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                    write!(
                        f,
                        "unsupported big-endian GGUF (version field {version:#010x} at \
                         offset 4); only little-endian files are read"
                    )
                } else {
                    write!(
                        f,
                        "unsupported GGUF version {version} at offset 4 (only versions 2 and 3 are read)"
                    )
                }
            }
            Truncated {
                what,
                offset,
                needed,
                file_size,
            } => write!(
                f,
                "truncated or corrupted file: {what} at offset {offset} needs {needed} bytes \
                 but the file ends at {file_size}"
            ),
            StringTooLong { what, offset, len } => write!(
                f,
                "corrupted file: {what} at offset {offset} claims a length of {len} bytes \
                 (limit {})",
                crate::MAX_STRING_LEN
            ),
            InvalidUtf8 { what, offset } => {
                write!(f, "corrupted file: {what} at offset {offset} is not valid UTF-8")
            }
            UnknownValueType { key, offset, id } => write!(
                f,
                "corrupted file: metadata key {key}: unknown value type {id} at offset {offset}",
                key = quote(key),
            ),
            ArrayTooLong {
                key,
                offset,
                len,
                remaining,
            } => write!(
                f,
                "truncated or corrupted file: metadata key {key}: array length {len} at \
                 offset {offset} is more than the {remaining} bytes that follow can hold \
                 (limit {} elements)",
                crate::MAX_ARRAY_LEN,
                key = quote(key),
            ),
            ArrayTooDeep { key, offset } => write!(
                f,
                "corrupted file: metadata key {key}: arrays nested deeper than {} at offset {offset}",
                crate::MAX_ARRAY_DEPTH,
                key = quote(key),
            ),
            TooManyEntries {
                what,
                offset,
                count,
                min_size,
                remaining,
            } => write!(
                f,
                "truncated or corrupted file: {what} count {count} at offset {offset} needs at \
                 least {min_size} bytes each but only {remaining} bytes are left"
            ),
            DuplicateKey { key, offset } => {
                write!(
                    f,
                    "duplicate metadata key {key} at offset {offset}",
                key = quote(key),
                )
            }
            EmptyKey { offset } => write!(f, "empty metadata key at offset {offset}"),
            BadAlignment { value, offset } => write!(
                f,
                "general.alignment at offset {offset} is {value}; it must be a u32 power of two \
                 and a multiple of 8"
            ),
            BadTensorName { name, offset } => write!(
                f,
                "tensor name {name} at offset {offset} is empty or longer than {} bytes",
                crate::MAX_TENSOR_NAME_LEN,
                name = quote(name),
            ),
            DuplicateTensor { name, offset } => {
                write!(
                    f,
                    "duplicate tensor name {name} at offset {offset}",
                name = quote(name),
                )
            }
            BadDimCount {
                tensor,
                offset,
                n_dims,
            } => write!(
                f,
                "tensor {tensor}: {n_dims} dimensions at offset {offset} (must be 1 to {})",
                crate::MAX_DIMS,
                tensor = quote(tensor),
            ),
            BadDim {
                tensor,
                offset,
                dim,
                value,
            } => write!(
                f,
                "tensor {tensor}: dimension {dim} at offset {offset} is {value}, out of range",
                tensor = quote(tensor),
            ),
            TensorTooLarge { tensor, offset } => write!(
                f,
                "tensor {tensor}: element count or byte size overflows (shape at offset {offset})",
                tensor = quote(tensor),
            ),
            UnknownTensorType { tensor, offset, id } => write!(
                f,
                "tensor {tensor}: unknown ggml type id {id} at offset {offset}",
                tensor = quote(tensor),
            ),
            BadRowLength {
                tensor,
                offset,
                row_len,
                ggml_type,
                block_size,
            } => write!(
                f,
                "tensor {tensor}: row length {row_len} (offset {offset}) is not a multiple \
                 of the {ggml_type} block size {block_size}",
                 tensor = quote(tensor),
             ),
            MisalignedTensor {
                tensor,
                offset,
                data_offset,
                alignment,
            } => write!(
                f,
                "tensor {tensor}: data offset {data_offset} (field at offset {offset}) is not \
                 a multiple of the alignment {alignment}",
                 tensor = quote(tensor),
             ),
            TensorOutOfBounds {
                tensor,
                start,
                end,
                file_size,
            } => write!(
                f,
                "truncated or corrupted file: tensor {tensor} data at offset {start}..{end} \
                 runs past the end of the file at {file_size}",
                 tensor = quote(tensor),
             ),
            TensorOverlap {
                first,
                second,
                offset,
            } => write!(
                f,
                "corrupted file: data of tensor {second} (at file offset {offset}) overlaps \
                 tensor {first}",
                 first = quote(first),
                 second = quote(second),
             ),
            MissingKey { key } => write!(f, "metadata key {key} is missing",
            key = quote(key),
        ),
            WrongType {
                key,
                expected,
                found,
            } => write!(f, "metadata key {key} is {found}, expected {expected}",
            key = quote(key),
        ),
            OutOfRange { key, value, target } => {
                write!(
                    f,
                    "metadata key {key} value {value} does not fit in {target}",
                key = quote(key),
                )
            }
            TensorSizeMismatch {
                tensor,
                expected,
                got,
            } => write!(
                f,
                "tensor {tensor}: {got} data bytes given, its shape and type need {expected}",
                tensor = quote(tensor),
            ),
            StreamOrder { message } => write!(f, "GGUF writer: {message}"),
            Unencodable { key, reason } => {
                write!(
                    f,
                    "metadata key {key} cannot be written: {reason}",
                key = quote(key),
                )
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io { source, .. } => Some(source),
            GgufError::InFile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
