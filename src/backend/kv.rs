//! The KV cache: per layer, one row of `n_head_kv * head_dim` keys and one of
//! values per position, stored as f16 (default), Q8_0 or Q4_0 like
//! llama.cpp's `-ctk/-ctv`. Layers may differ in row width (gemma4's
//! full-attention layers have larger heads), and a layer may have no cache
//! of its own (gemma4's layers that attend over an earlier layer's cache).

use gguf::GgmlType;

use super::BackendError;

/// Keys and values of every layer for positions `0..n_ctx`.
#[derive(Debug)]
pub struct KvCache {
    pub type_k: GgmlType,
    pub type_v: GgmlType,
    pub n_ctx: usize,
    /// Per layer: elements per row (n_head_kv * head_dim; 0: no cache).
    kv_dims: Vec<usize>,
    k_row_bytes: Vec<usize>,
    v_row_bytes: Vec<usize>,
    // u16 storage keeps f16 values and quant blocks aligned.
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
}

/// Cache types that have kernels (the type table's `kv_cache` rows).
pub const KV_TYPES: &[GgmlType] = &quant::KV_CACHE_TYPES;

/// The cache geometry of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKvShape {
    /// Elements per row: n_head_kv * head_dim (0: the layer has no cache).
    pub kv_dim: usize,
    pub head_dim: usize,
}

impl KvCache {
    /// A cache of `n_layer` layers alike.
    pub fn new(
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        head_dim: usize,
        type_k: GgmlType,
        type_v: GgmlType,
    ) -> Result<KvCache, BackendError> {
        let shape = LayerKvShape { kv_dim, head_dim };
        KvCache::with_layer_shapes(&vec![shape; n_layer], n_ctx, type_k, type_v)
    }

    /// A cache whose layers have the given shapes.
    pub fn with_layer_shapes(
        layers: &[LayerKvShape],
        n_ctx: usize,
        type_k: GgmlType,
        type_v: GgmlType,
    ) -> Result<KvCache, BackendError> {
        for ty in [type_k, type_v] {
            if !KV_TYPES.contains(&ty) {
                return Err(BackendError::UnsupportedCacheType {
                    ty: ty.name().to_string(),
                });
            }
            let bad = layers
                .iter()
                .find(|l| l.kv_dim > 0 && !l.head_dim.is_multiple_of(ty.block_size()));
            if let Some(&LayerKvShape { head_dim, .. }) = bad {
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
        let row_bytes = |ty: GgmlType| -> Vec<usize> {
            layers
                .iter()
                .map(|l| l.kv_dim / ty.block_size() * ty.type_size())
                .collect()
        };
        let (k_row_bytes, v_row_bytes) = (row_bytes(type_k), row_bytes(type_v));
        // Size the whole cache before touching memory: a huge context is an
        // error that says how big, never an abort inside the allocator.
        let too_large = || BackendError::ContextTooLarge { n_ctx };
        let mut total = 0u64;
        for (&kb, &vb) in k_row_bytes.iter().zip(&v_row_bytes) {
            let layer = (kb as u64 + vb as u64)
                .checked_mul(n_ctx as u64)
                .ok_or_else(too_large)?;
            total = total.checked_add(layer).ok_or_else(too_large)?;
        }
        if usize::try_from(total).is_err() {
            return Err(too_large());
        }
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
        let alloc = |row_bytes: &[usize]| -> Vec<Vec<u16>> {
            row_bytes
                .iter()
                .map(|&rb| vec![0u16; rb * n_ctx / 2])
                .collect()
        };
        Ok(KvCache {
            type_k,
            type_v,
            n_ctx,
            kv_dims: layers.iter().map(|l| l.kv_dim).collect(),
            k: alloc(&k_row_bytes),
            v: alloc(&v_row_bytes),
            k_row_bytes,
            v_row_bytes,
        })
    }

    /// Bytes of one head of one position.
    pub fn head_bytes(ty: GgmlType, head_dim: usize) -> usize {
        head_dim / ty.block_size() * ty.type_size()
    }

    /// Elements of one row of `layer` (0: no cache of its own, or no such
    /// layer).
    pub fn layer_kv_dim(&self, layer: usize) -> usize {
        self.kv_dims.get(layer).copied().unwrap_or(0)
    }
    /// Keys of `layer` for positions `0..n` as bytes, row after row.
    pub fn k_rows(&self, layer: usize, n: usize) -> &[u8] {
        &bytemuck::cast_slice(&self.k[layer])[..n * self.k_row_bytes[layer]]
    }
    pub fn v_rows(&self, layer: usize, n: usize) -> &[u8] {
        &bytemuck::cast_slice(&self.v[layer])[..n * self.v_row_bytes[layer]]
    }
    pub fn k_row_bytes(&self, layer: usize) -> usize {
        self.k_row_bytes[layer]
    }
    pub fn v_row_bytes(&self, layer: usize) -> usize {
        self.v_row_bytes[layer]
    }
    /// Mutable key and value rows of one position.
    pub fn rows_mut(&mut self, layer: usize, pos: usize) -> (&mut [u8], &mut [u8]) {
        let (kb, vb) = (self.k_row_bytes[layer], self.v_row_bytes[layer]);
        let k: &mut [u8] = bytemuck::cast_slice_mut(&mut self.k[layer]);
        let v: &mut [u8] = bytemuck::cast_slice_mut(&mut self.v[layer]);
        (
            &mut k[pos * kb..(pos + 1) * kb],
            &mut v[pos * vb..(pos + 1) * vb],
        )
    }

    /// Bytes the cache occupies.
    pub fn size_bytes(&self) -> usize {
        let row_bytes: usize = self.k_row_bytes.iter().chain(&self.v_row_bytes).sum();
        row_bytes * self.n_ctx
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

    #[test]
    fn layers_may_differ_in_width_or_have_no_cache() {
        let shapes = [
            LayerKvShape {
                kv_dim: 32,
                head_dim: 16,
            },
            LayerKvShape {
                kv_dim: 64,
                head_dim: 32,
            },
            LayerKvShape {
                kv_dim: 0,
                head_dim: 16,
            },
        ];
        let kv =
            KvCache::with_layer_shapes(&shapes, 8, GgmlType::F16, GgmlType::F16).expect("fits");
        assert_eq!(kv.size_bytes(), (32 + 64) * 2 * 2 * 8);
        assert_eq!([0, 1, 2, 3].map(|l| kv.layer_kv_dim(l)), [32, 64, 0, 0]);
        assert_eq!(kv.k_rows(1, 8).len(), 64 * 2 * 8);
        assert!(kv.k_rows(2, 8).is_empty());
    }
}
