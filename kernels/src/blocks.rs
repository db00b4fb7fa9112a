//! GGML block layouts, byte for byte as ggml stores them in GGUF files.
//!
//! `f16` fields are kept as raw `u16` bits so this crate stays dependency
//! free; convert with [`crate::f16_to_f32`] / [`crate::f32_to_f16`].
//! Every struct is `repr(C)` with a compile-time size check, so a tensor's
//! bytes can be viewed as a slice of blocks (see [`as_blocks`]).

/// Elements per block of the simple quant types.
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK4_0 / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK4_1 / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK8_0],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_1 {
    pub d: u16,
    /// d * sum(qs), as f16.
    pub s: u16,
    pub qs: [i8; QK8_1],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: u16,
    pub dmin: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}

/// Activation block paired with the K-quants (never stored in files).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of each group of 16 quants.
    pub bsums: [i16; QK_K / 16],
}

// Sizes as ggml's static asserts state them.
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(core::mem::size_of::<BlockQ4_0x8>() == 144);
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(core::mem::size_of::<BlockQ4Kx8>() == 8 * 144);

/// A block type whose every bit pattern is a valid value (plain integers
/// only), so byte slices can be reinterpreted as block slices.
///
/// # Safety
/// Implementors must be `repr(C)`, contain only integer/float fields and
/// arrays of them, and have no padding.
pub unsafe trait Block: Copy + 'static {
    /// Elements (weights) one block encodes.
    const ELEMENTS: usize;
}

/// Eight Q4_0 rows' blocks at one position, interleaved for SIMD (as
/// llama.cpp's `block_q4_0x8`, though laid out differently): the eight
/// scales, then four 32-byte vectors; vector v holds bytes 4v..4v+4 of each
/// row's `qs`, row after row, so each 32-bit lane is one row: elements
/// 4v..4v+3 in the low nibbles, 16+4v..16+4v+3 in the high ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4_0x8 {
    pub d: [u16; 8],
    pub qs: [u8; 128],
}

impl Default for BlockQ4_0x8 {
    fn default() -> Self {
        BlockQ4_0x8 {
            d: [0; 8],
            qs: [0; 128],
        }
    }
}

impl BlockQ4_0x8 {
    /// Interleaves the same block of eight rows.
    pub fn pack(rows: [&BlockQ4_0; 8]) -> BlockQ4_0x8 {
        let mut out = BlockQ4_0x8 {
            d: [0; 8],
            qs: [0; 128],
        };
        for (r, row) in rows.iter().enumerate() {
            out.d[r] = row.d;
            for v in 0..4 {
                out.qs[32 * v + 4 * r..32 * v + 4 * r + 4]
                    .copy_from_slice(&row.qs[4 * v..4 * v + 4]);
            }
        }
        out
    }

    /// Row `r`'s block back.
    pub fn row(&self, r: usize) -> BlockQ4_0 {
        let mut b = BlockQ4_0 {
            d: self.d[r],
            qs: [0; 16],
        };
        for v in 0..4 {
            b.qs[4 * v..4 * v + 4].copy_from_slice(&self.qs[32 * v + 4 * r..32 * v + 4 * r + 4]);
        }
        b
    }
}

/// Interleaves a Q4_0 matrix of `rows.len() / nb` rows (a multiple of 8) of
/// `nb` blocks: group g, block b lands at `out[g * nb + b]`.
pub fn repack_q4_0x8(rows: &[BlockQ4_0], nb: usize, out: &mut [BlockQ4_0x8]) {
    repack_x8("repack_q4_0x8", rows, nb, out, BlockQ4_0x8::pack);
}

/// Interleaves groups of eight rows of `nb` blocks with `pack`: group g,
/// block b lands at `out[g * nb + b]`.
fn repack_x8<B, P>(name: &str, rows: &[B], nb: usize, out: &mut [P], pack: fn([&B; 8]) -> P) {
    assert!(
        nb > 0 && rows.len().is_multiple_of(8 * nb) && out.len() * 8 == rows.len(),
        "{name}: {} blocks are not groups of 8 rows of {nb} into {}",
        rows.len(),
        out.len()
    );
    for (g, group) in out.chunks_exact_mut(nb).enumerate() {
        for (b, o) in group.iter_mut().enumerate() {
            *o = pack(core::array::from_fn(|r| &rows[(8 * g + r) * nb + b]));
        }
    }
}

/// Eight Q4_K rows' super-blocks at one position, interleaved as
/// llama.cpp's `block_q4_Kx8` in its "8x4" form (what it picks on a CPU
/// with dotprod and without i8mm): the eight `d`, the eight `dmin`, then
/// per 32-element sub-block s the eight rows' 6-bit scale and min packed in
/// 12 bytes (`scales[12 * s..]`, row r where a Q4_K block keeps sub-block
/// r), then the quants: for every 4-byte piece p of a row's `qs`, 32 bytes
/// holding that piece of rows 0..8 in turn (`qs[32 * p + 4 * r..]`), so a
/// 32-bit lane is one row, as in [`BlockQ4_0x8`]. Same size as eight
/// [`BlockQ4K`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4Kx8 {
    pub d: [u16; 8],
    pub dmin: [u16; 8],
    pub scales: [u8; 8 * K_SCALE_SIZE],
    pub qs: [u8; 8 * QK_K / 2],
}

impl Default for BlockQ4Kx8 {
    fn default() -> Self {
        BlockQ4Kx8 {
            d: [0; 8],
            dmin: [0; 8],
            scales: [0; 8 * K_SCALE_SIZE],
            qs: [0; 8 * QK_K / 2],
        }
    }
}

