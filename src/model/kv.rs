//! The KV cache: per layer, one row of `n_head_kv * head_dim` keys and one of
//! values per position, stored as f16 (default), Q8_0 or Q4_0 like
//! llama.cpp's `-ctk/-ctv`.

use gguf::GgmlType;

use super::ModelError;

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
    ) -> Result<KvCache, ModelError> {
        for ty in [type_k, type_v] {
            if !KV_TYPES.contains(&ty) {
                return Err(ModelError::UnsupportedCacheType {
                    ty: ty.name().to_string(),
                });
            }
            if !head_dim.is_multiple_of(ty.block_size()) {
                return Err(ModelError::UnsupportedCacheType {
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
        let alloc = |bytes: usize| -> Result<Vec<Vec<u16>>, ModelError> {
            let total = bytes
                .checked_mul(n_ctx)
                .ok_or(ModelError::ContextTooLarge { n_ctx })?;
            Ok((0..n_layer).map(|_| vec![0u16; total / 2]).collect())
        };
        Ok(KvCache {
            type_k,
            type_v,
            n_ctx,
            kv_dim,
            head_dim,
            k_row_bytes,
            v_row_bytes,
            k: alloc(k_row_bytes)?,
            v: alloc(v_row_bytes)?,
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
