//! The one device trait that hides which kernel interface (vendor `rknpu`,
//! upstream `rocket`) or the simulator runs the jobs.

use std::sync::Arc;

use super::mem::Mapping;
use crate::npu::command::task::Chaining;
use crate::npu::error::NpuError;

/// What `rkinfer npu info` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// "rknpu", "rocket" or "npu-sim".
    pub driver: String,
    /// Device node(s) in use.
    pub node: String,
    /// Driver version ("0.9.8"); empty when the interface has none.
    pub version: String,
    /// Hardware version word, when the driver reports one.
    pub hw_version: Option<u32>,
    pub cores: u32,
    /// IOMMU enabled, when known.
    pub iommu: Option<bool>,
    /// NPU clock in Hz, when known.
    pub freq_hz: Option<u64>,
    /// On-chip SRAM total/free bytes, when known.
    pub sram_total: Option<u64>,
    pub sram_free: Option<u64>,
    /// Device address space this process may use (bytes), per IOMMU domain.
    pub address_space: u64,
    /// IOMMU domains a buffer may be placed in (each its own
    /// `address_space`; 1 when the driver has no domain choice).
    pub iommu_domains: u32,
}

/// Cache maintenance direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDir {
    /// CPU writes become visible to the NPU.
    ToDevice,
    /// NPU writes become visible to the CPU.
    FromDevice,
}

/// Per-interface buffer operations (free on drop, cache sync).
pub trait BufferOps: Send + Sync {
    fn sync(&self, raw: &RawBuffer, dir: SyncDir, offset: u64, len: u64) -> Result<(), NpuError>;
    fn release(&self, raw: &RawBuffer);
}

/// Identity of a driver buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBuffer {
    pub handle: u32,
    /// Device address (checked below 4 GiB at creation).
    pub dma_addr: u32,
    pub size: u64,
    /// Vendor driver's kernel object cookie (never invented, only passed back).
    pub obj_addr: u64,
    /// IOMMU domain whose address space `dma_addr` is in (0 without domains).
    pub domain: u32,
}

/// A device buffer with a CPU mapping and a 32-bit device address.
pub struct NpuBuffer {
    raw: RawBuffer,
    map: Mapping,
    ops: Arc<dyn BufferOps>,
}

impl NpuBuffer {
    pub fn new(raw: RawBuffer, map: Mapping, ops: Arc<dyn BufferOps>) -> Self {
        NpuBuffer { raw, map, ops }
    }

    pub fn raw(&self) -> &RawBuffer {
        &self.raw
    }

    pub fn dma_addr(&self) -> u32 {
        self.raw.dma_addr
    }

    pub fn handle(&self) -> u32 {
        self.raw.handle
    }

    /// IOMMU domain of the buffer: every buffer of one submit shares it.
    pub fn domain(&self) -> u32 {
        self.raw.domain
    }

    /// Usable size in bytes (as requested).
    pub fn len(&self) -> usize {
        self.raw.size as usize
    }

    pub fn is_empty(&self) -> bool {
        self.raw.size == 0
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), NpuError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(NpuError::BufferRange {
                offset: offset as u64,
                len: len as u64,
                size: self.raw.size,
            }),
        }
    }

    /// Copies `data` into the buffer at `offset` (CPU side).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), NpuError> {
        self.check(offset, data.len())?;
        self.map.write(offset, data)
    }

    /// Copies out of the buffer at `offset` (CPU side).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), NpuError> {
        self.check(offset, out.len())?;
        self.map.read(offset, out)
    }

    /// Writes u64 words little-endian at `offset`.
    pub fn write_words(&mut self, offset: usize, words: &[u64]) -> Result<(), NpuError> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(offset, &bytes)
    }

    /// Makes CPU writes visible to the NPU (before a submit).
    pub fn sync_to_device(&self) -> Result<(), NpuError> {
        self.ops
            .sync(&self.raw, SyncDir::ToDevice, 0, self.raw.size)
    }

    /// Makes NPU writes visible to the CPU (after a submit).
    pub fn sync_from_device(&self) -> Result<(), NpuError> {
        self.ops
            .sync(&self.raw, SyncDir::FromDevice, 0, self.raw.size)
    }
}

impl Drop for NpuBuffer {
    fn drop(&mut self) {
        self.ops.release(&self.raw);
    }
}

/// One task of a job: where its register commands start in the job's
/// command buffer and how many body entries it has (the tail's 4 extra).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRef {
    pub offset: usize,
    pub body_entries: u32,
}

/// The tasks of a job one core runs: `tasks[first..first + count]`, in
/// order, writing only into `outputs`.
#[derive(Clone, Copy)]
pub struct CoreShare<'a> {
    /// Core index 0..cores (rocket's scheduler picks the core itself).
    pub core: u32,
    pub first: usize,
    pub count: usize,
    /// The buffers this core's tasks write (no other share writes them).
    pub outputs: &'a [&'a NpuBuffer],
}

/// A job: one submit whose tasks are partitioned among cores that run at
/// the same time, each its share in order (one share: one core).
pub struct Job<'a> {
    pub regcmd: &'a NpuBuffer,
    pub tasks: &'a [TaskRef],
    /// Per core the range of `tasks` it runs: disjoint, in task order,
    /// together covering every task ([`Job::check_shares`]).
    pub shares: &'a [CoreShare<'a>],
    /// Buffers every share reads.
    pub inputs: &'a [&'a NpuBuffer],
    pub timeout_ms: u32,
}

