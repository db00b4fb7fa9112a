//! The vendor `rknpu` DRM driver (Rockchip BSP kernels): buffers through
//! MEM_CREATE / MEM_MAP / MEM_SYNC / MEM_DESTROY, jobs through SUBMIT in PC
//! mode with the tasks chained by their tails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

use super::device::{
    check_dma_addr, BufferOps, DeviceInfo, Fields, Job, JobStats, NpuBuffer, NpuDevice, RawBuffer,
    SubmitRecord, SyncDir,
};
use super::drm::{call, DrmIo};
use super::uapi::{self, *};
use crate::npu::command::task::Chaining;
use crate::npu::error::NpuError;

/// Shared state of a vendor-driver device.
struct Inner {
    io: Box<dyn DrmIo>,
    version: u32,
    iommu: bool,
    /// IOMMU domains buffers may be created in (1: no choice).
    domains: u32,
    /// Allocate without CACHEABLE and skip MEM_SYNC (self-test rerun).
    uncached: AtomicBool,
}

impl Inner {
    fn action(&self, action: u32, value: u32) -> Result<u32, Errno> {
        let mut a = RknpuAction {
            flags: action,
            value,
        };
        call(self.io.as_ref(), RKNPU_ACTION, &mut a)?;
        Ok(a.value)
    }

    /// Memory flags for a buffer: cacheable (fast CPU reads, MEM_SYNC works),
    /// non-contiguous when an IOMMU maps it (large CMA allocations fail).
    /// Only without an IOMMU must the pages themselves lie below 4 GiB
    /// (bit 7 in the version's meaning); with one the device address is an
    /// IOVA below 4 GiB anyway, and asking for DMA32 pages would confine
    /// multi-GB weight loads to the low 4 GiB of physical RAM.
    fn mem_flags(&self, kernel_mapping: bool) -> u32 {
        let uncached = self.uncached.load(Ordering::Relaxed);
        let mut flags = if uncached { 0 } else { RKNPU_MEM_CACHEABLE };
        if self.iommu {
            flags |= RKNPU_MEM_NON_CONTIGUOUS | RKNPU_MEM_IOMMU;
        }
        // Bit 7 means DMA32 in newer drivers and NON_DMA32 in older ones.
        let want_dma32 = !self.iommu;
        if want_dma32 == uapi::dma32_flag_is_positive(self.version) {
            flags |= RKNPU_MEM_BIT7_DMA32;
        }
        if kernel_mapping {
            flags |= RKNPU_MEM_KERNEL_MAPPING | RKNPU_MEM_ZEROING;
        }
        flags
    }

    /// MEM_CREATE in the struct size of the driver version, in `domain`.
    fn mem_create(&self, size: u64, flags: u32, domain: u32) -> Result<(u32, u64, u64), NpuError> {
        let err = |errno| NpuError::Ioctl {
            op: "RKNPU_MEM_CREATE",
            errno,
        };
        if self.version >= RKNPU_MEM_CREATE_V2_SINCE {
            let mut c = RknpuMemCreateV2 {
                flags,
                size,
                iommu_domain_id: domain as i32,
                ..Default::default()
            };
            call(self.io.as_ref(), RKNPU_MEM_CREATE_V2, &mut c).map_err(err)?;
            Ok((c.handle, c.obj_addr, c.dma_addr))
        } else if domain != 0 {
            Err(NpuError::Unsupported(format!(
                "IOMMU domain {domain}: driver {} has no domain field",
                rknpu_version_string(self.version)
            )))
        } else {
            let mut c = RknpuMemCreateV1 {
                flags,
                size,
                ..Default::default()
            };
            call(self.io.as_ref(), RKNPU_MEM_CREATE_V1, &mut c).map_err(err)?;
            Ok((c.handle, c.obj_addr, c.dma_addr))
        }
    }

    fn mem_destroy(&self, handle: u32, obj_addr: u64) {
        let mut d = RknpuMemDestroy {
            handle,
            reserved: 0,
            obj_addr,
        };
        // Nothing to report to on drop; the kernel frees on close anyway.
        let _ = call(self.io.as_ref(), RKNPU_MEM_DESTROY, &mut d);
    }
}

