//! In-process fakes of the `rknpu` and `rocket` kernel drivers.
//!
//! Each implements [`DrmIo`], checks what the real driver checks (ioctl
//! numbers and struct sizes, flags, handles, kernel object cookies, address
//! ranges, task amounts) and runs submitted jobs on the simulator, so the
//! ioctl layer (`rknpu.rs`, `rocket.rs`) is exercised end to end without a
//! board. Faults: the simulator's [`FaultInjector`](super::FaultInjector)
//! makes submits time out or fail; `high_addresses` makes the fake hand out
//! device addresses above 4 GiB.
//!
//! Like the kernel, the fakes follow pointers inside ioctl structs (the
//! DRM_IOCTL_VERSION name buffer, rocket's job/task/handle arrays); that is
//! why [`DrmIo::ioctl`] is unsafe: its caller vouches for those pointers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytemuck::Pod;
use nix::errno::Errno;

use super::engine::{CoreChain, LoadedCore};
use super::{Fault, SimCore, SIM_ADDR_BASE, SIM_ADDR_LIMIT};
use crate::npu::command::regs;
use crate::npu::driver::drm::DrmIo;
use crate::npu::driver::mem::{AddressSpace, Mapping, SharedMem};
use crate::npu::driver::uapi::{self, *};
use crate::npu::error::NpuError;

/// Fake device addresses above 4 GiB (for the "buffer above 4 GiB" fault).
const HIGH_BASE: u64 = 0x1_0000_0000;
const HIGH_LIMIT: u64 = 0x2_0000_0000;
/// The fake's assumption of the first vendor driver whose submit layout
/// carries `hw_elapse_time` (older ones leave it 0).
const HW_TIME_SINCE: u32 = rknpu_version(0, 9, 0);
/// Fake kernel object pointers.
const OBJ_BASE: u64 = 0xFFFF_FF80_0000_0000;

/// Fake driver settings.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// rknpu: GET_DRV_VERSION value (e.g. `rknpu_version(0, 9, 8)`).
    pub version: u32,
    pub iommu: bool,
    /// Hand out addresses above 4 GiB: always (`Always`), or, without an
    /// IOMMU, for buffers not requested as DMA32 (`UnlessDma32`; with the
    /// IOMMU on, device addresses are IOVAs below 4 GiB).
    pub high_addresses: HighAddresses,
    /// Bytes of device address space per IOMMU domain (a test can make it
    /// small to fill it: 64 MiB instead of about 4 GiB).
    pub address_space: u64,
    /// rknpu: IOMMU domains the driver has (more than 1: it answers
    /// GET_IOMMU_DOMAIN_ID and takes `iommu_domain_id` in MEM_CREATE and
    /// SUBMIT, each domain its own address space).
    pub domains: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HighAddresses {
    Never,
    UnlessDma32,
    Always,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            version: rknpu_version(0, 9, 8),
            iommu: true,
            high_addresses: HighAddresses::UnlessDma32,
            address_space: SIM_ADDR_LIMIT - SIM_ADDR_BASE,
            domains: 1,
        }
    }
}

struct Bo {
    flags: u32,
    size: u64,
    dma: u64,
    mem: Arc<SharedMem>,
    obj_addr: u64,
    mmap_offset: u64,
    busy: bool,
    /// Counted against the DMA32 zone (see [`FakeRknpu::limit_dma32`]).
    dma32: bool,
    domain: u32,
}

/// A submit as the fake driver ran it: which cores, which task range each
/// core ran (vendor driver: the subcore ranges; rocket: one job per core
/// its scheduler picked), in which IOMMU domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeSubmit {
    pub core_mask: u32,
    /// (core, first task, task count) per core.
    pub ranges: Vec<(u32, u32, u32)>,
    pub domain: u32,
    /// More than one core ran at the same time (rocket: no two jobs of
    /// the submit share an output buffer, whose fence would order them).
    pub concurrent: bool,
}

#[derive(Default)]
struct State {
    bos: BTreeMap<u32, Bo>,
    next_handle: u32,
    log: Vec<String>,
    last_error: Option<String>,
    /// Bytes of physical memory below 4 GiB left for DMA32 requests
    /// (None: unlimited).
    dma32_left: Option<u64>,
    created_flags: Vec<u32>,
    submits: Vec<FakeSubmit>,
    /// Rocket: the core its scheduler gives the next job.
    next_core: u32,
}

/// Shared parts of both fakes.
struct Common {
    /// Domain 0's simulator (fault injection lives there).
    sim: Arc<SimCore>,
    /// One simulator per IOMMU domain, each its own address space
    /// (`domains[0]` is `sim`).
    domains: Vec<Arc<SimCore>>,
    high: AddressSpace,
    cfg: FakeConfig,
    state: Mutex<State>,
}

