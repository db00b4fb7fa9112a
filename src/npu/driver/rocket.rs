//! The upstream `rocket` accel driver (Linux 6.18+): buffers through
//! CREATE_BO / mmap / GEM_CLOSE, cache ownership through FINI_BO (CPU done
//! writing) and PREP_BO (wait for the NPU, then CPU reads), jobs through
//! SUBMIT. The kernel starts every task itself and picks the core.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;

use super::device::{
    check_dma_addr, BufferOps, DeviceInfo, Fields, Job, JobStats, NpuBuffer, NpuDevice, RawBuffer,
    SubmitRecord, SyncDir,
};
use super::drm::{call, DrmIo};
use super::uapi::*;
use crate::npu::command::task::{Chaining, TAIL_ENTRIES};
use crate::npu::error::NpuError;

struct Inner {
    io: Box<dyn DrmIo>,
}

/// Absolute CLOCK_MONOTONIC deadline `ms` from now, in ns (PREP_BO wants an
/// absolute time, not a duration).
fn deadline_ns(ms: u32) -> i64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local `ts`.
    let ret = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    let now = if ret == 0 {
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    } else {
        0
    };
    now + i64::from(ms) * 1_000_000
}

impl Inner {
    fn prep(&self, handle: u32, timeout_ms: u32) -> Result<(), NpuError> {
        let mut p = RocketPrepBo {
            handle,
            reserved: 0,
            timeout_ns: deadline_ns(timeout_ms),
        };
        match call(self.io.as_ref(), ROCKET_PREP_BO, &mut p) {
            Ok(()) => Ok(()),
            Err(Errno::ETIMEDOUT) | Err(Errno::EBUSY) | Err(Errno::ETIME) => {
                Err(NpuError::SubmitTimeout { timeout_ms })
            }
            Err(errno) => Err(NpuError::Ioctl {
                op: "ROCKET_PREP_BO",
                errno,
            }),
        }
    }

    fn fini(&self, handle: u32) -> Result<(), NpuError> {
        let mut f = RocketFiniBo {
            handle,
            reserved: 0,
        };
        call(self.io.as_ref(), ROCKET_FINI_BO, &mut f).map_err(|errno| NpuError::Ioctl {
            op: "ROCKET_FINI_BO",
            errno,
        })
    }

    fn close(&self, handle: u32) {
        let mut c = DrmGemClose { handle, pad: 0 };
        // Nothing to report to on drop; closing the fd frees it anyway.
        let _ = call(self.io.as_ref(), DRM_IOCTL_GEM_CLOSE, &mut c);
    }
}

/// Timeout of the CPU-side PREP_BO done by `sync_from_device`, after the job
/// already finished.
const PREP_TIMEOUT_MS: u32 = 1000;

impl BufferOps for Inner {
    fn sync(&self, raw: &RawBuffer, dir: SyncDir, _offset: u64, _len: u64) -> Result<(), NpuError> {
        match dir {
            SyncDir::ToDevice => self.fini(raw.handle),
            SyncDir::FromDevice => self.prep(raw.handle, PREP_TIMEOUT_MS),
        }
    }

    fn release(&self, raw: &RawBuffer) {
        self.close(raw.handle);
    }
}

/// An NPU behind the upstream driver.
pub struct RocketDevice {
    inner: Arc<Inner>,
    info: DeviceInfo,
    /// Serializes submits and keeps the last one's kernel structures.
    submit_lock: Mutex<Option<SubmitRecord>>,
    recording: AtomicBool,
}

impl RocketDevice {
    /// `version` is the DRM version of the node (rocket has no version ioctl).
    pub fn open(io: Box<dyn DrmIo>, version: String) -> RocketDevice {
        let info = DeviceInfo {
            driver: "rocket".into(),
            node: io.path(),
            version,
            hw_version: None,
            cores: 3,
            iommu: Some(true),
            freq_hz: None,
            sram_total: None,
            sram_free: None,
            address_space: 1 << 32,
            iommu_domains: 1,
        };
        RocketDevice {
            inner: Arc::new(Inner { io }),
            info,
            submit_lock: Mutex::new(None),
            recording: AtomicBool::new(false),
        }
    }
}

impl RocketDevice {
    /// Device address space per IOMMU domain when it is known to be less
    /// than the 4 GiB the registers reach (a carve-out, or a fake driver
    /// in tests): weights are placed to leave room for the submits.
    pub fn with_address_space(mut self, bytes: u64) -> Self {
        self.info.address_space = bytes.min(1 << 32);
        self
    }
}

impl NpuDevice for RocketDevice {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn chaining(&self) -> Chaining {
        Chaining::KernelStartsEachTask
    }

