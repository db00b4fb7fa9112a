//! The GGUF parser and [`GgufFile`], the validated, memory-mapped file.
//!
//! Layout (all little-endian): magic "GGUF", u32 version, u64 tensor count,
//! u64 metadata count, the metadata entries (string key, u32 value type,
//! value), the tensor infos (string name, u32 n_dims, u64 dims[n_dims], u32
//! ggml type, u64 data offset), padding to `general.alignment`, tensor data.
//!
//! Everything is validated once in [`GgufFile::open`] / [`GgufFile::from_bytes`]
//! so later accessors cannot fail or go out of bounds.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use crate::error::{quote, GgufError};
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A valid `general.alignment`: a power of two (as llama.cpp requires) and
/// a multiple of 8 (as the GGUF specification requires), so every tensor's
/// data is aligned for the element types the kernels read.
pub(crate) fn is_valid_alignment(a: u32) -> bool {
    a.is_power_of_two() && a >= 8
}
/// Metadata key holding the tensor data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Longest string accepted (keys, values, array elements), in bytes.
pub const MAX_STRING_LEN: u64 = 256 << 20;
/// Most elements accepted in one metadata array.
pub const MAX_ARRAY_LEN: u64 = 1 << 31;
/// Deepest nesting of arrays inside arrays accepted.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions of a tensor (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;
/// Longest tensor name in bytes (GGML_MAX_NAME is 64 including the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;

/// Description of one tensor: where its data lives and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml `ne` order: `dims[0]` is the row length (contiguous elements).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Byte size of the data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dims; 1 for zero dims).
    /// Validated at open not to overflow.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Row length (`dims[0]`, or 1 for a zero-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (elements / row length).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file. Tensor data is borrowed zero-copy from the