impl Common {
    fn new(cfg: FakeConfig) -> Self {
        let limit = SIM_ADDR_BASE.saturating_add(cfg.address_space).min(1 << 32);
        let domains: Vec<Arc<SimCore>> = (0..cfg.domains.max(1))
            .map(|_| {
                Arc::new(SimCore::new(Arc::new(AddressSpace::new(
                    SIM_ADDR_BASE,
                    limit,
                ))))
            })
            .collect();
        Common {
            sim: domains[0].clone(),
            domains,
            high: AddressSpace::new(HIGH_BASE, HIGH_LIMIT),
            cfg,
            state: Mutex::new(State {
                next_handle: 1,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create(
        &self,
        size: u64,
        flags: u32,
        high: bool,
        dma32: bool,
        domain: u32,
    ) -> Result<(u32, u64, u64), Errno> {
        let Some(sim) = self.domains.get(domain as usize) else {
            return Err(self.fail(
                Errno::EINVAL,
                format!("MEM_CREATE: IOMMU domain {domain} does not exist"),
            ));
        };
        if size == 0 || size > u32::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        if dma32 {
            let mut st = self.lock();
            match st.dma32_left {
                Some(left) if left < size => {
                    drop(st);
                    return Err(self.fail(
                        Errno::ENOMEM,
                        format!(
                            "MEM_CREATE: DMA32 zone exhausted ({left} bytes left, {size} asked)"
                        ),
                    ));
                }
                Some(left) => st.dma32_left = Some(left - size),
                None => {}
            }
        }
        let space: &AddressSpace = if high { &self.high } else { &sim.mem };
        let (dma, mem) = space.alloc(size as usize).map_err(|_| Errno::ENOMEM)?;
        let mut st = self.lock();
        let handle = st.next_handle;
        st.next_handle += 1;
        let obj_addr = OBJ_BASE + u64::from(handle) * 0x1000;
        st.bos.insert(
            handle,
            Bo {
                flags,
                size,
                dma,
                mem,
                obj_addr,
                mmap_offset: u64::from(handle) << 20,
                busy: false,
                dma32,
                domain,
            },
        );
        Ok((handle, obj_addr, dma))
    }

    fn destroy(&self, handle: u32) -> Result<(), Errno> {
        let mut st = self.lock();
        let bo = st.bos.remove(&handle).ok_or(Errno::ENOENT)?;
        if bo.dma32 {
            st.dma32_left = st.dma32_left.map(|left| left + bo.size);
        }
        drop(st);
        if bo.dma >= HIGH_BASE {
            self.high.free(bo.dma);
        } else if let Some(sim) = self.domains.get(bo.domain as usize) {
            sim.mem.free(bo.dma);
        }
        Ok(())
    }

    fn map(&self, offset: u64, len: usize) -> Result<Mapping, NpuError> {
        let st = self.lock();
        let bo = st
            .bos
            .values()
            .find(|b| b.mmap_offset == offset)
            .ok_or(NpuError::Mmap {
                len,
                errno: Errno::EINVAL,
            })?;
        if len as u64 > bo.mem.len() as u64 {
            return Err(NpuError::Mmap {
                len,
                errno: Errno::EINVAL,
            });
        }
        Ok(Mapping::shared(bo.mem.clone()))
    }

    /// True when [addr, addr + len) lies inside one live buffer of `domain`.
    fn in_some_bo(&self, addr: u64, len: u64, domain: u32) -> bool {
        self.lock()
            .bos
            .values()
            .any(|b| b.domain == domain && addr >= b.dma && addr + len <= b.dma + b.size)
    }

    fn record(&self, submit: FakeSubmit) {
        let mut st = self.lock();
        st.log.push(format!(
            "SUBMIT on core mask {:#x}, per core (core, first, count) {:?}",
            submit.core_mask, submit.ranges
        ));
        st.submits.push(submit);
    }

    fn log(&self, s: String) {
        self.lock().log.push(s);
    }

    fn fail(&self, errno: Errno, why: String) -> Errno {
        let mut st = self.lock();
        st.log.push(format!("error {errno}: {why}"));
        st.last_error = Some(why);
        errno
    }

    fn version_reply(&self, arg: &mut [u8], name: &str, v: (i32, i32, i32)) -> Result<(), Errno> {
        let mut ver: DrmVersion = from_arg(arg)?;
        ver.version_major = v.0;
        ver.version_minor = v.1;
        ver.version_patchlevel = v.2;
        let n = name.len().min(ver.name_len as usize);
        if n > 0 {
            if ver.name == 0 {
                return Err(Errno::EFAULT);
            }
            // SAFETY: stands in for copy_to_user: the caller of the (unsafe)
            // ioctl guarantees a live buffer of name_len bytes at `name`,
            // and n <= name_len.
            unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), ver.name as *mut u8, n) };
        }
        ver.name_len = name.len() as u64;
        to_arg(arg, &ver);
        Ok(())
    }
}

fn from_arg<T: Pod>(arg: &[u8]) -> Result<T, Errno> {
    if arg.len() != std::mem::size_of::<T>() {
        return Err(Errno::EINVAL);
    }
    Ok(bytemuck::pod_read_unaligned(arg))
}

fn to_arg<T: Pod>(arg: &mut [u8], v: &T) {
    arg.copy_from_slice(bytemuck::bytes_of(v));
}

/// Reads `count` structs of `stride` bytes from a user pointer (the fake's
/// copy_from_user).
///
/// # Safety
/// `addr` must point to `count * stride` readable bytes: the contract of
/// the unsafe [`DrmIo::ioctl`] that passed it.
unsafe fn read_user<T: Pod>(addr: u64, count: usize, stride: usize) -> Result<Vec<T>, Errno> {
    if addr == 0 || stride < std::mem::size_of::<T>() {
        return Err(Errno::EFAULT);
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: within the caller-guaranteed range; read_unaligned makes
        // no alignment assumption.
        let p = (addr as usize + i * stride) as *const T;
        out.push(unsafe { std::ptr::read_unaligned(p) });
    }
    Ok(out)
}

// ------------------------------------------------------------------ rknpu

/// Fake vendor `rknpu` driver.
pub struct FakeRknpu {
    c: Common,
}

impl FakeRknpu {
    pub fn new(cfg: FakeConfig) -> Arc<Self> {
        Arc::new(FakeRknpu {
            c: Common::new(cfg),
        })
    }

