//! The KV cache: per layer, one row of `n_head_kv * head_dim` keys and one of
//! values per position, stored as f16 (default), Q8_0 or Q4_0 like
//! llama.cpp's `-ctk/-ctv`.

use gguf::GgmlType;

use super::BackendError;

/// Keys and values of every layer for positions `0..n_ctx`.
#[derive(Debug)]
pub struct KvCache {
    pub type_k: GgmlType,
    pub type_v: GgmlType,
    pub n_ctx: usize,
    /// Elements per row: n_head_kv * head_dim.
    pub kv_dim: usize,
    pub head_dim: usize,
    k_row_bytes: usize,
    v_row_bytes: usize,
    // u16 storage keeps f16 values and quant blocks aligned.
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
}

/// Cache types that have kernels.
pub const KV_TYPES: [GgmlType; 3] = [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0];

impl KvCache {
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        head_dim: usize,
        type_k: GgmlType,
        type_v: GgmlType,
    ) -> Result<KvCache, BackendError> {
        for ty in [type_k, type_v] {
            if !KV_TYPES.contains(&ty) {
                return Err(BackendError::UnsupportedCacheType {
                    ty: ty.name().to_string(),
                });
            }
            if !head_dim.is_multiple_of(ty.block_size()) {
                return Err(BackendError::UnsupportedCacheType {
                    ty: format!(
                        "{} (head size {} is not a multiple of {})",
                        ty.name(),
                        head_dim,
                        ty.block_size()
                    ),
                });
            }
        }
        let row = |ty: GgmlType| kv_dim / ty.block_size() * ty.type_size();
        let (k_row_bytes, v_row_bytes) = (row(type_k), row(type_v));
        // Size the whole cache before touching memory: a huge context is an
        // error that says how big, never an abort inside the allocator.
        let too_large = BackendError::ContextTooLarge { n_ctx };
        let per_layer = |row_bytes: usize| row_bytes.checked_mul(n_ctx);
        let (k_layer, v_layer) = match (per_layer(k_row_bytes), per_layer(v_row_bytes)) {
            (Some(k), Some(v)) => (k, v),
            _ => return Err(too_large),
        };
        let total = (k_layer as u64 + v_layer as u64)
            .checked_mul(n_layer as u64)
            .ok_or(too_large)?;
        if let Some(available) = available_memory() {
            if total > available {
                return Err(BackendError::CacheTooLarge {
                    n_ctx,
                    bytes: total,
                    available,
                });
            }
        }
        // vec! of zeros is calloc: pages are touched only as the cache fills.
        let alloc = |layer_bytes: usize| -> Vec<Vec<u16>> {
            (0..n_layer).map(|_| vec![0u16; layer_bytes / 2]).collect()
        };
        Ok(KvCache {
            type_k,
            type_v,
            n_ctx,
            kv_dim,
            head_dim,
            k_row_bytes,
            v_row_bytes,
            k: alloc(k_layer),
            v: alloc(v_layer),
        })
    }

    /// Bytes of one head of one position.
    pub fn head_bytes(ty: GgmlType, head_dim: usize) -> usize {
        head_dim / ty.block_size() * ty.type_size()
    }

    /// Keys of `layer` for positions `0..n` as bytes, row after row.
    pub fn k_rows(&self, layer: usize, n: usize) -> &[u8] {
        &bytemuck::cast_slice(&self.k[layer])[..n * self.k_row_bytes]
    }
    pub fn v_rows(&self, layer: usize, n: usize) -> &[u8] {
        &bytemuck::cast_slice(&self.v[layer])[..n * self.v_row_bytes]
    }
    pub fn k_row_bytes(&self) -> usize {
        self.k_row_bytes
    }
    pub fn v_row_bytes(&self) -> usize {
        self.v_row_bytes
    }
    /// Mutable key and value rows of one position.
    pub fn rows_mut(&mut self, layer: usize, pos: usize) -> (&mut [u8], &mut [u8]) {
        let (kb, vb) = (self.k_row_bytes, self.v_row_bytes);
        let k: &mut [u8] = bytemuck::cast_slice_mut(&mut self.k[layer]);
        let v: &mut [u8] = bytemuck::cast_slice_mut(&mut self.v[layer]);
        (
            &mut k[pos * kb..(pos + 1) * kb],
            &mut v[pos * vb..(pos + 1) * vb],
        )
    }

    /// Bytes the cache occupies.
    pub fn size_bytes(&self) -> usize {
        (self.k_row_bytes + self.v_row_bytes) * self.n_ctx * self.k.len()
    }
}

/// Memory the system can give without swapping (`MemAvailable`), lowered to
/// what the process's cgroup still allows; `None` where neither is known.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        });
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(used)) => Some(max.saturating_sub(used)),
        _ => None,
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_beyond_memory_is_refused_before_allocating() {
        // 1000 layers x 16M positions x 4096 f16 keys and values: exabytes.
        let err = KvCache::new(1000, 1 << 24, 4096, 128, GgmlType::F16, GgmlType::F16)
            .expect_err("cannot fit");
        assert!(matches!(err, BackendError::CacheTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("MiB"), "{err}");
    }

    #[test]
    fn a_small_cache_is_sized_exactly() {
        let kv = KvCache::new(2, 16, 64, 32, GgmlType::Q8_0, GgmlType::F16).expect("fits");
        assert_eq!(kv.size_bytes(), (2 * 34 + 64 * 2) * 16 * 2);
    }
}