/// memory map (or the owned buffer for [`GgufFile::from_bytes`]).
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io_err = |op: &'static str, source: std::io::Error| GgufError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(GgufError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("stat", e)),
        };
        if meta.is_dir() {
            return Err(GgufError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        if !meta.is_file() {
            return Err(GgufError::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(|e| io_err("open", e))?;
        let in_file = |source: GgufError| GgufError::InFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        // A zero-length map is an error on some platforms; report it plainly.
        let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
        if len == 0 {
            return Err(in_file(GgufError::Empty));
        }
        // SAFETY: the map is read-only and lives as long as the GgufFile that
        // owns it. The contract, which callers must uphold and which we cannot
        // enforce, is that the file is not truncated or modified while it is
        // mapped (by this or another process): modifying it changes bytes under
        // live `&[u8]` borrows and truncating it makes accesses fault (SIGBUS).
        // Model files are written once and then only read, as with llama.cpp's
        // mmap. All offsets are validated against the map's length at open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err("mmap", e))?;
        Self::from_storage(Storage::Mapped(map)).map_err(in_file)
    }

    /// Parses and validates a GGUF image held in memory (same checks as
    /// [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile> {
        let parsed = parse(storage.bytes())?;
        let key_index = parsed
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            storage,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            key_index,
            tensors: parsed.tensors,
            tensor_index,
        })
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// File offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// True if the file is memory-mapped (opened with [`GgufFile::open`]).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Like [`GgufFile::get`] but an absent key is an error naming it.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn get_integer(&self, key: &str, target: &'static str) -> Result<i128> {
        let v = self.require(key)?;
        v.as_integer()
            .ok_or_else(|| GgufError::wrong_type(key, target, v))
    }

    fn get_int_as<T: TryFrom<i128>>(&self, key: &str, target: &'static str) -> Result<T> {
        let i = self.get_integer(key, target)?;
        T::try_from(i).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: i.to_string(),
            target,
        })
    }

    /// An integer value of any integer type that fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_int_as(key, "u32")
    }

    /// An integer value of any integer type that fits in u64.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_int_as(key, "u64")
    }

    /// An integer value of any integer type that fits in i32.
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get_int_as(key, "i32")
    }

    /// An integer value of any integer type that fits in i64.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_int_as(key, "i64")
    }

    /// An integer value of any integer type that fits in usize.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get_int_as(key, "usize")
    }

    /// A float value (f32, or f64 rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => Err(GgufError::wrong_type(key, "f32", other)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(v) => Ok(*v),
            other => Err(GgufError::wrong_type(key, "bool", other)),
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            other => Err(GgufError::wrong_type(key, "string", other)),
        }
    }

    /// An array value of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            other => Err(GgufError::wrong_type(key, "array", other)),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v),
            other => Err(GgufError::wrong_type(key, "array[string]", other)),
        }
    }

    /// An array of f32.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            Value::Array(Array::F32(v)) => Ok(v),
            other => Err(GgufError::wrong_type(key, "array[f32]", other)),
        }
    }

    /// An array of i32.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.require(key)? {
            Value::Array(Array::I32(v)) => Ok(v),
            other => Err(GgufError::wrong_type(key, "array[i32]", other)),
        }
    }

    /// An array of u32.
    pub fn get_u32_array(&self, key: &str) -> Result<&[u32]> {
        match self.require(key)? {
            Value::Array(Array::U32(v)) => Ok(v),
            other => Err(GgufError::wrong_type(key, "array[u32]", other)),
        }
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// The key `"{arch}.{suffix}"`, e.g. "llama.block_count".
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        Ok(format!("{}.{}", self.architecture()?, suffix))
    }

    /// `"{arch}.{suffix}"` as u32 (any integer type that fits).
    pub fn arch_u32(&self, suffix: &str) -> Result<u32> {
        self.get_u32(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as u64 (any integer type that fits).
    pub fn arch_u64(&self, suffix: &str) -> Result<u64> {
        self.get_u64(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as f32.
    pub fn arch_f32(&self, suffix: &str) -> Result<f32> {
        self.get_f32(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` if present (None also when the architecture is absent).
    pub fn arch_get(&self, suffix: &str) -> Option<&Value> {
        self.get(&self.arch_key(suffix).ok()?)
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Total number of elements of all tensors (llama.cpp's parameter count).
    pub fn n_params(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.n_elements()))
    }

    /// Zero-copy view of a tensor's data. `t` must come from this file's
    /// [`GgufFile::tensors`] (validated at open); for a foreign `TensorInfo`
    /// whose range lies outside this file the result is empty.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some((start, start.checked_add(t.size)?)))
            .and_then(|(s, e)| Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?)));
        match range {
            Some((s, e)) => self.storage.bytes().get(s..e).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The data of the tensor named `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }
}

/// Runs every check [`GgufFile::from_bytes`] runs on a borrowed GGUF image,
/// without keeping the result (for validating buffers and fuzzing).
pub fn validate(bytes: &[u8]) -> Result<()> {
    parse(bytes).map(|_| ())
}

/// What the parser extracts from the bytes.
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Takes `n` bytes; `what` describes the field for the error message.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                file_size: self.buf.len() as u64,
            });
        }
        let n = n as usize; // fits: n <= remaining
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let offset = self.offset();
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::StringTooLong {
                what: what(),
                offset,
                len,
            });
        }
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }),
        }
    }
}