    /// The simulator running submitted jobs (fault injection lives there).
    pub fn sim(&self) -> &Arc<SimCore> {
        &self.c.sim
    }

    pub fn inject(&self, fault: Fault, count: u32) {
        self.c.sim.faults.set(fault, count);
    }

    /// ioctls seen, and errors with reasons.
    pub fn log(&self) -> Vec<String> {
        self.c.lock().log.clone()
    }

    /// Why the last ioctl failed.
    pub fn last_error(&self) -> Option<String> {
        self.c.lock().last_error.clone()
    }

    /// Live buffer handles.
    pub fn live_handles(&self) -> Vec<u32> {
        self.c.lock().bos.keys().copied().collect()
    }

    /// Limits the physical memory below 4 GiB that DMA32 requests may take
    /// (a board whose RAM above 4 GiB holds the weights).
    pub fn limit_dma32(&self, bytes: u64) {
        self.c.lock().dma32_left = Some(bytes);
    }

    /// Flags of every MEM_CREATE so far.
    pub fn created_flags(&self) -> Vec<u32> {
        self.c.lock().created_flags.clone()
    }

    /// Every submit the fake ran, with its cores and task ranges.
    pub fn submits(&self) -> Vec<FakeSubmit> {
        self.c.lock().submits.clone()
    }

    /// Live buffers per IOMMU domain.
    pub fn buffers_per_domain(&self) -> Vec<usize> {
        let st = self.c.lock();
        (0..self.c.domains.len() as u32)
            .map(|d| st.bos.values().filter(|b| b.domain == d).count())
            .collect()
    }

    fn mem_mask(&self) -> u32 {
        if uapi::dma32_flag_is_positive(self.c.cfg.version) {
            RKNPU_MEM_MASK_NEW
        } else {
            RKNPU_MEM_MASK_OLD
        }
    }