impl BufferOps for Inner {
    fn sync(&self, raw: &RawBuffer, dir: SyncDir, offset: u64, len: u64) -> Result<(), NpuError> {
        if self.uncached.load(Ordering::Relaxed) {
            return Ok(()); // MEM_SYNC works on cacheable buffers only
        }
        let mut s = RknpuMemSync {
            flags: match dir {
                SyncDir::ToDevice => RKNPU_MEM_SYNC_TO_DEVICE,
                SyncDir::FromDevice => RKNPU_MEM_SYNC_FROM_DEVICE,
            },
            reserved: 0,
            obj_addr: raw.obj_addr,
            offset,
            size: len,
        };
        call(self.io.as_ref(), RKNPU_MEM_SYNC, &mut s).map_err(|errno| NpuError::Ioctl {
            op: "RKNPU_MEM_SYNC",
            errno,
        })
    }

    fn release(&self, raw: &RawBuffer) {
        self.mem_destroy(raw.handle, raw.obj_addr);
    }
}

/// An NPU behind the vendor driver.
pub struct RknpuDevice {
    inner: Arc<Inner>,
    info: DeviceInfo,
    /// Serializes submits and keeps the last one's kernel structures.
    submit_lock: Mutex<Option<SubmitRecord>>,
    recording: AtomicBool,
}

impl RknpuDevice {
    /// Probes the driver version and capabilities on an open node.
    pub fn open(io: Box<dyn DrmIo>) -> Result<RknpuDevice, NpuError> {
        let node = io.path();
        let mut inner = Inner {
            io,
            version: 0,
            iommu: false,
            domains: 1,
            uncached: AtomicBool::new(false),
        };
        let version = inner
            .action(RKNPU_GET_DRV_VERSION, 0)
            .map_err(|errno| NpuError::Ioctl {
                op: "RKNPU_ACTION(GET_DRV_VERSION)",
                errno,
            })?;
        if version < RKNPU_MIN_VERSION {
            return Err(NpuError::DriverTooOld {
                driver: "rknpu".into(),
                found: rknpu_version_string(version),
                minimum: rknpu_version_string(RKNPU_MIN_VERSION),
            });
        }
        inner.version = version;
        let iommu = inner.action(RKNPU_GET_IOMMU_EN, 0).ok().map(|v| v != 0);
        inner.iommu = iommu.unwrap_or(false);
        // Several IOMMU domains: the 48-byte MEM_CREATE carries the domain,
        // and drivers that have them answer GET_IOMMU_DOMAIN_ID.
        if inner.iommu
            && version >= RKNPU_MEM_CREATE_V2_SINCE
            && inner.action(RKNPU_GET_IOMMU_DOMAIN_ID, 0).is_ok()
        {
            inner.domains = RKNPU_MAX_IOMMU_DOMAINS;
        }
        let info = DeviceInfo {
            driver: "rknpu".into(),
            node,
            version: rknpu_version_string(version),
            hw_version: inner.action(RKNPU_GET_HW_VERSION, 0).ok(),
            cores: 3,
            iommu,
            freq_hz: inner.action(RKNPU_GET_FREQ, 0).ok().map(u64::from),
            sram_total: inner
                .action(RKNPU_GET_TOTAL_SRAM_SIZE, 0)
                .ok()
                .map(u64::from),
            sram_free: inner
                .action(RKNPU_GET_FREE_SRAM_SIZE, 0)
                .ok()
                .map(u64::from),
            address_space: 1 << 32,
            iommu_domains: inner.domains,
        };
        Ok(RknpuDevice {
            inner: Arc::new(inner),
            info,
            submit_lock: Mutex::new(None),
            recording: AtomicBool::new(false),
        })
    }

    /// Device address space per IOMMU domain when it is known to be less
    /// than the 4 GiB the registers reach (a carve-out, or a fake driver
    /// in tests): weights are placed to leave room for the submits.
    pub fn with_address_space(mut self, bytes: u64) -> Self {
        self.info.address_space = bytes.min(1 << 32);
        self
    }

    /// Driver version as GET_DRV_VERSION encodes it.
    pub fn driver_version(&self) -> u32 {
        self.inner.version
    }

