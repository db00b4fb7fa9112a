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
    /// Device address space this process may use (bytes).
    pub address_space: u64,
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

/// A job: tasks that run in order on one core.
pub struct Job<'a> {
    pub regcmd: &'a NpuBuffer,
    pub tasks: &'a [TaskRef],
    /// Core index 0..cores.
    pub core: u32,
    pub inputs: &'a [&'a NpuBuffer],
    pub outputs: &'a [&'a NpuBuffer],
    pub timeout_ms: u32,
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
    /// Runs a job to completion (or timeout). Submits are serialized.
    fn submit(&self, job: &Job<'_>) -> Result<JobStats, NpuError>;
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
