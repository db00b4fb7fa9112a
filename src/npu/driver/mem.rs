//! Memory shared between the CPU and a (simulated) NPU.
//!
//! [`Mapping`] is a CPU view of a device buffer: an mmap of the driver's
//! node on real hardware, or a [`SharedMem`] block for the simulator and
//! the fake kernel drivers. [`AddressSpace`] gives the simulator its view of
//! device (IOVA) addresses: every live buffer at its DMA address.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::npu::error::NpuError;

const PAGE: usize = 4096;

/// A zeroed, page-aligned block of memory that both the CPU side (through a
/// [`Mapping`]) and the simulator (through an [`AddressSpace`]) access, like
/// DMA memory. Accesses go through raw-pointer copies only; no Rust
/// reference to the contents is ever created, so the two sides never alias
/// references.
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: SharedMem owns its allocation; all access is through bounds-checked
// raw copies. As with real DMA memory, callers serialize CPU access and
// device execution (submits hold the device mutex and are synchronous).
unsafe impl Send for SharedMem {}
// SAFETY: see Send; no interior references are handed out.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    pub fn new(len: usize) -> Result<Arc<SharedMem>, NpuError> {
        let size = len.max(1).div_ceil(PAGE) * PAGE;
        let layout =
            Layout::from_size_align(size, PAGE).map_err(|_| NpuError::OutOfDeviceMemory {
                requested: len as u64,
                available: 0,
            })?;
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(NpuError::OutOfDeviceMemory {
            requested: len as u64,
            available: 0,
        })?;
        Ok(Arc::new(SharedMem { ptr, len: size }))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), NpuError> {
        check_range(offset, len, self.len)
    }

    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), NpuError> {
        self.check(offset, out.len())?;
        // SAFETY: range checked above; source and destination are distinct
        // allocations (out is a Rust slice, never part of this block).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), NpuError> {
        self.check(offset, data.len())?;
        // SAFETY: range checked above; distinct allocations as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }

    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this size and alignment.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, PAGE),
            )
        }
    }
}

/// What keeps a mapping's memory alive and how to release it.
enum Backing {
    /// An mmap of a device node: unmapped on drop.
    Mmap,
    /// Simulator / fake driver memory: kept alive by the Arc.
    Shared { _keep_alive: Arc<SharedMem> },
}

/// A CPU view of a device buffer.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
}