    fn mem_create(&self, arg: &mut [u8]) -> Result<(), Errno> {
        // Both layouts start alike; the 48-byte one adds domain and core mask.
        let mut c = RknpuMemCreateV2::default();
        let n = arg.len().min(std::mem::size_of::<RknpuMemCreateV2>());
        bytemuck::bytes_of_mut(&mut c)[..n].copy_from_slice(&arg[..n]);
        if c.flags & !self.mem_mask() != 0 {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("MEM_CREATE: unknown flags {:#x}", c.flags),
            ));
        }
        if c.size == 0 {
            return Err(self.c.fail(Errno::EINVAL, "MEM_CREATE: size 0".into()));
        }
        let bit7 = c.flags & RKNPU_MEM_BIT7_DMA32 != 0;
        let wants_dma32 = if uapi::dma32_flag_is_positive(self.c.cfg.version) {
            bit7
        } else {
            !bit7
        };
        let high = match self.c.cfg.high_addresses {
            HighAddresses::Never => false,
            HighAddresses::Always => true,
            HighAddresses::UnlessDma32 => !self.c.cfg.iommu && !wants_dma32,
        };
        // The 40-byte layout has no domain field: domain 0.
        let domain = if n == std::mem::size_of::<RknpuMemCreateV2>() {
            u32::try_from(c.iommu_domain_id).map_err(|_| {
                self.c.fail(
                    Errno::EINVAL,
                    format!("MEM_CREATE: IOMMU domain {}", c.iommu_domain_id),
                )
            })?
        } else {
            0
        };
        let (handle, obj, dma) = self.c.create(c.size, c.flags, high, wants_dma32, domain)?;
        self.c.lock().created_flags.push(c.flags);
        c.handle = handle;
        c.obj_addr = obj;
        c.dma_addr = dma;
        arg.copy_from_slice(&bytemuck::bytes_of(&c)[..n]);
        self.c.log(format!(
            "MEM_CREATE({} bytes struct) flags {:#x} size {}",
            arg.len(),
            c.flags,
            c.size
        ));
        Ok(())
    }

    fn handle_for_obj(&self, handle: Option<u32>, obj: u64) -> Result<u32, Errno> {
        let st = self.c.lock();
        let found = st
            .bos
            .iter()
            .find(|(_, b)| b.obj_addr == obj)
            .map(|(h, _)| *h);
        drop(st);
        match (found, handle) {
            (Some(h), Some(want)) if h == want => Ok(h),
            (Some(h), None) => Ok(h),
            _ => Err(self.c.fail(
                Errno::EFAULT,
                format!("obj_addr {obj:#x} is not the kernel object of handle {handle:?} (a real driver would dereference it)"),
            )),
        }
    }

    fn submit(&self, arg: &mut [u8]) -> Result<(), Errno> {
        let mut s: RknpuSubmit = from_arg(arg)?;
        if s.flags & RKNPU_JOB_PC == 0 {
            return Err(self
                .c
                .fail(Errno::EINVAL, "SUBMIT: only PC mode is supported".into()));
        }
        if s.flags & !(RKNPU_JOB_PC | RKNPU_JOB_NONBLOCK | RKNPU_JOB_PINGPONG) != 0 {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("SUBMIT: flags {:#x} need fences", s.flags),
            ));
        }
        if s.timeout == 0 {
            return Err(self.c.fail(Errno::EINVAL, "SUBMIT: timeout 0".into()));
        }
        if s.task_number == 0 {
            return Err(self.c.fail(Errno::EINVAL, "SUBMIT: task_number 0".into()));
        }
        let domain = s.iommu_domain_id;
        let Some(sim) = self.c.domains.get(domain as usize).cloned() else {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("SUBMIT: IOMMU domain {domain} does not exist"),
            ));
        };
        let task_handle = self.handle_for_obj(None, s.task_obj_addr)?;
        let (task_mem, task_size, task_flags, task_domain) = {
            let st = self.c.lock();
            let b = &st.bos[&task_handle];
            (b.mem.clone(), b.size, b.flags, b.domain)
        };
        if task_domain != domain {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!(
                    "SUBMIT: task buffer in IOMMU domain {task_domain}, the submit names {domain}"
                ),
            ));
        }
        if task_flags & RKNPU_MEM_KERNEL_MAPPING == 0 {
            return Err(self.c.fail(
                Errno::EINVAL,
                "SUBMIT: task buffer lacks KERNEL_MAPPING".into(),
            ));
        }
        let rec = std::mem::size_of::<RknpuTask>() as u64;
        let end = (u64::from(s.task_start) + u64::from(s.task_number)) * rec;
        if end > task_size {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!(
                    "SUBMIT: tasks {}..{} outside the {task_size}-byte task buffer",
                    s.task_start,
                    s.task_start + s.task_number
                ),
            ));
        }
        let mut raw = vec![0u8; (s.task_number as u64 * rec) as usize];
        task_mem
            .read((u64::from(s.task_start) * rec) as usize, &mut raw)
            .map_err(|_| Errno::EFAULT)?;
        let tasks: Vec<RknpuTask> = raw
            .chunks_exact(rec as usize)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        for (i, t) in tasks.iter().enumerate() {
            let bytes = (u64::from(t.regcfg_amount) + 4) * 8;
            if t.regcmd_addr >= 1 << 32 || !self.c.in_some_bo(t.regcmd_addr, bytes, domain) {
                return Err(self.c.fail(
                    Errno::EINVAL,
                    format!(
                        "SUBMIT: task {i} regcmd {:#x} + {bytes} bytes is outside every buffer",
                        t.regcmd_addr
                    ),
                ));
            }
            if t.enable_mask != RKNPU_TASK_ENABLE_MASK {
                return Err(self.c.fail(
                    Errno::EINVAL,
                    format!("SUBMIT: task {i} enable_mask {:#x}", t.enable_mask),
                ));
            }
            if t.int_mask != RKNPU_TASK_INT_MASK_DPU {
                // The DPU-done interrupt never arrives: a silent timeout.
                return Err(self.c.fail(
                    Errno::ETIMEDOUT,
                    format!(
                        "task {i} int_mask {:#x} never fires (DPU done is 0x300)",
                        t.int_mask
                    ),
                ));
            }
        }
        let ranges = self.core_ranges(&s)?;
        match self.c.sim.faults.take() {
            Fault::Timeout => return Err(self.c.fail(Errno::ETIMEDOUT, "injected timeout".into())),
            Fault::Fail => return Err(self.c.fail(Errno::EIO, "injected failure".into())),
            Fault::SilentReject => {
                // Reports every task done without running any.
                s.task_counter = s.task_number;
                to_arg(arg, &s);
                self.c.log("SUBMIT accepted but not run (injected)".into());
                return Ok(());
            }
            Fault::None => {}
        }
        // Each core starts at the first record of its range and follows
        // the chain for its task count; the cores run together.
        let chains: Vec<CoreChain> = ranges
            .iter()
            .map(|&(core, start, number)| {
                let first = &tasks[(start - s.task_start) as usize];
                CoreChain {
                    core,
                    first_task: (start - s.task_start) as usize,
                    first_addr: first.regcmd_addr as u32,
                    amount: regs::pc_amount(first.regcfg_amount as usize + 4),
                    tasks: number,
                }
            })
            .collect();
        match sim.run_cores(&chains, None) {
            Ok(done) => s.task_counter = done.iter().sum(),
            Err(e) => return Err(self.c.fail(Errno::EIO, format!("NPU fault: {e}"))),
        }
        // As the driver does on completion: the interrupt status (here the
        // one its check accepts) goes into the last task record.
        let last_at = (u64::from(s.task_start) + u64::from(s.task_number) - 1) * rec;
        let mut last = tasks[tasks.len() - 1];
        last.int_status = last.int_mask;
        task_mem
            .write(last_at as usize, bytemuck::bytes_of(&last))
            .map_err(|_| Errno::EFAULT)?;
        if self.c.cfg.version >= HW_TIME_SINCE {
            s.hw_elapse_time = 1000 * i64::from(s.task_number);
        }
        to_arg(arg, &s);
        self.c.record(FakeSubmit {
            core_mask: s.core_mask,
            concurrent: ranges.len() > 1,
            ranges,
            domain,
        });
        Ok(())
    }

    /// Each core's task range as the vendor driver reads it for the mask
    /// (`subcore_slot`), checked: every core gets tasks, and the ranges
    /// are disjoint and cover `task_start..task_start + task_number`.
    fn core_ranges(&self, s: &RknpuSubmit) -> Result<Vec<(u32, u32, u32)>, Errno> {
        let mask = s.core_mask;
        let cores: Vec<u32> = (0..3).filter(|c| mask & (1 << c) != 0).collect();
        if mask == 0
            || mask & !7 != 0
            || cores.iter().any(|&c| uapi::subcore_slot(mask, c).is_none())
        {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!(
                    "SUBMIT: core_mask {mask:#x} (the driver runs cores 0, 1, 2, 0+1 or 0+1+2)"
                ),
            ));
        }
        let mut ranges: Vec<(u32, u32, u32)> = cores
            .iter()
            .map(|&c| {
                let t = s.subcore_task[uapi::subcore_slot(mask, c).unwrap_or(0)];
                (c, t.task_start, t.task_number)
            })
            .collect();
        if let Some(&(c, ..)) = ranges.iter().find(|r| r.2 == 0) {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!(
                    "SUBMIT: core {c} is in core_mask {mask:#x} but its subcore range has no tasks"
                ),
            ));
        }
        ranges.sort_by_key(|r| r.1);
        let end = u64::from(s.task_start) + u64::from(s.task_number);
        let mut next = u64::from(s.task_start);
        for &(c, start, number) in &ranges {
            let (start, stop) = (u64::from(start), u64::from(start) + u64::from(number));
            if start < next {
                return Err(self.c.fail(
                    Errno::EINVAL,
                    format!("SUBMIT: core {c}'s tasks {start}..{stop} overlap another core's (from {next} on they are taken)"),
                ));
            }
            if start > next {
                return Err(self.c.fail(
                    Errno::EINVAL,
                    format!("SUBMIT: tasks {next}..{start} run on no core"),
                ));
            }
            next = stop;
        }
        if next != end {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("SUBMIT: the core ranges end at task {next}, the submit's tasks at {end}"),
            ));
        }
        Ok(ranges)
    }
}

