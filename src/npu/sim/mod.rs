//! `npu-sim`: a software model of the RK3588 NPU running the same register
//! command buffers as the hardware.
//!
//! The simulator reads the u64 command entries from device memory, keeps
//! the per-task register file, and at the operation-enable entry decodes the
//! registers with its own interpretation of each field (it shares no code
//! with the builder's formulas), rejects every value it does not understand
//! with the register's name, and computes the matmul from the native layouts
//! at the programmed addresses:
//!
//! - INT8 x INT8: products summed exactly in INT32 (wrapping; |sum| <= K*2^14
//!   cannot overflow for K <= 32768).
//! - INT4 x INT4 -> INT16: products summed exactly in a wide accumulator and
//!   **saturated** to [-32768, 32767] when the DPU writes the INT16 result.
//!   This models the NVDLA-style output converter; it is an assumption, not
//!   a hardware measurement.
//! - FP16 x FP16: each product is exact in FP32 (11 + 11 mantissa bits) and
//!   the products are summed in FP32 in increasing k; the result is written
//!   as FP32 or rounded to FP16 (round to nearest even).
//!
//! Files: [`engine`] runs the command stream (checking write order),
//! [`decode`] turns a task's register file into the operation by the
//! simulator's own register description ([`registers`], transcribed from
//! Mesa's rocket registers.xml, not shared with the builder), [`kernels`] computes it, [`device`]
//! wraps it all as an [`NpuDevice`](crate::npu::NpuDevice), and [`fake`]
//! puts the same simulator behind in-process fakes of the kernel drivers.

mod decode;
pub mod device;
pub mod engine;
pub mod fake;
mod kernels;
mod registers;

pub use device::{Fault, FaultInjector, SimDevice, SIM_ADDR_BASE, SIM_ADDR_LIMIT};
pub use engine::{CoreChain, SimCore, TailLink};
