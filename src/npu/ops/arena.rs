//! Device memory for prepared weights: few large buffers instead of one per
//! tensor, spread over IOMMU domains when one address space is too small.
//!
//! Every NPU address register is 32 bits, so one IOMMU domain holds at most
//! 4 GiB of buffers. The vendor driver (0.9.6 on, IOMMU on) has up to 16
//! domains, each its own address space, chosen per MEM_CREATE and per
//! SUBMIT; rk-llama.cpp fills a domain with about 2 GiB of weights and moves
//! to the next. [`WeightArena`] does the same: weights are packed into
//! chunks (one driver buffer each, at most `chunk_cap` bytes unless a
//! single weight is larger), a domain takes chunks up to its weight budget
//! (half its address space, at most 2 GiB: the rest stays free for the
//! activations, outputs and command buffers of the submits that run
//! there), then the next domain starts. When the last domain is full,
//! allocation fails with [`NpuError::OutOfDeviceMemory`] and the caller
//! keeps that weight on the CPU. Drivers without domains (rocket, the
//! simulator, older vendor drivers) have one domain, whose weights leave an
//! eighth of it (at most 256 MiB) to the submits.

use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;

use crate::npu::driver::device::{NpuBuffer, NpuDevice};
use crate::npu::error::NpuError;

/// Largest weight budget of one domain (rk-llama.cpp's figure).
pub const DOMAIN_WEIGHT_CAP: u64 = 2 << 30;
/// Most of a lone domain kept free for activations, outputs and commands.
const SUBMIT_RESERVE_CAP: u64 = 256 << 20;
/// Default size cap of one chunk.
pub const DEFAULT_CHUNK_CAP: usize = 256 << 20;
/// Size of the first chunk; each next one doubles up to the cap, so a small
/// model does not reserve a whole cap's worth of memory.
const FIRST_CHUNK: usize = 16 << 20;
const ALIGN: usize = 64;

/// One driver buffer holding several weights.
pub struct Chunk {
    buf: Mutex<NpuBuffer>,
    dma_addr: u32,
    domain: u32,
    len: usize,
}

impl Chunk {
    fn new(buf: NpuBuffer) -> Arc<Chunk> {
        Arc::new(Chunk {
            dma_addr: buf.dma_addr(),
            domain: buf.domain(),
            len: buf.len(),
            buf: Mutex::new(buf),
        })
    }

    /// The driver buffer (a submit names it among its inputs).
    pub fn buffer(&self) -> MutexGuard<'_, NpuBuffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A weight's bytes inside a [`Chunk`].
#[derive(Clone)]
pub struct WeightSlice {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl WeightSlice {
    /// A slice that is a whole buffer of its own.
    pub fn whole(buf: NpuBuffer) -> WeightSlice {
        let len = buf.len();
        WeightSlice {
            chunk: Chunk::new(buf),
            offset: 0,
            len,
        }
    }

    pub fn dma_addr(&self) -> u32 {
        self.chunk.dma_addr + self.offset as u32
    }

    pub fn domain(&self) -> u32 {
        self.chunk.domain
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// Copies `data` to `offset` within the slice.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), NpuError> {
        match offset.checked_add(data.len()) {
            Some(end) if end <= self.len => self.chunk.buffer().write(self.offset + offset, data),
            _ => Err(NpuError::BufferRange {
                offset: offset as u64,
                len: data.len() as u64,
                size: self.len as u64,
            }),
        }
    }

