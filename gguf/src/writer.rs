//! [`GgufWriter`]: builds GGUF v3 files.
//!
//! Tensor data can be given up front (owned or borrowed) or declared with
//! [`GgufWriter::add_tensor_info`] and streamed later, in declaration order,
//! through [`GgufStream::write_tensor_data`], so a large output is never held
//! in memory twice.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::reader::{
    align_up, is_valid_alignment, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC,
    MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_DIMS, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};
use crate::types::GgmlType;
use crate::value::{Array, Value};

type Result<T, E = GgufError> = std::result::Result<T, E>;

/// The GGUF version the writer produces.
pub const WRITE_VERSION: u32 = 3;

/// Where a tensor's bytes come from.
#[derive(Debug)]
pub enum TensorData<'a> {
    /// Bytes owned by the writer.
    Owned(Vec<u8>),
    /// Bytes borrowed for the writer's lifetime (e.g. from a mapped input).
    Borrowed(&'a [u8]),
    /// Bytes given later through [`GgufStream::write_tensor_data`].
    Deferred,
}

impl From<Vec<u8>> for TensorData<'_> {
    fn from(v: Vec<u8>) -> Self {
        TensorData::Owned(v)
    }
}

impl<'a> From<&'a [u8]> for TensorData<'a> {
    fn from(v: &'a [u8]) -> Self {
        TensorData::Borrowed(v)
    }
}

impl<'a> From<&'a Vec<u8>> for TensorData<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        TensorData::Borrowed(v)
    }
}

impl TensorData<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            TensorData::Owned(v) => Some(v),
            TensorData::Borrowed(b) => Some(b),
            TensorData::Deferred => None,
        }
    }
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
#[derive(Debug)]
pub struct GgufWriter<'a> {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<(TensorInfo, TensorData<'a>)>,
    names: HashSet<String>,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty writer (alignment 32 until `general.alignment` is added).
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The tensor data alignment the output will use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Metadata added so far, in order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Adds a metadata entry. Keys must be unique and non-empty;
    /// `general.alignment` must be a u32 power of two and multiple of 8, and
    /// sets the alignment.
    pub fn add_kv(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if key.is_empty() {
            return Err(GgufError::EmptyKey { offset: 0 });
        }
        if key.len() as u64 > MAX_STRING_LEN {
            return Err(GgufError::Unencodable {
                key: key.chars().take(40).collect(),
                reason: "key too long".into(),
            });
        }
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key, offset: 0 });
        }
        check_value(&key, &value)?;
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if is_valid_alignment(a) => self.alignment = u64::from(a),
                ref other => {
                    return Err(GgufError::Unencodable {
                        key,
                        reason: format!(
                            "{} is not a u32 power of two and multiple of 8",
                            other.summary()
                        ),
                    })
                }
            }
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Sets a metadata entry: replaces the value of an existing key in place
    /// (keeping its position) or adds it at the end. For edits after copying
    /// another file's metadata, e.g. `general.file_type` when quantizing.
    pub fn set_kv(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        let Some(i) = self.metadata.iter().position(|(k, _)| *k == key) else {
            return self.add_kv(key, value);
        };
        let (old_key, old_value) = self.metadata.remove(i);
        self.keys.remove(&old_key);
        let old_alignment = self.alignment;
        match self.add_kv(key, value) {
            Ok(()) => {
                // add_kv appended the entry: move it back to the old position.
                self.metadata[i..].rotate_right(1);
                Ok(())
            }
            Err(e) => {
                self.alignment = old_alignment;
                self.keys.insert(old_key.clone());
                self.metadata.insert(i, (old_key, old_value));
                Err(e)
            }
        }
    }

    /// Adds a tensor with its data (owned `Vec<u8>` or borrowed `&[u8]`).
    /// `dims` is in ggml order (`dims[0]` = row length).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: impl Into<TensorData<'a>>,
    ) -> Result<()> {
        let data = data.into();
        let info = make_info(name.into(), dims, ggml_type)?;
        if let Some(bytes) = data.bytes() {
            if bytes.len() as u64 != info.size {
                return Err(GgufError::TensorSizeMismatch {
                    tensor: info.name,
                    expected: info.size,
                    got: bytes.len() as u64,
                });
            }
        }
        self.push(info, data)
    }

    /// Declares a tensor whose bytes will be streamed later with
    /// [`GgufStream::write_tensor_data`]; returns its byte size.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
    ) -> Result<u64> {
        let info = make_info(name.into(), dims, ggml_type)?;
        let size = info.size;
        self.push(info, TensorData::Deferred)?;
        Ok(size)
    }

    fn push(&mut self, info: TensorInfo, data: TensorData<'a>) -> Result<()> {
        if self.names.contains(&info.name) {
            return Err(GgufError::DuplicateTensor {
                name: info.name,
                offset: 0,
            });
        }
        self.names.insert(info.name.clone());
        self.tensors.push((info, data));
        Ok(())
    }

    /// The tensors added so far with the offsets they will get.
    pub fn tensor_infos(&self) -> Vec<TensorInfo> {
        let mut out = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for (t, _) in &self.tensors {
            let mut t = t.clone();
            t.offset = offset;
            offset = align_up(offset.saturating_add(t.size), self.alignment).unwrap_or(u64::MAX);
            out.push(t);
        }
        out
    }

    /// Writes the file; every tensor must have its data attached.
    pub fn write(self, path: impl AsRef<Path>) -> Result<()> {
        self.stream(path)?.finish().map(|_| ())
    }

    /// Writes the file into `w`; every tensor must have its data attached.
    pub fn write_to<W: Write>(self, w: W) -> Result<W> {
        self.stream_to(w)?.finish()
    }

    /// The file image as bytes (for tests and small files).
    pub fn to_bytes(self) -> Result<Vec<u8>> {
        self.write_to(Vec::new())
    }

    /// Creates `path`, writes the header and starts streaming tensor data.
    pub fn stream(self, path: impl AsRef<Path>) -> Result<GgufStream<'a, BufWriter<File>>> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            op: "create",
            source,
        })?;
        GgufStream::start(BufWriter::with_capacity(1 << 20, file), self, path.into())
    }

    /// Writes the header into `w` and starts streaming tensor data.
    pub fn stream_to<W: Write>(self, w: W) -> Result<GgufStream<'a, W>> {
        GgufStream::start(w, self, PathBuf::from("<output>"))
    }

    /// As [`GgufWriter::stream_to`], for a sink that writes the file `path`
    /// (named in errors), e.g. a temporary file renamed when complete.
    pub fn stream_to_file<W: Write>(
        self,
        w: W,
        path: impl Into<PathBuf>,
    ) -> Result<GgufStream<'a, W>> {
        GgufStream::start(w, self, path.into())
    }
}

