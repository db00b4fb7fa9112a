//! The NPU weight cache: weights requantized for the NPU (scales, offsets
//! and the native B layout of every K segment), saved once and reused by
//! the next load, so that a second start skips the dequantize-rotate-
//! quantize work.
//!
//! One file per weight in a cache directory (by default `MODEL.gguf.rknpu/`
//! beside the model). The file name is a hash of the key, and the file
//! repeats the key: tensor name, GGML type, shape, a hash of the weight's
//! bytes in the model file, the scheme, the format version and the crate
//! version (the requantizer's code is part of what the entry depends on).
//! A trailing checksum covers the whole file. A missing entry is built and
//! saved; an entry that does not read back exactly (truncated, corrupt,
//! another key, inconsistent sizes) is reported in one line, rebuilt and
//! overwritten. Nothing here panics on a bad file, and a cache that cannot
//! be written only costs the next start its speed (one warning).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use quant::npu::{self as nq, RotationPlan, Scheme};

/// Format of the entry files; bump when the layout changes.
pub const CACHE_FORMAT: u32 = 1;

const MAGIC: &[u8; 8] = b"RKNPUWC\0";
const EXT: &str = "rknpuw";

/// A fast 64-bit hash (multiply-rotate over 8-byte words, then a
/// splitmix64 finish). Not cryptographic: it tells stale entries apart.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut words = bytes.chunks_exact(8);
    for c in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    for &b in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h ^= bytes.len() as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// What an entry depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    pub name: String,
    pub ggml_type: String,
    pub n: usize,
    pub k: usize,
    /// [`hash64`] of the weight's bytes in the model file.
    pub content_hash: u64,
    pub scheme: String,
}

impl CacheKey {
    pub fn new(
        name: &str,
        ty: gguf::GgmlType,
        n: usize,
        k: usize,
        bytes: &[u8],
        scheme: Scheme,
    ) -> Self {
        CacheKey {
            name: name.to_string(),
            ggml_type: ty.name().to_string(),
            n,
            k,
            content_hash: hash64(0, bytes),
            scheme: scheme.to_string(),
        }
    }

    fn header(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(MAGIC);
        put_u32(&mut w, CACHE_FORMAT);
        put_str(&mut w, env!("CARGO_PKG_VERSION"));
        put_str(&mut w, &self.name);
        put_str(&mut w, &self.ggml_type);
        put_u64(&mut w, self.n as u64);
        put_u64(&mut w, self.k as u64);
        put_u64(&mut w, self.content_hash);
        put_str(&mut w, &self.scheme);
        w
    }

    /// The entry's file name: the tensor name (made file-safe) and a hash
    /// of the whole key.
    fn file_name(&self) -> String {
        format!(
            "{}.{:016x}.{EXT}",
            self.safe_name(),
            hash64(1, &self.header())
        )
    }

    fn safe_name(&self) -> String {
        self.name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Lookups so far: entries used, missing, unusable (rebuilt).
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicUsize,
    misses: AtomicUsize,
    invalid: AtomicUsize,
    stale: AtomicUsize,
    warned_write: AtomicBool,
    warned_stale: AtomicBool,
}

/// What the lookups of a cache found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
    pub invalid: usize,
    /// Missing, with an entry of the same tensor for another key (model
    /// file, scheme or version): rebuilt, and the old entry replaced.
    pub stale: usize,
}

/// Where entries live, and what the lookups found (clones share the
/// counters).
#[derive(Clone, Debug)]
pub struct WeightCache {
    dir: PathBuf,
    counters: Arc<Counters>,
}

/// Outcome of a lookup.
#[derive(Debug)]
pub enum Lookup {
    Hit(Box<nq::PreparedWeight>),
    Miss,
    /// Only entries of this tensor for another key exist.
    Stale,
    /// An entry was there but unusable: why.
    Invalid(String),
}

impl WeightCache {
    /// A cache in `dir` (created on the first store).
    pub fn new(dir: impl Into<PathBuf>) -> WeightCache {
        WeightCache {
            dir: dir.into(),
            counters: Arc::default(),
        }
    }

