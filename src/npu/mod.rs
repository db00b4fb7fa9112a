//! The RK3588 NPU, in layers that import one way (each only from those
//! above it in this list):
//!
//! - [`error`]: one error type for every layer.
//! - [`command`]: the register command stream (encoding, matmul task
//!   builder, native layouts); knows no driver.
//! - [`driver`]: kernel ABI, the vendor `rknpu` and upstream `rocket`
//!   drivers, memory mappings, device discovery, and the [`NpuDevice`]
//!   trait they implement.
//! - [`sim`]: `npu-sim`, a software NPU running the same command buffers,
//!   and in-process fakes of both kernel drivers on top of it.
//! - [`ops`]: tiled matmuls and the weight cache, on any [`NpuDevice`].
//! - [`cost`]: a cost model of the board (NPU task stream and CPU),
//!   fitted to published measurements.
//! - [`selftest`]: the diagnostic ladder the `rkinfer npu selftest`
//!   command prints.
//!
//! Facts and their sources: docs/npu.md.

pub mod command;
pub mod cost;
pub mod driver;
pub mod error;
pub mod ops;
pub mod selftest;
pub mod sim;

pub use command::task::{Chaining, MatmulType, TaskDesc};
pub use driver::device::{CoreShare, DeviceInfo, Job, JobStats, NpuBuffer, NpuDevice, TaskRef};
pub use driver::discover::open_hardware;
pub use error::NpuError;
pub use ops::matmul::{
    CoreSplit, Envelope, MatmulOptions, MatmulOutput, Operands, PlannedSubmit, PreparedWeights,
};
pub use sim::{Fault, SimDevice};

/// Opens a device by its `--device` name: "npu" (hardware) or "npu-sim".
pub fn open_device(name: &str) -> Result<Box<dyn NpuDevice>, NpuError> {
    match name {
        "npu" => open_hardware(),
        "npu-sim" => Ok(Box::new(SimDevice::new())),
        other => Err(NpuError::Unsupported(format!(
            "unknown NPU device {other:?} (expected npu or npu-sim)"
        ))),
    }
}