fn parse(buf: &[u8]) -> Result<Parsed> {
    if buf.is_empty() {
        return Err(GgufError::Empty);
    }
    let head = &buf[..buf.len().min(4)];
    if head != &GGUF_MAGIC[..head.len()] {
        return Err(GgufError::BadMagic {
            found: head.to_vec(),
        });
    }
    let mut c = Cursor { buf, pos: 0 };
    c.take(4, &|| "magic".to_string())?;
    let version = c.u32(&|| "version".to_string())?;
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }

    let count_offset = c.offset();
    let n_tensors = c.u64(&|| "tensor count".to_string())?;
    let n_kv = c.u64(&|| "metadata count".to_string())?;
    // Each entry needs at least 8 (key length) + 4 (type) + 1 byte; each
    // tensor info at least 8 (name length) + 4 + 4 + 8. Reject counts the
    // remaining bytes cannot hold before allocating for them.
    const MIN_KV_SIZE: u64 = 13;
    const MIN_TENSOR_INFO_SIZE: u64 = 24;
    if n_kv > c.remaining() / MIN_KV_SIZE {
        return Err(GgufError::TooManyEntries {
            what: "metadata entry",
            offset: count_offset + 8,
            count: n_kv,
            min_size: MIN_KV_SIZE,
            remaining: c.remaining(),
        });
    }

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
    let mut seen_keys: HashMap<String, ()> = HashMap::with_capacity(n_kv as usize);
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..n_kv {
        let key_offset = c.offset();
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { offset: key_offset });
        }
        if seen_keys.insert(key.clone(), ()).is_some() {
            return Err(GgufError::DuplicateKey {
                key,
                offset: key_offset,
            });
        }
        let type_offset = c.offset();
        let type_id = c.u32(&|| format!("value type of metadata key {}", quote(&key)))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            offset: type_offset,
            id: type_id,
        })?;
        let value_offset = c.offset();
        let value = read_value(&mut c, ty, &key, 0)?;
        if key == ALIGNMENT_KEY {
            alignment = match value {
                Value::U32(a) if is_valid_alignment(a) => u64::from(a),
                ref other => {
                    return Err(GgufError::BadAlignment {
                        value: other.summary(),
                        offset: value_offset,
                    })
                }
            };
        }
        metadata.push((key, value));
    }

    // Checked only here so that a file cut inside the metadata reports
    // where, rather than that its tensor infos cannot fit.
    if n_tensors > c.remaining() / MIN_TENSOR_INFO_SIZE {
        return Err(GgufError::TooManyEntries {
            what: "tensor",
            offset: count_offset,
            count: n_tensors,
            min_size: MIN_TENSOR_INFO_SIZE,
            remaining: c.remaining(),
        });
    }
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    let mut tensor_offsets: Vec<u64> = Vec::with_capacity(n_tensors as usize);
    let mut seen_tensors: HashMap<String, ()> = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info_offset = c.offset();
        let name = c.string(&|| format!("name of tensor {i}"))?;
        if name.is_empty() || name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::BadTensorName {
                name,
                offset: info_offset,
            });
        }
        if seen_tensors.insert(name.clone(), ()).is_some() {
            return Err(GgufError::DuplicateTensor {
                name,
                offset: info_offset,
            });
        }
        let dims_offset = c.offset();
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                offset: dims_offset,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims as usize {
            let off = c.offset();
            let v = c.u64(&|| format!("dimension {d} of tensor {name:?}"))?;
            // ggml stores ne as int64_t: values above i64::MAX are negative there.
            if v > i64::MAX as u64 {
                return Err(GgufError::BadDim {
                    tensor: name,
                    offset: off,
                    dim: d,
                    value: v,
                });
            }
            dims.push(v);
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::TensorTooLarge {
                tensor: name.clone(),
                offset: dims_offset,
            })?;
        let type_offset = c.offset();
        let type_id = c.u32(&|| format!("type of tensor {name:?}"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            offset: type_offset,
            id: type_id,
        })?;
        let row_len = dims.first().copied().unwrap_or(1);
        if !row_len.is_multiple_of(ggml_type.block_size() as u64) {
            return Err(GgufError::BadRowLength {
                tensor: name,
                offset: dims_offset,
                row_len,
                ggml_type: ggml_type.name(),
                block_size: ggml_type.block_size(),
            });
        }
        let size = ggml_type
            .row_bytes(n_elements)
            .ok_or_else(|| GgufError::TensorTooLarge {
                tensor: name.clone(),
                offset: dims_offset,
            })?;
        let offset_offset = c.offset();
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                tensor: name,
                offset: offset_offset,
                data_offset: offset,
                alignment,
            });
        }
        tensor_offsets.push(offset_offset);
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size,
        });
    }

    // The data section starts at the end of the header rounded up to the
    // alignment; with no tensors there may be no data section at all.
    let header_end = c.offset();
    let file_size = buf.len() as u64;
    let data_offset = align_up(header_end, alignment).unwrap_or(u64::MAX);
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(_), Some(e)) if e <= file_size => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_size,
                })
            }
        }
    }

    // No two non-empty tensors may share bytes.
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].size > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        // Bounds were checked above, so offset + size cannot overflow.
        if a.offset + a.size > b.offset {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                second: b.name.clone(),
                offset: data_offset + b.offset,
            });
        }
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset: if tensors.is_empty() {
            data_offset.min(file_size)
        } else {
            data_offset
        },
        metadata,
        tensors,
    })
}