impl DrmIo for Arc<FakeRknpu> {
    unsafe fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        if arg.len() != uapi::ioc_size(request) {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("ioctl {request:#x}: argument size mismatch"),
            ));
        }
        match request {
            DRM_IOCTL_VERSION => {
                let v = self.c.cfg.version;
                self.c.version_reply(
                    arg,
                    "rknpu",
                    (
                        (v / 10000) as i32,
                        ((v / 100) % 100) as i32,
                        (v % 100) as i32,
                    ),
                )
            }
            RKNPU_ACTION => {
                let mut a: RknpuAction = from_arg(arg)?;
                a.value = match a.flags {
                    RKNPU_GET_HW_VERSION => 0x0001_0000,
                    RKNPU_GET_DRV_VERSION => self.c.cfg.version,
                    RKNPU_GET_FREQ => 1_000_000_000,
                    RKNPU_ACT_RESET => 0,
                    RKNPU_GET_IOMMU_EN => u32::from(self.c.cfg.iommu),
                    RKNPU_GET_TOTAL_SRAM_SIZE | RKNPU_GET_FREE_SRAM_SIZE => 0,
                    RKNPU_GET_IOMMU_DOMAIN_ID if self.c.domains.len() > 1 => 0,
                    // A driver of one domain refuses the probe: expected,
                    // so not recorded as a misuse.
                    RKNPU_GET_IOMMU_DOMAIN_ID => {
                        self.c.log("ACTION GET_IOMMU_DOMAIN_ID: one domain".into());
                        return Err(Errno::EINVAL);
                    }
                    other => {
                        return Err(self
                            .c
                            .fail(Errno::EINVAL, format!("ACTION {other} not supported")))
                    }
                };
                to_arg(arg, &a);
                Ok(())
            }
            RKNPU_MEM_CREATE_V1 | RKNPU_MEM_CREATE_V2 => self.mem_create(arg),
            RKNPU_MEM_MAP => {
                let mut m: RknpuMemMap = from_arg(arg)?;
                let st = self.c.lock();
                let off = st.bos.get(&m.handle).map(|b| b.mmap_offset);
                drop(st);
                m.offset = off.ok_or_else(|| {
                    self.c
                        .fail(Errno::EINVAL, format!("MEM_MAP: bad handle {}", m.handle))
                })?;
                to_arg(arg, &m);
                Ok(())
            }
            RKNPU_MEM_DESTROY => {
                let d: RknpuMemDestroy = from_arg(arg)?;
                let h = self.handle_for_obj(Some(d.handle), d.obj_addr)?;
                self.c.destroy(h)
            }
            RKNPU_MEM_SYNC => {
                let s: RknpuMemSync = from_arg(arg)?;
                let h = self.handle_for_obj(None, s.obj_addr)?;
                if s.flags == 0
                    || s.flags & !(RKNPU_MEM_SYNC_TO_DEVICE | RKNPU_MEM_SYNC_FROM_DEVICE) != 0
                {
                    return Err(self
                        .c
                        .fail(Errno::EINVAL, format!("MEM_SYNC: flags {:#x}", s.flags)));
                }
                let st = self.c.lock();
                let b = &st.bos[&h];
                let (cacheable, size) = (b.flags & RKNPU_MEM_CACHEABLE != 0, b.size);
                drop(st);
                if !cacheable {
                    return Err(self
                        .c
                        .fail(Errno::EINVAL, "MEM_SYNC on a non-cacheable buffer".into()));
                }
                if s.offset.checked_add(s.size).is_none_or(|e| e > size) {
                    return Err(self.c.fail(
                        Errno::EINVAL,
                        format!("MEM_SYNC: range {}+{} outside {size}", s.offset, s.size),
                    ));
                }
                Ok(())
            }
            RKNPU_SUBMIT => self.submit(arg),
            other => Err(self
                .c
                .fail(Errno::ENOTTY, format!("unknown ioctl {other:#x}"))),
        }
    }

    fn mmap(&self, offset: u64, len: usize) -> Result<Mapping, NpuError> {
        self.c.map(offset, len)
    }

    fn path(&self) -> String {
        "fake-rknpu".into()
    }
}