impl Job<'_> {
    /// Bit `c` set for every core `c` with a share.
    pub fn core_mask(&self) -> u32 {
        self.shares.iter().fold(0, |m, s| m | 1 << s.core.min(31))
    }

    /// Cores the submit keeps busy at once.
    pub fn cores_used(&self) -> usize {
        self.shares.len()
    }

    /// Checks the partition before anything reaches a driver: shares on
    /// distinct existing cores, non-empty, consecutive and covering every
    /// task exactly once.
    pub fn check_shares(&self, cores: u32) -> Result<(), NpuError> {
        let bad = |reason: String| Err(NpuError::SubmitFailed { reason });
        if self.shares.is_empty() {
            return bad("job without core shares".into());
        }
        let mut next = 0;
        for (i, s) in self.shares.iter().enumerate() {
            if s.core >= cores {
                return bad(format!("core {} does not exist ({cores} cores)", s.core));
            }
            if self.shares[..i].iter().any(|o| o.core == s.core) {
                return bad(format!("core {} has two shares of one job", s.core));
            }
            if s.count == 0 || s.first != next {
                return bad(format!(
                    "core {} runs tasks {}..{}: expected a non-empty range starting at task {next}",
                    s.core,
                    s.first,
                    s.first + s.count
                ));
            }
            next += s.count;
        }
        if next != self.tasks.len() {
            return bad(format!(
                "the core shares cover {next} of the job's {} tasks",
                self.tasks.len()
            ));
        }
        Ok(())
    }

    /// Every output buffer of every share.
    pub fn outputs(&self) -> impl Iterator<Item = &NpuBuffer> {
        self.shares.iter().flat_map(|s| s.outputs.iter().copied())
    }
}

/// What a finished job reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobStats {
    /// Tasks the device says it completed.
    pub tasks_done: u32,
    /// Hardware time in microseconds, when the driver reports it.
    pub hw_time_us: Option<u64>,
}

/// The kernel structures of one submit as the driver left them after the
/// call: what a bug report needs to tell a wrong field from a failing NPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubmitRecord {
    /// The request, e.g. `RKNPU_SUBMIT`.
    pub ioctl: &'static str,
    /// Bytes of the submit structure passed (part of the ioctl number).
    pub struct_size: usize,
    /// The submit structure's fields, in declaration order.
    pub submit: Fields,
    /// Task records as the kernel read them (the vendor driver writes
    /// `int_status` back), the first [`SubmitRecord::MAX_TASKS`] of them.
    pub tasks: Vec<Fields>,
    pub tasks_total: usize,
    /// The call's errno when it failed.
    pub errno: Option<i32>,
}

impl SubmitRecord {
    /// Task records kept per job: enough to see the pattern of a chain.
    pub const MAX_TASKS: usize = 4;
}

/// Named integer fields of a kernel structure, serialized as a JSON object
/// that keeps the declaration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(&'static str, i64)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<i64> {
        self.0.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// An NPU: real (through a kernel driver) or simulated.
pub trait NpuDevice: Send + Sync {
    fn info(&self) -> DeviceInfo;
    /// How the tasks of one job must be linked in their command buffer.
    fn chaining(&self) -> Chaining;
    /// Allocates a buffer of `size` bytes with a CPU mapping and a device
    /// address below 4 GiB.
    fn alloc(&self, size: usize) -> Result<NpuBuffer, NpuError>;
    /// Allocates in IOMMU domain `domain` (< `info().iommu_domains`): for
    /// weights beyond one domain's address space. Every buffer of a submit
    /// must share the domain.
    fn alloc_in(&self, size: usize, domain: u32) -> Result<NpuBuffer, NpuError> {
        if domain == 0 {
            self.alloc(size)
        } else {
            Err(NpuError::Unsupported(format!(
                "IOMMU domain {domain}: {} has one address space",
                self.info().driver
            )))
        }
    }
    /// Runs a job to completion (or timeout): its core shares at the same
    /// time, submits one after another.
    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError>;
    /// Whether one submit may keep these cores busy at once; when not,
    /// each core's share goes in a submit of its own.
    fn runs_cores_together(&self, cores: &[u32]) -> bool {
        cores.len() <= 1
    }
    /// True for the simulator (experimental int4 is allowed there).
    fn is_simulated(&self) -> bool;
    /// The longest a job may run before the kernel driver gives up on it,
    /// when the driver fixes that (rocket); jobs are sized to fit.
    fn job_time_limit_ms(&self) -> Option<u32> {
        None
    }
    /// Makes later buffers uncached and skips cache maintenance (as
    /// mtx512's tested driver does): an isolating rerun of the self-test.
    /// False when the interface has no such choice.
    fn set_uncached(&self, _uncached: bool) -> bool {
        false
    }
    /// Keeps a [`SubmitRecord`] of each submit from now on (the self-test
    /// turns it on; inference leaves it off: on the vendor driver it costs
    /// a cache sync of the task records per job).
    fn record_submits(&self, _on: bool) {}
    /// The kernel structures of the most recent recorded submit. Submits
    /// are serialized, so this is the caller's own when one thread drives
    /// the device (as the self-test does).
    fn last_submit(&self) -> Option<SubmitRecord> {
        None
    }
}

/// Checks a device address: the NPU's address registers are 32-bit.
pub fn check_dma_addr(what: &str, addr: u64, size: u64) -> Result<u32, NpuError> {
    match addr.checked_add(size) {
        Some(end) if end <= 1 << 32 => Ok(addr as u32),
        _ => Err(NpuError::AddressAbove4G {
            what: what.to_string(),
            addr,
        }),
    }
}