    /// Makes the CPU's writes visible to the NPU.
    pub fn sync_to_device(&self) -> Result<(), NpuError> {
        self.chunk.buffer().sync_to_device()
    }
}

/// Where the arena allocates next.
struct State {
    domain: u32,
    /// Weight bytes placed in `domain` so far.
    domain_used: u64,
    current: Option<(Arc<Chunk>, usize)>,
    next_chunk: usize,
    chunks: usize,
    domains_used: u32,
}

/// Packs weights into few buffers over the device's IOMMU domains (see the
/// module comment).
pub struct WeightArena {
    chunk_cap: usize,
    state: Mutex<State>,
}

impl Default for WeightArena {
    fn default() -> Self {
        Self::new(DEFAULT_CHUNK_CAP)
    }
}

/// True for the errors that mean "this address space is full".
fn is_full(e: &NpuError) -> bool {
    matches!(
        e,
        NpuError::OutOfDeviceMemory { .. }
            | NpuError::Ioctl {
                errno: Errno::ENOMEM | Errno::ENOSPC,
                ..
            }
    )
}

impl WeightArena {
    /// An arena whose buffers hold at most `chunk_cap` bytes each (a larger
    /// weight gets a buffer of its own size).
    pub fn new(chunk_cap: usize) -> WeightArena {
        WeightArena {
            chunk_cap: chunk_cap.max(ALIGN),
            state: Mutex::new(State {
                domain: 0,
                domain_used: 0,
                current: None,
                next_chunk: FIRST_CHUNK.min(chunk_cap.max(ALIGN)),
                chunks: 0,
                domains_used: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Driver buffers allocated so far.
    pub fn chunks(&self) -> usize {
        self.lock().chunks
    }

    /// IOMMU domains that hold weights.
    pub fn domains_used(&self) -> u32 {
        self.lock().domains_used
    }

    /// Weight bytes one domain of `dev` takes.
    pub fn domain_budget(dev: &dyn NpuDevice) -> u64 {
        let info = dev.info();
        if info.iommu_domains > 1 {
            (info.address_space / 2).min(DOMAIN_WEIGHT_CAP)
        } else {
            info.address_space - (info.address_space / 8).min(SUBMIT_RESERVE_CAP)
        }
    }

    /// Room for `size` bytes of one weight.
    pub fn alloc(&self, dev: &dyn NpuDevice, size: usize) -> Result<WeightSlice, NpuError> {
        let size = size.max(1).div_ceil(ALIGN) * ALIGN;
        let mut st = self.lock();
        if let Some((chunk, used)) = &mut st.current {
            if chunk.len - *used >= size {
                let slice = WeightSlice {
                    chunk: chunk.clone(),
                    offset: *used,
                    len: size,
                };
                *used += size;
                return Ok(slice);
            }
        }
        let domains = dev.info().iommu_domains.max(1);
        let budget = Self::domain_budget(dev);
        let mut want = size.max(st.next_chunk.min(self.chunk_cap));
        loop {
            if st.domain >= domains {
                return Err(NpuError::OutOfDeviceMemory {
                    requested: size as u64,
                    available: 0,
                });
            }
            let fits_budget = st.domain_used + want as u64 <= budget;
            let got = if fits_budget {
                dev.alloc_in(want, st.domain)
            } else {
                Err(NpuError::OutOfDeviceMemory {
                    requested: want as u64,
                    available: budget.saturating_sub(st.domain_used),
                })
            };
            match got {
                Ok(buf) => {
                    let chunk = Chunk::new(buf);
                    if st.domain_used == 0 {
                        st.domains_used += 1;
                    }
                    st.domain_used += want as u64;
                    st.chunks += 1;
                    st.next_chunk = (st.next_chunk * 2).min(self.chunk_cap);
                    let slice = WeightSlice {
                        chunk: chunk.clone(),
                        offset: 0,
                        len: size,
                    };
                    st.current = Some((chunk, size));
                    return Ok(slice);
                }
                // A smaller chunk (what is left of the budget, or just this
                // weight) may still fit here; else the next domain.
                Err(e) if is_full(&e) && want > size => {
                    let left = budget.saturating_sub(st.domain_used) as usize / ALIGN * ALIGN;
                    want = if (size..want).contains(&left) {
                        left
                    } else {
                        size
                    };
                }
                Err(e) if is_full(&e) => {
                    st.domain += 1;
                    st.domain_used = 0;
                    st.current = None;
                    want = size.max(st.next_chunk.min(self.chunk_cap));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