// ----------------------------------------------------------------- rocket

/// Fake upstream `rocket` driver.
pub struct FakeRocket {
    c: Common,
}

impl FakeRocket {
    pub fn new(cfg: FakeConfig) -> Arc<Self> {
        Arc::new(FakeRocket {
            c: Common::new(cfg),
        })
    }

    pub fn sim(&self) -> &Arc<SimCore> {
        &self.c.sim
    }

    pub fn inject(&self, fault: Fault, count: u32) {
        self.c.sim.faults.set(fault, count);
    }

    pub fn log(&self) -> Vec<String> {
        self.c.lock().log.clone()
    }

    pub fn last_error(&self) -> Option<String> {
        self.c.lock().last_error.clone()
    }

    pub fn live_handles(&self) -> Vec<u32> {
        self.c.lock().bos.keys().copied().collect()
    }

    fn check_handles(&self, addr: u64, count: u32, what: &str) -> Result<Vec<u32>, Errno> {
        if count == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: the caller of the unsafe ioctl guarantees the handle arrays.
        let handles: Vec<u32> = unsafe { read_user(addr, count as usize, 4)? };
        let st = self.c.lock();
        if let Some(h) = handles.iter().find(|h| !st.bos.contains_key(h)) {
            let h = *h;
            drop(st);
            return Err(self.c.fail(
                Errno::ENOENT,
                format!("SUBMIT: {what} handle {h} does not exist"),
            ));
        }
        Ok(handles)
    }