    fn alloc(&self, size: usize) -> Result<NpuBuffer, NpuError> {
        let size32 = u32::try_from(size).map_err(|_| NpuError::OutOfDeviceMemory {
            requested: size as u64,
            available: u32::MAX as u64,
        })?;
        let mut c = RocketCreateBo {
            size: size32,
            ..Default::default()
        };
        call(self.inner.io.as_ref(), ROCKET_CREATE_BO, &mut c).map_err(|errno| {
            NpuError::Ioctl {
                op: "ROCKET_CREATE_BO",
                errno,
            }
        })?;
        let dma_addr = match check_dma_addr("rocket buffer", c.dma_address, size as u64) {
            Ok(a) => a,
            Err(e) => {
                self.inner.close(c.handle);
                return Err(e);
            }
        };
        let map = match self.inner.io.mmap(c.offset, size) {
            Ok(m) => m,
            Err(e) => {
                self.inner.close(c.handle);
                return Err(e);
            }
        };
        let raw = RawBuffer {
            handle: c.handle,
            dma_addr,
            size: size as u64,
            obj_addr: 0,
            domain: 0,
        };
        Ok(NpuBuffer::new(raw, map, self.inner.clone()))
    }

    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError> {
        if job.tasks.is_empty() {
            return Err(NpuError::SubmitFailed {
                reason: "job without tasks".into(),
            });
        }
        job.check_shares(self.info.cores)?;
        let tasks: Vec<RocketTask> = job
            .tasks
            .iter()
            .map(|t| {
                let addr = job.regcmd.dma_addr() as u64 + t.offset as u64;
                Ok(RocketTask {
                    regcmd: check_dma_addr("register commands", addr, 8)?,
                    regcmd_count: t.body_entries + TAIL_ENTRIES as u32,
                })
            })
            .collect::<Result<_, NpuError>>()?;
        let mut ins: Vec<u32> = job.inputs.iter().map(|b| b.handle()).collect();
        ins.push(job.regcmd.handle());
        // One kernel job per core share: the scheduler puts them on its
        // per-core queues, and as their output buffers differ no implicit
        // fence orders one after another.
        let outs: Vec<Vec<u32>> = job
            .shares
            .iter()
            .map(|s| s.outputs.iter().map(|b| b.handle()).collect())
            .collect();
        let rjobs: Vec<RocketJob> = job
            .shares
            .iter()
            .zip(&outs)
            .map(|(share, outs)| RocketJob {
                tasks: tasks[share.first..].as_ptr() as u64,
                in_bo_handles: ins.as_ptr() as u64,
                out_bo_handles: outs.as_ptr() as u64,
                task_count: share.count as u32,
                task_struct_size: std::mem::size_of::<RocketTask>() as u32,
                in_bo_handle_count: ins.len() as u32,
                out_bo_handle_count: outs.len() as u32,
            })
            .collect();
        let mut sub = RocketSubmit {
            jobs: rjobs.as_ptr() as u64,
            job_count: rjobs.len() as u32,
            job_struct_size: std::mem::size_of::<RocketJob>() as u32,
            reserved: 0,
        };
        let mut last = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        // `tasks`, `ins`, `outs` and `rjobs` outlive the ioctl, which copies them.
        // SAFETY: `sub.jobs` points at `rjobs` (job_count entries), whose
        // task and handle pointers point into `tasks` (check_shares keeps
        // every share's range inside it), `ins` and `outs`; all live until
        // after the call, with the counts and struct sizes given.
        let called = unsafe {
            super::drm::call_with_pointers(self.inner.io.as_ref(), ROCKET_SUBMIT, &mut sub)
        };
        *last = self
            .recording
            .load(Ordering::Relaxed)
            .then(|| submit_record(&rjobs, &tasks, &ins, &outs, called.err()));
        called.map_err(|errno| match errno {
            Errno::EIO => NpuError::SubmitFailed {
                reason: "the driver rejected or aborted the job (EIO)".into(),
            },
            errno => NpuError::Ioctl {
                op: "ROCKET_SUBMIT",
                errno,
            },
        })?;
        // Completion: wait on every output buffer.
        for b in job.outputs() {
            self.inner
                .prep(b.handle(), job.timeout_ms)
                .map_err(|e| match e {
                    NpuError::SubmitTimeout { .. } => NpuError::SubmitTimeout {
                        timeout_ms: job.timeout_ms,
                    },
                    e => e,
                })?;
        }
        Ok(JobStats {
            tasks_done: job.tasks.len() as u32,
            hw_time_us: None,
        })
    }

    fn runs_cores_together(&self, _cores: &[u32]) -> bool {
        true
    }

    fn is_simulated(&self) -> bool {
        false
    }

    fn job_time_limit_ms(&self) -> Option<u32> {
        Some(ROCKET_JOB_TIMEOUT_MS)
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

/// The jobs of a submit and their task records (rocket copies them in and
/// writes nothing back: its SUBMIT even succeeds for a rejected job).
fn submit_record(
    jobs: &[RocketJob],
    tasks: &[RocketTask],
    ins: &[u32],
    outs: &[Vec<u32>],
    errno: Option<Errno>,
) -> SubmitRecord {
    let first = jobs.first().copied().unwrap_or_default();
    let mut submit = vec![
        ("job_count", jobs.len() as i64),
        ("job_struct_size", std::mem::size_of::<RocketJob>() as i64),
        ("task_count", first.task_count as i64),
        ("task_struct_size", first.task_struct_size as i64),
        ("in_bo_handle_count", first.in_bo_handle_count as i64),
        ("out_bo_handle_count", first.out_bo_handle_count as i64),
    ];
    // The command buffer goes last among the inputs: it must be there.
    if let Some(&h) = ins.last() {
        submit.push(("regcmd_bo_handle", h as i64));
    }
    if let Some(&h) = outs.first().and_then(|o| o.first()) {
        submit.push(("first_out_bo_handle", h as i64));
    }
    // Further jobs (one per core share): their task counts.
    const JOB_TASKS: [&str; 3] = ["job1_task_count", "job2_task_count", "job3_task_count"];
    for (name, j) in JOB_TASKS.iter().zip(jobs.iter().skip(1)) {
        submit.push((name, j.task_count as i64));
    }
    SubmitRecord {
        ioctl: "ROCKET_SUBMIT",
        struct_size: std::mem::size_of::<RocketSubmit>(),
        submit: Fields(submit),
        tasks: tasks
            .iter()
            .take(SubmitRecord::MAX_TASKS)
            .map(|t| {
                Fields(vec![
                    ("regcmd", t.regcmd as i64),
                    ("regcmd_count", t.regcmd_count as i64),
                ])
            })
            .collect(),
        tasks_total: tasks.len(),
        errno: errno.map(|e| e as i32),
    }
}