/// A GGUF file being written: the header is out, tensor data follows in
/// declaration order. Tensors added with data are written automatically;
/// deferred ones wait for [`GgufStream::write_tensor_data`].
pub struct GgufStream<'a, W: Write> {
    w: W,
    path: PathBuf,
    alignment: u64,
    tensors: Vec<(TensorInfo, TensorData<'a>)>,
    /// Index of the tensor whose data comes next.
    next: usize,
    /// Bytes of tensor `next` written so far.
    written: u64,
    /// Bytes written to `w` in total.
    pos: u64,
}

impl<'a, W: Write> GgufStream<'a, W> {
    fn start(w: W, writer: GgufWriter<'a>, path: PathBuf) -> Result<Self> {
        let infos = writer.tensor_infos();
        let tensors: Vec<(TensorInfo, TensorData<'a>)> = infos
            .into_iter()
            .zip(writer.tensors)
            .map(|(info, (_, data))| (info, data))
            .collect();
        let mut s = GgufStream {
            w,
            path,
            alignment: writer.alignment,
            tensors,
            next: 0,
            written: 0,
            pos: 0,
        };
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&WRITE_VERSION.to_le_bytes());
        header.extend_from_slice(&(s.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(writer.metadata.len() as u64).to_le_bytes());
        for (key, value) in &writer.metadata {
            put_str(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value);
        }
        for (t, _) in &s.tensors {
            put_str(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            header.extend_from_slice(&t.offset.to_le_bytes());
        }
        s.put(&header)?;
        s.pad()?;
        s.advance()?;
        Ok(s)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            op: "write",
            source,
        })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let target = align_up(self.pos, self.alignment).unwrap_or(self.pos);
        let zeros = vec![0u8; (target - self.pos) as usize];
        self.put(&zeros)
    }