    fn submit(&self, arg: &mut [u8]) -> Result<(), Errno> {
        let s: RocketSubmit = from_arg(arg)?;
        if s.reserved != 0 {
            return Err(self
                .c
                .fail(Errno::EINVAL, "SUBMIT: reserved must be 0".into()));
        }
        if (s.job_struct_size as usize) < std::mem::size_of::<RocketJob>() || s.job_count == 0 {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!(
                    "SUBMIT: job_struct_size {} / job_count {}",
                    s.job_struct_size, s.job_count
                ),
            ));
        }
        // SAFETY: the caller of the unsafe ioctl guarantees the job array.
        let jobs: Vec<RocketJob> =
            unsafe { read_user(s.jobs, s.job_count as usize, s.job_struct_size as usize)? };
        // Every job is checked and loaded, then the jobs run together, one
        // per core queue (the scheduler takes the cores in turn).
        let mut loaded: Vec<LoadedCore> = Vec::new();
        let mut windows: Vec<Vec<(u64, u64)>> = Vec::new();
        let mut ranges = Vec::new();
        let mut out_sets: Vec<Vec<u32>> = Vec::new();
        let mut first_task = 0usize;
        for job in jobs {
            if (job.task_struct_size as usize) < std::mem::size_of::<RocketTask>()
                || job.task_count == 0
            {
                return Err(self.c.fail(
                    Errno::EINVAL,
                    format!(
                        "SUBMIT: task_struct_size {} / task_count {}",
                        job.task_struct_size, job.task_count
                    ),
                ));
            }
            self.check_handles(job.in_bo_handles, job.in_bo_handle_count, "input")?;
            let outs = self.check_handles(job.out_bo_handles, job.out_bo_handle_count, "output")?;
            // SAFETY: the caller of the unsafe ioctl guarantees the task arrays.
            let tasks: Vec<RocketTask> = unsafe {
                read_user(
                    job.tasks,
                    job.task_count as usize,
                    job.task_struct_size as usize,
                )?
            };
            for (i, t) in tasks.iter().enumerate() {
                if t.regcmd_count < 4
                    || !self
                        .c
                        .in_some_bo(u64::from(t.regcmd), u64::from(t.regcmd_count) * 8, 0)
                {
                    return Err(self.c.fail(
                        Errno::EINVAL,
                        format!(
                            "SUBMIT: task {i} regcmd {:#x} x {} outside every buffer",
                            t.regcmd, t.regcmd_count
                        ),
                    ));
                }
            }
            match self.c.sim.faults.take() {
                Fault::Timeout => {
                    // The job hangs: its outputs never become idle.
                    let mut st = self.c.lock();
                    for h in &outs {
                        if let Some(b) = st.bos.get_mut(h) {
                            b.busy = true;
                        }
                    }
                    st.log.push("injected hang".into());
                    continue;
                }
                Fault::Fail => return Err(self.c.fail(Errno::EIO, "injected failure".into())),
                Fault::SilentReject => {
                    // rocket_ioctl_submit returns 0 although the job never runs.
                    self.c
                        .log("SUBMIT rejected the job but returned 0 (injected)".into());
                    continue;
                }
                Fault::None => {}
            }
            let mut ops = Vec::with_capacity(tasks.len());
            for (i, t) in tasks.iter().enumerate() {
                let task = first_task + i;
                let entries = regs::entries_for_amount(regs::pc_amount(t.regcmd_count as usize));
                let (link, op) = self
                    .c
                    .sim
                    .load_task(task, t.regcmd, entries)
                    .map_err(|e| self.c.fail(Errno::EIO, format!("NPU fault: {e}")))?;
                if link.next_addr != 0 {
                    return Err(self.c.fail(
                        Errno::EIO,
                        format!(
                            "task {i} chains to {:#x} in its tail; rocket starts every task itself",
                            link.next_addr
                        ),
                    ));
                }
                ops.push((task, op));
            }
            let core = {
                let mut st = self.c.lock();
                let core = st.next_core;
                st.next_core = (core + 1) % 3;
                windows.push(
                    outs.iter()
                        .filter_map(|h| st.bos.get(h).map(|b| (b.dma, b.size)))
                        .collect(),
                );
                core
            };
            self.c.log(format!("SUBMIT job of {} tasks", tasks.len()));
            ranges.push((core, first_task as u32, tasks.len() as u32));
            first_task += tasks.len();
            loaded.push((core, ops));
            out_sets.push(outs);
        }
        // A job writes only its declared outputs (the kernel fences those,
        // nothing else), and jobs that run together share no memory one
        // of them writes.
        self.c
            .sim
            .run_loaded(&loaded, Some(&windows))
            .map_err(|e| self.c.fail(Errno::EIO, format!("NPU fault: {e}")))?;
        let shared_output = out_sets.iter().enumerate().any(|(i, a)| {
            out_sets[..i]
                .iter()
                .any(|b| a.iter().any(|h| b.contains(h)))
        });
        if !ranges.is_empty() {
            self.c.record(FakeSubmit {
                core_mask: ranges.iter().fold(0, |m, r| m | 1 << r.0),
                concurrent: ranges.len() > 1 && !shared_output,
                ranges,
                domain: 0,
            });
        }
        Ok(())
    }

    /// Every submit the fake ran, with the core each job went to.
    pub fn submits(&self) -> Vec<FakeSubmit> {
        self.c.lock().submits.clone()
    }
}