    /// The default place: `MODEL.gguf.rknpu/` beside the model.
    pub fn beside_model(model: &Path) -> WeightCache {
        let mut s = model.as_os_str().to_os_string();
        s.push(".rknpu");
        WeightCache::new(PathBuf::from(s))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            invalid: c.invalid.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
        }
    }

    /// The entry path of `key`.
    pub fn path_of(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// Reads the entry of `key`.
    pub fn load(&self, key: &CacheKey) -> Lookup {
        let found = self.lookup(key);
        let c = match found {
            Lookup::Hit(_) => &self.counters.hits,
            Lookup::Miss => &self.counters.misses,
            Lookup::Stale => &self.counters.stale,
            Lookup::Invalid(_) => &self.counters.invalid,
        };
        if matches!(found, Lookup::Stale)
            && !self.counters.warned_stale.swap(true, Ordering::Relaxed)
        {
            log::warn!(
                "npu: weight cache {} holds entries for another model file, scheme or rkinfer version; rebuilding them",
                self.dir.display()
            );
        }
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, key: &CacheKey) -> Lookup {
        let path = self.path_of(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if self.other_entries(key).is_empty() {
                    Lookup::Miss
                } else {
                    Lookup::Stale
                };
            }
            // The cache path is a file (or under one): no entry can exist,
            // and `store` says so once instead of once per weight.
            Err(_) if !self.dir.is_dir() => return Lookup::Miss,
            Err(e) => return Lookup::Invalid(format!("{}: {e}", path.display())),
        };
        match decode(key, &bytes) {
            Ok(w) => Lookup::Hit(Box::new(w)),
            Err(why) => Lookup::Invalid(format!("{}: {why}", path.display())),
        }
    }

    /// Saves `w` (whose segments still hold their packed bytes) under
    /// `key`, replacing older entries of the same tensor. A failure is
    /// reported once and otherwise ignored.
    pub fn store(&self, key: &CacheKey, w: &nq::PreparedWeight) {
        if let Err(e) = self.try_store(key, w) {
            if !self.counters.warned_write.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "npu weight cache {} not written ({e}); the next start prepares the weights again",
                    self.dir.display()
                );
            }
        }
    }

    fn try_store(&self, key: &CacheKey, w: &nq::PreparedWeight) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path_of(key);
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", key.file_name(), std::process::id()));
        let bytes = encode(key, w);
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        // Older entries of this tensor (another scheme or model version).
        for old in self.other_entries(key) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    /// Entries of `key`'s tensor under other keys.
    fn other_entries(&self, key: &CacheKey) -> Vec<PathBuf> {
        let (prefix, mine) = (format!("{}.", key.safe_name()), key.file_name());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix)
                    && name.ends_with(EXT)
                    && name.len() == mine.len()
                    && name != mine
            })
            .map(|e| e.path())
            .collect()
    }
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u32(w, s.len() as u32);
    w.extend_from_slice(s.as_bytes());
}

fn put_f32s(w: &mut Vec<u8>, v: &[f32]) {
    put_u64(w, v.len() as u64);
    for x in v {
        w.extend_from_slice(&x.to_le_bytes());
    }
}

fn encode(key: &CacheKey, pw: &nq::PreparedWeight) -> Vec<u8> {
    let mut w = key.header();
    put_u64(&mut w, pw.n_pad as u64);
    put_u64(&mut w, pw.k_pad as u64);
    put_u32(&mut w, pw.segments.len() as u32);
    for s in &pw.segments {
        put_u64(&mut w, s.k_start as u64);
        put_u64(&mut w, s.k_len as u64);
        put_u64(&mut w, s.packed.len() as u64);
        w.extend_from_slice(&s.packed);
    }
    put_f32s(&mut w, &pw.scales);
    put_f32s(&mut w, &pw.offsets);
    let sum = hash64(2, &w);
    put_u64(&mut w, sum);
    w
}

