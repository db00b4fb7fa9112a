//! The simulated NPU as an [`NpuDevice`]: device memory, fault injection and
//! serialized submits running on [`SimCore`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::engine::{CoreChain, SimCore};
use crate::npu::command::regs;
use crate::npu::command::task::{Chaining, TAIL_ENTRIES};
use crate::npu::driver::device::{
    check_dma_addr, BufferOps, DeviceInfo, Fields, Job, JobStats, NpuBuffer, NpuDevice, RawBuffer,
    SubmitRecord, SyncDir,
};
use crate::npu::driver::mem::{AddressSpace, Mapping};
use crate::npu::error::NpuError;

/// Faults the simulator can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The job never signals completion.
    Timeout,
    /// The job fails (e.g. an IOMMU fault).
    Fail,
    /// The driver reports success but never runs the job (rocket's SUBMIT
    /// returns 0 for a job its scheduler rejects).
    SilentReject,
}

/// Fault injection: the next `count` submits (or all, with `u32::MAX`)
/// produce `fault`.
#[derive(Debug, Default)]
pub struct FaultInjector {
    mode: AtomicU8,
    remaining: AtomicU32,
}

impl FaultInjector {
    pub fn set(&self, fault: Fault, count: u32) {
        let code = match fault {
            Fault::None => 0,
            Fault::Timeout => 1,
            Fault::Fail => 2,
            Fault::SilentReject => 3,
        };
        self.remaining.store(count, Ordering::SeqCst);
        self.mode.store(code, Ordering::SeqCst);
    }

    /// Consumes one pending fault, if any.
    pub fn take(&self) -> Fault {
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == 0 {
            return Fault::None;
        }
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            return Fault::None;
        }
        if left != u32::MAX {
            self.remaining.store(left - 1, Ordering::SeqCst);
        }
        match mode {
            1 => Fault::Timeout,
            2 => Fault::Fail,
            _ => Fault::SilentReject,
        }
    }
}

/// Default device address window of the simulator: [256 MiB, 3.75 GiB).
pub const SIM_ADDR_BASE: u64 = 0x1000_0000;
pub const SIM_ADDR_LIMIT: u64 = 0xF000_0000;

/// The simulator as an [`NpuDevice`].
pub struct SimDevice {
    core: Arc<SimCore>,
    /// Serializes submits and keeps the last one's record.
    submit_lock: Mutex<Option<SubmitRecord>>,
    recording: AtomicBool,
    cores: u32,
}

struct SimBufferOps {
    mem: Arc<AddressSpace>,
}

impl BufferOps for SimBufferOps {
    fn sync(
        &self,
        _raw: &RawBuffer,
        _dir: SyncDir,
        _offset: u64,
        _len: u64,
    ) -> Result<(), NpuError> {
        Ok(()) // simulated memory is coherent
    }
    fn release(&self, raw: &RawBuffer) {
        self.mem.free(raw.dma_addr as u64);
    }
}

impl SimDevice {
    pub fn new() -> Self {
        Self::with_address_window(SIM_ADDR_BASE, SIM_ADDR_LIMIT)
    }

    /// A simulator whose buffers lie in [base, limit) (tests use small or
    /// above-4-GiB windows).
    pub fn with_address_window(base: u64, limit: u64) -> Self {
        SimDevice {
            core: Arc::new(SimCore::new(Arc::new(AddressSpace::new(base, limit)))),
            submit_lock: Mutex::new(None),
            recording: AtomicBool::new(false),
            cores: 3,
        }
    }

    /// Fault injection: the next `count` submits produce `fault`.
    pub fn inject(&self, fault: Fault, count: u32) {
        self.core.faults.set(fault, count);
    }

    pub fn core(&self) -> &Arc<SimCore> {
        &self.core
    }
}