impl DrmIo for Arc<FakeRocket> {
    unsafe fn ioctl(&self, request: u32, arg: &mut [u8]) -> Result<(), Errno> {
        if arg.len() != uapi::ioc_size(request) {
            return Err(self.c.fail(
                Errno::EINVAL,
                format!("ioctl {request:#x}: argument size mismatch"),
            ));
        }
        match request {
            DRM_IOCTL_VERSION => self.c.version_reply(arg, "rocket", (1, 0, 0)),
            ROCKET_CREATE_BO => {
                let mut c: RocketCreateBo = from_arg(arg)?;
                let high = self.c.cfg.high_addresses == HighAddresses::Always;
                let (handle, _, dma) = self
                    .c
                    .create(u64::from(c.size), 0, high, false, 0)
                    .map_err(|e| self.c.fail(e, format!("CREATE_BO of {} bytes", c.size)))?;
                let offset = self.c.lock().bos[&handle].mmap_offset;
                c.handle = handle;
                c.dma_address = dma;
                c.offset = offset;
                to_arg(arg, &c);
                Ok(())
            }
            ROCKET_SUBMIT => self.submit(arg),
            ROCKET_PREP_BO => {
                let p: RocketPrepBo = from_arg(arg)?;
                if p.reserved != 0 {
                    return Err(self
                        .c
                        .fail(Errno::EINVAL, "PREP_BO: reserved must be 0".into()));
                }
                let busy = self.c.lock().bos.get(&p.handle).map(|b| b.busy);
                match busy {
                    None => Err(self.c.fail(
                        Errno::ENOENT,
                        format!("PREP_BO: handle {} does not exist", p.handle),
                    )),
                    Some(true) => Err(self.c.fail(
                        Errno::ETIMEDOUT,
                        format!("PREP_BO: handle {} still busy", p.handle),
                    )),
                    Some(false) => Ok(()),
                }
            }
            ROCKET_FINI_BO => {
                let f: RocketFiniBo = from_arg(arg)?;
                if f.reserved != 0 {
                    return Err(self
                        .c
                        .fail(Errno::EINVAL, "FINI_BO: reserved must be 0".into()));
                }
                if !self.c.lock().bos.contains_key(&f.handle) {
                    return Err(self.c.fail(
                        Errno::ENOENT,
                        format!("FINI_BO: handle {} does not exist", f.handle),
                    ));
                }
                Ok(())
            }
            DRM_IOCTL_GEM_CLOSE => {
                let g: DrmGemClose = from_arg(arg)?;
                if g.pad != 0 {
                    return Err(self
                        .c
                        .fail(Errno::EINVAL, "GEM_CLOSE: pad must be 0".into()));
                }
                self.c.destroy(g.handle).map_err(|e| {
                    self.c
                        .fail(e, format!("GEM_CLOSE: handle {} does not exist", g.handle))
                })
            }
            other => Err(self
                .c
                .fail(Errno::ENOTTY, format!("unknown ioctl {other:#x}"))),
        }
    }

    fn mmap(&self, offset: u64, len: usize) -> Result<Mapping, NpuError> {
        self.c.map(offset, len)
    }

    fn path(&self) -> String {
        "fake-rocket".into()
    }
}
