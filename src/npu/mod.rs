//! The RK3588 NPU: kernel interfaces (vendor `rknpu`, upstream `rocket`),
//! the register command builder for matmul tasks, the `npu-sim` simulator,
//! and matmuls with tiling on top of one [`NpuDevice`] trait.
//!
//! Facts and their sources: docs/npu.md.

pub mod cache;
pub mod device;
pub mod drm;
pub mod error;
pub mod fake;
pub mod layout;
pub mod matmul;
pub mod mem;
pub mod regs;
pub mod rknpu;
pub mod rocket;
pub mod selftest;
pub mod sim;
mod sim_kernels;
pub mod task;
pub mod top;
pub mod uapi;

pub use device::{DeviceInfo, Job, JobStats, NpuBuffer, NpuDevice, TaskRef};
pub use error::NpuError;
pub use matmul::{MatmulOptions, MatmulOutput, Operands, PreparedWeights};
pub use sim::{Fault, SimDevice};
pub use task::{Chaining, MatmulType, TaskDesc};

/// Opens the NPU through whichever kernel driver serves it (`rknpu` or
/// `rocket`), found by DRM driver name over /dev/accel/* and /dev/dri/*.
pub fn open_hardware() -> Result<Box<dyn NpuDevice>, NpuError> {
    let found = drm::find_npu_node()?;
    let version = found.version.version_string();
    if found.version.name == "rknpu" {
        Ok(Box::new(rknpu::RknpuDevice::open(Box::new(found.io))?))
    } else {
        Ok(Box::new(rocket::RocketDevice::open(
            Box::new(found.io),
            version,
        )))
    }
}

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