// SAFETY: the mapping is plain memory owned by this value (or kept alive by
// an Arc); access is bounds-checked raw copies.
unsafe impl Send for Mapping {}
// SAFETY: reads through &self copy out; writes need &mut self.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Wraps memory returned by a successful `mmap` of `len` bytes.
    ///
    /// # Safety
    /// `ptr` must be the start of a live mapping of exactly `len` bytes that
    /// this value may unmap on drop.
    pub unsafe fn from_mmap(ptr: NonNull<u8>, len: usize) -> Mapping {
        Mapping {
            ptr,
            len,
            backing: Backing::Mmap,
        }
    }

    /// A view of all of `mem`.
    pub fn shared(mem: Arc<SharedMem>) -> Mapping {
        Mapping {
            ptr: mem.base(),
            len: mem.len(),
            backing: Backing::Shared { _keep_alive: mem },
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), NpuError> {
        check_range(offset, len, self.len)
    }

    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), NpuError> {
        self.check(offset, out.len())?;
        // SAFETY: range checked; the mapping is live for self's lifetime.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), NpuError> {
        self.check(offset, data.len())?;
        // SAFETY: range checked; the mapping is live for self's lifetime.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Backing::Mmap = self.backing {
            // SAFETY: ptr/len came from a successful mmap (see from_mmap) and
            // nothing else unmaps it.
            let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Device (DMA) address space of a simulated NPU: live buffers by address,
/// first-fit allocation of 4 KiB-aligned ranges below a limit.
pub struct AddressSpace {
    inner: Mutex<BTreeMap<u64, Arc<SharedMem>>>,
    base: u64,
    limit: u64,
}

impl AddressSpace {
    /// Addresses handed out lie in [base, limit).
    pub fn new(base: u64, limit: u64) -> Self {
        AddressSpace {
            inner: Mutex::new(BTreeMap::new()),
            base,
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<SharedMem>>> {
        // A panic while holding the lock leaves the map consistent (every
        // mutation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates `len` bytes; returns the device address and the memory.
    pub fn alloc(&self, len: usize) -> Result<(u64, Arc<SharedMem>), NpuError> {
        let size = (len.max(1).div_ceil(PAGE) * PAGE) as u64;
        let mut map = self.lock();
        let mut cursor = self.base;
        for (&addr, mem) in map.iter() {
            if addr >= cursor + size {
                break;
            }
            cursor = cursor.max(addr + mem.len() as u64);
        }
        if cursor + size > self.limit {
            let used: u64 = map.values().map(|m| m.len() as u64).sum();
            return Err(NpuError::OutOfDeviceMemory {
                requested: size,
                available: (self.limit - self.base).saturating_sub(used),
            });
        }
        let mem = SharedMem::new(size as usize)?;
        map.insert(cursor, mem.clone());
        Ok((cursor, mem))
    }

    /// Frees the buffer at `addr`; false if there is none.
    pub fn free(&self, addr: u64) -> bool {
        self.lock().remove(&addr).is_some()
    }

    /// The buffer containing [addr, addr + len) and the offset into it.
    pub fn resolve(&self, addr: u64, len: usize) -> Option<(Arc<SharedMem>, usize)> {
        let map = self.lock();
        let (&start, mem) = map.range(..=addr).next_back()?;
        let off = (addr - start) as usize;
        if off.checked_add(len)? <= mem.len() {
            Some((mem.clone(), off))
        } else {
            None
        }
    }

    pub fn read(&self, addr: u64, out: &mut [u8], what: &str) -> Result<(), NpuError> {
        let (mem, off) =
            self.resolve(addr, out.len())
                .ok_or_else(|| NpuError::BadDeviceAddress {
                    addr,
                    len: out.len() as u64,
                    what: what.to_string(),
                })?;
        mem.read(off, out)
    }

    pub fn write(&self, addr: u64, data: &[u8], what: &str) -> Result<(), NpuError> {
        let (mem, off) =
            self.resolve(addr, data.len())
                .ok_or_else(|| NpuError::BadDeviceAddress {
                    addr,
                    len: data.len() as u64,
                    what: what.to_string(),
                })?;
        mem.write(off, data)
    }

    /// Bytes currently allocated.
    pub fn used(&self) -> u64 {
        self.lock().values().map(|m| m.len() as u64).sum()
    }
}

/// Err unless `offset..offset + len` lies inside a buffer of `size` bytes.
fn check_range(offset: usize, len: usize, size: usize) -> Result<(), NpuError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(NpuError::BufferRange {
            offset: offset as u64,
            len: len as u64,
            size: size as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_reuses_freed_ranges() {
        let space = AddressSpace::new(0x1000_0000, 0x1000_0000 + 3 * 4096);
        let (a, _) = space.alloc(10).unwrap();
        let (b, _) = space.alloc(4096).unwrap();
        let (c, _) = space.alloc(1).unwrap();
        assert_eq!((a, b, c), (0x1000_0000, 0x1000_1000, 0x1000_2000));
        assert!(space.alloc(1).is_err());
        assert!(space.free(b));
        assert_eq!(space.alloc(100).unwrap().0, b);
    }

    #[test]
    fn reads_outside_buffers_fail() {
        let space = AddressSpace::new(0x1000, 0x10_0000);
        let (a, _) = space.alloc(4096).unwrap();
        let mut buf = [0u8; 8];
        assert!(space.read(a + 4092, &mut buf, "A").is_err());
        space.write(a + 8, &[1, 2, 3], "C").unwrap();
        space.read(a + 8, &mut buf[..3], "C").unwrap();
        assert_eq!(&buf[..3], &[1, 2, 3]);
    }
}