impl Default for SimDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl NpuDevice for SimDevice {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            driver: "npu-sim".into(),
            node: "in-process".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hw_version: None,
            cores: self.cores,
            iommu: Some(true),
            freq_hz: None,
            sram_total: None,
            sram_free: None,
            address_space: SIM_ADDR_LIMIT - SIM_ADDR_BASE,
            iommu_domains: 1,
        }
    }

    fn chaining(&self) -> Chaining {
        Chaining::PcChain
    }

    fn alloc(&self, size: usize) -> Result<NpuBuffer, NpuError> {
        let (addr, mem) = self.core.mem.alloc(size)?;
        let dma = match check_dma_addr("npu-sim buffer", addr, size as u64) {
            Ok(d) => d,
            Err(e) => {
                self.core.mem.free(addr);
                return Err(e);
            }
        };
        let raw = RawBuffer {
            handle: dma,
            dma_addr: dma,
            size: size as u64,
            obj_addr: 0,
            domain: 0,
        };
        let ops = Arc::new(SimBufferOps {
            mem: self.core.mem.clone(),
        });
        Ok(NpuBuffer::new(raw, Mapping::shared(mem), ops))
    }

    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError> {
        let mut last = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.run_job(job);
        *last = self
            .recording
            .load(Ordering::Relaxed)
            .then(|| sim_record(job, &result));
        result
    }

    fn runs_cores_together(&self, _cores: &[u32]) -> bool {
        true
    }

    fn is_simulated(&self) -> bool {
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

/// The simulator has no kernel structure: its record names what a driver
/// would have been told (core, program counter start, task chain).
fn sim_record(job: &Job<'_>, result: &Result<JobStats, NpuError>) -> SubmitRecord {
    let addr =
        |t: &crate::npu::driver::device::TaskRef| job.regcmd.dma_addr() as i64 + t.offset as i64;
    SubmitRecord {
        ioctl: "npu-sim",
        struct_size: 0,
        submit: Fields(vec![
            ("core", job.shares.first().map_or(0, |s| s.core) as i64),
            ("core_mask", job.core_mask() as i64),
            ("cores", job.cores_used() as i64),
            ("task_number", job.tasks.len() as i64),
            ("timeout", job.timeout_ms as i64),
            (
                "task_counter",
                result.as_ref().map_or(0, |s| s.tasks_done as i64),
            ),
        ]),
        tasks: job
            .tasks
            .iter()
            .take(SubmitRecord::MAX_TASKS)
            .map(|t| {
                Fields(vec![
                    ("regcmd_addr", addr(t)),
                    ("body_entries", t.body_entries as i64),
                ])
            })
            .collect(),
        tasks_total: job.tasks.len(),
        errno: None,
    }
}

impl SimDevice {
    fn run_job(&self, job: &Job<'_>) -> Result<JobStats, NpuError> {
        if job.tasks.is_empty() {
            return Err(NpuError::SubmitFailed {
                reason: "job without tasks".into(),
            });
        }
        job.check_shares(self.cores)?;
        match self.core.faults.take() {
            Fault::Timeout => {
                return Err(NpuError::SubmitTimeout {
                    timeout_ms: job.timeout_ms,
                })
            }
            Fault::Fail => {
                return Err(NpuError::SubmitFailed {
                    reason: "injected fault".into(),
                })
            }
            Fault::SilentReject => {
                return Ok(JobStats {
                    tasks_done: job.tasks.len() as u32,
                    hw_time_us: None,
                })
            }
            Fault::None => {}
        }
        let chains = job
            .shares
            .iter()
            .map(|share| {
                let first = &job.tasks[share.first];
                let addr = job.regcmd.dma_addr() as u64 + first.offset as u64;
                Ok(CoreChain {
                    core: share.core,
                    first_task: share.first,
                    first_addr: check_dma_addr("register commands", addr, 8)?,
                    amount: regs::pc_amount(first.body_entries as usize + TAIL_ENTRIES),
                    tasks: share.count as u32,
                })
            })
            .collect::<Result<Vec<_>, NpuError>>()?;
        let windows: Vec<Vec<(u64, u64)>> = job
            .shares
            .iter()
            .map(|s| {
                s.outputs
                    .iter()
                    .map(|b| (u64::from(b.dma_addr()), b.len() as u64))
                    .collect()
            })
            .collect();
        let done = self.core.run_cores(&chains, Some(&windows))?;
        Ok(JobStats {
            tasks_done: done.iter().sum(),
            hw_time_us: None,
        })
    }
}