    fn alloc_flags(
        &self,
        size: usize,
        kernel_mapping: bool,
        domain: u32,
    ) -> Result<NpuBuffer, NpuError> {
        let inner = &self.inner;
        if domain >= inner.domains {
            return Err(NpuError::Unsupported(format!(
                "IOMMU domain {domain}: the driver has {}",
                inner.domains
            )));
        }
        let flags = inner.mem_flags(kernel_mapping);
        let (handle, obj_addr, dma) = inner.mem_create(size as u64, flags, domain)?;
        let dma_addr = match check_dma_addr("rknpu buffer", dma, size as u64) {
            Ok(a) => a,
            Err(e) => {
                inner.mem_destroy(handle, obj_addr);
                return Err(e);
            }
        };
        let mut map = RknpuMemMap {
            handle,
            ..Default::default()
        };
        if let Err(errno) = call(inner.io.as_ref(), RKNPU_MEM_MAP, &mut map) {
            inner.mem_destroy(handle, obj_addr);
            return Err(NpuError::Ioctl {
                op: "RKNPU_MEM_MAP",
                errno,
            });
        }
        let mapping = match inner.io.mmap(map.offset, size) {
            Ok(m) => m,
            Err(e) => {
                inner.mem_destroy(handle, obj_addr);
                return Err(e);
            }
        };
        let raw = RawBuffer {
            handle,
            dma_addr,
            size: size as u64,
            obj_addr,
            domain,
        };
        Ok(NpuBuffer::new(raw, mapping, inner.clone()))
    }
}

