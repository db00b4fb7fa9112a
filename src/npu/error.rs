//! Errors of the NPU driver, simulator and command builder: one variant per
//! cause, each saying what was wrong and where.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong talking to (or simulating) the NPU.
#[derive(Debug)]
pub enum NpuError {
    /// No NPU device node was found; `reasons` says what was looked at.
    NoDevice { reasons: Vec<String> },
    /// A device node exists but may not be opened by this user.
    PermissionDenied { path: PathBuf },
    /// Opening a device node failed for another reason.
    Open {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    /// The kernel driver is older than the oldest this code supports.
    DriverTooOld {
        driver: String,
        found: String,
        minimum: String,
    },
    /// An ioctl failed.
    Ioctl {
        op: &'static str,
        errno: nix::errno::Errno,
    },
    /// Mapping a buffer into the process failed.
    Mmap {
        len: usize,
        errno: nix::errno::Errno,
    },
    /// The NPU's address registers are 32-bit: a buffer landed above 4 GiB.
    AddressAbove4G { what: String, addr: u64 },
    /// The device address space (or the simulator's memory) is exhausted.
    OutOfDeviceMemory { requested: u64, available: u64 },
    /// A buffer access outside the buffer.
    BufferRange { offset: u64, len: u64, size: u64 },
    /// A device access outside every buffer (simulator / fake driver).
    BadDeviceAddress { addr: u64, len: u64, what: String },
    /// A submitted job did not finish in time (the driver resets the NPU).
    SubmitTimeout { timeout_ms: u32 },
    /// A submitted job failed.
    SubmitFailed { reason: String },
    /// The driver reported success but the NPU never wrote these tasks'
    /// outputs (they still hold the sentinel).
    OutputNotWritten { tasks: Vec<usize>, total: usize },
    /// A matmul shape or address the NPU cannot run as asked.
    InvalidShape(String),
    /// The simulator met a register write it does not understand.
    BadRegister {
        task: usize,
        block: &'static str,
        name: &'static str,
        offset: u16,
        value: u32,
        reason: String,
    },
    /// A malformed command stream (missing tail, chain mismatch, ...).
    BadCommandStream { task: usize, reason: String },
    /// Operand types or lengths do not match the requested matmul.
    BadOperands(String),
    /// A feature that is not available on this device or build.
    Unsupported(String),
    /// A file (e.g. the debugfs load file) could not be read or parsed.
    File { path: PathBuf, reason: String },
}

impl fmt::Display for NpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpuError::NoDevice { reasons } => {
                write!(f, "no NPU device found")?;
                if !reasons.is_empty() {
                    write!(f, ": {}", reasons.join("; "))?;
                }
                Ok(())
            }
            NpuError::PermissionDenied { path } => write!(
                f,
                "{}: permission denied (add the user to the group owning the node, e.g. `render`, or a udev rule; never run as root for this)",
                path.display()
            ),
            NpuError::Open { path, errno } => write!(f, "{}: cannot open: {errno}", path.display()),
            NpuError::DriverTooOld {
                driver,
                found,
                minimum,
            } => write!(
                f,
                "{driver} driver version {found} is too old (need {minimum} or newer): update the board's kernel"
            ),
            NpuError::Ioctl { op, errno } => write!(f, "ioctl {op} failed: {errno}"),
            NpuError::Mmap { len, errno } => write!(f, "mmap of {len} bytes failed: {errno}"),
            NpuError::AddressAbove4G { what, addr } => write!(
                f,
                "{what}: device address {addr:#x} is above 4 GiB; the NPU's address registers are 32-bit"
            ),
            NpuError::OutOfDeviceMemory {
                requested,
                available,
            } => write!(
                f,
                "NPU address space exhausted: {requested} bytes requested, {available} available"
            ),
            NpuError::BufferRange { offset, len, size } => write!(
                f,
                "buffer access of {len} bytes at offset {offset} is outside the {size}-byte buffer"
            ),
            NpuError::BadDeviceAddress { addr, len, what } => write!(
                f,
                "{what}: device access of {len} bytes at {addr:#x} is outside every buffer"
            ),
            NpuError::SubmitTimeout { timeout_ms } => write!(
                f,
                "NPU job timed out after {timeout_ms} ms (the driver resets the NPU)"
            ),
            NpuError::SubmitFailed { reason } => write!(f, "NPU job failed: {reason}"),
            NpuError::OutputNotWritten { tasks, total } => write!(
                f,
                "the driver accepted the job but the NPU never wrote the output of {} of {total} tasks (first: task {}); rocket returns success even for a job it rejects: see the kernel log",
                tasks.len(),
                tasks.first().copied().unwrap_or(0)
            ),
            NpuError::InvalidShape(msg) => write!(f, "NPU matmul: {msg}"),
            NpuError::BadRegister {
                task,
                block,
                name,
                offset,
                value,
                reason,
            } => write!(
                f,
                "task {task}: register {block} {name} ({offset:#06x}) = {value:#x}: {reason}"
            ),
            NpuError::BadCommandStream { task, reason } => {
                write!(f, "task {task}: bad register command stream: {reason}")
            }
            NpuError::BadOperands(msg) => write!(f, "NPU matmul operands: {msg}"),
            NpuError::Unsupported(msg) => write!(f, "{msg}"),
            NpuError::File { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for NpuError {}
