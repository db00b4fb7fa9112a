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
);

/// Views `bytes` as blocks; `None` when the length is not a whole number of
/// blocks or the pointer is not aligned for `B`.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = core::mem::size_of::<B>();
    if bytes.len() % size != 0 || (bytes.as_ptr() as usize) % core::mem::align_of::<B>() != 0 {
        return None;
    }
    // SAFETY: length and alignment were checked above, and `Block` guarantees
    // that any bit pattern is a valid `B`.
    Some(unsafe { core::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / size) })
}

/// Mutable counterpart of [`as_blocks`].
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    let size = core::mem::size_of::<B>();
    if bytes.len() % size != 0 || (bytes.as_ptr() as usize) % core::mem::align_of::<B>() != 0 {
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