/// The 6-bit (scale, min) pair `j` (0..8) of a Q4_K scale array.
pub fn q4_k_scale_min(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit (scale, min) pairs as a Q4_K block stores them: the
/// inverse of [`q4_k_scale_min`].
pub fn q4_k_pack_scales(scales: [u8; 8], mins: [u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        q[j] = (scales[j] & 63) | ((scales[j + 4] >> 4) << 6);
        q[j + 4] = (mins[j] & 63) | ((mins[j + 4] >> 4) << 6);
        q[j + 8] = (scales[j + 4] & 0x0f) | ((mins[j + 4] & 0x0f) << 4);
    }
    q
}

impl BlockQ4Kx8 {
    /// Interleaves the same super-block of eight rows.
    pub fn pack(rows: [&BlockQ4K; 8]) -> BlockQ4Kx8 {
        let mut out = BlockQ4Kx8::default();
        for (r, row) in rows.iter().enumerate() {
            out.d[r] = row.d;
            out.dmin[r] = row.dmin;
            for p in 0..QK_K / 8 {
                out.qs[32 * p + 4 * r..32 * p + 4 * r + 4]
                    .copy_from_slice(&row.qs[4 * p..4 * p + 4]);
            }
        }
        for s in 0..8 {
            let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
            for (r, row) in rows.iter().enumerate() {
                (sc[r], mn[r]) = q4_k_scale_min(s, &row.scales);
            }
            out.scales[K_SCALE_SIZE * s..K_SCALE_SIZE * (s + 1)]
                .copy_from_slice(&q4_k_pack_scales(sc, mn));
        }
        out
    }

    /// The eight rows' (scale, min) of sub-block `s` (0..8), decoded with
    /// word operations (the kernels call this once per super-block).
    #[inline]
    pub fn scales_mins(&self, s: usize) -> ([u8; 8], [u8; 8]) {
        let word = |i: usize| {
            let at = K_SCALE_SIZE * s + 4 * i;
            u32::from_le_bytes([
                self.scales[at],
                self.scales[at + 1],
                self.scales[at + 2],
                self.scales[at + 3],
            ])
        };
        let (w0, w1, w2) = (word(0), word(1), word(2));
        const LOW6: u32 = 0x3f3f_3f3f;
        const LOW4: u32 = 0x0f0f_0f0f;
        const TOP2: u32 = 0x0303_0303;
        let sc_hi = (w2 & LOW4) | (((w0 >> 6) & TOP2) << 4);
        let mn_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & TOP2) << 4);
        let join = |lo: u32, hi: u32| {
            let mut v = [0u8; 8];
            v[..4].copy_from_slice(&lo.to_le_bytes());
            v[4..].copy_from_slice(&hi.to_le_bytes());
            v
        };
        (join(w0 & LOW6, sc_hi), join(w1 & LOW6, mn_hi))
    }

    /// Row `r`'s super-block back.
    pub fn row(&self, r: usize) -> BlockQ4K {
        let mut b = BlockQ4K {
            d: self.d[r],
            dmin: self.dmin[r],
            scales: [0; K_SCALE_SIZE],
            qs: [0; QK_K / 2],
        };
        for p in 0..QK_K / 8 {
            b.qs[4 * p..4 * p + 4].copy_from_slice(&self.qs[32 * p + 4 * r..32 * p + 4 * r + 4]);
        }
        let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
        for s in 0..8 {
            let (ss, ms) = self.scales_mins(s);
            (sc[s], mn[s]) = (ss[r], ms[r]);
        }
        b.scales = q4_k_pack_scales(sc, mn);
        b
    }
}

/// Interleaves a Q4_K matrix of `rows.len() / nb` rows (a multiple of 8) of
/// `nb` super-blocks: group g, block b lands at `out[g * nb + b]`.
pub fn repack_q4_kx8(rows: &[BlockQ4K], nb: usize, out: &mut [BlockQ4Kx8]) {
    repack_x8("repack_q4_kx8", rows, nb, out, BlockQ4Kx8::pack);
}

macro_rules! impl_block {
    ($($t:ty => $n:expr),* $(,)?) => {
        // SAFETY: each type above is repr(C), made only of integer fields and
        // arrays of integers (BlockQ8K also an f32), and the size asserts show
        // there is no padding.
        $(unsafe impl Block for $t { const ELEMENTS: usize = $n; })*
    };
}
impl_block!(
    BlockQ4_0 => QK4_0, BlockQ4_1 => QK4_1, BlockQ5_0 => QK5_0, BlockQ5_1 => QK5_1,
    BlockQ8_0 => QK8_0, BlockQ8_1 => QK8_1, BlockQ2K => QK_K, BlockQ3K => QK_K,
    BlockQ4K => QK_K, BlockQ5K => QK_K, BlockQ6K => QK_K, BlockQ8K => QK_K,
    BlockQ4_0x8 => 8 * QK4_0, BlockQ4Kx8 => 8 * QK_K,
);

/// Views `bytes` as blocks; `None` when the length is not a whole number of
/// blocks or the pointer is not aligned for `B`.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = core::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: length and alignment were checked above, and `Block` guarantees
    // that any bit pattern is a valid `B`.
    Some(unsafe { core::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / size) })
}

/// Mutable counterpart of [`as_blocks`].
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    let size = core::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: as in `as_blocks`; the exclusive borrow carries over.
    Some(unsafe {
        core::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut B, bytes.len() / size)
    })
}

/// Views blocks as their bytes (for writing them to a file).
pub fn block_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: `Block` types have no padding, so every byte is initialised.
    unsafe {
        core::slice::from_raw_parts(blocks.as_ptr() as *const u8, core::mem::size_of_val(blocks))
    }
}