/// `x` rounded up to a multiple of `align` (a power of two), None on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

fn read_value(c: &mut Cursor<'_>, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("value of metadata key {}", quote(key));
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(c.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&what)?)),
        // Like gguf.cpp, any non-zero byte reads as true.
        ValueType::Bool => Value::Bool(c.array::<1>(&what)?[0] != 0),
        ValueType::String => Value::String(c.string(&what)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

/// Reads `n` fixed-size elements with `conv` after one bounds check.
fn read_fixed<T, const N: usize>(
    c: &mut Cursor<'_>,
    n: u64,
    key: &str,
    conv: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    // n * N cannot overflow: n was checked against the remaining bytes.
    let bytes = c.take(n * N as u64, &|| {
        format!("array data of metadata key {}", quote(key))
    })?;
    Ok(bytes
        .chunks_exact(N)
        .map(|ch| {
            let mut a = [0u8; N];
            a.copy_from_slice(ch);
            conv(a)
        })
        .collect())
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array> {
    let offset = c.offset();
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            key: key.to_string(),
            offset,
        });
    }
    let type_id = c.u32(&|| format!("array element type of metadata key {}", quote(key)))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        offset,
        id: type_id,
    })?;
    let len_offset = c.offset();
    let n = c.u64(&|| format!("array length of metadata key {}", quote(key)))?;
    if n > MAX_ARRAY_LEN || n > c.remaining() / ty.min_encoded_size() as u64 {
        return Err(GgufError::ArrayTooLong {
            key: key.to_string(),
            offset: len_offset,
            len: n,
            remaining: c.remaining(),
        });
    }
    Ok(match ty {
        ValueType::U8 => Array::U8(read_fixed(c, n, key, |[b]: [u8; 1]| b)?),
        ValueType::I8 => Array::I8(read_fixed(c, n, key, |[b]: [u8; 1]| b as i8)?),
        ValueType::U16 => Array::U16(read_fixed(c, n, key, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(read_fixed(c, n, key, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(read_fixed(c, n, key, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(read_fixed(c, n, key, i32::from_le_bytes)?),
        ValueType::U64 => Array::U64(read_fixed(c, n, key, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(read_fixed(c, n, key, i64::from_le_bytes)?),
        ValueType::F32 => Array::F32(read_fixed(c, n, key, f32::from_le_bytes)?),
        ValueType::F64 => Array::F64(read_fixed(c, n, key, f64::from_le_bytes)?),
        ValueType::Bool => Array::Bool(read_fixed(c, n, key, |[b]: [u8; 1]| b != 0)?),
        ValueType::String => {
            let mut v = Vec::with_capacity(n as usize);
            for i in 0..n {
                v.push(c.string(&|| format!("string {i} of array {}", quote(key)))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn gguf_file_is_send_and_sync() {
        assert_send_sync::<GgufFile>();
    }

    #[test]
    fn align_up_rounds() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