    /// Writes every attached tensor up to the next deferred one.
    fn advance(&mut self) -> Result<()> {
        while self.next < self.tensors.len() {
            let data = std::mem::replace(&mut self.tensors[self.next].1, TensorData::Deferred);
            match data.bytes() {
                Some(bytes) => {
                    self.put(bytes)?;
                    self.pad()?;
                    self.next += 1;
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The sink, e.g. to inspect what was written so far.
    pub fn get_ref(&self) -> &W {
        &self.w
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// The deferred tensor whose data is expected next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next).map(|(t, _)| t)
    }

    /// Appends bytes of the next deferred tensor. A tensor's data may be
    /// split over several calls; tensors must come in declaration order.
    pub fn write_tensor_data(&mut self, chunk: &[u8]) -> Result<()> {
        let Some((info, _)) = self.tensors.get(self.next) else {
            return Err(GgufError::StreamOrder {
                message: format!(
                    "{} bytes of tensor data given but every tensor is complete",
                    chunk.len()
                ),
            });
        };
        let (size, name) = (info.size, info.name.clone());
        if self.written + chunk.len() as u64 > size {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name,
                expected: size,
                got: self.written + chunk.len() as u64,
            });
        }
        self.put(chunk)?;
        self.written += chunk.len() as u64;
        if self.written == size {
            self.pad()?;
            self.written = 0;
            self.next += 1;
            self.advance()?;
        }
        Ok(())
    }

    /// Checks every tensor was written, flushes and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.advance()?;
        if let Some((t, _)) = self.tensors.get(self.next) {
            return Err(GgufError::StreamOrder {
                message: format!(
                    "tensor {:?}: only {} of {} data bytes were written",
                    t.name, self.written, t.size
                ),
            });
        }
        self.w.flush().map_err(|source| GgufError::Io {
            path: self.path.clone(),
            op: "flush",
            source,
        })?;
        Ok(self.w)
    }
}

fn make_info(name: String, dims: &[u64], ggml_type: GgmlType) -> Result<TensorInfo> {
    if name.is_empty() || name.len() > MAX_TENSOR_NAME_LEN {
        return Err(GgufError::BadTensorName { name, offset: 0 });
    }
    if dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name,
            offset: 0,
            n_dims: dims.len() as u32,
        });
    }
    if let Some((d, &value)) = dims.iter().enumerate().find(|(_, &v)| v > i64::MAX as u64) {
        return Err(GgufError::BadDim {
            tensor: name,
            offset: 0,
            dim: d,
            value,
        });
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let row_len = dims.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(ggml_type.block_size() as u64) {
        return Err(GgufError::BadRowLength {
            tensor: name,
            offset: 0,
            row_len,
            ggml_type: ggml_type.name(),
            block_size: ggml_type.block_size(),
        });
    }
    let Some(size) = n_elements.and_then(|n| ggml_type.row_bytes(n)) else {
        return Err(GgufError::TensorTooLarge {
            tensor: name,
            offset: 0,
        });
    };
    Ok(TensorInfo {
        name,
        dims: dims.to_vec(),
        ggml_type,
        offset: 0,
        size,
    })
}

/// Checks a value is within the reader's limits so the output reads back.
fn check_value(key: &str, value: &Value) -> Result<()> {
    let err = |reason: String| GgufError::Unencodable {
        key: key.to_string(),
        reason,
    };
    match value {
        Value::String(s) if s.len() as u64 > MAX_STRING_LEN => {
            Err(err(format!("string of {} bytes is too long", s.len())))
        }
        Value::Array(a) => check_array(a, 0).map_err(err),
        _ => Ok(()),
    }
}

fn check_array(a: &Array, depth: usize) -> Result<(), String> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"));
    }
    if a.len() as u64 > MAX_ARRAY_LEN {
        return Err(format!("array of {} elements is too long", a.len()));
    }
    match a {
        Array::String(v) => match v.iter().find(|s| s.len() as u64 > MAX_STRING_LEN) {
            Some(s) => Err(format!("string of {} bytes is too long", s.len())),
            None => Ok(()),
        },
        Array::Array(v) => v.iter().try_for_each(|x| check_array(x, depth + 1)),
        _ => Ok(()),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.element_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => out.extend(v.iter().map(|&x| u8::from(x))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|x| put_array(out, x)),
    }
}