impl NpuDevice for RknpuDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn chaining(&self) -> Chaining {
        Chaining::PcChain
    }

    fn alloc(&self, size: usize) -> Result<NpuBuffer, NpuError> {
        self.alloc_flags(size, false, 0)
    }

    fn alloc_in(&self, size: usize, domain: u32) -> Result<NpuBuffer, NpuError> {
        self.alloc_flags(size, false, domain)
    }

    fn runs_cores_together(&self, cores: &[u32]) -> bool {
        let mask = cores.iter().fold(0, |m, &c| m | 1 << c.min(31));
        cores.iter().all(|&c| subcore_slot(mask, c).is_some())
    }

    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError> {
        if job.tasks.is_empty() {
            return Err(NpuError::SubmitFailed {
                reason: "job without tasks".into(),
            });
        }
        job.check_shares(self.info.cores)?;
        let core_mask = job.core_mask();
        let domain = job.regcmd.domain();
        if let Some(b) = job
            .inputs
            .iter()
            .copied()
            .chain(job.outputs())
            .find(|b| b.domain() != domain)
        {
            return Err(NpuError::SubmitFailed {
                reason: format!(
                    "buffer {} is in IOMMU domain {}, the job's commands in {domain}",
                    b.handle(),
                    b.domain()
                ),
            });
        }
        // The driver reads the task records through a kernel mapping.
        let mut task_buf = self.alloc_flags(
            job.tasks.len() * std::mem::size_of::<RknpuTask>(),
            true,
            domain,
        )?;
        let mut records = Vec::with_capacity(job.tasks.len());
        for t in job.tasks {
            let addr = job.regcmd.dma_addr() as u64 + t.offset as u64;
            check_dma_addr("register commands", addr, 8)?;
            records.push(RknpuTask {
                flags: 0,
                op_idx: 0,
                enable_mask: RKNPU_TASK_ENABLE_MASK,
                int_mask: RKNPU_TASK_INT_MASK_DPU,
                int_clear: RKNPU_TASK_INT_CLEAR,
                int_status: 0,
                regcfg_amount: t.body_entries,
                regcfg_offset: 0,
                regcmd_addr: addr,
            });
        }
        task_buf.write(0, bytemuck::cast_slice(&records))?;
        task_buf.sync_to_device()?;
        let n = job.tasks.len() as u32;
        let mut sub = RknpuSubmit {
            flags: RKNPU_JOB_PC | RKNPU_JOB_PINGPONG,
            timeout: job.timeout_ms,
            task_start: 0,
            task_number: n,
            task_obj_addr: task_buf.raw().obj_addr,
            iommu_domain_id: domain,
            core_mask,
            fence_fd: -1,
            ..Default::default()
        };
        // Each core reads its task range from the subcore entry the driver
        // picks for the mask (all three cores: entries 2..4).
        for share in job.shares {
            let slot = subcore_slot(core_mask, share.core).ok_or_else(|| {
                NpuError::SubmitFailed {
                    reason: format!(
                        "core mask {core_mask:#x}: the vendor driver runs cores 0, 1, 2, 0+1 or 0+1+2 together"
                    ),
                }
            })?;
            sub.subcore_task[slot] = RknpuSubcoreTask {
                task_start: share.first as u32,
                task_number: share.count as u32,
            };
        }
        // Submits from several threads at once have crashed boards: one
        // at a time (the cores of one submit run together).
        let mut last = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let called = call(self.inner.io.as_ref(), RKNPU_SUBMIT, &mut sub);
        *last = self
            .recording
            .load(Ordering::Relaxed)
            .then(|| submit_record(&sub, &task_buf, &records, called.err()));
        match called {
            Ok(()) => {}
            Err(Errno::ETIMEDOUT) | Err(Errno::ETIME) => {
                return Err(NpuError::SubmitTimeout {
                    timeout_ms: job.timeout_ms,
                })
            }
            Err(Errno::EIO) => {
                return Err(NpuError::SubmitFailed {
                    reason: "the driver reported an NPU fault (EIO)".into(),
                })
            }
            Err(errno) => {
                return Err(NpuError::Ioctl {
                    op: "RKNPU_SUBMIT",
                    errno,
                })
            }
        }
        if sub.task_counter < n {
            return Err(NpuError::SubmitFailed {
                reason: format!("the driver completed {} of {n} tasks", sub.task_counter),
            });
        }
        Ok(JobStats {
            tasks_done: sub.task_counter,
            // Drivers with the older submit layout never write the field:
            // 0 means "not measured", not "took no time".
            hw_time_us: u64::try_from(sub.hw_elapse_time)
                .ok()
                .filter(|&ns| ns > 0)
                .map(|ns| ns / 1000),
        })
    }

    fn is_simulated(&self) -> bool {
        false
    }

    fn set_uncached(&self, uncached: bool) -> bool {
        self.inner.uncached.store(uncached, Ordering::Relaxed);
        true
    }

    fn record_submits(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    fn last_submit(&self) -> Option<SubmitRecord> {
        self.submit_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The submit and its task records as the kernel left them: the task
/// buffer is read back because the driver writes `int_status` there.
fn submit_record(
    sub: &RknpuSubmit,
    task_buf: &NpuBuffer,
    sent: &[RknpuTask],
    errno: Option<Errno>,
) -> SubmitRecord {
    // The first tasks show the chain's pattern; the last is the one the
    // driver writes the interrupt status into.
    let rec = std::mem::size_of::<RknpuTask>();
    let mut picked: Vec<usize> = (0..sent.len().min(SubmitRecord::MAX_TASKS - 1)).collect();
    if let Some(last) = sent.len().checked_sub(1) {
        if !picked.contains(&last) {
            picked.push(last);
        }
    }
    let synced = task_buf.sync_from_device().is_ok();
    let tasks = picked.iter().map(|&i| {
        let mut back = [RknpuTask::default()];
        let read = synced
            && task_buf
                .read(i * rec, bytemuck::cast_slice_mut(&mut back))
                .is_ok();
        (i, if read { back[0] } else { sent[i] })
    });
    let mut submit = vec![
        ("flags", sub.flags as i64),
        ("timeout", sub.timeout as i64),
        ("task_start", sub.task_start as i64),
        ("task_number", sub.task_number as i64),
        ("task_counter", sub.task_counter as i64),
        ("priority", sub.priority as i64),
        ("task_obj_addr", sub.task_obj_addr as i64),
        ("iommu_domain_id", sub.iommu_domain_id as i64),
        ("task_base_addr", sub.task_base_addr as i64),
        ("hw_elapse_time", sub.hw_elapse_time),
        ("core_mask", sub.core_mask as i64),
        ("fence_fd", sub.fence_fd as i64),
    ];
    const SUBCORE: [(&str, &str); 5] = [
        ("subcore0_task_start", "subcore0_task_number"),
        ("subcore1_task_start", "subcore1_task_number"),
        ("subcore2_task_start", "subcore2_task_number"),
        ("subcore3_task_start", "subcore3_task_number"),
        ("subcore4_task_start", "subcore4_task_number"),
    ];
    for (&(start, number), core) in SUBCORE.iter().zip(&sub.subcore_task) {
        submit.push((start, core.task_start as i64));
        submit.push((number, core.task_number as i64));
    }
    SubmitRecord {
        ioctl: "RKNPU_SUBMIT",
        struct_size: std::mem::size_of::<RknpuSubmit>(),
        submit: Fields(submit),
        tasks: tasks
            .map(|(i, t)| {
                Fields(vec![
                    ("index", i as i64),
                    ("flags", t.flags as i64),
                    ("op_idx", t.op_idx as i64),
                    ("enable_mask", t.enable_mask as i64),
                    ("int_mask", t.int_mask as i64),
                    ("int_clear", t.int_clear as i64),
                    ("int_status", t.int_status as i64),
                    ("regcfg_amount", t.regcfg_amount as i64),
                    ("regcfg_offset", t.regcfg_offset as i64),
                    ("regcmd_addr", t.regcmd_addr as i64),
                ])
            })
            .collect(),
        tasks_total: sent.len(),
        errno: errno.map(|e| e as i32),
    }
}