/// A bounds-checked reader over an entry.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                format!(
                    "truncated at byte {} (needs {n} more of {})",
                    self.at,
                    self.b.len()
                )
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn usize(&mut self) -> Result<usize, String> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| format!("size {v} at byte {} too large", self.at - 8))
    }
    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        let n = self.usize()?;
        let bytes = self.take(n.checked_mul(4).ok_or("f32 count overflows")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn decode(key: &CacheKey, bytes: &[u8]) -> Result<nq::PreparedWeight, String> {
    let header = key.header();
    if bytes.len() < header.len() + 8 {
        return Err(format!("{} bytes: too short for an entry", bytes.len()));
    }
    if !bytes.starts_with(MAGIC) {
        return Err("not an rkinfer NPU weight-cache entry (bad magic)".into());
    }
    if !bytes.starts_with(&header) {
        return Err("written for another model file, scheme or rkinfer version".into());
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(tail);
    if hash64(2, body) != u64::from_le_bytes(sum) {
        return Err("checksum mismatch (corrupt or partly written)".into());
    }
    let mut r = Reader {
        b: body,
        at: header.len(),
    };
    let scheme: Scheme = key
        .scheme
        .parse()
        .map_err(|e| format!("scheme {:?}: {e}", key.scheme))?;
    let p = scheme.precision();
    let (n, k) = (key.n, key.k);
    let n_pad = r.usize()?;
    let k_pad = r.usize()?;
    let nseg = r.u32()? as usize;
    if nseg == 0 || nseg > k_pad.max(1) {
        return Err(format!("{nseg} segments for K {k_pad}"));
    }
    let mut segments = Vec::with_capacity(nseg);
    let mut next = 0;
    for i in 0..nseg {
        let k_start = r.usize()?;
        let k_len = r.usize()?;
        let len = r.usize()?;
        if k_start != next || k_len == 0 || !k_len.is_multiple_of(32) {
            return Err(format!(
                "segment {i}: K {k_start}+{k_len} does not follow {next}"
            ));
        }
        let want = nq::layout::b_bytes(p, n_pad, k_len);
        if len != want {
            return Err(format!("segment {i}: {len} packed bytes, expected {want}"));
        }
        next = k_start + k_len;
        segments.push(nq::WeightSegment {
            k_start,
            k_len,
            packed: r.take(len)?.to_vec(),
        });
    }
    let scales = r.f32s()?;
    let offsets = r.f32s()?;
    if r.at != body.len() {
        return Err(format!("{} unexpected bytes at the end", body.len() - r.at));
    }
    let rotation = RotationPlan::with_segment(
        scheme.effective_rotation(),
        k,
        p.k_align(),
        nq::hadamard::seed_from_name(&key.name),
        scheme.k_segment,
    );
    if k_pad != rotation.k_rot || next != k_pad {
        return Err(format!(
            "K padded to {k_pad} (segments end at {next}), the scheme gives {}",
            rotation.k_rot
        ));
    }
    if n_pad < n || n_pad != nq::layout::round_up_n(n, p) {
        return Err(format!("N padded to {n_pad} for N {n}"));
    }
    if scales.len() != nseg * n || (!offsets.is_empty() && offsets.len() != nseg * n) {
        return Err(format!(
            "{} scales and {} offsets for {nseg} segments of {n} channels",
            scales.len(),
            offsets.len()
        ));
    }
    if offsets.is_empty() == scheme.weight_offset {
        return Err("offsets do not match the scheme".into());
    }
    Ok(nq::PreparedWeight {
        name: key.name.clone(),
        scheme,
        n,
        k,
        n_pad,
        k_pad,
        rotation,
        segments,
        scales,
        offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache path that is a file: every lookup is a plain miss (no
    /// warning per weight), and the failed store warns once.
    #[test]
    fn a_file_as_the_cache_directory_is_a_miss() {
        let file = std::env::temp_dir().join(format!("rkinfer-cache-file-{}", std::process::id()));
        fs::write(&file, b"not a directory").unwrap();
        let scheme = nq::default_scheme_for(gguf::GgmlType::Q8_0);
        let cache = WeightCache::new(&file);
        for name in ["a", "b", "c"] {
            let key = CacheKey::new(name, gguf::GgmlType::Q8_0, 4, 64, &[0], scheme);
            assert!(matches!(cache.load(&key), Lookup::Miss));
        }
        assert_eq!(cache.stats().misses, 3);
        assert_eq!(cache.stats().invalid, 0);
        let _ = fs::remove_file(&file);
    }
}
